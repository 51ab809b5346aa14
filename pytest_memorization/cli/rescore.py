"""``pytest-memorization rescore REPORT_DIR WORKS...``: score an existing report's images against a
new list of works (and new thresholds or metrics) without loading a model or generating anything.

The images are the report's saved PNGs (8 bits per channel: a score moves by at most the rounding
of 1/255 from the run's own). WORKS is a manifest (its ``[[work]]`` entries, ``[thresholds]``,
``[warn]`` and ``metrics``) or image files and folders (the work id is the file name without its
suffix). Rows without a saved image (error rows, detector-only canaries) are listed, not scored.
The verdicts come from the gate's own rules (``judging.thresholds``) and ``judging.verdict.decide``.
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
    results: list[Any]  # ImageResult rows, verdicts decided
    failures: list[str]  # one line per failing finding, as the gate prints them
    skipped: list[str] = field(default_factory=list)  # rows without an image: "item seed N (verdict)"
    works: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)


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
                      thresholds=dict(w.thresholds)) for w in m.works]
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

    from ..config.policy import with_floors
    from ..config.settings import DEFAULT_METRICS
    from ..images import load_image
    from ..judging.thresholds import rules_for, score_rows
    from ..judging.verdict import decide
    from ..metrics import get_metric
    from ..metrics.matrix import score_matrices
    from ..reports.writer import load_report

    doc = load_report(report_dir)
    root = Path(report_dir)
    works, manifest_thresholds, warn, manifest_metrics = load_works(sources)
    limits = with_floors(manifest_thresholds, dict(thresholds or {}))  # strictest wins, as in the gate
    names = list(metrics or manifest_metrics or dict.fromkeys([*DEFAULT_METRICS, *limits]))
    built = {}
    for n in names:
        opts: dict[str, Any] = {"weights_dir": weights_dir} if weights_dir else {}
        if n in ("tiled_l2", "ssim"):
            opts["align"] = align
        built[n] = get_metric(n, **opts)
    rules = rules_for(built, limits, warn, warn_band)
    groups: dict[str, list[dict[str, Any]]] = {}
    skipped = []
    for r in doc["results"]:
        image = r.get("image")
        if not image or not (root / image).is_file():
            skipped.append(f"{r['item']} seed {r['seed']} ({r['verdict']}: no saved image)")
            continue
        groups.setdefault(r["item"], []).append(r)
    if not groups:
        raise RescoreError(f"{report_dir}: no result row has a saved image to re-score")
    out: list[Any] = []
    failures: list[str] = []
    for item, rows in groups.items():
        images = [load_image(root / r["image"]) for r in rows]
        sizes = {tuple(i.shape[-2:]) for i in images}
        batches = [[k for k, i in enumerate(images) if tuple(i.shape[-2:]) == s] for s in sorted(sizes)]
        results = []
        for idx in batches:
            batch = torch.stack([images[k] for k in idx]).float()
            scores = score_matrices(built, batch, works)
            part = score_rows(item, [rows[k]["prompt"] for k in idx], [rows[k]["seed"] for k in idx], scores,
                              works, rules)
            for k, res in zip(idx, part):
                res.image = rows[k]["image"]
                res.extra["rescored_from"] = {"verdict": rows[k]["verdict"], "work": rows[k].get("work"),
                                              "scores": rows[k].get("scores", {})}
            results += part
        failures += decide(results, [])
        out += results
    return Rescored(out, failures, skipped, [w.id for w in works], names,
                    {n: r.threshold for n, r in rules.items() if r.threshold is not None})


def write(rescored: Rescored, report_dir: str | Path, out: str | Path) -> Path:
    """A new report folder: the images copied, report.json and index.html for the new verdicts."""
    from ..reports.writer import load_report, write_report

    src, dst = Path(report_dir), Path(out)
    if dst.resolve() == src.resolve():
        raise RescoreError(f"--out {out}: write the re-scored report to another folder than the report read")
    for r in rescored.results:
        (dst / r.image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r.image, dst / r.image)
    run = dict(load_report(src)["run"])
    run["rescored"] = {"from": str(src), "works": rescored.works, "metrics": rescored.metrics,
                       "thresholds": rescored.thresholds, "generated_images": {"generated": 0,
                                                                              "from_report": len(rescored.results)}}
    run["thresholds"] = rescored.thresholds
    return write_report(dst, run, rescored.results)
