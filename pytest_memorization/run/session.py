"""The state of one memorization run: settings, loaded models and metrics, collected results.

Models load once per session (per xdist worker) and per distinct source; metrics are
built once per (name, options). Results reach the session from test reports, so under
pytest-xdist the controller sees every worker's results exactly once.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ..config.settings import DEFAULT_METRICS, Settings
from ..errors import MemorizationConfigError
from ..model.loading import ModelSource
from ..reports.rowlog import RowLog


class MemorizationSession:
    def __init__(self, settings: Settings, *, verbosity: int = 0) -> None:
        self.settings = settings
        self.verbosity = verbosity
        self.models: dict[ModelSource, Any] = {}
        self.metrics: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        # typed rows, from every item (and every xdist worker), spooled to disk: memory stays flat
        self.results: RowLog = RowLog()
        self.runs: dict[str, dict[str, Any]] = {}  # model content hash -> run info
        self.notes: list[str] = []
        self.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.works_written: dict[str, str | None] = {}  # work id -> its file in the report
        self.checks_seen = 0  # memorization items that reached their call phase (controller side)
        self.metric_directions: dict[str, str] = {}
        self.stale: list[str] = []  # baseline entries no item ran for (set at session finish)
        self.complete = True  # False when the run was interrupted, crashed or could not collect
        self.incomplete: list[str] = []  # why the run is incomplete (crashes, internal/collection errors)
        self.running: set[str] = set()  # items started and not finished (controller side)
        self.known_items: set[str] | None = None  # collected node ids, deselected ones included (None: unknown)
        self.deselected: set[str] = set()
        self.uncond_noise: dict[str, dict[Any, Any]] = {}  # model fingerprint -> zero_step's shared passes
        self._cache: Any = None
        self._cache_marked = False
        self._metric_device: str | None = None
        self.progress: Any = None  # run.progress.Progress, set at configure
        self.durations: dict[str, float] = {}  # node id -> seconds of setup + call (controller side)
        from ..judging.baselines import BaselineStore, directions_of

        self.baselines = BaselineStore(settings, self.run_info, lambda: bool(self.runs), lambda: directions_of(self))

    # -- models ---------------------------------------------------------------------------
    def source(self, pretrained: str | None, *, config: str | None = None, lora: str | None = None,
               lora_scale: float | None = None, generator: str | None = None,
               loras: list[tuple[str, float]] | None = None, **conventions: str | None) -> ModelSource:
        """``conventions``: variant, revision, subfolder, dtype (None: the command line's or ini's)."""
        s = self.settings
        if generator:
            if lora or loras:
                raise MemorizationConfigError(
                    f"a LoRA ({lora}) and the LoRA gate are not applicable to an external generator ({generator}): "
                    "they need the model's weights. Remove lora / gate, or test the diffusers checkpoint itself")
            return ModelSource(pretrained=f"generator:{generator}", generator=generator)
        if not pretrained:
            raise MemorizationConfigError(
                "no model given: pass --memorization-model PATH (or ini memorization_model, or "
                "pretrained = \"...\" in the manifest's [model])")
        picked = {k: conventions.get(k) or getattr(s, k) for k in ("variant", "revision", "subfolder", "dtype")}
        return ModelSource(
            pretrained=str(pretrained), config=config, lora=None if loras else lora,
            lora_scale=float(lora_scale if lora_scale is not None else s.lora_scale),
            device=s.device, allow_pickle=s.allow_pickle, allow_download=s.allow_download,
            allow_outside_root=s.allow_outside_root, loras=tuple((str(p), float(w)) for p, w in loras or ()),
            lora_base_check=s.lora_base_check, **picked)

    def model_path(self, name: str, manifest_value: str | None = None) -> str | None:
        """``model``, ``config`` or ``lora``: command line / ini beat the manifest; an existing local
        path resolves against the rootdir, anything else (a hub id) is kept as written."""
        s = self.settings
        if name not in s.explicit:
            return manifest_value
        p = s.path(name)
        return str(p) if p is not None and p.exists() else s.raw(name)

    def model(self, source: ModelSource) -> Any:
        if source not in self.models and source.generator:
            from ..model.hook import GeneratorModel

            self.models[source] = GeneratorModel.load(source.generator, search_path=self.settings.rootdir,
                                                      batch_size=self.settings.batch_size)
        if source not in self.models:
            from ..model.generation import MemorizationModel
            from ..model.loading import load

            pipe, info = load(source)
            self.models[source] = MemorizationModel(
                pipe, info, batch_size=self.settings.batch_size, cache_dir=self.cache_dir)
            _freeze_heap()
        if self.progress is not None:
            self.models[source].on_images = self.progress.on_images
        return self.models[source]

    def generation_counts(self) -> tuple[int, int]:
        """Images read from the generation cache and images generated so far, over every model."""
        models = list(self.models.values())
        return sum(m.cache_hits for m in models), sum(m.generated for m in models)

    @property
    def cache_dir(self) -> Path:
        """The cache folder, with a ``.gitignore`` of ``*`` written inside it (never committed)."""
        path = self.settings.path("cache_dir")
        assert path is not None
        if not self._cache_marked:
            from .._io import mark_cache_dir

            mark_cache_dir(path)
            self._cache_marked = True
        return path

    # -- metrics --------------------------------------------------------------------------
    def metric(self, name: str, **options: Any) -> Any:
        key = (name, tuple(sorted(options.items())))
        if key not in self.metrics:
            from ..metrics import get_metric

            self.metrics[key] = get_metric(name, **self.metric_options(name), **options)
            _freeze_heap()
        return self.metrics[key]

    @property
    def metric_device(self) -> str:
        """Metrics run on the model's GPU when it has one (aligned scoring at 512 px takes
        CPU seconds per image x work), else on the CPU; `--memorization-device cpu` keeps them there."""
        if self._metric_device is None:
            from ..errors import CheckpointError
            from ..model.loading import resolve_device

            try:
                device = resolve_device(self.settings.device)
            except CheckpointError:  # reported where the model loads; score on the CPU meanwhile
                device = "cpu"
            self._metric_device = device if device.startswith("cuda") else "cpu"
        return self._metric_device

    def metric_options(self, name: str) -> dict[str, Any]:
        s = self.settings
        opts: dict[str, Any] = {}
        if self.metric_device != "cpu":
            opts["device"] = self.metric_device
        if s.weights_dir:
            opts["weights_dir"] = str(s.path("weights_dir"))
        if name in ("tiled_l2", "ssim"):
            opts["align"] = s.align
        elif name == "lpips":
            opts["net"] = s.lpips_net
        elif name == "clip":
            opts.update(model=s.clip_model, pretrained=s.clip_pretrained)
        elif name == "sscd" and s.sscd_model:
            opts["path"] = str(s.path("sscd_model"))
        return opts

    def metrics_for(self, names: list[str] | None, thresholds: dict[str, float]) -> dict[str, Any]:
        """The metrics to score: the option or manifest list, else those with a threshold, else the defaults."""
        chosen = self.settings.pick("metrics", names)
        if not chosen:
            chosen = list(dict.fromkeys([*DEFAULT_METRICS, *thresholds]))
        return {n: self.metric(n) for n in chosen}

    @property
    def reference_cache(self) -> Any:
        if self._cache is None:
            from ..metrics.cache import ReferenceCache

            self._cache = ReferenceCache(self.cache_dir / "references")
        return self._cache

    # -- results --------------------------------------------------------------------------
    def record_run(self, model: Any, extra: dict[str, Any]) -> None:
        info = model.info
        self._merge({
            "model": info.source, "model_hash": info.content_hash, "model_kind": info.kind,
            "lora": info.lora, "lora_hash": info.lora_hash, "lora_scale": info.lora_scale,
            "device": info.device, "dtype": info.dtype, "pipeline": info.pipeline_class,
            "family": info.extra.get("family"), **extra,
            **{k: info.extra[k] for k in ("variant", "revision", "subfolder", "loras", "lora_base_model") if k in info.extra}})

    def merge_run(self, carried: dict[str, Any]) -> None:
        """Run info and metric directions carried by a test report (from this process or an xdist worker)."""
        self.metric_directions.update(carried.get("directions", {}))
        for run in carried.get("runs", []):
            self._merge(run)

    def _merge(self, extra: dict[str, Any]) -> None:
        run = self.runs.setdefault(f"{extra.get('model_hash')}{extra.get('lora_hash')}", {})
        for k, v in extra.items():
            if k == "metrics":
                run.setdefault("metrics", {}).update(v)
            elif k == "seeds":
                run["seeds"] = sorted(set(run.get("seeds", [])) | set(v))
            else:
                run.setdefault(k, v)

    def add_results(self, results: list[dict[str, Any]]) -> None:
        """Rows as a test report carries them (JSON, so they cross xdist's wire), spooled as they came;
        reading ``self.results`` types them again losslessly (``ImageResult.from_json``)."""
        self.results.extend(results)

    def run_info(self) -> dict[str, Any]:
        import importlib.metadata as md

        versions = {}
        for pkg in ("torch", "diffusers", "transformers", "open_clip_torch", "lpips", "pytest-memorization"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
        runs = list(self.runs.values())
        merged: dict[str, Any] = dict(runs[0]) if len(runs) == 1 else {"models": runs}
        merged.update(versions=versions, started=self.started,
                      finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        if self.notes:
            merged["notes"] = self.notes
        return merged


def _freeze_heap() -> None:
    """Move every object alive now (torch, diffusers, open_clip, the weights: millions of objects) out of
    the garbage collector's reach. Later full collections, automatic ones during generation and pytest's
    two at exit (unraisableexception), then scan only what the tests create. bench/overhead.py: about
    3 s less CPU per run. Garbage cycles that exist at this moment are never freed (a few KB)."""
    import gc

    gc.freeze()
