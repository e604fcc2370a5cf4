from metanb.cli import main

raise SystemExit(main())
