"""Sphinx extension: serve MathJax 3 from the built book instead of a CDN.

Why: the book is read offline (a laptop on a train, an air-gapped lab), and a page whose
math loads from a CDN shows raw ``\\(k\\)`` there. With ``offline_math: true`` the MathJax 3
copy shipped by the pip package ``sphinx-mathjax-offline`` (the ``book`` extra) is copied to
``_static/mathjax`` and every page loads it from there. Off, Sphinx's CDN default stays.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError

VENDOR_PACKAGE = "sphinx-mathjax-offline"
ENTRY_SCRIPT = "mathjax/tex-chtml.js"


def vendored_static_dir() -> Path:
    """The folder holding ``mathjax/`` inside the vendor package (one-line error if absent)."""
    spec = importlib.util.find_spec(VENDOR_PACKAGE)
    static = Path(spec.origin).parent / "static" if spec and spec.origin else None
    if static is None or not (static / ENTRY_SCRIPT).is_file():
        raise ConfigError(f"offline_math is on but {VENDOR_PACKAGE} is not installed "
                          "(pip install -e '.[book]')")
    return static


def _use_vendored_mathjax(app: Sphinx, config: Config) -> None:
    if not config.offline_math:
        return
    # html_static_path entries are copied into _static/, so this lands in _static/mathjax/
    config.html_static_path = [*config.html_static_path, str(vendored_static_dir())]
    config.mathjax_path = ENTRY_SCRIPT  # relative: Sphinx loads it from _static/


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("offline_math", False, "html", [bool])
    app.connect("config-inited", _use_vendored_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
