"""SSIM does not call a copy on its own: an SSIM-only copy verdict needs a second metric, or structure.

SSIM of a near-flat image is its mean-brightness agreement with the work (the contrast-structure term
is ~1 where the local variance is below SSIM's constant C2), so a near-flat beige image from a
harmless LoRA scored SSIM 0.573 against the ``rocket`` photo (mostly dark, flat sky) while its tiled L2
was 0.29; and low-structure scenes (a moon, a cell culture) scored 0.50-0.54 against the same photo with
a structure just above that floor. Two rules, for each image and work, on the findings that call a copy
(``GUARDED_RULES``):

* **agreement** (``ssim.unconfirmed``): where another copy metric was scored for the image (tiled L2 and
  local copy by default) and none of them fails for that work, an SSIM failure becomes a warning. A
  copy that only SSIM would see (a work at half its contrast, say) is seen by ``local_copy``, whose
  correlation does not depend on contrast, so the pair loses no copy that SSIM alone caught on the
  bench (docs/partial-copies.md).
* **flat guard** (``flat_guard``): where the image's structure (``metrics.ssim.structure``) is below
  ``config.policy.SSIM_STRUCTURE_FLOOR``, an SSIM failure that no other metric agrees with is a
  warning too. This one also holds when SSIM is the only metric scored.

A failure that another metric agrees with stands; so does SSIM alone on a structured image when SSIM
is the only metric scored. The LoRA gate's SSIM approaches follow the agreement rule too
(``guard_approaches``): a trend toward a work is a weaker signal than a crossing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..config.policy import SSIM_STRUCTURE_FLOOR
from ..records import Finding, ImageResult

# The findings about an image's own pixels against a work that the guard may downgrade.
GUARDED_RULES = ("threshold", "lora_gate.crossed")


def guard_findings(findings: Sequence[Finding], structure: float, floor: float = SSIM_STRUCTURE_FLOOR,
                   scored: Iterable[str] = ()) -> list[Finding]:
    """``findings`` of one image, with SSIM copy failures that no other metric confirms downgraded: on a
    low-structure image always, and whenever another metric in ``scored`` could have confirmed them."""
    others = {m for m in scored if m != "ssim"}
    fails = [f for f in findings if f.severity == "fail" and f.rule in GUARDED_RULES]
    confirmed = {f.work for f in fails if f.metric not in (None, "ssim")}
    flat = structure < floor  # NaN structure: not low, the failure stands
    out = []
    for f in findings:
        if f in fails and f.metric == "ssim" and f.work not in confirmed and (flat or others):
            if flat:
                f = Finding("flat_guard", "warn",
                            f"{f.message} on SSIM alone, but the image is near-flat (structure {structure:.4f} < "
                            f"{floor:g}): SSIM there compares mean brightness only, and no other metric agrees; "
                            "not a copy verdict", metric=f.metric, value=f.value, threshold=f.threshold, work=f.work)
            else:
                f = Finding("ssim.unconfirmed", "warn",
                            f"{f.message} on SSIM alone: {', '.join(sorted(others))} scored this image and none "
                            "agrees, and SSIM alone does not call a copy (it rewards shared brightness and "
                            "low structure); a warning to look at", metric=f.metric, value=f.value,
                            threshold=f.threshold, work=f.work)
        out.append(f)
    return out


def guard_approaches(item: Sequence[Finding], rows: Sequence[ImageResult], scored: Iterable[str]) -> list[Finding]:
    """The agreement rule for the LoRA gate's approaches (item findings: a trend over seeds, weaker than
    a crossing): an SSIM approach that no other scored metric confirms for its work, by its own approach
    or by a failure of a row, is a warning. With SSIM the only metric scored, it stands."""
    if not any(m != "ssim" for m in scored):
        return list(item)
    found = [*item, *(f for r in rows for f in r.findings)]
    confirmed = {f.work for f in found if f.severity == "fail" and f.metric not in (None, "ssim")}
    return [Finding(f.rule, "warn", f"{f.message}; on SSIM alone: no other metric agrees, a warning to look at",
                    metric=f.metric, value=f.value, threshold=f.threshold, work=f.work)
            if f.rule.endswith(".approaching") and f.severity == "fail" and f.metric == "ssim"
            and f.work not in confirmed else f for f in item]


def apply_flat_guard(results: Sequence[ImageResult], images: Any) -> None:
    """Apply the guard to each row, in place, with the structure of its image (row i = image i);
    the structure is recorded in ``extra["structure"]``."""
    from ..metrics.ssim import structure

    values = structure(images[: len(results)]).tolist()
    for r, s in zip(results, values):
        r.extra["structure"] = round(float(s), 5)
        r.findings = guard_findings(r.findings, float(s), scored=[m for m in r.thresholds if m in r.scores])
