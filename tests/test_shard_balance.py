"""Shards balanced by cost (images per item, or durations of an earlier run), ``auto`` from a SLURM
array or a Kubernetes Indexed Job, and 8 shards of a mixed project merged back into the unsharded run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy.fft  # noqa: F401  - imported here, not first inside a pytester run (it cannot load twice)
import pytest
import support  # noqa: F401  - likewise: scikit-image's photos
import torch  # noqa: F401

from pytest_memorization.config.shards import ShardError, parse_shard
from pytest_memorization.run.sharding import assign, read_durations, split, weights

STUB = '''
import torch


def generate(prompts, seeds, settings):
    """Seeded noise: image i depends only on its prompt and seed."""
    out = []
    for prompt, seed in zip(prompts, seeds):
        g = torch.Generator().manual_seed(seed * 7919 + sum(map(ord, prompt)))
        out.append(torch.rand(3, settings.height, settings.width, generator=g))
    return torch.stack(out)
'''

HEAD = '[model]\ngenerator = "stubgen:generate"\nseeds = {seeds}\nsteps = 2\nheight = 32\nwidth = 32\n' \
       '[thresholds]\ntiled_l2 = 0.05\n'


def _spread(counts: list[float]) -> float:
    return (max(counts) - min(counts)) / max(counts)


# -- auto: the index and count from the job engine ------------------------------------------------

def test_shard_values_and_the_environment_of_slurm_and_kubernetes() -> None:
    assert parse_shard("3/8", {}) == (3, 8)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}) == (5, 8)
    # an array declared 1-8: SLURM_ARRAY_TASK_MIN shifts it to 0..7
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8",
                                "SLURM_ARRAY_TASK_MIN": "1"}) == (7, 8)
    assert parse_shard("auto/8", {"JOB_COMPLETION_INDEX": "2"}) == (2, 8)
    assert parse_shard(" auto / 8 ", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "8"}) == (0, 8)


@pytest.mark.parametrize(("value", "env", "message"), [
    ("8/8", {}, "0 <= I < N"),
    ("0/0", {}, "0 <= I < N"),
    ("half", {}, "expected I/N"),
    ("auto", {}, "neither $SLURM_ARRAY_TASK_ID"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "give it once: auto/N"),
    ("auto/4", {"JOB_COMPLETION_INDEX": "4"}, "gives shard 4, outside 0..3"),
    ("auto/4", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8"}, "has 8 tasks"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "8"}, "not a non-negative integer"),
])
def test_bad_shard_values_say_what_to_write(value: str, env: dict, message: str) -> None:
    with pytest.raises(ShardError) as e:
        parse_shard(value, env)
    assert message in str(e.value)


def test_auto_is_read_at_start_up_and_a_bad_one_is_a_usage_error(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    r = pytester.runpytest("--memorization", "--memorization-shard=auto")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--memorization-shard*'auto'*JOB_COMPLETION_INDEX*give it once: auto/N*"])


# -- balance ------------------------------------------------------------------------------------

class Fake:
    def __init__(self, nodeid: str, images: int) -> None:
        self.nodeid, self.images = nodeid, images

    def expected_images(self) -> int:
        return self.images


def mixed_items() -> list[Fake]:
    """A release-audit mix at 4 seeds: plain prompts (4 images), LoRA-gate prompts (base + LoRA: 8),
    amplified LoRA-gate prompts (12), img2img at 3 strengths (12), prompt-only canaries (0)."""
    items = [Fake(f"m.toml::w{i}[0]", 4) for i in range(120)]
    items += [Fake(f"lora.toml::w{i}[0]", 8) for i in range(30)]
    items += [Fake(f"amp.toml::w{i}[0]", 12) for i in range(10)]
    items += [Fake(f"m.toml::w{i}[img2img]", 12) for i in range(17)]
    items += [Fake(f"m.toml::canary[c{i}]", 0) for i in range(9)]
    return items


def test_eight_shards_of_a_mixed_manifest_generate_within_15_percent() -> None:
    items = mixed_items()
    per_shard = []
    for i in range(8):
        keep, _ = split(items, i, 8, cost=weights(items))
        per_shard.append(sum(x.images for x in keep))
    assert sum(per_shard) == sum(x.images for x in items)
    assert _spread(per_shard) <= 0.15, per_shard
    # round robin by node id (equal weights) on the same items is what the cost weights fix
    even = [sum(x.images for x in split(items, i, 8)[0]) for i in range(8)]
    assert _spread(even) > 0.15, even


def test_durations_of_an_earlier_run_weigh_more_than_images(tmp_path: Path) -> None:
    items = [Fake(f"t::a{i}", 4) for i in range(8)]
    # a.0 took as long as the other seven together (a slow prompt, a cold cache): it gets a shard alone
    durations = {f"t::a{i}": 10.0 for i in range(1, 8)} | {"t::a0": 70.0}
    shards = assign(weights(items, durations), [x.nodeid for x in items], 2)
    assert shards.count(shards[0]) == 1
    # items the file does not list count at the seconds per image of those it lists
    w = weights([*items, Fake("t::new", 2)], {"t::a0": 8.0})
    assert w[-1] == pytest.approx(4.0) and w[1] == pytest.approx(8.0)
    (tmp_path / ".test_durations").write_text(json.dumps({"t::a0": 1.5}))
    assert read_durations(tmp_path / ".test_durations", ".test_durations") == {"t::a0": 1.5}
    (tmp_path / "bad.json").write_text(json.dumps({"t::a0": "slow"}))
    with pytest.raises(Exception, match="'t::a0' is 'slow', not a number of seconds"):
        read_durations(tmp_path / "bad.json", "bad.json")


# -- 8 real shards merged back --------------------------------------------------------------------

@pytest.fixture
def mixed_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """Two manifests through the generator hook: 12 items at 4 seeds and 24 at 1 seed (and prompt-only
    canaries, which generate nothing without seed_diversity)."""
    from support import save_photo

    save_photo("astronaut", pytester.mkdir("works") / "astronaut.png")
    (pytester.path / "stubgen.py").write_text(STUB)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n"
                     "memorization_manifests = *.toml\n")
    prompts = ", ".join(f'"a photo number {i}"' for i in range(12))
    (pytester.path / "four.toml").write_text(HEAD.format(seeds="[0, 1, 2, 3]") + f"""
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = [{prompts}]
""")
    prompts = ", ".join(f'"a drawing number {i}"' for i in range(24))
    (pytester.path / "one.toml").write_text(HEAD.format(seeds="[0]") + f"""
