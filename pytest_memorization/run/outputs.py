"""From finished test items to the session's outputs: PNGs, junit properties, report.json,
index.html, baselines, the GitHub step summary and the terminal summary.

Per item (on the worker that ran it): save the images, then attach the result rows to the
test report, so they reach the controller under pytest-xdist. Per session (controller
only): write everything once, from every worker's rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ..errors import MemorizationConfigError
from ..judging.baselines import directions_of
from ..records import ImageResult
from .properties import add_properties
from .session import MemorizationSession
from .state import RESULTS_KEY, WORKS_KEY


def staging_dir(session: MemorizationSession) -> Path | None:
    """Where this run writes its report until it is finished: a sibling of the report folder, which
    then replaces it in one move (``_io.replace_dir``), so a report never mixes two runs."""
    d = session.settings.path("report")
    return None if d is None else d.parent / f".{d.name}.partial"


def prepare(session: MemorizationSession) -> None:
    """Controller only, before any item: check the output paths' types, start a fresh staging folder."""
    import shutil

    s = session.settings
    for name, want in (("report", "folder"), ("save", "file"), ("compare", "file")):
        p = s.path(name)
        if p is None:
            continue
        wrong = p.is_file() if want == "folder" else p.is_dir()
        if wrong:
            raise MemorizationConfigError(
                f"--memorization-{name} {s.raw(name)}: {p} is a {'file' if want == 'folder' else 'folder'}, "
                f"expected a {want}" + (" (the report is a folder: report.json, index.html, images/)"
                                        if name == "report" else " (a baseline JSON file)"))
    staging = staging_dir(session)
    if staging is not None:
        from . import report_dir

        report_dir.check(s, Path(os.getcwd()), s.path("report"), staging)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
            report_dir.mark(staging)
        except OSError as e:
            raise MemorizationConfigError(f"--memorization-report {s.raw('report')}: cannot create {staging}: "
                                          f"{e}; choose a writable folder") from None


def finish_item(session: MemorizationSession, item: pytest.Item, report: pytest.TestReport) -> None:
    results = item.stash.get(RESULTS_KEY, [])
    if not results:
        return
    try:
        save_images(session, item, results)
    except OSError as e:  # a full disk, a read-only folder: the report cannot be complete
        for r in results:
            r.image = None
        report.memorization_incomplete = (  # type: ignore[attr-defined]
            f"could not write the images of {item.nodeid}: {e}; free space or choose another --memorization-report")
    add_properties(item, results, session.settings.path("report"))
    report.memorization_results = [r.to_json() for r in results]  # type: ignore[attr-defined]
    # The run info (model hash, device, dtype, metric versions) and metric directions live in this
    # process's session; under pytest-xdist the controller has neither, so they travel with the report.
    report.memorization_run = {"runs": list(session.runs.values()),  # type: ignore[attr-defined]
                               "directions": directions_of(session)}
    for r in results:  # saved and serialised: the pixels are not needed again (1024 px: 12 MB an image)
        r.pixels = None
        r.extra.pop("base_pixels", None)
    # The rows now travel as JSON on the report (the session keeps them from there): the item, which
    # pytest keeps until the end of the run, lets go of its own copies (the keys too: an empty list
    # and dict per item are still memory).
    for key in (RESULTS_KEY, WORKS_KEY):
        if key in item.stash:  # an item that ended before any row was attached has neither
            del item.stash[key]
    if getattr(item, "outcome", None) is not None:
        item.outcome = None  # type: ignore[attr-defined]
    give_back_freed_memory()


_TRIM: list[Any] = []


def give_back_freed_memory() -> None:
    """Return the heap memory freed by this item (its pixels, the scoring buffers) to the system.

    glibc keeps freed heap pages for reuse, and the long-lived rows allocated between an item's large
    transient buffers keep it from shrinking the heap: without this, resident memory grew by ~170 KiB
    per item (32 px images, 100 works) although the objects alive grew by ~16 KiB. ``malloc_trim`` gives
    the free pages back (~0.1 ms); a no-op where the C library has no ``malloc_trim`` (macOS, musl)."""
    if not _TRIM:
        import ctypes
        import ctypes.util

        try:
            _TRIM.append(getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), "malloc_trim", None))
        except OSError:
            _TRIM.append(None)
    if _TRIM[0] is not None:
        _TRIM[0](0)


