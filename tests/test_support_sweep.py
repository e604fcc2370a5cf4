"""tools/support_sweep.py refuses a bad sweep in one line before it writes anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "support_sweep.py"


def test_a_bad_support_size_is_one_line_and_writes_nothing(tmp_path: Path):
    root = tmp_path / "sweep"
    done = subprocess.run([sys.executable, str(TOOL), str(root), "--sizes", "4", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "support_sweep.py: error: tasks.support must be >= 1, got 0"
    assert "Traceback" not in done.stderr and not root.exists()
