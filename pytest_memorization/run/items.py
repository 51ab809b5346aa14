"""Manifests as pytest items: one per work x prompt (seeds inside), per paraphrase, per
img2img work, per prompt-only canary and, under the LoRA gate, per model-card prompt. Ids are
pytest-selectable (no ``::`` inside a name): ``memorization.toml::astronaut[0]``, ``astronaut[0-p1]``
(paraphrase 1 of prompt 0), ``astronaut[0-lora1]`` and ``card[lora1-instance]`` (LoRA 1 of several alone,
under the LoRA gate), ``astronaut[img2img]``, ``canary[id]``, ``canary[id-p1]``, ``card[instance]``,
``card[class]``, ``card[widget-1]`` and ``calibrate``.

Setup loads, generates and scores (a run that cannot evaluate is an ERROR); the call
phase delivers the verdict (a copy is a FAILURE). Without ``--memorization`` the items
are still collected and shown as skipped, and nothing heavy is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..errors import (
    BaselineError,
    BrokenOutputError,
    MemorizationConfigError,
    MemorizationError,
    MetricFailedError,
)
from ..manifest.load import Manifest, load_manifest
from ..manifest.policy import apply_policy

CLEAN_ERRORS = (MemorizationError, MemorizationConfigError, BrokenOutputError, MetricFailedError, BaselineError)


def error_row(nodeid: str, prompt: str, error: BaseException) -> Any:
    """A report row for an item that could not be evaluated (seed -1: nothing was generated), judged
    like every other row."""
    from ..judging.judge import Measured, Rules, judge

    return judge(Measured.failed(nodeid, prompt, error), Rules({})).results[0]


class ManifestFile(pytest.File):
    """A ``memorization.toml``; its items share one plan (model, seeds, metrics)."""

    def collect(self) -> Any:
        from .state import session_of

        session = session_of(self.config)
        enabled = session is not None
        try:
            from .state import settings_of

            from_options = self._model_from_options()
            manifest = load_manifest(self.path, allow_outside_root=self._allow_outside(), check_images=enabled,
                                     require_model=not from_options,
                                     offline_hub=not from_options and not settings_of(self.config).allow_download)
            if enabled:  # the policy (or the built-in floors), applied once: docs/security.md
                manifest = apply_policy(manifest, settings_of(self.config))
        except MemorizationConfigError as e:
            raise self.CollectError(str(e)) from None
        if manifest.canaries and not manifest.works and not manifest.detectors:
            raise self.CollectError(
                f"{self.path}: its [[canary]] prompts would check nothing: a canary is compared with every "
                "[[work]] of its manifest and run through its [detectors], and this manifest has neither. "
                "Add the works the canaries must not copy, or a [detectors] table")
        self.manifest = manifest
        self._plan: Any = None
        alone = self._loras_alone(manifest) if enabled else []
        for work in manifest.works:
            for p, prompt in enumerate(work.prompts):
                yield PromptItem.from_parent(self, name=f"{work.id}[{p}]", prompt=prompt, work=work.id)
                for k in range(len(alone)):  # under the LoRA gate, several LoRAs: each one alone too
                    yield PromptItem.from_parent(self, name=f"{work.id}[{p}-lora{k + 1}]", prompt=prompt,
                                                 work=work.id, lora=k)
                for k, para in enumerate(work.paraphrases[p] if p < len(work.paraphrases) else []):
                    yield PromptItem.from_parent(self, name=f"{work.id}[{p}-p{k + 1}]", prompt=para, work=work.id)
            if work.img2img is not None:
                yield Img2ImgItem.from_parent(self, name=f"{work.id}[img2img]", prompt=work.prompts[0], work=work.id)
        for canary in manifest.canaries:
            yield CanaryItem.from_parent(self, name=f"canary[{canary.id}]", prompt=canary.prompt, work=None)
            for k, para in enumerate(canary.paraphrases):
                yield CanaryItem.from_parent(self, name=f"canary[{canary.id}-p{k + 1}]", prompt=para, work=None)
        if enabled:
            yield from self._card_items(manifest)
        if enabled and self.config.getoption("memorization_calibrate"):
            yield CalibrateItem.from_parent(self, name="calibrate", prompt="", work=None)

    def _card_items(self, manifest: Manifest) -> Any:
        """Under the LoRA gate: the LoRA's model-card prompts as items, ids ``card[instance]`` etc."""
        from ..manifest.card import read_card
        from .state import session_of

        session = session_of(self.config)
        s = session.settings
        lora = session.model_path("lora", manifest.model.lora)
        several = self._loras_alone(manifest)  # several LoRAs: each card's prompts with its LoRA alone
        if not (s.lora_gate or manifest.model.gate == "lora") or not (lora or several) or not s.lora_card_canaries:
            return
        known = {p for w in manifest.works for p in w.prompts}
        for k, path in enumerate(several or [lora]):
            try:
                card = read_card(path)
            except MemorizationConfigError as e:
                raise self.CollectError(str(e)) from None
            if card is None:
                continue
            for param, prompt in card.prompts:
                if prompt not in known:
                    yield CardItem.from_parent(self, name=f"card[{f'lora{k + 1}-' if several else ''}{param}]",
                                               prompt=prompt, work=None, lora=k if several else None,
                                               card={"path": str(card.path), "base_model": card.base_model,
                                                     "kind": param})

    def _loras_alone(self, manifest: Manifest) -> list[str]:
        """Under the LoRA gate with several LoRAs (``loras`` in [model], not replaced by --memorization-lora):
        their paths, one item per LoRA alone (``astronaut[0-lora1]``) beside the item of all together."""
        from .state import settings_of

        s, m = settings_of(self.config), manifest.model
        gate = s.lora_gate or m.gate == "lora"
        return [p for p, _ in m.loras] if gate and m.loras and len(m.loras) > 1 and "lora" not in s.explicit else []

    def _allow_outside(self) -> bool:
        from .state import settings_of

        return bool(settings_of(self.config).allow_outside_root)

    def _model_from_options(self) -> bool:
        from .state import settings_of

        return bool({"model", "generator"} & settings_of(self.config).explicit)

    @property
    def loaded_plan(self) -> Any:
        return self._plan

    def plan(self) -> Any:
        if self._plan is None:
            from .pipeline import plan_for
            from .state import session_of

            self._plan = plan_for(session_of(self.config), self.manifest)
        return self._plan


