"""The manifest's ``[detectors]`` table: which reference-free detectors run, with what settings.

Every key is read by ``run.detect``; a key a detector cannot honour is refused here, with the fix:

- ``noise_magnitude``: ``threshold``, ``steps`` (the first steps of generation's schedule it
  measures), ``seeds`` (the seeds its score is averaged over; default the item's seeds) and
  ``gate`` (default true; false reports a crossing as a warning instead of failing).
- ``seed_diversity``: ``threshold`` and ``gate`` (default false). It compares the item's own
  generations, so their seeds are the item's: ``seeds`` here is refused.
- ``zero_step``: ``threshold``, ``timesteps``, ``norm_weight``, ``align_weight``.
- ``lora_delta``: ``threshold``, ``kind``.
- ``subject_concentration``: ``threshold``, ``seeds`` (the seeds it generates each context with;
  default the item's), ``gate`` (default true; false reports a crossing as a warning).

The generation settings (steps, guidance scale, size, negative prompt) come from ``[model]``.
"""

from __future__ import annotations

import math
from typing import Any

from ..records import DETECTOR_KEYS
from .check import Checker

__all__ = ["DETECTOR_KEYS", "detectors_table"]


def detectors_table(c: Checker, v: Any) -> dict[str, dict[str, Any]]:
    t = c.table(v, "detectors", tuple(DETECTOR_KEYS), "noise_magnitude = { threshold = 3.2 }")
    out: dict[str, dict[str, Any]] = {}
    for name, d in t.items():
        key = f"detectors.{name}"
        if name == "seed_diversity" and isinstance(d, dict) and "seeds" in d:
            c.fail(f"{key}.seeds", "seed_diversity compares the item's own generations, which use the item's "
                   "seeds; remove seeds here and set seeds in [model] (or --memorization-seeds)")
        d = c.table(d, key, DETECTOR_KEYS[name], "{ threshold = 3.2, steps = 1 }")
        o: dict[str, Any] = {}
        if "threshold" in d:
            o["threshold"] = c.number(d["threshold"], f"{key}.threshold", 0.0, math.inf,
                                      fix="or omit threshold to use the calibrated value")
        if "steps" in d:
            o["steps"] = c.integer(d["steps"], f"{key}.steps", 1, "write e.g. steps = 1")
        if "seeds" in d:
            o["seeds"] = c.seeds(d["seeds"], f"{key}.seeds")
        if "timesteps" in d:
            o["timesteps"] = c.integer(d["timesteps"], f"{key}.timesteps", 1, "write timesteps = 1 (both terms at "
                                       "the first timestep) or 2 (the paper's two timesteps)")
            if o["timesteps"] > 2:
                c.fail(f"{key}.timesteps", f"{o['timesteps']} is not 1 or 2; write timesteps = 1 or timesteps = 2")
        if "kind" in d:
            if d["kind"] not in ("guidance", "conditional"):
                c.fail(f"{key}.kind", f"{d['kind']!r:.60} is not 'guidance' or 'conditional'; write kind = \"guidance\"")
            o["kind"] = d["kind"]
        for w in ("norm_weight", "align_weight"):
            if w in d:
                o[w] = c.number(d[w], f"{key}.{w}", -math.inf, math.inf, fix="write a finite number, e.g. 1.0")
        if "gate" in d:
            if not isinstance(d["gate"], bool):
                c.fail(f"{key}.gate", f"{d['gate']!r:.60} is not true or false; write gate = true")
            o["gate"] = d["gate"]
        out[name] = o
    return out
