"""From finished test items to the session's outputs: PNGs, junit properties, report.json,
index.html, baselines, the GitHub step summary and the terminal summary.

Per item (on the worker that ran it): save the images, then attach the result rows to the
test report, so they reach the controller under pytest-xdist. Per session (controller
only): write everything once, from every worker's rows.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..judging.baselines import directions_of
from .session import MemorizationSession
from .state import RESULTS_KEY


def finish_item(session: MemorizationSession, item: pytest.Item, report: pytest.TestReport) -> None:
    results = item.stash.get(RESULTS_KEY, [])
    if not results:
        return
    save_images(session, item, results)
    for r in results:
        for metric, value in r.scores.items():
            item.user_properties.append((f"memorization.seed{r.seed}.{metric}", round(value, 6)))
        for name, det in r.detectors.items():
            if isinstance(det, dict) and "score" in det:
                item.user_properties.append((f"memorization.seed{r.seed}.{name}", round(float(det["score"]), 6)))
    report.memorization_results = [r.to_json() for r in results]  # type: ignore[attr-defined]
    # The run info (model hash, device, dtype, metric versions) and metric directions live in this
    # process's session; under pytest-xdist the controller has neither, so they travel with the report.
    report.memorization_run = {"runs": list(session.runs.values()),  # type: ignore[attr-defined]
                               "directions": directions_of(session)}


def save_images(session: MemorizationSession, item: pytest.Item, results: list[Any]) -> None:
    """Write each generated image (and LoRA-gate base image) as a PNG, once; the works per the
    --memorization-report-works mode. No-op without --memorization-report."""
    report_dir = session.settings.path("report")
    if report_dir is None:
        return
    from ..reports.pngs import generated_png_path, save_image, write_work_images

    works = item.works() if hasattr(item, "works") else []  # manifest items: the plan's loaded works
    work_tensors = {w.id: w.image for w in works}
    written = session.works_written
    todo = {k: v for k, v in work_tensors.items() if k not in written}
    if todo:
        written.update(write_work_images(report_dir, todo, session.settings.report_works))
    for r in results:
        tag = f"s{r.extra['img2img']['strength']:g}" if "img2img" in r.extra else ""
        if r.pixels is not None and r.image is None:
            r.image = generated_png_path(report_dir, r.item, r.seed, tag)
            save_image(r.pixels, report_dir / r.image)
        base = r.extra.pop("base_pixels", None)
        if base is not None and "lora_gate" in r.extra:
            rel = generated_png_path(report_dir, r.item, r.seed, tag + "base")
            save_image(base, report_dir / rel)
            r.extra["lora_gate"]["base_image"] = rel
        if r.work is not None:
            r.work_image = written.get(r.work)


def finish_session(state: MemorizationSession, session: pytest.Session, exitstatus: int) -> None:
    """Write the run's outputs once (controller only). Fail closed when nothing was checked."""
    from ..judging.baselines import save_baseline, stale_entries

    s = state.settings
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    run = state.run_info()
    base = base_image_counts(state.results)
    if base is not None:
        run["lora_gate_base_images"] = base
    for r in state.results:
        r.get("extra", {}).pop("base_pixels", None)
    errored = sorted({r["item"] for r in state.results if r["verdict"] == "error"})
    if (s.save or s.update_baseline) and (interrupted or errored):
        state.notes.append(f"ERROR: baseline not written: {len(errored)} item(s) errored or the run was "
                           "interrupted, so it would be incomplete. Fix the errors and run again.")
    elif s.save:
        save_baseline(s.path("save"), state, run)
    elif s.compare and s.update_baseline:
        save_baseline(s.path("compare"), state, run, update=True)
    state.stale = stale_entries(state)
    state.complete = not interrupted  # the terminal summary (printed after this) says INCOMPLETE
    report_dir = s.path("report")
    if report_dir is not None and (state.results or not interrupted):  # a run that never started writes nothing
        from ..reports.writer import write_report

        write_report(report_dir, run, state.results, complete=not interrupted,
                     extra={"stale_baseline_entries": state.stale} if state.stale else None)
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file and state.results:
        from ..reports.github import append_step_summary

        append_step_summary(summary_file, run, state.results, report_dir, complete=not interrupted)
    if not state.checks_seen and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) \
            and (s.required or s.manifest):
        state.notes.append("ERROR: --memorization was given but no memorization check ran: every item was skipped, "
                           "deselected or missing. The run certifies nothing.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def summary_lines(state: MemorizationSession) -> list[str]:
    from ..reports.terminal import summary_lines as lines

    complete = state.complete
    out = lines(state.run_info(), state.results, state.settings.path("report"), complete=complete) \
        if state.results else []
    base = base_image_counts(state.results)
    if base is not None:
        out.append(f"LoRA gate base images: {base['from_cache']} from the cache, {base['generated']} generated "
                   f"({state.cache_dir / 'generations'})")
    retries = sum(m.oom_retries for m in state.models.values())
    if retries:
        out.append(f"out of memory {retries} time(s): the batch size was halved and the batch retried")
    if state.stale:
        out.append(f"stale baseline entries (no item ran for them): {', '.join(state.stale)}")
    out.extend(state.notes)
    return out


def base_image_counts(results: list[dict[str, Any]]) -> dict[str, int] | None:
    """The LoRA gate's base-model images: how many came from the generation cache and how many were
    generated, counted per item from the rows (so it works under pytest-xdist); None without the gate."""
    per_item: dict[str, tuple[int, int]] = {}
    for r in results:
        gate = r.get("extra", {}).get("lora_gate")
        if isinstance(gate, dict):
            per_item[r["item"]] = (int(gate.get("from_cache", 0)), int(gate.get("base_generated", 0)))
    if not per_item:
        return None
    return {"from_cache": sum(c for c, _ in per_item.values()), "generated": sum(g for _, g in per_item.values())}
