"""Where a reference-free detector sees memorization: its per-pixel map drawn over the generated image.

``zero_step`` and ``lora_delta`` put a ``map`` (rows of latent pixels, scaled to [0, 1] by the
map's peak) on the rows of a flagged prompt; each becomes a translucent orange grid over that
seed's image, strongest where the prompt (or the LoRA) pulls the prediction hardest.
"""

from __future__ import annotations

from typing import Any

from .schema import is_number

LABELS = {"zero_step": "zero-step guidance map", "lora_delta": "LoRA guidance-change map"}


def detector_map_svg(grid: Any, name: str) -> str:
    """An SVG grid (one cell per latent pixel); empty when the map is malformed."""
    if not (isinstance(grid, list) and grid and all(isinstance(row, list) and row for row in grid)):
        return ""
    n_rows, n_cols = len(grid), max(len(row) for row in grid)
    cells = []
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if is_number(v):
                cells.append(f'<rect x="{j}" y="{i}" width="1" height="1" fill="#ff7f0e" '
                             f'fill-opacity="{0.7 * min(1.0, max(0.0, float(v))):.2f}"/>')
    return (f'<svg class="detmap" data-detector="{name}" viewBox="0 0 {n_cols} {n_rows}" preserveAspectRatio="none" '
            f'role="img" aria-label="{LABELS.get(name, name)}" xmlns="http://www.w3.org/2000/svg">{"".join(cells)}</svg>')


def detector_map_figures(r: dict[str, Any], img: str, figure: Any) -> list[str]:
    """One figure per detector map on the row ``r``: ``img`` (the image tag) under the map."""
    out = []
    for name, det in sorted((r.get("detectors") or {}).items()):
        svg = detector_map_svg(det.get("map"), name) if isinstance(det, dict) else ""
        if svg:
            out.append(figure(f'<div class="heatwrap">{img}{svg}</div>', f"{LABELS.get(name, name)}: where"))
    return out
