"""Sphinx extension: no launch (Colab) button on pages that cannot run there.

Why: sphinx-book-theme puts the rocket menu on every notebook page, but an assignment
notebook needs otter-grader and its grading files, which a bare Colab runtime does not have,
so a student who launches it meets an ImportError. ``launch_buttons_exclude`` lists
``fnmatch`` patterns of page names (e.g. ``book/assignments/*``) whose rocket menu is removed.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

from sphinx.application import Sphinx

LAUNCH_GROUP_LABEL = "launch-buttons"  # the label sphinx-book-theme gives its rocket menu


def is_excluded(pagename: str, patterns: list[str]) -> bool:
    """True when the page must not offer a launch button."""
    return any(fnmatch(pagename, pattern) for pattern in patterns)


def _drop_launch_group(app: Sphinx, pagename: str, templatename: str,
                       context: dict[str, Any], doctree: Any) -> None:
    if "header_buttons" in context and is_excluded(pagename, app.config.launch_buttons_exclude):
        context["header_buttons"] = [button for button in context["header_buttons"]
                                     if button.get("label") != LAUNCH_GROUP_LABEL]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("launch_buttons_exclude", [], "html", [list])
    # the theme adds its launch buttons at priority 501: run right after it
    app.connect("html-page-context", _drop_launch_group, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
