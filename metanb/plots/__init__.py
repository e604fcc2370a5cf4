"""The figures the chapters draw, one module per chapter family.

``metanb.plots.style`` holds the shared look; ``metanb.plots.linear`` the theory figures;
``metanb.plots.results`` the language-model figures.
"""

from metanb.plots.style import METHOD_COLORS, apply_style, method_color

__all__ = ["METHOD_COLORS", "apply_style", "method_color"]
