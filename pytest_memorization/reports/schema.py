"""The shape of ``report.json`` and the helpers every report view shares.

Pure standard library: safe to import at plugin start-up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from ..errors import MemorizationConfigError
from ..metrics import KNOWN_DIRECTIONS  # noqa: F401  (re-exported for report readers)
from ..records import CROSSING_RULES, SEVERITY, VERDICTS  # noqa: F401  (the one severity order)

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("item", "prompt", "seed", "verdict")
RESERVED_TOP_KEYS = ("schema_version", "complete", "generated_by", "run", "summary", "results")



class ReportError(MemorizationConfigError):
    """A report cannot be written, read or merged. The message names the file and the fix."""


def to_result_dict(result: Any, index: int = 0) -> dict[str, Any]:
    """A result as a plain dict (``ImageResult`` or dict), checked and with defaults filled in."""
    d = result.to_json() if hasattr(result, "to_json") else result
    if not isinstance(d, dict):
        raise ReportError(f"result #{index}: expected a dict or ImageResult, got {type(d).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ReportError(
            f"result #{index} ({d.get('item', '?')}): missing key(s) {', '.join(missing)}; "
            "build results with ImageResult(...).to_json()"
        )
    if d["verdict"] not in SEVERITY:
        raise ReportError(
            f"result #{index} ({d['item']}): verdict {d['verdict']!r} is not one of {', '.join(VERDICTS)}"
        )
    out = dict(d)
    out.pop("pixels", None)
    for k, default in (("work", None), ("image", None), ("work_image", None)):
        out.setdefault(k, default)
    for k in ("scores", "thresholds", "detectors", "extra"):
        out[k] = dict(out.get(k) or {})
    out["reasons"] = [str(r) for r in (out.get("reasons") or [])]
    return out


def result_tag(r: dict[str, Any]) -> str:
    """What tells apart images of one item, prompt and seed: ``r['tag']``, ``r['extra']['tag']``,
    or the img2img strength (``extra.img2img.strength``, as 's0.5')."""
    extra = r.get("extra") or {}
    tag = r.get("tag") or extra.get("tag")
    if tag:
        return str(tag)
    i2i = extra.get("img2img")
    if isinstance(i2i, dict) and is_number(i2i.get("strength")):
        return f"s{i2i['strength']:g}"
    return ""


def result_key(r: dict[str, Any]) -> tuple[str, str, int, str]:
    """Identity of a result: one generated image (item, prompt, seed, tag)."""
    return (str(r["item"]), str(r["prompt"]), int(r["seed"]), result_tag(r))


def sort_key(r: dict[str, Any]) -> tuple[int, str, int, str, str]:
    return (SEVERITY[r["verdict"]], str(r["item"]), int(r["seed"]), str(r["prompt"]), result_tag(r))


def sort_results(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """error < fail < warn < pass, then item, then seed (then prompt and tag, for determinism)."""
    return sorted(results, key=sort_key)


def summarize(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r["verdict"]] += 1
    return summary_of(counts)


def summary_of(counts: dict[str, int]) -> dict[str, Any]:
    """report.json's ``summary`` from the rows per verdict."""
    counts = {v: counts.get(v, 0) for v in VERDICTS}
    worst = next((v for v in VERDICTS if counts[v]), "pass")
    return {**counts, "total": sum(counts.values()), "worst": worst}


def overall(summary: dict[str, Any], complete: bool = True) -> str:
    """One word for the whole run: ERROR, FAIL, WARN, PASS or INCOMPLETE."""
    if summary.get("error"):
        return "ERROR"
    if summary.get("fail"):
        return "FAIL"
    if not complete:
        return "INCOMPLETE"
    return "WARN" if summary.get("warn") else "PASS"


def direction_of(metric: str, run: dict[str, Any] | None = None, result: dict[str, Any] | None = None) -> str | None:
    for source in ((result or {}).get("directions"), (run or {}).get("metric_directions")):
        if isinstance(source, dict) and source.get(metric) in ("distance", "similarity"):
            return str(source[metric])
    return KNOWN_DIRECTIONS.get(metric)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def crossed(r: dict[str, Any], metric: str) -> bool:
    """Whether the judge found ``metric`` (a metric or a detector) past its line for this row: read from
    the row's findings (``records.CROSSING_RULES``), never worked out again from scores."""
    return any(isinstance(f, dict) and f.get("metric") == metric and f.get("rule") in CROSSING_RULES
               for f in r.get("findings") or [])


def deciding(r: dict[str, Any]) -> dict[str, Any] | None:
    """The finding that set the row's verdict, as report.json holds it: the first of that severity, a
    LoRA-gate finding before a plain threshold crossing (``judging.verdict.deciding``'s order)."""
    same = [f for f in r.get("findings") or [] if isinstance(f, dict) and f.get("severity") == r.get("verdict")]
    return next((f for f in same if str(f.get("rule", "")).startswith("lora_gate")), same[0] if same else None)


def verdict_label(r: dict[str, Any]) -> str:
    """The row's verdict for people: ``waived`` where a waiver turned its copy into an expected one."""
    f = deciding(r)
    return "waived" if f is not None and f.get("rule") == "waiver" else str(r.get("verdict"))


def closeness(score: Any, threshold: Any, direction: str | None) -> float:
    """How far toward copying a score is, as a fraction of its threshold (>= 1 means crossed)."""
    if not (is_number(score) and is_number(threshold)) or direction is None:
        return float("-inf")
    if direction == "distance":
        return threshold / score if score > 0 else float("inf")
    return score / threshold if threshold > 0 else float("inf")


