"""paraphrase.py: deterministic, distinct, hash-seed independent prompt variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_memorization.manifest.paraphrase import MAX_PARAPHRASES, paraphrases

PROMPTS = [
    "portrait of an astronaut in a white suit",
    "NASA astronaut photo",
    "a photo of sks person",
    "sks",
    "red car, sunset, beach, 35mm",
    "  extra   spaces\tand tabs ",
]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("n", [0, 1, 3, 10])
def test_count_and_distinct(prompt: str, n: int) -> None:
    out = paraphrases(prompt, n)
    assert len(out) == n
    norm = " ".join(prompt.split())
    assert norm not in out and prompt not in out
    assert len(set(out)) == n
    assert all(s == " ".join(s.split()) and s for s in out)


def test_deterministic_and_prefix_stable() -> None:
    for p in PROMPTS:
        assert paraphrases(p, 8) == paraphrases(p, 8)
        assert paraphrases(p, 8)[:3] == paraphrases(p, 3)
        assert paraphrases(p, 5, seed=1) == paraphrases(p, 5, seed=1)
    assert paraphrases(PROMPTS[0], 6, seed=0) != paraphrases(PROMPTS[0], 6, seed=1)


def test_first_three_use_each_kind_of_perturbation() -> None:
    p = "portrait of an astronaut in a white suit"
    words = p.split()
    inserted, repeated, reordered = paraphrases(p, 3)
    assert len(inserted.split()) > len(words) and set(words) <= set(inserted.replace(",", "").split())
    assert len(repeated.split()) == len(words) + 1 and set(repeated.split()) == set(words)
    assert sorted(reordered.split()) == sorted(words) and reordered != p
    phrases = "red car, sunset, beach"
    r = paraphrases(phrases, 3)[2]
    assert sorted(x.strip() for x in r.split(",")) == sorted(x.strip() for x in phrases.split(","))


def test_stable_across_hash_seeds() -> None:
    code = ("import json, sys; from pytest_memorization.manifest.paraphrase import paraphrases; "
            "print(json.dumps([paraphrases(p, 6) for p in json.loads(sys.argv[1])]))")
    here = [paraphrases(p, 6) for p in PROMPTS]
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code, json.dumps(PROMPTS)], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out) == here


def test_many_variants_stay_distinct() -> None:
    out = paraphrases("sks", MAX_PARAPHRASES)
    assert len(set(out)) == MAX_PARAPHRASES and "sks" not in out


@pytest.mark.parametrize("prompt,n", [("x", -1), ("x", True), ("x", 1.0), ("x", MAX_PARAPHRASES + 1), ("  ", 1)])
def test_bad_arguments(prompt: str, n: object) -> None:
    with pytest.raises(ValueError):
        paraphrases(prompt, n)  # type: ignore[arg-type]
