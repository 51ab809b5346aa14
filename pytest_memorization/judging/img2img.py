"""The img2img rule: a copy is expected at low strength (that is what the curve shows), and a
failure at or above the work's ``min_safe_strength``."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Finding


def img2img_findings(findings: Sequence[Finding], work: str, strength: float,
                     min_safe_strength: float | None) -> list[Finding]:
    """The threshold findings of one img2img image, re-read under the safe-strength rule."""
    out: list[Finding] = []
    for f in findings:
        if f.rule != "threshold" or f.severity != "fail":
            out.append(f)
        elif min_safe_strength is None or strength < min_safe_strength:
            out.append(Finding("img2img.below_safe_strength", "warn",
                               f"copy at strength {strength:g}, below min_safe_strength {min_safe_strength} "
                               f"({f.message})", metric=f.metric, value=f.value, threshold=f.threshold, work=f.work))
        else:
            out.append(Finding("img2img.copy", "fail",
                               f"img2img from '{work}' at strength {strength:g} (>= min_safe_strength "
                               f"{min_safe_strength}) still yields a copy: {f.message}",
                               metric=f.metric, value=f.value, threshold=f.threshold, work=f.work))
    return out