def _heat_maps(results: list[Any], work_tensors: dict[str, Any]) -> dict[int, Any]:
    """The 4 x 4 tile RMS of each row's image against its nearest work (the report's heat map), one
    batch per work and image size: {id(row): grid}."""
    import torch

    from ..metrics.tiled_l2 import tile_rms_batch

    batches: dict[tuple[str, tuple[int, ...]], list[Any]] = {}
    for r in results:
        if r.pixels is not None and r.image is None and r.work in work_tensors:
            batches.setdefault((r.work, tuple(r.pixels.shape)), []).append(r)
    out: dict[int, Any] = {}
    for (work, _), rows in batches.items():
        grids = tile_rms_batch(torch.stack([r.pixels for r in rows]), work_tensors[work])
        out.update((id(r), g) for r, g in zip(rows, grids))
    return out


def save_images(session: MemorizationSession, item: pytest.Item, results: list[Any]) -> None:
    """Write each generated image (and LoRA-gate base image) as a PNG, once; the works per the
    --memorization-report-works mode. No-op without --memorization-report."""
    report_dir = staging_dir(session)
    if report_dir is None:
        return
    from ..reports.pngs import generated_png_path, save_image, write_work_images

    # manifest items: the plan's loaded works; Python tests: those given to assert_not_memorized
    works = item.works() if hasattr(item, "works") else list(item.stash.get(WORKS_KEY, {}).values())
    work_tensors = {w.id: w.image for w in works}
    kind_of = {w.id: w.kind for w in works}
    # one thumbnail per work *image*: two manifests may give the same id to different works
    key_of = {w.id: _work_key(w) for w in works}
    written = session.works_written
    todo = {key_of[w.id]: w.image for w in works if key_of[w.id] not in written}
    if todo:
        written.update(write_work_images(report_dir, todo, session.settings.report_works))
    omit = session.settings.report_works == "omit"
    heat = _heat_maps(results, work_tensors)
    for r in results:
        if omit and ("img2img" in r.extra or r.verdict in ("fail", "warn")):
            # an img2img output or a (near-)copy shows the work itself: omit means no work pixels
            r.image = None
            r.extra.pop("base_pixels", None)
            r.extra["image_omitted"] = "report-works=omit: this image reproduces or starts from the work"
            r.work_image = written.get(key_of.get(r.work, "")) if r.work is not None else None
            continue
        tag = f"s{r.extra['img2img']['strength']:g}" if "img2img" in r.extra else ""
        if r.pixels is not None and r.image is None:
            r.image = generated_png_path(report_dir, r.item, r.seed, tag)
            save_image(r.pixels, report_dir / r.image, atomic=False)  # the staging folder is moved whole
            if id(r) in heat:  # the heat map of where the image matches its nearest work
                r.extra["tiles"] = {"grid": 4, "rms": heat[id(r)]}
                if "local_copy" in r.scores:  # where the nearest work sits inside the image (a box)
                    r.extra["local_copy"] = session.metric("local_copy").locate(r.pixels, work_tensors[r.work],
                                                                                kind=kind_of[r.work])
        base = r.extra.pop("base_pixels", None)
        if base is not None and "lora_gate" in r.extra:
            rel = generated_png_path(report_dir, r.item, r.seed, tag + "base")
            save_image(base, report_dir / rel, atomic=False)
            r.extra["lora_gate"]["base_image"] = rel
        if r.work is not None:
            r.work_image = written.get(key_of.get(r.work, ""))


def _work_key(work: Any) -> str:
    """A work's id and the start of its image's sha256 (of the file, else of the pixels)."""
    import hashlib

    sha = getattr(work, "sha256", None)
    if not sha:
        from ..metrics.cache import tensor_bytes

        sha = hashlib.sha256(tensor_bytes(work.image)).hexdigest()
    return f"{work.id}@{sha[:16]}"


