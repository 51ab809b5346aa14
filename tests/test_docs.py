"""The docs site: it builds in strict mode, its options page is the option table, and its manifest
examples are valid (the gate's own loader and the shipped JSON Schema both accept them)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCHEMA = ROOT / "pytest_memorization" / "data" / "memorization.schema.json"
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)


def _gen_options():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_options", DOCS / "gen_options.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_options_page_is_generated_from_the_option_table() -> None:
    from pytest_memorization.config.options import OPTIONS

    text = (DOCS / "options.md").read_text()
    assert text == _gen_options().render(), "docs/options.md is stale: run python docs/gen_options.py"
    for o in OPTIONS:  # every option appears with its ini key (or its flag, when it has no ini key)
        assert (f"`memorization_{o.name}`" if o.ini else f"--memorization-{o.dashed}") in text


def test_stale_options_page_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _gen_options()
    page = tmp_path / "options.md"
    page.write_text((DOCS / "options.md").read_text().replace("Fail the run", "Pass the run"))
    monkeypatch.setattr(mod, "PAGE", page)
    assert mod.main(["--check"]) == 1
    assert mod.main([]) == 0 and mod.main(["--check"]) == 0


def test_mkdocs_builds_in_strict_mode(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs-material is in the test extra: pip install -e '.[test]'")
    pytest.importorskip("material")
    # no -q: it hides warnings from --strict's count, and the build passes with broken links
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT,
                         env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "WARNING" not in out.stderr, out.stdout + out.stderr
    assert (tmp_path / "site" / "options" / "index.html").is_file()
    html = (tmp_path / "site" / "ci" / "index.html").read_text()
    assert "memorization-shard" in html  # the release workflow is included from examples/ci/


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.name for p in DOCS.glob("*.md")}
    missing = sorted(p for p in pages if p not in nav)
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"


def _examples() -> list[tuple[str, str]]:
    out = []
    for md in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for i, block in enumerate(TOML_BLOCK.findall(md.read_text())):
            if "[[work]]" in block or "[[canary]]" in block:
                out.append((f"{md.name}#{i}", block))
    return out


def _plain(v):
    """TOML dates as JSON Schema sees them (strings)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v


EXAMPLES = _examples()


def test_the_docs_have_manifest_examples() -> None:
    names = {n.split("#")[0] for n, _ in EXAMPLES}
    assert {"README.md", "manifest.md", "ci.md"} <= names, names


@pytest.mark.parametrize("name, block", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_docs_manifest_example_is_valid(name: str, block: str, tmp_path: Path) -> None:
    import jsonschema
    import tomllib

    from pytest_memorization.manifest.load import load_manifest

    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "memorization.toml"
    path.write_text(block)
    manifest = load_manifest(path, check_images=False, require_model=False)
    assert manifest.works or manifest.canaries
    jsonschema.validate(_plain(tomllib.loads(block)), json.loads(SCHEMA.read_text()))


def test_the_docs_quickstart_is_the_readmes() -> None:
    """Getting started repeats the README's quickstart; the README's is run by tests/test_quickstart.py."""
    from test_quickstart import quickstart_commands

    page = (DOCS / "getting-started.md").read_text().split("## Try it without a model", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", page, re.S)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block[0].splitlines()]
    commands, failure = quickstart_commands()
    assert [c for c in lines if c and not c.startswith("pip install")] == commands
    assert re.sub(r"\s+#.*$", "", block[1].strip()) == failure
