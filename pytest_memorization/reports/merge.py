"""Merge reports of shards (``--memorization-shard``) or xdist workers into one.

Pure standard library.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .schema import ReportError, image_refs, result_key, safe_relpath, set_at, sort_results, to_result_dict
from .writer import IMAGE_HASHES, file_sha256, load_report, write_report

# Run settings that change what the images are: shards that differ in one cannot be merged.
# ``lora`` (its path) counts only when a run has no ``lora_hash``, like the model's path.
STRICT_RUN_KEYS = ("lora", "lora_scale", "lora_hash", "dtype", "steps", "guidance_scale", "height", "width",
                   "metrics", "thresholds", "report_works")


def _canon(r: dict[str, Any]) -> str:
    return json.dumps(r, sort_keys=True, default=str)


def merge_results(result_lists: Iterable[Iterable[Any]]) -> list[dict[str, Any]]:
    """All results once each (key: item, prompt, seed, tag), sorted like report.json.

    An identical duplicate is kept once; two different results for the same key raise ReportError.
    """
    seen: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for li, results in enumerate(result_lists):
        for i, r in enumerate(results):
            d = to_result_dict(r, i)
            k = result_key(d)
            old = seen.get(k)
            if old is None:
                seen[k] = d
            elif _canon(old) != _canon(d):
                diff = sorted(f for f in set(old) | set(d) if _canon({0: old.get(f)}) != _canon({0: d.get(f)}))
                raise ReportError(
                    f"conflicting results for item {k[0]!r} seed {k[2]}"
                    + (f" tag {k[3]!r}" if k[3] else "")
                    + f" (list #{li}): they differ in {', '.join(diff)}; the same image was scored twice "
                    "with different outcomes, so shards or workers ran different settings"
                )
    return sort_results(seen.values())


def _model_id(run: dict[str, Any]) -> tuple[str, Any]:
    if isinstance(run.get("models"), list) and not run.get("model"):  # a run of several models
        ids = sorted({json.dumps(_model_id(m), default=str) for m in run["models"] if isinstance(m, dict)})
        return ("models", ", ".join(ids))
    m = run.get("model")
    if isinstance(m, dict):
        h = m.get("hash") or m.get("sha256") or m.get("content_hash")
        if h:
            return ("hash", h)
        m = m.get("path")
    h = run.get("model_hash") or run.get("model_sha256")
    return ("hash", h) if h else ("path", m)


def merge_runs(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """One run dict: the same model (hash, else path) and image settings required; times widened."""
    if not runs:
        return {}
    first = runs[0]
    for run, name in zip(runs[1:], names[1:]):
        a, b = _model_id(first), _model_id(run)
        if a != b:
            raise ReportError(
                f"cannot merge {names[0]} (model {a[0]} {a[1]!r}) with {name} (model {b[0]} {b[1]!r}): "
                "reports of different models; merge only shards of one run"
            )
        for k in STRICT_RUN_KEYS:
            if k == "lora" and first.get("lora_hash") and run.get("lora_hash"):
                continue
            if _canon({0: first.get(k)}) != _canon({0: run.get(k)}):
                raise ReportError(
                    f"cannot merge {names[0]} ({k} = {first.get(k)!r}) with {name} ({k} = {run.get(k)!r}): "
                    "shards must use the same settings"
                )
    merged = copy.deepcopy(first)
    for key in ("generated_images", "lora_gate_base_images", "early_exit"):  # image counts add up over shards
        parts = [r[key] for r in runs if isinstance(r.get(key), dict)]
        if parts:
            merged[key] = {k: sum(p.get(k, 0) for p in parts) if all(isinstance(p.get(k, 0), int) for p in parts)
                           else parts[0].get(k) for k in parts[0]}
    starts = [r["started"] for r in runs if r.get("started")]
    ends = [r["finished"] for r in runs if r.get("finished")]
    if starts:
        merged["started"] = min(starts)
    if ends:
        merged["finished"] = max(ends)
    seeds = {s for r in runs for s in (r.get("seeds") or []) if isinstance(s, int)}
    if seeds:
        merged["seeds"] = sorted(seeds)
    devices = sorted({str(r["device"]) for r in runs if r.get("device") is not None})
    if len(devices) > 1:
        merged["device"] = ", ".join(devices)
    return merged


def _merge_extra(docs: list[dict[str, Any]]) -> dict[str, Any]:
    known = {"schema_version", "complete", "generated_by", "run", "summary", "results", IMAGE_HASHES}
    out: dict[str, Any] = {}
    for doc in docs:
        for k, v in doc.items():
            if k in known:
                continue
            if k not in out:
                out[k] = copy.deepcopy(v)
            elif isinstance(out[k], list) and isinstance(v, list):
                have = {_canon({0: x}) for x in out[k]}
                out[k] += [x for x in v if _canon({0: x}) not in have]
            elif isinstance(out[k], dict) and isinstance(v, dict):
                out[k].update({kk: vv for kk, vv in v.items() if kk not in out[k]})
    return out


def _recorded_hashes(doc: dict[str, Any], name: str) -> dict[str, str]:
    rec = doc.get(IMAGE_HASHES, {})
    if not isinstance(rec, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in rec.items()):
        raise ReportError(f"{name}: key '{IMAGE_HASHES}' is not a map of image path to sha256; the file is damaged")
    return rec


def _place(src: Path, dst: Path, made: set[Path]) -> None:
    """``src`` at ``dst`` without reading it again: a hard link (PNGs are only ever replaced, never
    rewritten in place, so sharing the file is safe), else a copy (another file system)."""
    if dst.parent not in made:
        dst.parent.mkdir(parents=True, exist_ok=True)
        made.add(dst.parent)
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        if os.path.samefile(src, dst):
            return
    except OSError:
        pass
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class _Placer:
    """Puts each shard's referenced images into the merged folder, each distinct file once.

    Every file is read once, to check it against the sha256 its shard's report.json recorded (a file
    changed after its run is an error that names it; a report without the record is hashed as found),
    and then hard-linked (or copied) into place. Two shards holding different files under one name:
    the second goes to ``shard<N>/``.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.placed: dict[str, str] = {}  # target -> sha256
        self.missing: list[str] = []
        self.made: set[Path] = set()

    def shard(self, src_dir: Path, shard: int, recorded: dict[str, str], name: str) -> Any:
        done: dict[str, str | None] = {}

        def place(rel: str) -> str | None:
            if rel not in done:
                done[rel] = self._one(src_dir, rel, shard, recorded, name)
            return done[rel]

        return place

    def _one(self, src_dir: Path, rel: str, shard: int, recorded: dict[str, str], name: str) -> str | None:
        clean = safe_relpath(rel)
        src = (src_dir / clean) if clean else None
        try:
            digest = file_sha256(src) if src is not None else None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            digest = None
        if src is None or digest is None:
            self.missing.append(f"{src_dir}: {rel}")
            return None
        want = recorded.get(rel)
        if want is not None and want != digest:
            raise ReportError(f"{src}: its sha256 is {digest[:16]}..., but {name} recorded {want[:16]}... for "
                              f"{rel!r}: the image was changed or damaged after its run; rerun that shard")
        for target in (clean, f"shard{shard}/{clean}"):
            if self.placed.get(target) == digest:
                return target
            if target not in self.placed:
                _place(src, self.out / target, self.made)
                self.placed[target] = digest
                return target
        raise ReportError(f"{src_dir}: {rel}: two different images claim {clean!r} in one shard")


