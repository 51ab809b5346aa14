"""SSIM does not fail an image on its own: a copy verdict from SSIM needs a second metric to agree.

SSIM's contrast-structure term is ~1 where the local variance is below its constant C2, so on
low-structure images (sky, cell cultures, the moon's surface, a near-flat beige) it compares mean
brightness, and such scenes scored SSIM 0.50-0.57 against the mostly dark, flat ``rocket`` photo while
their tiled L2 was 0.24-0.29. A structure floor cannot separate them: the false alarms' structure
(``metrics.ssim.structure``, 0.023-0.034 at 128 px) overlaps the rocket photo's own (0.030) and the demo
memorizer's copies (>= 0.029). So the rule is agreement, not a floor:

- when SSIM's copy finding fails for an image and **another gating metric** (tiled L2, local_copy, any
  metric with a threshold) also fails for it, the failure stands;
- when SSIM is the only one, each such SSIM finding becomes a ``flat_guard`` warning that says why
  (the report and the warn band show it; it is not a verdict);
- when SSIM is the **only gating metric** of the row (the user chose ``metrics = ["ssim"]``), the
  agreement rule cannot apply, and the structure floor ``config.policy.SSIM_STRUCTURE_FLOOR`` does: a
  failure stands on an image with structure, and becomes a warning on a near-flat one.

Why this loses no copy that the defaults caught: the copies SSIM alone crossed (a washed-out or
half-contrast copy, tiled L2 above 0.15) are contrast changes, which ``local_copy``'s luma correlation
ignores (it scores them ~1), and ``local_copy`` is a default metric. Measured in docs/partial-copies.md
(``bench/partial_copies.py``, rows "SSIM alone").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config.policy import SSIM_STRUCTURE_FLOOR
from ..records import Finding, ImageResult

# The findings about an image's own pixels against a work that the guard may downgrade.
GUARDED_RULES = ("threshold", "lora_gate.crossed", "lora_gate.amplified.crossed")


def guard_findings(findings: Sequence[Finding], structure: float, floor: float = SSIM_STRUCTURE_FLOOR, *,
                   others_gate: bool = True) -> list[Finding]:
    """``findings`` of one image, with SSIM-only copy failures downgraded to ``flat_guard`` warnings.
    ``others_gate``: whether another metric gates this image (then SSIM needs it to agree); when not,
    only a near-flat image (structure below ``floor``) is downgraded."""
    ssim_fails = [f for f in findings if f.severity == "fail" and f.metric == "ssim" and f.rule in GUARDED_RULES]
    agrees = any(f.severity == "fail" and f.metric not in (None, "ssim") and f.rule in GUARDED_RULES
                 for f in findings)
    if not ssim_fails or agrees:
        return list(findings)
    low = structure < floor  # NaN structure: not low
    if not others_gate and not low:
        return list(findings)
    why = (f"the image is near-flat (structure {structure:.4f} < {floor:g}): SSIM there compares mean brightness only"
           if low else f"SSIM alone is no copy verdict (structure {structure:.4f}; on low-structure scenes SSIM "
                       "compares mean brightness), and no other gating metric agrees")
    out = []
    for f in findings:
        if f in ssim_fails:
            f = Finding("flat_guard", "warn", f"{f.message} on SSIM alone, but {why}; not a copy verdict",
                        metric=f.metric, value=f.value, threshold=f.threshold, work=f.work)
        out.append(f)
    return out


def apply_flat_guard(results: Sequence[ImageResult], images: Any) -> None:
    """Apply the guard to each row, in place, with the structure of its image (row i = image i);
    the structure is recorded in ``extra["structure"]``. A row's gating metrics are its ``thresholds``."""
    from ..metrics.ssim import structure

    values = structure(images[: len(results)]).tolist()
    for r, s in zip(results, values):
        r.extra["structure"] = round(float(s), 5)
        others = any(n != "ssim" for n in r.thresholds)
        r.findings = guard_findings(r.findings, float(s), others_gate=others)
