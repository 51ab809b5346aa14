"""The policy: a TOML file from outside the pull request that fixes what the pull request may not.

A LoRA repository's gate runs on files the pull request controls (the manifest, ``pytest.ini``,
calibration files, generator modules). A policy file, named by ``--memorization-policy=PATH`` or the
environment variable ``MEMORIZATION_POLICY`` (both set by the workflow, from the base branch; never an
ini key, since the pull request controls the ini file), fixes:

- ``[metrics] always``: metrics always scored, whatever the manifest lists;
- ``[thresholds]``: limits that a manifest, a marker or the ini can tighten, never relax;
- ``[generation]``: ``min_seeds``, ``min_steps``, the ``lora_scale`` to gate at, ``lora_gate``;
- ``[waivers]``: whether waivers count at all, their longest duration, and where they come from
  (a policy-side file; manifest waivers only with ``manifest = true``);
- ``[detectors]``: reference-free detectors every manifest runs (those needing a LoRA: every manifest
  with one), with the policy's settings; a manifest's ``gate = false`` for them does not count;
- ``[trust]``: the generator hooks and calibration files (by sha256) that may be used;
- ``[run] ini_keys``: the only ``memorization_*`` ini keys read (sharding never among them).

Unknown keys, wrong types and impossible values are usage errors naming the file and the key.
Applied once: to the settings here (``apply_to_settings``), to each manifest in ``manifest.policy``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, one_line, printable
from ..metrics import KNOWN_DEFAULTS, METRIC_NAMES
from ..records import DETECTOR_KEYS
from .policy import MIN_STEPS, lora_gate_problem, threshold_problem, with_floors

POLICY_ENV = "MEMORIZATION_POLICY"
# Ini keys a policy run reads unless the policy's [run] ini_keys says otherwise: how to run, never what
# is judged (thresholds, metrics, seeds, waivers' effect, sharding, report paths stay with the workflow).
SAFE_INI_KEYS = ("required", "model", "config", "lora", "device", "dtype", "batch_size", "manifests", "cache_dir",
                 "generation_cache",
                 "weights_dir", "sscd_model", "clip_pretrained", "report_works", "progress", "progress_every")
NEVER_FROM_INI = ("shard", "report", "save", "compare", "update_baseline", "prune_baseline", "calibrate")
_SHA = re.compile(r"[0-9a-f]{64}")
_HOOK = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_KEYS: dict[str, tuple[str, ...]] = {
    "": ("metrics", "thresholds", "generation", "detectors", "waivers", "trust", "run"),
    "metrics": ("always",),
    "generation": ("min_seeds", "min_steps", "lora_scale", "lora_gate"),
    "waivers": ("allowed", "max_days", "file", "manifest"),
    "trust": ("generators", "calibrations"),
    "run": ("ini_keys",),
}
WAIVER_KEYS = ("work", "sha256", "reason", "until")


@dataclass(frozen=True)
class TrustedWaiver:
    """A waiver granted in the policy's waiver file: for the work with this id *and* image sha256."""

    work: str
    sha256: str
    reason: str
    until: dt.date


@dataclass(frozen=True)
class Policy:
    path: Path
    metrics: tuple[str, ...] = ()
    thresholds: Mapping[str, float] = field(default_factory=dict)
    min_seeds: int | None = None
    min_steps: int | None = None
    lora_scale: float | None = None
    lora_gate: bool = False
    waivers_allowed: bool = True
    max_waiver_days: int | None = None
    manifest_waivers: bool = False
    waivers: tuple[TrustedWaiver, ...] = ()
    generators: Mapping[str, str] = field(default_factory=dict)  # hook -> sha256 of its module file
    calibrations: frozenset[str] = frozenset()
    detectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> its settings
    ini_keys: tuple[str, ...] = SAFE_INI_KEYS

    def fail(self, key: str | None, message: str) -> MemorizationConfigError:
        return MemorizationConfigError(f"{self.path}" + (f": key '{key}'" if key else "") + f": {message}")


def today() -> dt.date:
    """Waiver dates are UTC days, the same on every runner."""
    return dt.datetime.now(dt.timezone.utc).date()


def policy_source(cli_value: str | None, invocation_dir: Path) -> Path | None:
    """The policy file: ``--memorization-policy`` or ``$MEMORIZATION_POLICY`` (relative to where pytest
    was started, not to the project the pull request controls). Both, naming different files: an error."""
    env = os.environ.get(POLICY_ENV, "").strip() or None
    paths = [(Path(v).expanduser() if Path(v).expanduser().is_absolute() else invocation_dir / v).resolve()
             for v in (cli_value, env) if v]
    if len(paths) == 2 and paths[0] != paths[1]:
        raise MemorizationConfigError(f"--memorization-policy={cli_value} and ${POLICY_ENV}={env} name different "
                                      "policy files; give one")
    return paths[0] if paths else None