def merge_reports(paths: list[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> Path:
    """Merge report dirs (or report.json files) into ``out_dir``; returns the new report.json path.

    Every result appears once (identical duplicates collapse, conflicting ones raise ReportError),
    referenced PNGs are checked against the sha256 their shard recorded and hard-linked (copied across
    file systems; relinked under ``shard<N>/`` when two shards hold different files under one name), the
    runs must share a model hash, and the result is complete only when every input was.
    Referenced images that are missing are listed under the top-level key ``missing_images``.
    """
    if not paths:
        raise ReportError("merge_reports: no reports given; pass the report dirs of the shards")
    out = Path(out_dir)
    dirs = [Path(p) if Path(p).is_dir() else Path(p).parent for p in paths]
    docs = [load_report(p) for p in paths]
    run = merge_runs([d["run"] for d in docs], [str(p) for p in paths])
    placer = _Placer(out)
    lists = []
    for shard, (src_dir, doc, name) in enumerate(zip(dirs, docs, paths)):
        place = placer.shard(src_dir, shard, _recorded_hashes(doc, str(name)), str(name))
        rows = doc["results"]  # fresh dicts from load_report, owned here: their image paths are rewritten
        for r in rows:
            for loc, rel in image_refs(r):
                set_at(r, loc, place(rel))
        lists.append(rows)
    results = merge_results(lists)
    extra = _merge_extra(docs)
    extra.pop("missing_images", None)
    if placer.missing:
        extra["missing_images"] = sorted(set(placer.missing))
    run["merged_from"] = [str(p) for p in paths]
    return write_report(out, run, results, complete=all(d["complete"] for d in docs), extra=extra,
                        image_hashes=placer.placed)
