"""The style sheet shared by the pipeline's HTML pages (spot-check report, dataset card).

One file, `report_style.css`, shipped as package data, so both pages look alike and a
layout fix (nothing wider than the window) is made once. Pages inline it in a `<style>`
element: each page stays a single self-contained file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def style_sheet() -> str:
    """The text of `pipeline/report_style.css`."""
    return resources.files("pipeline").joinpath("report_style.css").read_text(encoding="utf-8")
