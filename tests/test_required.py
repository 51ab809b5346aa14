"""The CI recipe in the README: `memorization_required` with pytest's `required_plugins`, so that
switching the plugin off is a usage error instead of a silent pass."""

from __future__ import annotations

import pytest

INI = "[pytest]\nrequired_plugins = pytest-memorization\nmemorization_required = true\n"


@pytest.fixture
def ci(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile("import pytest\n\n@pytest.mark.memorization\ndef test_gate():\n    pass\n")
    return pytester


@pytest.mark.parametrize("how", ["-p no:memorization", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1"])
def test_switching_the_plugin_off_is_a_usage_error_with_required_plugins(ci: pytest.Pytester, how: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["-p", "no:memorization"] if how.startswith("-p") else []
    if not args:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    # the premise: without required_plugins pytest only warns about the unknown ini key and passes
    ci.makeini("[pytest]\nmemorization_required = true\n")
    assert ci.runpytest_subprocess(*args).ret == pytest.ExitCode.OK
    ci.makeini(INI)
    result = ci.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Missing required plugins: pytest-memorization*"])


@pytest.mark.parametrize("args, status", [([], pytest.ExitCode.USAGE_ERROR), (["--memorization", "-k", "nothing"],
                                          pytest.ExitCode.TESTS_FAILED)])
def test_with_the_plugin_on_the_guard_still_holds(ci: pytest.Pytester, args: list[str], status: int) -> None:
    ci.makeini(INI)
    result = ci.runpytest_subprocess(*args)
    assert result.ret == status


def test_the_readme_gives_the_ci_recipe() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert INI.removeprefix("[pytest]\n") in re.sub(r"(?m)^ +", "", readme)  # the recipe's steps are indented