def load_policy(path: Path) -> Policy:
    """Read and strictly check a policy file (``MemorizationConfigError`` naming file and key)."""
    data = _toml(path)
    p = Policy(path=path)
    _keys(p, data, "")
    for table in ("metrics", "thresholds", "generation", "detectors", "waivers", "trust", "run"):
        if table in data and not isinstance(data[table], dict):
            raise p.fail(table, f"expected a table, write [{table}]")
    out: dict[str, Any] = {}
    m = data.get("metrics", {})
    _keys(p, m, "metrics")
    if "always" in m:
        names = _strings(p, m["always"], "metrics.always")
        for n in names:
            if n not in METRIC_NAMES:
                raise p.fail("metrics.always", f"unknown metric {n!r}; known metrics: {', '.join(METRIC_NAMES)}")
        out["metrics"] = tuple(dict.fromkeys(names))
    t = data.get("thresholds", {})
    for name, value in t.items():
        problem = threshold_problem(name, value)
        if problem:
            raise p.fail(f"thresholds.{name}", problem)
    out["thresholds"] = {k: float(v) for k, v in t.items()}
    g = data.get("generation", {})
    _keys(p, g, "generation")
    if "min_seeds" in g:
        out["min_seeds"] = _int(p, g["min_seeds"], "generation.min_seeds", 1)
    if "min_steps" in g:
        out["min_steps"] = _int(p, g["min_steps"], "generation.min_steps", MIN_STEPS)
    if "lora_scale" in g:
        v = g["lora_scale"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 10:
            raise p.fail("generation.lora_scale", f"{v!r} is not a number in (0, 10]; write e.g. lora_scale = 1.0")
        out["lora_scale"] = float(v)
    if "lora_gate" in g:
        out["lora_gate"] = _bool(p, g["lora_gate"], "generation.lora_gate")
    if "detectors" in data:
        out["detectors"] = {k: _detector(p, k, v) for k, v in data["detectors"].items()}
    w = data.get("waivers", {})
    _keys(p, w, "waivers")
    if "allowed" in w:
        out["waivers_allowed"] = _bool(p, w["allowed"], "waivers.allowed")
    if "manifest" in w:
        out["manifest_waivers"] = _bool(p, w["manifest"], "waivers.manifest")
    if "max_days" in w:
        out["max_waiver_days"] = _int(p, w["max_days"], "waivers.max_days", 1)
    if "file" in w:
        if not isinstance(w["file"], str) or not w["file"].strip():
            raise p.fail("waivers.file", 'expected a path, relative to the policy file: file = "waivers.toml"')
        out["waivers"] = tuple(_waiver_file(path.parent / w["file"]))
    tr = data.get("trust", {})
    _keys(p, tr, "trust")
    if "generators" in tr:
        gens = tr["generators"]
        if not isinstance(gens, dict):
            raise p.fail("trust.generators", 'expected a table of hook = sha256, write [trust.generators] '
                                             '"mygen.api:generate" = "<sha256 of mygen/api.py>"')
        for hook, sha in gens.items():
            if not _HOOK.fullmatch(hook):
                raise p.fail(f"trust.generators.{hook}", 'is not "package.module:function"')
            if not isinstance(sha, str) or not _SHA.fullmatch(sha.lower()):
                raise p.fail(f"trust.generators.{hook}", "expected the sha256 (64 hex digits) of the hook's module file")
        out["generators"] = {k: v.lower() for k, v in gens.items()}
    if "calibrations" in tr:
        shas = _strings(p, tr["calibrations"], "trust.calibrations")
        bad = [s for s in shas if not _SHA.fullmatch(s.lower())]
        if bad:
            raise p.fail("trust.calibrations", f"{bad[0]!r:.80} is not a sha256 (64 hex digits); compute it with "
                                               "sha256sum memorization-calibration.json")
        out["calibrations"] = frozenset(s.lower() for s in shas)
    r = data.get("run", {})
    _keys(p, r, "run")
    if "ini_keys" in r:
        keys = _strings(p, r["ini_keys"], "run.ini_keys", allow_empty=True)
        for k in keys:
            k = k.removeprefix("memorization_")
            if k in NEVER_FROM_INI:
                raise p.fail("run.ini_keys", f"memorization_{k} can never come from the ini file under a policy "
                                             "(the pull request controls the ini file); pass it on the command line")
        out["ini_keys"] = tuple(k.removeprefix("memorization_") for k in keys)
    return Policy(path=path, **out)


def ini_problem(policy: Policy, name: str) -> str | None:
    """Why the ini key ``memorization_<name>`` may not be read under ``policy`` (None when it may)."""
    if name in policy.ini_keys and name not in NEVER_FROM_INI:
        return None
    fix = ("sharding comes from the command line only: pass --memorization-shard=I/N" if name == "shard" else
           f"pass --memorization-{name.replace('_', '-')} on the command line, or list it in the policy's "
           "[run] ini_keys")
    return (f"the ini file sets memorization_{name}, which a run under the policy {policy.path} does not read "
            f"(the pull request controls the ini file); {fix}")


def apply_to_settings(policy: Policy, values: dict[str, Any], explicit: set[str]) -> None:
    """The policy's effect on the resolved options (in place): threshold floors, required metrics, the
    LoRA scale and gate; command-line seeds and steps below the policy's minimum are usage errors."""
    values["threshold"] = with_floors(values["threshold"] or {}, policy.thresholds)
    if values["metrics"]:
        values["metrics"] = list(dict.fromkeys([*values["metrics"], *policy.metrics, *policy.thresholds]))
    if policy.lora_scale is not None:
        if "lora_scale" in explicit and values["lora_scale"] != policy.lora_scale:
            raise policy.fail("generation.lora_scale", f"the policy gates at LoRA scale {policy.lora_scale:g}, the "
                                                       f"command line asks for {values['lora_scale']:g}; drop "
                                                       "--memorization-lora-scale")
        values["lora_scale"] = policy.lora_scale
        explicit.add("lora_scale")  # beats a manifest's lora_scale
    if policy.lora_gate:
        values["lora_gate"] = True
        if problem := lora_gate_problem(values["lora_scale"]):
            raise policy.fail("generation.lora_gate", problem)
    if values.get("seeds") and policy.min_seeds and len(values["seeds"]) < policy.min_seeds:
        raise policy.fail("generation.min_seeds", seeds_problem(policy, len(values["seeds"])))
    if values.get("steps") and policy.min_steps and values["steps"] < policy.min_steps:
        raise policy.fail("generation.min_steps", steps_problem(policy, values["steps"]))


def seeds_problem(policy: Policy, n: int) -> str:
    return f"{n} seed(s) is fewer than the policy's minimum {policy.min_seeds}; use at least {policy.min_seeds} seeds"


def steps_problem(policy: Policy, n: int) -> str:
    return f"{n} step(s) is fewer than the policy's minimum {policy.min_steps}; use at least {policy.min_steps} steps"


def default_floors() -> dict[str, float]:
    """Without a policy: each metric's built-in threshold is a floor a manifest can tighten, never relax."""
    return {k: v for k, v in KNOWN_DEFAULTS.items() if v is not None}


def check_generator(policy: Policy, hook: str) -> None:
    """A generator hook runs under a policy only when the policy names it with its module file's sha256
    (the module is located without being imported)."""
    if hook not in policy.generators:
        raise policy.fail("trust.generators", f"the generator hook {hook!r} is not trusted by the policy, so its code "
                                              "(from the pull request) does not run; list it with its module file's "
                                              "sha256 in [trust.generators]")
    module = hook.partition(":")[0]
    path = module_file(module)
    if path is None:
        raise policy.fail(f"trust.generators.{hook}", f"cannot find the module file of {module!r} on sys.path")
    from .._io import sha256_file

    actual = sha256_file(path)
    if actual != policy.generators[hook]:
        raise policy.fail(f"trust.generators.{hook}", f"{path} has sha256 {actual}, not the trusted "
                                                      f"{policy.generators[hook]}: the hook's code changed; review it "
                                                      "and update the policy")


def module_file(module: str) -> Path | None:
    """The file of ``module`` on ``sys.path``, found without importing it or its packages."""
    import sys

    parts = module.split(".")
    for entry in sys.path:
        base = Path(entry or ".").joinpath(*parts)
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
    return None


def check_calibration(policy: Policy, path: Path) -> None:
    """A calibration file is read under a policy only when the policy lists its sha256."""
    from .._io import sha256_file

    actual = sha256_file(path)
    if actual not in policy.calibrations:
        raise policy.fail("trust.calibrations", f"the calibration file {printable(path)} (sha256 {actual}) is not "
                                                "trusted by the policy: a pull request could have written its "
                                                "threshold; review it and add its sha256 to [trust] calibrations")


def _waiver_file(path: Path) -> list[TrustedWaiver]:
    data = _toml(path)
    bad = sorted(set(data) - {"waiver"})
    if bad:
        raise MemorizationConfigError(f"{path}: key '{bad[0]}': unknown key; a waiver file holds [[waiver]] "
                                      "tables only")
    entries = data.get("waiver", [])
    if not isinstance(entries, list):
        raise MemorizationConfigError(f"{path}: key 'waiver': write [[waiver]] (double brackets) per waiver")
    out = []
    holder = Policy(path=path)
    for i, e in enumerate(entries):
        key = f"waiver[{i}]"
        if not isinstance(e, dict):
            raise holder.fail(key, "expected a table")
        unknown = sorted(set(e) - set(WAIVER_KEYS))
        if unknown:
            raise holder.fail(f"{key}.{unknown[0]}", f"unknown key; a waiver has {', '.join(WAIVER_KEYS)}")
        missing = [k for k in WAIVER_KEYS if k not in e]
        if missing:
            raise holder.fail(f"{key}.{missing[0]}", "missing; a waiver names the work (id and image sha256), "
                                                     "a reason and an end date")
        sha = str(e["sha256"]).lower().removeprefix("sha256:")
        if not _SHA.fullmatch(sha):
            raise holder.fail(f"{key}.sha256", "is not a sha256 (64 hex digits) of the work's image")
        if not isinstance(e["reason"], str) or not e["reason"].strip():
            raise holder.fail(f"{key}.reason", "expected a non-empty string")
        out.append(TrustedWaiver(work=str(e["work"]), sha256=sha, reason=one_line(e["reason"].strip()),
                                 until=waiver_date(e["until"], lambda m, k=f"{key}.until": holder.fail(k, m))))
    return out


def waiver_date(value: Any, fail: Any) -> dt.date:
    """A waiver's ``until``: a plain TOML date. A date-time (with or without a time-zone offset) is
    refused rather than cut to its date, which would silently move the end by up to a day."""
    if isinstance(value, dt.datetime):
        raise fail(f"{value.isoformat()} is a date-time; write a plain date (until = 2027-06-30): a waiver ends "
                   "at the end of that day, UTC")
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise fail(f"{value!r} is not a date; write until = 2027-06-30") from None
    if not isinstance(value, dt.date):
        raise fail(f"expected a date, got {type(value).__name__}; write until = 2027-06-30")
    return value


def _toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise MemorizationConfigError(f"{path}: policy file not found; check --memorization-policy / "
                                      f"${POLICY_ENV}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MemorizationConfigError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise MemorizationConfigError(f"{path}: invalid TOML: {e}") from None


def _keys(p: Policy, table: dict[str, Any], where: str) -> None:
    known = _KEYS[where]
    for k in table:
        if k not in known:
            import difflib

            close = difflib.get_close_matches(k, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise p.fail(f"{where + '.' if where else ''}{k}", f"unknown key{hint}; "
                                                               f"{'[' + where + ']' if where else 'a policy'} takes "
                                                               f"{', '.join(known)}")


def _detector(p: Policy, name: str, d: Any) -> dict[str, Any]:
    """One ``[detectors]`` entry: the manifest's keys for it, less ``threshold`` (a trusted calibration sets it)."""
    key = f"detectors.{name}"
    if name not in DETECTOR_KEYS:
        raise p.fail(key, f"unknown detector; known detectors: {', '.join(DETECTOR_KEYS)}")
    if not isinstance(d, dict):
        raise p.fail(key, f"expected a table, write {name} = {{}} or {name} = {{ gate = true }}")
    known = [k for k in DETECTOR_KEYS[name] if k != "threshold"]
    for k, v in d.items():
        if k == "threshold":
            raise p.fail(f"{key}.threshold", "a detector's threshold comes from a calibration file listed in "
                                             "[trust] calibrations; remove threshold and calibrate")
        if k not in known:
            raise p.fail(f"{key}.{k}", f"unknown key; {name} takes {', '.join(known) or 'no keys'}")
        if k == "gate":
            _bool(p, v, f"{key}.gate")
        elif k == "seeds" and (not isinstance(v, list) or len(v) < 1 or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in v)):
            raise p.fail(f"{key}.seeds", f"{v!r:.60} is not an array of seeds (integers >= 0); write seeds = [0, 1, 2, 3]")
        elif k in ("steps", "timesteps"):
            _int(p, v, f"{key}.{k}", 1)
        elif k == "kind" and v not in ("guidance", "conditional"):
            raise p.fail(f"{key}.kind", f"{v!r:.60} is not 'guidance' or 'conditional'")
        elif k.endswith("_weight") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise p.fail(f"{key}.{k}", f"{v!r:.40} is not a number")
    return dict(d)


def _strings(p: Policy, v: Any, key: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v) or (not v and not allow_empty):
        raise p.fail(key, f"expected an array of names, got {v!r:.60}")
    return [x.strip() for x in v]


def _int(p: Policy, v: Any, key: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise p.fail(key, f"{v!r:.40} is not an integer >= {lo}")
    return v


def _bool(p: Policy, v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise p.fail(key, f"{v!r:.40} is not true or false")
    return v
