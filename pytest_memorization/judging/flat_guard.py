"""No SSIM-only copy verdicts on flat images: a copy found by SSIM alone needs structure.

SSIM of a near-flat image is its mean-brightness agreement with the work (the contrast-structure term
is ~1 where the local variance is below SSIM's constant C2), so a near-flat beige image from a
harmless LoRA scored SSIM 0.573 against the ``rocket`` photo (mostly dark, flat sky) while its tiled L2
was 0.29. The rule: when an image's structure (``metrics.ssim.structure``) is below
``config.policy.SSIM_STRUCTURE_FLOOR`` and SSIM is the *only* metric whose copy finding fails for that
image, each such SSIM finding becomes a ``flat_guard`` warning that says why. When another metric
agrees (tiled L2 crosses too), the failure stands; a structured image's SSIM failure stands alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config.policy import SSIM_STRUCTURE_FLOOR
from ..records import Finding, ImageResult

# The findings about an image's own pixels against a work that the guard may downgrade.
GUARDED_RULES = ("threshold", "lora_gate.crossed")


def guard_findings(findings: Sequence[Finding], structure: float,
                   floor: float = SSIM_STRUCTURE_FLOOR) -> list[Finding]:
    """``findings`` of one image, with SSIM-only copy failures on a low-structure image downgraded."""
    ssim_fails = [f for f in findings if f.severity == "fail" and f.metric == "ssim" and f.rule in GUARDED_RULES]
    agrees = any(f.severity == "fail" and f.metric not in (None, "ssim") and f.rule in GUARDED_RULES
                 for f in findings)
    if not ssim_fails or agrees or not structure < floor:  # NaN structure: not low, the failure stands
        return list(findings)
    out = []
    for f in findings:
        if f in ssim_fails:
            f = Finding("flat_guard", "warn",
                        f"{f.message} on SSIM alone, but the image is near-flat (structure {structure:.4f} < "
                        f"{floor:g}): SSIM there compares mean brightness only, and no other metric agrees; "
                        "not a copy verdict", metric=f.metric, value=f.value, threshold=f.threshold, work=f.work)
        out.append(f)
    return out


def apply_flat_guard(results: Sequence[ImageResult], images: Any) -> None:
    """Apply the guard to each row, in place, with the structure of its image (row i = image i);
    the structure is recorded in ``extra["structure"]``."""
    from ..metrics.ssim import structure

    values = structure(images[: len(results)]).tolist()
    for r, s in zip(results, values):
        r.extra["structure"] = round(float(s), 5)
        r.findings = guard_findings(r.findings, float(s))