def worst_metric(r: dict[str, Any], run: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The score (metric or detector) of a result nearest to, or furthest past, its threshold."""
    best: tuple[float, dict[str, Any]] | None = None
    for m, score in (r.get("scores") or {}).items():
        t = (r.get("thresholds") or {}).get(m)
        d = direction_of(m, run, r)
        c = closeness(score, t, d)
        if best is None or c > best[0]:
            best = (c, {"metric": m, "score": score, "threshold": t, "direction": d, "crossed": crossed(r, m)})
    for name, det in (r.get("detectors") or {}).items():
        if not isinstance(det, dict):
            continue
        d = det.get("direction", "similarity")  # detectors: higher = more memorized
        c = closeness(det.get("score"), det.get("threshold"), d)
        if best is None or c > best[0]:
            best = (c, {"metric": name, "score": det.get("score"), "threshold": det.get("threshold"),
                        "direction": d, "crossed": crossed(r, name)})
    return best[1] if best else None


def severity_key(r: dict[str, Any], run: dict[str, Any] | None) -> tuple[int, float, str, int]:
    """Most severe verdict first; within a verdict, the row furthest past (or closest to) a threshold."""
    w = worst_metric(r, run)
    c = closeness(w["score"], w["threshold"], w["direction"]) if w else float("-inf")
    return (SEVERITY[r["verdict"]], -c, str(r["item"]), int(r["seed"]))


def worst_results(results: Iterable[dict[str, Any]], run: dict[str, Any] | None, n: int) -> list[dict[str, Any]]:
    """The ``n`` most severe results; within a verdict, the one furthest past a threshold first."""
    import heapq

    return heapq.nsmallest(max(n, 0), results, key=lambda r: severity_key(r, run))  # sorted()[:n], n rows held


def image_refs(r: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Every report-relative image path of a result: keys named ``image`` or ``*_image``.

    Returns (location, path) pairs; ``location`` is the key path inside the result.
    """
    out: list[tuple[tuple[Any, ...], str]] = []
    # depth first in key order with a stack of iterators, not a recursive closure: a nested function
    # that calls itself is a reference cycle, garbage per row that only the cyclic collector frees
    top = {k: v for k, v in r.items() if k in ("image", "work_image", "extra")}
    stack: list[tuple[Any, tuple[Any, ...]]] = [(iter(top.items()), ())]
    while stack:
        items, loc = stack[-1]
        for k, v in items:
            if isinstance(v, str) and isinstance(k, str) and (k == "image" or k.endswith("_image")):
                out.append(((*loc, k), v))
            elif isinstance(v, dict):
                stack.append((iter(v.items()), (*loc, k)))
                break
            elif isinstance(v, list):  # numbers and strings in a list are never image keys
                stack.append((iter(enumerate(v)), (*loc, k)))
                break
        else:
            stack.pop()
    return out


def set_at(obj: Any, loc: tuple[Any, ...], value: Any) -> None:
    for k in loc[:-1]:
        obj = obj[k]
    obj[loc[-1]] = value


def safe_relpath(rel: str) -> str | None:
    """``rel`` as a clean relative POSIX path inside the report dir, or None when it leaves it."""
    if not rel or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if rel[0] != "/" and ":" not in parts[0] and not any(x in ("", ".", "..") for x in parts):
        return rel  # already clean (every path this package writes): no PurePosixPath to build
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        return None
    return p.as_posix()


def jsonable(obj: Any, where: str = "report") -> Any:
    """Plain JSON values: non-finite floats become null, tensors/arrays lists, paths strings."""
    if isinstance(obj, (dict, list)):  # plain JSON already (rows read back from a report): the C codec
        # (which writes a True or None dict key as "true" / "null", where str() gives "True" / "None")
        import json

        try:
            return json.loads(json.dumps(obj, allow_nan=False, check_circular=False))
        except (TypeError, ValueError, RecursionError):
            pass  # a tensor, a path, a NaN, a non-string key: converted one value at a time below
    return _jsonable(obj, where)


def _jsonable(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [_jsonable(v, where) for v in sorted(obj, key=str)]
    if hasattr(obj, "__fspath__"):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return _jsonable(obj.tolist(), where)
    raise ReportError(
        f"{where}: a {type(obj).__name__} cannot be written to report.json; "
        "store plain numbers, strings, lists or dicts"
    )


def fmt_num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def model_label(run: dict[str, Any]) -> str:
    """'path (hash 1234abcd)' for display, from run['model'] (str or dict) and run['model_hash'].

    A run of several models (``run['models']``, a list of such dicts) gives their labels joined."""
    if isinstance(run.get("models"), list) and not run.get("model"):
        labels = dict.fromkeys(model_label(m) for m in run["models"] if isinstance(m, dict))  # one per model
        return "; ".join(labels) or "unknown model"
    m = run.get("model")
    path, h = (m.get("path"), m.get("hash") or m.get("sha256")) if isinstance(m, dict) else (m, None)
    h = h or run.get("model_hash") or run.get("model_sha256")
    label = str(path) if path else "unknown model"
    return f"{label} (hash {str(h)[:12]})" if h else label


def lora_label(run: dict[str, Any]) -> str | None:
    lo = run.get("lora")
    if not lo:
        return None
    path, scale = (lo.get("path"), lo.get("scale")) if isinstance(lo, dict) else (lo, None)
    scale = scale if scale is not None else run.get("lora_scale")
    return f"{path}" + (f" x{fmt_num(scale)}" if scale is not None else "")
