"""The package's layers, read from its imports with ``ast`` (every import, also inside functions).

Data flows one way: manifest -> generation -> scores -> findings -> verdict -> report. A module
may import its own folder and any lower layer; never a higher layer, never a sibling layer of
the same rank, never ``plugin``. There is no import cycle. ``docs/architecture.md`` shows the
same table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "pytest_memorization"

LAYERS = {  # top-level module or folder -> rank (lower = more basic): the INTENDED ranks
    "errors": 0, "_io": 0, "records": 0,
    "images": 1,
    "metrics": 2,
    # siblings: none may import another. Reports render records (never options or rules); the
    # model layer loads and generates (never a detector); testing builds pipelines from diffusers alone.
    "config": 3, "model": 3, "reports": 3, "testing": 3,
    "detectors": 4, "manifest": 4,  # a detector reads the model's Family record
    "judging": 5,
    "run": 6,
    "cli": 7,
    "plugin": 8, "__init__": 8, "__main__": 8,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if mod != "__init__" else []
        if not is_pkg:
            base = base[:-1]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                stem = base[: len(base) - (node.level - 1)]
                target = ".".join([*stem, *([node.module] if node.module else [])])
                if node.module is None:  # from . import x: x may be a module
                    out |= {".".join([*stem, a.name]) for a in node.names}
                else:
                    out.add(target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_memorization"):
                out.add(node.module.removeprefix("pytest_memorization").lstrip(".") or "__init__")
            elif isinstance(node, ast.Import):
                out |= {a.name.removeprefix("pytest_memorization.") for a in node.names
                        if a.name.startswith("pytest_memorization.")}
        known = {_module(p) for p in PKG.rglob("*.py")}
        graph[mod] = {t if t in known else t.rpartition(".")[0] for t in out} - {mod, ""}
    return graph


def _layer(mod: str) -> str:
    return mod.split(".")[0]


def test_every_top_level_name_has_a_layer() -> None:
    names = {_layer(_module(p)) for p in PKG.rglob("*.py")}
    assert names <= set(LAYERS), f"give these a layer in LAYERS and docs/architecture.md: {names - set(LAYERS)}"


def violations(graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``graph`` (module -> modules it imports) that run up or sideways, or import the plugin."""
    bad = []
    for mod, targets in graph.items():
        for t in targets:
            a, b = _layer(mod), _layer(t)
            if t == "plugin":
                bad.append(f"{mod} -> plugin (plugin.py is the roof: nothing imports it)")
            elif a != b and LAYERS[b] >= LAYERS[a]:
                bad.append(f"{mod} (layer {a}, rank {LAYERS[a]}) -> {t} (layer {b}, rank {LAYERS[b]})")
    return sorted(bad)


def test_no_import_runs_up_or_sideways_and_nothing_imports_the_plugin() -> None:
    bad = violations(_imports())
    assert not bad, "imports that run up or sideways:\n" + "\n".join(bad)


def test_the_checker_flags_the_wrong_way_imports() -> None:
    """The ranks are the intended ones, not fitted to today's imports: each of these is refused,
    and the imports the layers are meant to have are allowed."""
    wrong = {"model.generation": {"detectors.noise_magnitude"}, "model.families": {"detectors.denoiser_noise"},
             "reports.pngs": {"config.options"}, "testing": {"detectors.trigger_tokens"},
             "config.settings": {"reports.schema"}, "detectors.common": {"judging.detectors"},
             "judging.verdict": {"run.state"}, "metrics.base": {"plugin"}}
    assert len(violations(wrong)) == sum(map(len, wrong.values())), violations(wrong)
    right = {"detectors.denoiser_noise": {"model.families", "records", "errors"}, "reports.schema": {"records"},
             "manifest.load": {"config.policy"}, "judging.flat_guard": {"config.policy"},
             "run.detect": {"detectors.calibration", "judging.detectors"}, "cli.main": {"reports.merge"}}
    assert violations(right) == []


def test_no_import_cycle() -> None:
    graph = _imports()
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if seen.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t):], t]))
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_verdict_is_assigned_in_one_function() -> None:
    """``.verdict =`` appears once in the package: in ``judging.verdict.decide``."""
    hits = [(p.relative_to(PKG), i) for p in PKG.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\.verdict\s*=[^=]", line)]
    assert [str(p) for p, _ in hits] == ["judging/verdict.py"], hits


def test_small_modules_and_few_top_level_files() -> None:
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 8, top
    big = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"modules over 400 lines: {big}"


def test_the_wheel_ships_no_training_or_demo_code() -> None:
    names = {p.stem for p in PKG.rglob("*.py")}
    assert not names & {"training", "demo_models", "demo_data"}
