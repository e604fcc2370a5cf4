"""One consistent figure style for the whole book."""

from __future__ import annotations

from typing import Any

import matplotlib

# methods keep the same colour in every chapter: a network method's colour is its registry
# entry's (metanb.retrain.methods); these are the linear theory's names and reference lines
METHOD_COLORS: dict[str, str] = {
    "sr": "#d95f02",
    "lora_ml": "#1b9e77",
    "pretrained": "#666666",
    "theory": "#000000",
}
# for registered methods that name no colour: the Dark2 colours no built-in method or
# reference line takes (colour-blind-safe), then a blue
PALETTE = ("#66a61e", "#e6ab02", "#a6761d", "#1f78b4")

# series that are not methods (matrices, ranks, numbers of tasks, initialisations) take these,
# in order: colours no method uses (Okabe-Ito blue, black, grey, wine, sky blue, brown),
# each with its own marker and line style, so lines stay apart in greyscale and without colour
SERIES_STYLES: tuple[dict[str, Any], ...] = (
    {"color": "#0072b2", "marker": "o", "linestyle": "-"},
    {"color": "#222222", "marker": "s", "linestyle": "--"},
    {"color": "#888888", "marker": "^", "linestyle": "-."},
    {"color": "#882255", "marker": "D", "linestyle": ":"},
    {"color": "#56b4e9", "marker": "v", "linestyle": (0, (5, 1, 1, 1, 1, 1))},
    {"color": "#7f3b08", "marker": "P", "linestyle": (0, (3, 1, 1, 1))},
)
# bars of non-method series: the same colours, told apart by hatching too
SERIES_HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def method_color(method: str) -> str:
    """The book's colour for a method name (registry first, grey for anything unknown)."""
    from metanb.retrain.methods import METHODS

    name = method.lower()
    if name in METHODS:
        entry = METHODS[name]
        if entry.color:
            return entry.color
        unnamed = [m for m in METHODS if not METHODS[m].color]
        return PALETTE[unnamed.index(name) % len(PALETTE)]
    return METHOD_COLORS.get(name, "#444444")


def series_style(index: int) -> dict[str, Any]:
    """Colour, marker and line style of the ``index``-th non-method series of a figure
    (cycling after the last), as keywords for ``Axes.plot``."""
    return dict(SERIES_STYLES[index % len(SERIES_STYLES)])


def series_hatch(index: int) -> str:
    """The hatch pattern of the ``index``-th bar series (none for the first)."""
    return SERIES_HATCHES[index % len(SERIES_HATCHES)]


def apply_style() -> None:
    """Set matplotlib defaults used by every figure (call once per notebook)."""
    matplotlib.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "font.size": 11,
            "legend.fontsize": 9,
            "legend.title_fontsize": 9,
            "axes.titlesize": 11,
            "axes.labelsize": 11,
        }
    )
