"""One consistent figure style for the whole book."""

from __future__ import annotations

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
        }
    )
