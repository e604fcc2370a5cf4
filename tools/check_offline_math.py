"""Check that built pages typeset their math with the network off (headless Chromium).

Why: a page whose MathJax comes from a CDN shows raw ``\\(k\\)`` offline; this opens each
page in Chromium inside an empty network namespace (``unshare -n``: no interface but
loopback), lets MathJax run, and reads the resulting DOM.

Usage: python tools/check_offline_math.py [--screenshots DIR] PAGE.html [PAGE.html ...]
Needs root (for unshare) and Debian's ``chromium`` (apt-get install -y chromium).
Prints, per page, how many formulas MathJax rendered (``mjx-container`` elements) and how many
math spans are still raw TeX; exits 1 when a page rendered none or left any raw.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--virtual-time-budget=20000",
         "--window-size=1200,1600"]
RAW_MATH = re.compile(r'class="math[^"]*"[^>]*>\s*(\\\(|\\\[|\$)')


def chromium(page: Path, *args: str) -> str:
    """Run Chromium offline on ``page`` with extra arguments; return its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(["unshare", "-n", "chromium", *FLAGS, f"--user-data-dir={profile}",
                              *args, page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=180)
    return out.stdout


def check(page: Path, screenshots: Path | None) -> tuple[int, int]:
    """(rendered formulas, raw math spans) of one page; saves a screenshot if asked."""
    dom = chromium(page, "--dump-dom")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        chromium(page, f"--screenshot={screenshots / (page.stem + '.png')}")
    return dom.count("<mjx-container"), len(RAW_MATH.findall(dom))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()
    failed = 0
    for page in args.pages:
        rendered, raw = check(page, args.screenshots)
        ok = rendered > 0 and raw == 0
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {page}: {rendered} formulas rendered, {raw} raw")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