@functools.cache
def _memorization_mark() -> pytest.MarkDecorator:
    """One marker for every item: ``pytest.mark.memorization`` builds a new one at each use, and pytest
    keeps every item until the run ends."""
    return pytest.mark.memorization


class MemorizationItem(pytest.Item):
    def __init__(self, *, prompt: str, work: str | None, **kwargs: Any) -> None:
        if "nodeid" not in kwargs and kwargs.get("parent") is not None:
            # Spelled out, so pytest >= 9.2 parses "astronaut[0]" as name + params, as it parses the
            # ids it reads back from --lf's cache and the command line (else --lf finds no match).
            kwargs["nodeid"] = f"{kwargs['parent'].nodeid}::{kwargs['name']}"
        super().__init__(**kwargs)
        self.prompt = prompt
        self.work = work
        self.add_marker(_memorization_mark())
        self.outcome: Any = None

    @property
    def manifest_file(self) -> ManifestFile:
        assert isinstance(self.parent, ManifestFile)
        return self.parent

    def works(self) -> list[Any]:
        """The protected works this item's manifest loaded (empty before its plan ran)."""
        plan = self.manifest_file.loaded_plan
        return plan.works if plan is not None else []

    kind = "item"

    def measure(self) -> Any:  # overridden: a judging.judge.Measured
        raise NotImplementedError

    def expected_images(self) -> int:
        """How many images this item generates (or reads from the cache): the run's progress total.
        From the manifest and settings only: no model, no metric."""
        from .state import settings_of

        s, m = settings_of(self.config), self.manifest_file.manifest
        seeds = len(s.seeds_for(m.model.seeds))
        if self.kind in ("prompt", "card"):
            gate = bool(s.lora_gate or m.model.gate == "lora")
            return seeds * (1 + (1 + bool(s.lora_amplify) if gate else 0))
        if self.kind == "img2img":
            spec = next((w for w in m.works if w.id == self.work), None)
            return seeds * len(spec.img2img.strengths) if spec is not None and spec.img2img else 0
        if self.kind == "canary":
            return seeds
        return 0

    def baseline_key(self) -> str | None:
        """The key of this item's baseline entry: what it checks, not where it sits (see judging.baselines)."""
        from ..judging.baselines import content_key

        mf = self.manifest_file
        manifest, plan = mf.manifest, mf.plan()
        root = manifest.project_root or manifest.path.parent
        try:
            rel = manifest.path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = manifest.path.name
        work = next((w for w in plan.works if w.id == self.work), None)
        spec = next((w for w in manifest.works if w.id == self.work), None)
        strengths = sorted(spec.img2img.strengths) if self.kind == "img2img" and spec and spec.img2img else None
        return content_key(manifest=rel, kind=self.kind, work=self.work, work_sha256=work.sha256 if work else None,
                           prompt=self.prompt, seeds=plan.seeds, settings=plan.gen.key(), extra=strengths)

    def setup(self) -> None:
        from ..judging.baselines import KEY as BASELINE_KEY
        from ..judging.judge import judge
        from .outputs import save_images
        from .state import attach, session_of

        session = session_of(self.config)
        if session is None:
            pytest.skip("memorization checks are off: run pytest --memorization")
        if session.progress is not None:
            session.progress.start_item(self)
        try:
            before = session.generation_counts()
            measured = self.measure()
            key = self.baseline_key()
            after = session.generation_counts()
            counts = {"from_cache": after[0] - before[0], "generated": after[1] - before[1]}
            measured.extras = [{**e, BASELINE_KEY: key, "generation_counts": counts}  # counts: the summary's
                               for e in (measured.extras or [{} for _ in measured.prompts])]
            rules = self.manifest_file.plan().rules.with_waivers(
                {w.id: w.waiver for w in self.works() if w.waiver is not None}, self.work)
            self.outcome = judge(measured, rules, baseline=session.baselines.comparer(self.nodeid, key))
        except Exception as e:  # the report shows the item as an error row, not as nothing
            attach(self, [error_row(self.nodeid, self.prompt, e)])
            raise
        attach(self, self.outcome.results)
        save_images(session, self, self.outcome.results)

    def runtest(self) -> None:
        if self.outcome is not None:  # the warn band, as a pytest warning (as assert_not_memorized does)
            import warnings

            for r in self.outcome.results:
                band = [f.message for f in r.findings if f.rule == "warn_band"]
                if band:
                    warnings.warn(f"memorization warn band: {self.name}: prompt {r.prompt!r}, seed {r.seed}, work "
                                  f"'{r.work}': " + "; ".join(band), UserWarning, stacklevel=2)
            for f in self.outcome.findings:
                if f.rule == "waiver.stale":
                    warnings.warn(f"memorization waiver: {self.name}: {f.message}", UserWarning, stacklevel=2)
        if self.outcome is not None and self.outcome.failures:
            from .state import settings_of

            report_dir = settings_of(self.config).path("report")
            saved = [f"  image saved: {report_dir / r.image} (seed {r.seed})" for r in self.outcome.results
                     if r.verdict == "fail" and r.image and report_dir is not None]
            raise MemorizationError("\n".join([*self.outcome.failures, *saved]))
        if self.outcome is not None:
            from ..judging.waivers import waived

            accepted = waived(self.outcome.results, {w.id: w.waiver for w in self.works() if w.waiver is not None})
            if accepted:  # a reviewed copy: an expected failure, with the waiver's reason
                pytest.xfail("; ".join(accepted))

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, CLEAN_ERRORS):
            kind = type(excinfo.value).__name__
            return f"{kind}: {excinfo.value}" if not isinstance(excinfo.value, MemorizationError) else str(excinfo.value)
        return super().repr_failure(excinfo)

    def _repr_failure_py(self, excinfo: Any, style: Any = None) -> Any:
        # setup errors are rendered here (not by repr_failure): our own errors need no traceback
        if isinstance(excinfo.value, CLEAN_ERRORS):
            return self.repr_failure(excinfo)
        return super()._repr_failure_py(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self._manifest_line(), f"{self.name}: {self.prompt!r}"

    def _manifest_line(self) -> int:
        """The 0-based line of this item's ``[[work]]`` or ``[[canary]]`` (0 for card and calibrate items)."""
        m = getattr(self.parent, "manifest", None)
        if m is None:
            return 0
        if self.work is not None:
            return next((w.line for w in m.works if w.id == self.work), 0)
        if self.kind == "canary":
            return next((c.line for c in m.canaries if self.prompt in (c.prompt, *c.paraphrases)), 0)
        return 0

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        from .state import session_of

        mf = self.manifest_file
        return fn(session_of(self.config), mf.manifest, mf.plan(), self.nodeid, *args)


class PromptItem(MemorizationItem):
    kind = "prompt"

    def __init__(self, *, lora: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lora = lora  # under the LoRA gate with several LoRAs: only this one is on

    def measure(self) -> Any:
        from .pipeline import measure_prompt, measure_prompt_lora_alone

        if self.lora is not None:
            return self._run(measure_prompt_lora_alone, self.prompt, self.lora)
        return self._run(measure_prompt, self.prompt)

    def baseline_key(self) -> str | None:
        key = super().baseline_key()
        return f"{key}|lora{self.lora + 1}" if key is not None and self.lora is not None else key


class CardItem(PromptItem):
    """A prompt from the LoRA's model card, judged like a work prompt under the LoRA gate."""

    kind = "card"

    def __init__(self, *, card: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.card = card

    def measure(self) -> Any:
        measured = super().measure()
        for extra in measured.extras:
            extra["model_card"] = self.card
        return measured


class Img2ImgItem(MemorizationItem):
    kind = "img2img"

    def measure(self) -> Any:
        from .pipeline import measure_img2img

        manifest: Manifest = self.manifest_file.manifest
        return self._run(measure_img2img, next(w for w in manifest.works if w.id == self.work))


class CanaryItem(MemorizationItem):
    kind = "canary"

    def measure(self) -> Any:
        from .pipeline import measure_canary

        return self._run(measure_canary, self.prompt)


class CalibrateItem(MemorizationItem):
    def baseline_key(self) -> str | None:
        return None  # calibration writes its own file; it has no baseline entry

    def setup(self) -> None:
        """Calibration measures ordinary prompts and writes its file; it judges nothing (no rows)."""
        from .detect import calibrate_item
        from .state import session_of

        if session_of(self.config) is None:
            pytest.skip("memorization checks are off: run pytest --memorization")
        self.outcome = self._run(calibrate_item)


def calibration_only(session: Any, items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """``--memorization-calibrate`` runs the calibration alone: the detector items need its threshold, so
    the memorization items are deselected (with a note saying how to gate next); other tests still run."""
    drop = [i for i in items if i.get_closest_marker("memorization") and not isinstance(i, CalibrateItem)]
    if drop:
        session.notes.append(f"--memorization-calibrate: ran only the calibration; {len(drop)} memorization "
                             "item(s) deselected. Gate with the new threshold: pytest --memorization")
    dropped = {id(i) for i in drop}
    return [i for i in items if id(i) not in dropped], drop
