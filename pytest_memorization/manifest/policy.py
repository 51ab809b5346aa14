"""The policy applied to a loaded manifest, once, before any item is made (``run/items.py``).

Without a policy file, each metric's built-in threshold is a floor: a manifest's thresholds (top
level and per work) can tighten it, never relax it. Under a policy (``config.trust``):

- its ``[thresholds]`` are floors for the manifest's thresholds, and its metrics are added to what
  the manifest scores (a manifest cannot narrow the metrics);
- seeds and steps below its minimum, and an untrusted generator hook, are errors naming the manifest;
- its ``[detectors]`` run on every manifest (``lora_delta`` and ``subject_concentration``: on every
  manifest whose model has a LoRA), with the policy's settings over the manifest's; a manifest can
  turn such a detector's gate on, never off;
- waivers: none when ``allowed = false``; else those of the policy's waiver file (matched by work id and
  image sha256), and the manifest's own only with ``manifest = true``; every waiver longer than
  ``max_days`` is an error. A manifest waiver that the policy does not accept is dropped with a warning,
  so the copy it hid fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from typing import Any

from ..config.policy import with_floors
from ..config.settings import DEFAULT_METRICS
from ..config.trust import Policy, check_generator, default_floors, seeds_problem, steps_problem, today
from ..errors import ManifestError, one_line
from ..records import LORA_DETECTORS, Waiver
from .load import Manifest


class PolicyWarning(UserWarning):
    """Something the manifest asked for was not applied because the policy does not allow it."""


def apply_policy(manifest: Manifest, settings: Any) -> Manifest:
    """The manifest as the gate will run it (a copy; the loaded one is not changed)."""
    policy: Policy | None = getattr(settings, "policy", None)
    floors = dict(policy.thresholds) if policy is not None else default_floors()
    works = [dataclasses.replace(w, thresholds=with_floors(w.thresholds, floors, add=False)) for w in manifest.works]
    out = dataclasses.replace(manifest, works=works,
                              thresholds=with_floors(manifest.thresholds, floors, add=policy is not None))
    if policy is None:
        return out
    if policy.metrics or policy.thresholds:
        base = manifest.metrics or [*DEFAULT_METRICS, *manifest.thresholds]
        out.metrics = list(dict.fromkeys([*base, *policy.metrics, *policy.thresholds]))
    m = manifest.model
    seeds = settings.seeds_for(m.seeds)
    if policy.min_seeds and len(seeds) < policy.min_seeds:
        raise ManifestError(manifest.path, seeds_problem(policy, len(seeds)) + f" (policy {policy.path})",
                            key="model.seeds")
    steps = settings.generation(m).steps
    if policy.min_steps and steps < policy.min_steps:
        raise ManifestError(manifest.path, steps_problem(policy, steps) + f" (policy {policy.path})", key="model.steps")
    if m.generator and "generator" not in settings.explicit and "model" not in settings.explicit:
        try:
            check_generator(policy, m.generator)
        except Exception as e:
            raise ManifestError(manifest.path, str(e), key="model.generator") from None
    out.works = [_waiver(policy, manifest, w, i) for i, w in enumerate(out.works)]
    out.detectors = required_detectors(policy, manifest, bool(m.lora or m.loras or settings.lora))
    return out


def required_detectors(policy: Policy, manifest: Manifest, has_lora: bool) -> dict[str, dict[str, Any]]:
    """The manifest's detectors with the policy's added: the policy's settings win, and a manifest's
    ``gate = false`` does not count for a detector the policy requires."""
    out = {k: dict(v) for k, v in manifest.detectors.items()}
    for name, opts in policy.detectors.items():
        if name in LORA_DETECTORS and not has_lora:
            continue
        mine = {k: v for k, v in out.get(name, {}).items() if k != "gate" or v is True}  # stricter only
        out[name] = {**mine, **opts}
    return out


def _waiver(policy: Policy, manifest: Manifest, work: Any, index: int) -> Any:
    waiver = work.waive if policy.manifest_waivers else None
    if work.waive is not None and waiver is None:
        warnings.warn(one_line(f"{manifest.path}: the waiver of work '{work.id}' was not applied: under the policy "
                               f"{policy.path} waivers come from the policy's waiver file only"), PolicyWarning,
                      stacklevel=3)
    granted = [g for g in policy.waivers if g.work == work.id]
    if granted:
        sha = work.sha256
        if sha is None:
            try:
                from .._io import sha256_file

                sha = sha256_file(work.image)
            except OSError:
                sha = None
        match = [g for g in granted if g.sha256 == sha]
        if match:
            waiver = Waiver(reason=match[0].reason, until=match[0].until)
    if waiver is None:
        return dataclasses.replace(work, waive=None)
    if not policy.waivers_allowed:
        warnings.warn(one_line(f"{manifest.path}: the waiver of work '{work.id}' was not applied: the policy "
                               f"{policy.path} allows no waivers"), PolicyWarning, stacklevel=3)
        return dataclasses.replace(work, waive=None)
    if policy.max_waiver_days is not None and waiver.until > today() + dt.timedelta(days=policy.max_waiver_days):
        raise ManifestError(manifest.path, f"the waiver of work '{work.id}' runs until {waiver.until.isoformat()}, "
                                           f"longer than the policy's {policy.max_waiver_days} days "
                                           f"({policy.path}, waivers.max_days); grant a shorter one",
                            key=f"work[{index}].waive.until")
    return dataclasses.replace(work, waive=dataclasses.replace(waiver, reason=one_line(waiver.reason)))
