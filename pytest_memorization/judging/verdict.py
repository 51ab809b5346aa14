"""Findings -> verdict: the one place where a verdict is decided.

Every rule (``thresholds``, ``lora_gate``, ``img2img``, ``detectors``, ``baselines``) only
returns ``Finding`` records, and ``judging.judge`` runs them. ``decide`` turns an item's findings
into each image's verdict (the most severe finding; ``pass`` without any) and the item's failure
lines; each row keeps every finding that applies to it (its own, then the item's), so a report
reads the deciding finding (``deciding``) instead of working a verdict out again. Nothing else
assigns ``ImageResult.verdict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..records import SEVERITY, Finding, ImageResult, Verdict


def worst(verdicts: Iterable[str]) -> Verdict:
    """The most severe of ``verdicts`` (``pass`` for none)."""
    return min(verdicts, key=SEVERITY.__getitem__, default="pass")  # type: ignore[return-value]


def decide(results: Sequence[ImageResult], item_findings: Sequence[Finding] = ()) -> list[str]:
    """Set each image's verdict and reasons from its findings (plus ``item_findings``, which
    apply to every image of the item); return the item's failure text, one line per failing or
    erroring finding (an error is something that could not be judged: it fails the item, never
    passes it). This is the only function that assigns a verdict."""
    copies: list[str] = []
    others: list[str] = []
    for r in results:
        own = list(r.findings)
        r.findings = [*own, *(f for f in item_findings if f not in own)]  # each row carries every finding
        r.verdict = worst(f.severity for f in r.findings)
        r.reasons = [f.message for f in sorted(r.findings, key=lambda f: SEVERITY[f.severity])
                     if f.severity != "pass"]
        for f in own:
            if f.severity == "fail":
                (copies if f.rule == "threshold" else others).append(_line(r, f))
            elif f.severity == "error":  # could not be judged: never a pass
                others.append(f"ERROR: {_line(r, f)}")
    others += [f.message if f.severity == "fail" else f"ERROR: {f.message}" for f in item_findings
               if f.severity in ("fail", "error")]
    lines: list[str] = []
    if copies:
        n = sum(any(f.rule == "threshold" and f.severity == "fail" for f in r.findings) for r in results)
        lines.append(f"memorization: {n} of {len(results)} generated images copy a protected work")
        lines += [f"  {c}" for c in dict.fromkeys(copies)]
    return lines + list(dict.fromkeys(others))


def _line(r: ImageResult, f: Finding) -> str:
    i2i = r.extra.get("img2img")
    at = f" (img2img strength {i2i['strength']:g})" if isinstance(i2i, dict) else ""
    if f.rule == "threshold":
        return f"work '{f.work}' <- prompt {r.prompt!r}, seed {r.seed}{at}: {f.message}"
    if f.rule.startswith("lora_gate"):
        return f"LoRA gate: prompt {r.prompt!r}, seed {r.seed}: {f.message}"
    return f.message


def deciding(findings: Iterable[Finding], verdict: str) -> Finding | None:
    """The finding that set ``verdict``: the first of that severity, a LoRA-gate finding before a plain
    threshold crossing (it says what the LoRA changed); None for a pass without findings."""
    same = [f for f in findings if f.severity == verdict]
    return next((f for f in same if f.rule.startswith("lora_gate")), same[0] if same else None)
