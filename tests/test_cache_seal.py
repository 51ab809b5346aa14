"""The cache seal's key: a CI secret makes a restored cache trusted on a fresh runner; without the
key an entry is not trusted; under a policy the key never shares a process with the PR's conftest."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from gate_projects import COPY_PROMPT, TINY_MODEL_TOML, gate_project

from pytest_memorization import _io

SECRET = "ci-secret-" + "z" * 40


def _counts(pytester: pytest.Pytester, report: str, *args: str) -> dict[str, int]:
    result = pytester.runpytest("--memorization", "-p", "no:cacheprovider", f"--memorization-report={report}", *args)
    result.assert_outcomes(passed=1)
    return json.loads((pytester.path / report / "report.json").read_text())["run"]["generated_images"]


def test_a_restored_cache_on_a_fresh_runner_with_the_secret_regenerates_nothing(
        pytester: pytest.Pytester, tiny_pipeline: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate_project(pytester, tiny_pipeline, photos=("coffee",))
    (pytester.path / "memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0, 1]")
        + f'[[work]]\nid = "coffee"\nimage = "works/coffee.png"\nprompts = ["{COPY_PROMPT}"]\n')
    monkeypatch.delenv("MEMORIZATION_CACHE_KEY_FILE", raising=False)

    def runner(secret: str | None) -> None:  # a new machine: an empty home, the key only from the secret
        home = tmp_path_factory.mktemp("home")
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        if secret:
            monkeypatch.setenv("MEMORIZATION_CACHE_KEY", secret)
        else:
            monkeypatch.delenv("MEMORIZATION_CACHE_KEY", raising=False)
        monkeypatch.setattr(_io, "_SECRET", [])

    runner(SECRET)
    assert _counts(pytester, "r1") == {"generated": 2, "from_cache": 0}
    runner(SECRET)  # the cache folder is restored as it was; the home folder is new
    assert _counts(pytester, "r2") == {"generated": 0, "from_cache": 2}
    runner(None)  # the same restored cache without the secret: not trusted, regenerated
    assert _counts(pytester, "r3", "-W", "ignore::UserWarning") == {"generated": 2, "from_cache": 0}


def test_an_entry_sealed_without_the_key_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pytest_memorization.model.gencache import GenerationCache, GenerationCacheWarning

    monkeypatch.setattr(_io, "_SECRET", [b"the CI key, which the pull request does not have"])
    cache, real = GenerationCache(tmp_path), torch.rand(3, 8, 8)
    cache.put("a" * 64, real)
    assert torch.equal(cache.get("a" * 64), real)
    monkeypatch.setattr(_io, "_SECRET", [b"a key the pull request made up......................"])
    cache.put("a" * 64, torch.zeros(3, 8, 8))  # a forged "clean" image
    monkeypatch.setattr(_io, "_SECRET", [b"the CI key, which the pull request does not have"])
    with pytest.warns(GenerationCacheWarning, match="its seal does not match"):
        assert cache.get("a" * 64) is None
    assert cache.rejected == 1


def test_a_full_disk_while_caching_is_a_warning_not_a_traceback(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    import torch

    from pytest_memorization.metrics import get_metric
    from pytest_memorization.metrics.cache import ReferenceCache
    from pytest_memorization.model.gencache import GenerationCache, GenerationCacheWarning

    @contextlib.contextmanager
    def full(path: object):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(_io, "atomic_path", full)
    with pytest.warns(GenerationCacheWarning, match="No space left on device"):
        GenerationCache(tmp_path).put("b" * 64, torch.rand(3, 8, 8))
    with pytest.warns(UserWarning, match="No space left on device"):
        ReferenceCache(tmp_path).store(get_metric("tiled_l2"), "c" * 64, torch.rand(1, 3, 8, 8))


def test_under_a_policy_a_secret_key_needs_noconftest(pytester: pytest.Pytester, tiny_pipeline: Path,
                                                      tmp_path_factory: pytest.TempPathFactory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    gate_project(pytester, tiny_pipeline, photos=("coffee",))
    (pytester.path / "memorization.toml").write_text(
        TINY_MODEL_TOML.format(prefix="", seeds="[0]")
        + '[[work]]\nid = "coffee"\nimage = "works/coffee.png"\nprompts = ["a cup of coffee"]\n')
    policy = tmp_path_factory.mktemp("base") / "policy.toml"
    policy.write_text("")
    monkeypatch.setenv("MEMORIZATION_CACHE_KEY", SECRET)
    monkeypatch.setattr(_io, "_SECRET", [])
    bad = pytester.runpytest("--memorization", f"--memorization-policy={policy}")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*conftest.py files (code of the pull request) load into this process*--noconftest*"])
    good = pytester.runpytest("--memorization", "--noconftest", f"--memorization-policy={policy}")
    good.assert_outcomes(passed=1)
