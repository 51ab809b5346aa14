"""Overlays drawn over a generated image in the HTML report: the local-copy box (where the work was
found inside the image). Coordinates are fractions of the image, so the box holds at any size."""

from __future__ import annotations

from typing import Any

from .schema import fmt_num, is_number


def box_svg(found: Any, threshold: Any) -> str:
    """The local-copy box (fractions of the image): solid red where the work was found (score at or
    above the threshold), dashed blue for the best place that did not cross it."""
    box, score = (found.get("box"), found.get("score")) if isinstance(found, dict) else (None, None)
    if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
        return ""
    x0, y0, x1, y1 = (float(v) for v in box)
    hit = is_number(score) and is_number(threshold) and float(score) >= float(threshold)
    look = 'stroke="#e5262b"' if hit else 'stroke="#2980b9" stroke-dasharray="0.04 0.03"'
    return (f'<svg class="heat box" viewBox="0 0 1 1" preserveAspectRatio="none" role="img" aria-label="where the '
            f'work is found" xmlns="http://www.w3.org/2000/svg"><rect x="{x0:.4f}" y="{y0:.4f}" width="{x1 - x0:.4f}" '
            f'height="{y1 - y0:.4f}" fill="none" {look} stroke-width="0.025"><title>local_copy {fmt_num(score)}: '
            f'{"the work is here" if hit else "closest place, below the threshold"}</title></rect></svg>')
