"""One consistent figure style for the whole book."""

from __future__ import annotations

import matplotlib

# methods keep the same colour in every chapter
METHOD_COLORS: dict[str, str] = {
    "standard": "#d95f02",
    "sr": "#d95f02",
    "lora-ml": "#1b9e77",
    "lora_ml": "#1b9e77",
    "reptile": "#7570b3",
    "pretrained": "#666666",
    "theory": "#000000",
}


def method_color(method: str) -> str:
    """The book's colour for a method name (grey for anything unknown)."""
    return METHOD_COLORS.get(method.lower(), "#444444")


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