def finish_session(state: MemorizationSession, session: pytest.Session, exitstatus: int) -> None:
    """Write the run's outputs once (controller only). Fail closed when nothing was checked."""
    from ..judging.baselines import save_baseline

    s = state.settings
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    reasons = incomplete_reasons(state, exitstatus, session)
    complete = not reasons
    run = state.run_info()
    base = base_image_counts(state.results)
    if base is not None:
        run["lora_gate_base_images"] = base
    images = image_counts(state.results)
    if images is not None:
        run["generated_images"] = images
    stopped = early_exits(state.results)
    if stopped is not None:
        run["early_exit"] = stopped
    errored = sorted({r.item for r in state.results if r.verdict == "error"})
    state.complete = complete  # the terminal summary (printed after this) says INCOMPLETE and why
    state.notes.extend(f"INCOMPLETE: {why}" for why in reasons)
    state.stale = state.baselines.stale(state.results, state.known_items)
    report_dir, staging = s.path("report"), staging_dir(state)
    failed_write = False
    if report_dir is not None and staging is not None and (state.results or not interrupted):
        from .._io import replace_dir  # a run that never started writes nothing
        from ..reports.writer import write_report

        extra: dict[str, Any] = {"stale_baseline_entries": state.stale} if state.stale else {}
        if state.durations:  # per item, for --memorization-shard-durations of a later run
            from .sharding import DURATIONS_KEY

            extra[DURATIONS_KEY] = dict(sorted(state.durations.items()))
        if reasons:
            extra["incomplete_reasons"] = reasons
        try:
            staging.mkdir(parents=True, exist_ok=True)
            write_report(staging, run, state.results, complete=complete, extra=extra or None)
            from .report_dir import MARKER, ours

            if not ours(report_dir):  # something else took the folder during the run: never delete it
                raise OSError(f"{report_dir} was not written by pytest-memorization (no {MARKER}); the report "
                              f"is left in {staging}")
            (staging / MARKER).touch()
            replace_dir(staging, report_dir)
        except OSError as e:
            failed_write = True
            state.notes.append(f"ERROR: could not write the report {report_dir}: {e}; free space or choose "
                               "another --memorization-report. The previous report, if any, is left as it was.")
    elif staging is not None:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    if s.lora_card_result and state.results:
        _card_results(state, run, complete)
    writes_baseline = s.save or s.update_baseline or s.prune_baseline
    if writes_baseline and (not complete or errored or not state.results or failed_write):
        why = f"{len(errored)} item(s) errored" if errored else "no item reported results" if not state.results \
            else "the report could not be written" if failed_write else "the run is incomplete"
        state.notes.append(f"ERROR: baseline not written: {why}, so it would be wrong. Fix that and run again.")
        failed_write = failed_write or not interrupted
    elif writes_baseline:
        target = s.path("save") if s.save else s.path("compare")
        try:
            dropped = save_baseline(target, state, run, add=bool(s.save or s.update_baseline), prune=s.prune_baseline)
            if dropped:
                state.notes.append(f"pruned {dropped} stale baseline entr{'y' if dropped == 1 else 'ies'} from {target}")
        except OSError as e:
            failed_write = True
            state.notes.append(f"ERROR: could not write the baseline: {e}; free space or choose another path")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file and state.results:
        from ..reports.github import append_step_summary

        try:
            append_step_summary(summary_file, run, state.results, report_dir, complete=complete,
                                report_url=s.report_url if report_dir is not None else None)
        except OSError as e:
            state.notes.append(f"ERROR: could not append to $GITHUB_STEP_SUMMARY: {e}")
    if (failed_write or reasons) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not state.checks_seen and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) \
            and (s.required or s.manifest):
        state.notes.append("ERROR: --memorization was given but no memorization check ran: every item was skipped, "
                           "deselected or missing. The run certifies nothing.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _card_results(state: MemorizationSession, run: dict[str, Any], complete: bool) -> None:
    """--memorization-lora-card-result: the LoRA gate's result as a section of each LoRA's model card."""
    from ..reports.card_section import write_card_results

    for one in run.get("models") if isinstance(run.get("models"), list) else [run]:
        try:
            state.notes.extend(write_card_results(one, state.results, complete))
        except (OSError, ValueError) as e:
            state.notes.append(f"ERROR: could not write the LoRA gate's result into the model card: {e}")


def incomplete_reasons(state: MemorizationSession, exitstatus: int, session: pytest.Session | None = None) -> list[str]:
    """Why this run's report cannot say PASS: interrupted, stopped early (-x, --maxfail) before every item
    ran, crashed items, internal or collection errors."""
    reasons = list(dict.fromkeys(state.incomplete))
    stopped = session is not None and (session.shouldfail or session.shouldstop)
    if stopped and session is not None:
        ran = {r.item for r in state.results}
        left = [i.nodeid for i in session.items if i.get_closest_marker("memorization") and i.nodeid not in ran]
        if left or not session.items:  # an xdist controller collects nothing: what its workers skipped is unknown
            reasons.append(f"pytest stopped early ({stopped}): "
                           + (f"{len(left)} memorization item(s) did not run: {', '.join(left[:5])}" if left
                              else "the items after the stop did not run"))
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        reasons.append("the run was interrupted")
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        reasons.append("pytest stopped with an internal error")
    unfinished = sorted(state.running)
    if unfinished:
        reasons.append(f"{len(unfinished)} item(s) started but never finished (a crash or a killed worker): "
                       + ", ".join(unfinished[:5]))
    return reasons


def summary_lines(state: MemorizationSession) -> list[str]:
    from ..reports.terminal import summary_lines as lines

    complete = state.complete
    out = lines(state.run_info(), state.results, state.settings.path("report"), complete=complete) \
        if state.results else []
    images = image_counts(state.results)
    if images is not None:
        where = state.cache_dir / "generations" if state.settings.generation_cache else "cache off"
        out.append(f"images: {images['generated']} generated, {images['from_cache']} from the cache ({where})")
    stopped = early_exits(state.results)
    if stopped is not None:
        out.append(f"early exit: {stopped['stopped']} of {stopped['images']} images stopped early (their x0 was "
                   f"clearly far from every work; extra.early_exit in the report)"
                   + (f"; not applied to {stopped['not_applied']} images: {stopped['why_not']}"
                      if stopped["not_applied"] else ""))
    base = base_image_counts(state.results)
    if base is not None:
        out.append(f"LoRA gate base images: {base['from_cache']} from the cache, {base['generated']} generated "
                   f"({state.cache_dir / 'generations'})")
    retries = sum(m.oom_retries for m in state.models.values())
    if retries:
        out.append(f"out of memory {retries} time(s): the batch size was halved and the batch retried")
    if state.stale:
        out.append(f"stale baseline entries (their item's content changed or it no longer exists; drop them with "
                   f"--memorization-prune-baseline): {', '.join(state.stale)}")
    out.extend(state.notes)
    return out


def image_counts(results: list[ImageResult]) -> dict[str, int] | None:
    """Every image the items needed (gate bases, amplified and img2img ones included): how many came
    from the generation cache and how many were generated; counted per item from the rows, so it works
    under pytest-xdist. None when no item generated anything."""
    per_item: dict[str, tuple[int, int]] = {}
    for r in results:
        counts = r.extra.get("generation_counts")
        if isinstance(counts, dict):
            per_item[r.item] = (int(counts.get("from_cache", 0)), int(counts.get("generated", 0)))
    if not any(c or g for c, g in per_item.values()):
        return None
    return {"from_cache": sum(c for c, _ in per_item.values()), "generated": sum(g for _, g in per_item.values())}


def early_exits(results: list[ImageResult]) -> dict[str, Any] | None:
    """Images (LoRA-gate base images included) that stopped early, of those scored; None without early exit."""
    stopped = images = skipped = 0
    why: list[str] = []
    for r in results:
        extra = r.extra
        mark = extra.get("early_exit")
        if not isinstance(mark, dict):
            continue
        gate = extra.get("lora_gate") if isinstance(extra.get("lora_gate"), dict) else None
        n = 1 + (gate is not None)
        images += n
        stopped += bool(mark.get("stopped")) + bool(gate and "base_early_exit" in gate)
        if "not_applied" in mark:
            skipped += n
            why.append(str(mark["not_applied"]))
    if not images:
        return None
    return {"stopped": stopped, "images": images, "not_applied": skipped, "why_not": "; ".join(dict.fromkeys(why))}


def base_image_counts(results: list[ImageResult]) -> dict[str, int] | None:
    """The LoRA gate's base-model images: how many came from the generation cache and how many were
    generated, counted per item from the rows (so it works under pytest-xdist); None without the gate."""
    per_item: dict[str, tuple[int, int]] = {}
    for r in results:
        gate = r.extra.get("lora_gate")
        if isinstance(gate, dict):
            per_item[r.item] = (int(gate.get("from_cache", 0)), int(gate.get("base_generated", 0)))
    if not per_item:
        return None
    return {"from_cache": sum(c for c, _ in per_item.values()), "generated": sum(g for _, g in per_item.values())}
