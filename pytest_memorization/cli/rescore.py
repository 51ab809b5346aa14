"""``pytest-memorization rescore REPORT_DIR WORKS...``: score an existing report's images against a
new list of works (and new thresholds or metrics) without loading a model or generating anything.

The images are the report's saved PNGs (8 bits per channel: a score moves by at most the rounding
of 1/255 from the run's own). WORKS is a manifest (its ``[[work]]`` entries, ``[thresholds]``,
``[warn]`` and ``metrics``) or image files and folders (the work id is the file name without its
suffix). The verdicts come from the gate's one judge (``judging.judge``): the same rules, floors
and flat guard as a pytest run. It fails closed: a row without a saved image (an error row of the
run) is carried over as an ``error`` row, so the exit status is non-zero, and a report of an
interrupted run stays incomplete.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._paths import CLIError


class RescoreError(CLIError):
    pass


@dataclass
class Rescored:
    results: list[Any]  # ImageResult rows, verdicts decided by the judge
    failures: list[str]  # one line per failing finding, as the gate prints them
    skipped: list[str] = field(default_factory=list)  # rows without an image: "item seed N (verdict)"
    works: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    complete: bool = True  # False when the report read was of an interrupted run


def load_works(sources: Sequence[str]) -> tuple[list[Any], dict[str, float], dict[str, float], list[str] | None]:
    """Works, thresholds, warn values and metric names from one manifest or from image paths."""
    from ..images import load_image, sha256_file
    from ..records import Work

    if len(sources) == 1 and str(sources[0]).endswith(".toml"):
        from ..manifest.load import load_manifest

        m = load_manifest(sources[0], require_model=False)
        if not m.works:
            raise RescoreError(f"{sources[0]}: the manifest has no [[work]] entries to score against")
        works = [Work(id=w.id, image=load_image(w.image), path=w.image, sha256=w.sha256 or sha256_file(w.image),
                      thresholds=dict(w.thresholds), kind=w.kind) for w in m.works]
        return works, dict(m.thresholds), dict(m.warn), m.metrics
    from ._paths import image_paths

    paths, ids = image_paths(sources)
    stems = [str(Path(i).with_suffix("")) for i in ids]
    if len(set(stems)) != len(stems):
        raise RescoreError("two works would get the same id (file name without suffix); rename one")
    return [Work(id=s, image=load_image(p), path=p, sha256=sha256_file(p)) for s, p in zip(stems, paths)], {}, {}, None


def rescore(report_dir: str | Path, sources: Sequence[str], *, thresholds: dict[str, float] | None = None,
            metrics: Sequence[str] | None = None, warn_band: float = 0.1, align: bool = True,
            weights_dir: str | None = None) -> Rescored:
    import torch

    from ..config.settings import DEFAULT_METRICS
    from ..images import load_image
    from ..judging.judge import Measured, judge, make_rules
    from ..metrics import get_metric
    from ..metrics.matrix import score_matrices
    from ..reports.writer import load_report

    doc = load_report(report_dir)
    root = Path(report_dir)
    works, manifest_thresholds, warn, manifest_metrics = load_works(sources)
    from ..config.trust import default_floors

    # as in the gate without a policy: the built-in thresholds are floors a manifest can only tighten;
    # the command line's (trusted) thresholds replace them
    floors = {**default_floors(), **(thresholds or {})}
    names = list(metrics or manifest_metrics or dict.fromkeys([*DEFAULT_METRICS, *manifest_thresholds,
                                                                *(thresholds or {})]))
    built = {}
    for n in names:
        opts: dict[str, Any] = {"weights_dir": weights_dir} if weights_dir else {}
        if n in ("tiled_l2", "ssim"):
            opts["align"] = align
        built[n] = get_metric(n, **opts)
    rules = make_rules(built, manifest_thresholds, warn, warn_band, floors)  # floored once, as in the gate
    groups: dict[str, list[dict[str, Any]]] = {}
    skipped = []
    out: list[Any] = []
    failures: list[str] = []
    for r in doc["results"]:
        image = r.get("image")
        if not image or not (root / image).is_file():
            why = f"{r['item']} seed {r['seed']} ({r['verdict']}: no saved image)"
            skipped.append(why)
            judged = judge(Measured.failed(r["item"], r.get("prompt", ""), f"not re-scored: {why}; rerun the "
                                           "item with pytest --memorization to score it"), rules)
            out += judged.results
            failures += judged.failures
            continue
        groups.setdefault(r["item"], []).append(r)
    if not doc["results"]:
        raise RescoreError(f"{report_dir}: the report has no result rows to re-score")
    for item, rows in groups.items():
        images = [load_image(root / r["image"]) for r in rows]
        sizes = {tuple(i.shape[-2:]) for i in images}
        for size in sorted(sizes):
            idx = [k for k, i in enumerate(images) if tuple(i.shape[-2:]) == size]
            batch = torch.stack([images[k] for k in idx]).float()
            extras = [{"rescored_from": {"verdict": rows[k]["verdict"], "work": rows[k].get("work"),
                                         "scores": rows[k].get("scores", {})}} for k in idx]
            measured = Measured(item, [rows[k]["prompt"] for k in idx], [rows[k]["seed"] for k in idx], works,
                                score_matrices(built, batch, works), images=batch, extras=extras)
            judged = judge(measured, rules)
            for k, res in zip(idx, judged.results):
                res.image = rows[k]["image"]
            failures += judged.failures
            out += judged.results
    return Rescored(out, failures, skipped, [w.id for w in works], names, rules.thresholds(),
                    complete=bool(doc.get("complete", True)))


def write(rescored: Rescored, report_dir: str | Path, out: str | Path) -> Path:
    """A new report folder: the images copied, report.json and index.html for the new verdicts."""
    from ..reports.writer import load_report, write_report

    src, dst = Path(report_dir), Path(out)
    if dst.resolve() == src.resolve():
        raise RescoreError(f"--out {out}: write the re-scored report to another folder than the report read")
    for r in rescored.results:
        if r.image:
            (dst / r.image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / r.image, dst / r.image)
    run = dict(load_report(src)["run"])
    run["rescored"] = {"from": str(src), "works": rescored.works, "metrics": rescored.metrics,
                       "thresholds": rescored.thresholds, "generated_images": {"generated": 0,
                                                                              "from_report": len(rescored.results)}}
    run["thresholds"] = rescored.thresholds
    return write_report(dst, run, rescored.results, complete=rescored.complete)
