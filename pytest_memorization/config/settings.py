"""Resolved settings, typed, and the one set of defaults.

Precedence, in one place: a test's marker > command line > ini > manifest > default. What the
command line or ini set is in ``explicit`` (it beats a manifest value). ``generation`` and
``seeds`` apply it to the manifest's ``[model]`` table, for manifest items and Python tests alike.
Thresholds are the exception: there the strictest wins (``policy``), so a manifest or a marker
can tighten the CI's thresholds but never relax them.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..errors import MemorizationConfigError
from ..metrics import METRIC_NAMES
from ..records import GenerationSettings
from .options import BY_NAME, OPTIONS, OptionError
from .policy import lora_gate_problem, with_floors

DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3)
DEFAULT_METRICS: tuple[str, ...] = ("tiled_l2", "ssim", "local_copy")
DEFAULT_GENERATION = GenerationSettings()  # 25 steps, guidance 7.5, 512 x 512


@dataclass(frozen=True)
class Settings:
    """Every option, resolved and typed (see ``options.OPTIONS`` for help and defaults)."""

    enabled: bool
    required: bool
    model: str | None
    generator: str | None
    config: str | None
    variant: str | None
    revision: str | None
    subfolder: str | None
    lora: str | None
    lora_base_check: bool
    lora_card_result: bool
    lora_scale: float
    lora_gate: bool
    lora_gate_tolerance: dict[str, float]
    lora_card_canaries: bool
    lora_amplify: float
    device: str
    dtype: str
    batch_size: int
    seeds: list[int] | None
    steps: int | None
    metrics: list[str] | None
    threshold: dict[str, float]
    align: bool
    vae_floor: bool
    warn_band: float
    manifest: list[str]
    manifests: str
    report: str | None
    report_works: str
    report_url: str | None
    save: str | None
    compare: str | None
    compare_fail: dict[str, float]
    update_baseline: bool
    prune_baseline: bool
    calibrate: bool
    calibration: str
    calibration_prompts: str | None
    target_fpr: float
    weights_dir: str | None
    lpips_net: str
    clip_model: str
    clip_pretrained: str
    sscd_model: str | None
    cache_dir: str
    generation_cache: bool
    allow_pickle: bool
    allow_download: bool
    allow_outside_root: bool
    early_exit: bool
    progress: str
    progress_every: float
    shard: tuple[int, int] | None
    shard_durations: str | None
    policy: Any = None  # the loaded ``trust.Policy`` (from --memorization-policy or $MEMORIZATION_POLICY), or None
    explicit: frozenset[str] = frozenset()
    rootdir: Path = Path(".")

    def pick(self, name: str, manifest_value: Any = None) -> Any:
        """command line > ini > manifest > default."""
        if name in self.explicit or manifest_value is None:
            return getattr(self, name)
        return manifest_value

    def thresholds(self, manifest: dict[str, float] | None = None) -> dict[str, float]:
        """Strictest wins, metric by metric: the ini/command-line thresholds are floors that the
        manifest can tighten, never relax (``policy.with_floors``)."""
        return with_floors(manifest or {}, self.threshold)

    def path(self, name: str) -> Path | None:
        v = getattr(self, name)
        if v is None:
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else self.rootdir / p

    def raw(self, name: str) -> Any:
        return getattr(self, name)

    def seeds_for(self, manifest_seeds: list[int] | None = None) -> list[int]:
        return list(self.pick("seeds", manifest_seeds) or DEFAULT_SEEDS)

    def generation(self, model: Any = None) -> GenerationSettings:
        """The generation settings for a manifest's ``[model]`` (or none): steps from the command
        line / ini beat the manifest; guidance, size and negative prompt come from the manifest."""
        d = DEFAULT_GENERATION
        if model is None:
            return dataclasses.replace(d, steps=self.steps or d.steps)
        return GenerationSettings(
            steps=self.pick("steps", model.steps) or d.steps,
            guidance_scale=model.guidance_scale if model.guidance_scale is not None else d.guidance_scale,
            height=model.height or d.height, width=model.width or d.width,
            negative_prompt=model.negative_prompt)


def resolve(config: Any) -> Settings:
    """Read every option: command line > ini > default. Raises ``OptionError`` on bad values."""
    from . import trust

    values: dict[str, Any] = {}
    explicit: set[str] = set()
    source = trust.policy_source(config.getoption("memorization_policy", None), Path(config.invocation_params.dir))
    policy = trust.load_policy(source) if source is not None else None
    for opt in OPTIONS:
        cli = config.getoption(f"memorization_{opt.name}", None) if opt.cli else None
        try:
            ini = config.getini(f"memorization_{opt.name}") if opt.ini else None
        except (ValueError, pytest.UsageError) as e:  # a typed (int/float) ini key pytest could not convert
            raise OptionError(opt, str(e).rpartition(": ")[2].strip("'\""), "expected a number (ini key memorization_"
                              f"{opt.name})") from None
        ini = ini if ini not in (None, "", []) else None
        if ini is not None and policy is not None and (problem := trust.ini_problem(policy, opt.name)):
            raise MemorizationConfigError(problem)
        raw = cli if cli not in (None, []) else ini
        if raw is None:
            values[opt.name] = opt.default
            continue
        if opt.name == "threshold":  # merged metric by metric: the command line wins per metric
            merged: dict[str, float] = {}
            for chunk in [*([ini] if ini else []), *(cli or [])]:
                merged.update(opt.parse(opt, chunk))
            values[opt.name] = merged
        elif opt.repeat:
            values[opt.name] = [x for chunk in (raw if isinstance(raw, list) else [raw]) for x in str(chunk).split(",") if x]
        else:
            values[opt.name] = opt.parse(opt, raw)
        explicit.add(opt.name)
    unknown = [m for m in values["metrics"] or [] if m not in METRIC_NAMES]
    if unknown:  # before anything imports torch: a typo is a usage error, not an error per item
        close = [difflib.get_close_matches(m, METRIC_NAMES, n=1) for m in unknown]
        hint = "".join(f" Did you mean '{c[0]}'?" for c in close if c)
        raise MemorizationConfigError(f"--memorization-metrics: unknown metric {', '.join(map(repr, unknown))}; "
                                      f"known metrics: {', '.join(METRIC_NAMES)}.{hint}")
    for flag in ("prune_baseline", "update_baseline"):
        if values[flag] and not (values["save"] or values["compare"]):
            raise MemorizationConfigError(f"--memorization-{flag.replace('_', '-')} writes the baseline file of "
                                          "--memorization-save=FILE or --memorization-compare=FILE: give one")
    if policy is not None:
        trust.apply_to_settings(policy, values, explicit)
        if values["generator"]:
            trust.check_generator(policy, values["generator"])
    values["policy"] = policy
    if values["lora_gate"] and lora_gate_problem(values["lora_scale"]):
        raise OptionError(BY_NAME["lora_scale"], values["lora_scale"], str(lora_gate_problem(values["lora_scale"])))
    return Settings(enabled=bool(config.getoption("memorization")), explicit=frozenset(explicit),
                    rootdir=Path(str(config.rootpath)), **values)


def for_tests(**values: Any) -> Settings:
    """Settings with defaults, for unit tests and Python callers (``explicit`` = the given names)."""
    base = {o.name: o.default for o in OPTIONS}
    unknown = set(values) - set(base) - {"enabled", "rootdir"}
    if unknown:
        raise MemorizationConfigError(f"unknown setting(s) {sorted(unknown)}")
    enabled = values.pop("enabled", True)
    rootdir = Path(values.pop("rootdir", "."))
    return Settings(enabled=enabled, explicit=frozenset(values), rootdir=rootdir, **{**base, **values})
