"""``--memorization-shard``: which shard this machine runs, from the value or from the job engine.

- ``I/N``: shard I (0-based) of N, as given.
- ``auto``: the index and the count from the environment of a SLURM job array
  (``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``, ``SLURM_ARRAY_TASK_MIN``); a Kubernetes Indexed
  Job sets only ``JOB_COMPLETION_INDEX``, so there the count is given once: ``auto/N``.
- ``auto/N``: the index from the environment, the count N (checked against SLURM's when both exist).

Pure standard library; reads only the mapping it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SLURM_ID, SLURM_COUNT, SLURM_MIN = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"
K8S_INDEX = "JOB_COMPLETION_INDEX"
FORMS = "I/N (e.g. 0/4), auto (a SLURM array) or auto/N (a Kubernetes Indexed Job, or any engine that sets "\
        f"{SLURM_ID} or {K8S_INDEX})"


class ShardError(ValueError):
    """A shard value or environment that names no valid shard; the message says the fix."""


def _int_env(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    if not re.fullmatch(r"\s*\d+\s*", raw):
        raise ShardError(f"${name} = {raw!r} is not a non-negative integer")
    return int(raw)


def from_env(env: Mapping[str, str], count: int | None) -> tuple[int, int]:
    """(index, count) of this task from a SLURM array or a Kubernetes Indexed Job."""
    if SLURM_ID in env:
        index = _int_env(env, SLURM_ID) - (_int_env(env, SLURM_MIN) if SLURM_MIN in env else 0)
        slurm_count = _int_env(env, SLURM_COUNT) if SLURM_COUNT in env else None
        if count is not None and slurm_count is not None and count != slurm_count:
            raise ShardError(f"auto/{count}: the SLURM array has {slurm_count} tasks (${SLURM_COUNT}); "
                             f"write auto (the count comes from SLURM) or auto/{slurm_count}")
        count = count if count is not None else slurm_count
        if count is None:
            raise ShardError(f"auto: ${SLURM_ID} is set but ${SLURM_COUNT} is not; give the count: auto/N")
        where = f"${SLURM_ID} {env[SLURM_ID].strip()}" + (f" - ${SLURM_MIN} {env[SLURM_MIN].strip()}"
                                                          if SLURM_MIN in env else "")
    elif K8S_INDEX in env:
        if count is None:
            raise ShardError(f"auto: a Kubernetes Indexed Job sets ${K8S_INDEX} but not the number of "
                             "completions; give it once: auto/N (N = the Job's spec.completions)")
        index, where = _int_env(env, K8S_INDEX), f"${K8S_INDEX} {env[K8S_INDEX].strip()}"
    else:
        raise ShardError(f"auto: neither ${SLURM_ID} (a SLURM array) nor ${K8S_INDEX} (a Kubernetes Indexed "
                         "Job) is set; outside those engines write I/N, e.g. 0/4 (a CI matrix: "
                         "${{ matrix.shard }}/4)")
    if not 0 <= index < count:
        raise ShardError(f"{where} gives shard {index}, outside 0..{count - 1} of {count} shards; the array's "
                         "indices and the shard count disagree")
    return index, count


def parse_shard(value: object, env: Mapping[str, str]) -> tuple[int, int]:
    """(index, count) for a ``--memorization-shard`` value; ``ShardError`` says what is wrong."""
    s = str(value).strip()
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", s)
    if m:
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 0 <= index < count:
            raise ShardError("expected I/N with 0 <= I < N, e.g. 0/4 (shards are numbered from 0)")
        return index, count
    m = re.fullmatch(r"auto(?:\s*/\s*(\d+))?", s)
    if m:
        count = int(m.group(1)) if m.group(1) else None
        if count is not None and count < 1:
            raise ShardError("auto/N: N is the number of shards, at least 1")
        return from_env(env, count)
    raise ShardError(f"expected {FORMS}")
