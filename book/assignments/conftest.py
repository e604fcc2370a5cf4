"""Keep nbval (``pytest --nbval book``) away from the assignment notebooks.

Their source notebooks need otter's grading mode and their student notebooks are deliberately
incomplete, so neither can run top to bottom. ``tests/test_assignments.py`` builds and grades
them instead.
"""

collect_ignore_glob = ["*.ipynb", "source/*", "dist/*"]