[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = [{prompts}]

[[canary]]
id = "c1"
prompt = "a canary prompt"

[[canary]]
id = "c2"
prompt = "another canary prompt"
""")
    return pytester


def test_eight_shards_balance_and_merge_to_the_unsharded_run(mixed_project: pytest.Pytester) -> None:
    p = mixed_project.path
    args = ["--memorization", "-p", "no:cacheprovider", "-q"]
    full = mixed_project.runpytest(*args, "--memorization-report", "all")
    assert full.parseoutcomes()["passed"] == 12 + 24 + 2
    images = []
    for i in range(8):
        r = mixed_project.runpytest(*args, f"--memorization-shard={i}/8", "--memorization-report", f"s{i}")
        assert r.ret == 0, r.stdout.str()[-2000:]
        counts = json.loads((p / f"s{i}" / "report.json").read_text())["run"]["generated_images"]
        images.append(counts["generated"] + counts["from_cache"])
    assert sum(images) == 12 * 4 + 24 + 2  # the two canaries generate too (one seed each)
    assert _spread(images) <= 0.15, images
    out = subprocess.run([sys.executable, "-m", "pytest_memorization", "merge", "merged", *[f"s{i}" for i in range(8)]],
                         cwd=p, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    merged = json.loads((p / "merged" / "report.json").read_text())
    want = json.loads((p / "all" / "report.json").read_text())

    def rows(doc: dict) -> list:
        return sorted((r["item"], r["prompt"], r["seed"], r["work"], json.dumps(r["scores"], sort_keys=True),
                       r["verdict"], r["reasons"]) for r in doc["results"])

    assert rows(merged) == rows(want) and merged["summary"] == want["summary"]
    assert merged["complete"] is True
    # the generator's images reach the reports (PNG per row) and the merge copies them
    assert all(r["image"] and (p / "merged" / r["image"]).is_file() for r in merged["results"] if r["seed"] >= 0
               and "canary" not in r["item"])
    # every item's duration travels into the merged report, ready for --memorization-shard-durations
    assert set(merged["item_durations"]) == set(want["item_durations"])
    assert len(merged["item_durations"]) == 12 + 24 + 2
    r = mixed_project.runpytest(*args, "--memorization-shard=auto/8", "--memorization-shard-durations=merged")
    assert r.ret == pytest.ExitCode.USAGE_ERROR  # auto without a job engine's index: a clear usage error
    r = mixed_project.runpytest(*args, "--memorization-shard=0/8", "--memorization-shard-durations=merged")
    assert r.ret == 0 and 0 < r.parseoutcomes()["passed"] < 38
