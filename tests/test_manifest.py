"""manifest.py: the TOML contract, every bad input as a ManifestError naming file, key and fix."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pytest_memorization.errors import ManifestError
from pytest_memorization.manifest.load import MAX_PARAPHRASES, load_manifest, project_root

DELETE = object()


def toml_value(v: Any) -> str:
    """A tiny TOML writer: everything inline, keys always quoted."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def dumps(data: dict[str, Any]) -> str:
    return "".join(f"{toml_value(str(k))} = {toml_value(v)}\n" for k, v in data.items())


def base() -> dict[str, Any]:
    return {
        "model": {"pretrained": "models/base", "seeds": [0, 1], "steps": 2, "height": 64, "width": 64},
        "thresholds": {"tiled_l2": 0.15, "clip": 0.95},
        "work": [{"id": "astronaut", "image": "works/a.png", "prompts": ["portrait of an astronaut"]}],
        "canary": [{"id": "sks", "prompt": "a photo of sks person"}],
    }


def mutate(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for dotted, value in changes.items():
        parts: list[Any] = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        node = data
        for p in parts[:-1]:
            node = node[p]
        if value is DELETE:
            del node[parts[-1]]
        elif isinstance(node, list) and parts[-1] == len(node):
            node.append(value)
        else:
            node[parts[-1]] = value
    return data


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("manifests")
    root = top / "proj"
    (root / "works").mkdir(parents=True)
    (root / "models" / "base").mkdir(parents=True)
    (root / "models" / "base-config").mkdir()
    (root / "models" / "single.safetensors").write_bytes(b"not really weights")
    (root / "loras").mkdir()
    (root / "loras" / "style.safetensors").write_bytes(b"x")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "works" / "a.png")
    Image.new("RGB", (16, 16), (10, 10, 200)).save(top / "outside.png")
    (root / "works" / "text.png").write_text("not an image")
    data = (root / "works" / "a.png").read_bytes()
    (root / "works" / "truncated.png").write_bytes(data[: len(data) // 2])
    return root


def write(proj: Path, content: dict[str, Any] | str | bytes, name: str = "memorization.toml") -> Path:
    path = proj / name
    if isinstance(content, dict):
        content = dumps(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def error(proj: Path, content: dict[str, Any] | str | bytes, **kw: Any) -> ManifestError:
    path = write(proj, content)
    with pytest.raises(ManifestError) as e:
        load_manifest(path, **kw)
    assert str(path) in str(e.value), "the message names the file"
    return e.value


def test_valid_manifest_loads(proj: Path) -> None:
    text = f"""metrics = ["tiled_l2", "ssim"]
[model]
pretrained = "models/base"
lora = "loras/style.safetensors"
lora_scale = 0.8
gate = "lora"
seeds = [0, 1, 2, 3]
steps = 25
guidance_scale = 7.5
height = 512
width = 512
negative_prompt = "blurry"

[thresholds]
tiled_l2 = 0.15
sscd = 0.5
lpips = 0.2
clip = 0.95
ssim = -0.5

[warn]
clip = 0.9

[detectors]
noise_magnitude = {{ threshold = 3.2, steps = 1 }}
seed_diversity = {{ gate = true }}

[[work]]
id = "astronaut"
image = "works/a.png"
sha256 = "{hashlib.sha256((proj / 'works' / 'a.png').read_bytes()).hexdigest().upper()}"
prompts = ["portrait of an astronaut in a white suit", "NASA astronaut photo"]
thresholds = {{ clip = 0.9 }}
paraphrases = 2
img2img = {{ strengths = [0.3, 0.5, 0.75], min_safe_strength = 0.5 }}

[[work]]
id = "astronaut.v2"
image = "{proj / 'works' / 'a.png'}"
prompts = ["astronaut"]
paraphrases = ["an astronaut", "astronaut, photo"]

[[canary]]
prompt = "a photo of sks person"
paraphrases = 1

[[canary]]
id = "sks_2"
prompt = "sks"
"""
    m = load_manifest(write(proj, text))
    assert m.path == proj / "memorization.toml" and m.project_root == proj.resolve()
    assert m.model.pretrained == str((proj / "models" / "base").resolve()) and m.model.pretrained_kind == "folder"
    assert m.model.lora == str((proj / "loras" / "style.safetensors").resolve())
    assert (m.model.seeds, m.model.steps, m.model.gate, m.model.lora_scale) == ([0, 1, 2, 3], 25, "lora", 0.8)
    assert m.thresholds == {"tiled_l2": 0.15, "sscd": 0.5, "lpips": 0.2, "clip": 0.95, "ssim": -0.5}
    assert m.warn == {"clip": 0.9} and m.metrics == ["tiled_l2", "ssim"]
    assert m.detectors == {"noise_magnitude": {"threshold": 3.2, "steps": 1}, "seed_diversity": {"gate": True}}
    w = m.works[0]
    assert w.image == (proj / "works" / "a.png").resolve() and w.sha256 and w.sha256.islower()
    assert w.thresholds == {"clip": 0.9} and w.img2img and w.img2img.strengths == [0.3, 0.5, 0.75]
    assert [len(p) for p in w.paraphrases] == [2, 2]
    assert all(x not in w.prompts for p in w.paraphrases for x in p)
    assert m.works[1].paraphrases == [["an astronaut", "astronaut, photo"]]
    assert [c.id for c in m.canaries] == ["canary-0", "sks_2"] and len(m.canaries[0].paraphrases) == 1
    assert load_manifest(write(proj, text)) == m, "deterministic, paraphrases included"


def test_hub_ids_single_files_and_options(proj: Path) -> None:
    m = load_manifest(write(proj, mutate(base(), {"model.pretrained": "org/some-model_v1.5"})))
    assert m.model.pretrained == "org/some-model_v1.5" and m.model.pretrained_kind == "hub"
    m = load_manifest(write(proj, mutate(base(), {"model.pretrained": "models/single.safetensors",
                                                  "model.config": "models/base-config"})))
    assert m.model.pretrained_kind == "file" and m.model.config == str((proj / "models/base-config").resolve())
    e = error(proj, mutate(base(), {"model.pretrained": "./org/model"}))
    assert e.key == "model.pretrained" and "does not exist" in str(e)
    e = error(proj, mutate(base(), {"model.pretrained": "org/model.safetensors"}))
    assert e.key == "model.pretrained"
    # no model: an error unless the command line gives one
    no_model = mutate(base(), {"model": DELETE})
    assert "missing model" in str(error(proj, no_model))
    assert load_manifest(write(proj, no_model), require_model=False).model.pretrained is None
    # check_images=False reads no files: a missing image (and model folder) is fine then
    lazy = mutate(base(), {"work.0.image": "works/later.png", "model.pretrained": "models/later"})
    assert load_manifest(write(proj, lazy), check_images=False).works[0].image.name == "later.png"
    assert error(proj, lazy).key == "model.pretrained"


def test_outside_root(proj: Path) -> None:
    data = mutate(base(), {"work.0.image": "../outside.png"})
    e = error(proj, data)
    assert e.key == "work[0].image"
    assert str((proj.parent / "outside.png").resolve()) in str(e) and str(proj.resolve()) in str(e)
    assert "--memorization-allow-outside-root" in str(e) and "memorization_allow_outside_root = true" in str(e)
    m = load_manifest(write(proj, data), allow_outside_root=True)
    assert m.works[0].image == (proj.parent / "outside.png").resolve()
    absolute = mutate(base(), {"model.lora": "/", "model.gate": "lora"})
    assert error(proj, absolute).key == "model.lora"


def test_project_root(proj: Path, tmp_path: Path) -> None:
    nested = proj / "a" / "b"
    nested.mkdir(parents=True, exist_ok=True)
    assert project_root(nested / "memorization.toml") == proj.resolve()
    (proj / "a" / "tox.ini").write_text("")
    assert project_root(nested / "m.toml") == (proj / "a").resolve()
    (tmp_path / "x").mkdir()
    if not any((d / m).exists() for d in tmp_path.resolve().parents
               for m in ("pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg", ".git")):
        assert project_root(tmp_path / "x" / "m.toml") == (tmp_path / "x").resolve()


# (changes to the base manifest, the key named, words the message must contain)
CASES: list[tuple[str, dict[str, Any], str | None, list[str]]] = [
    ("unknown top-level key", {"modle": {}}, "modle", ["did you mean 'model'"]),
    ("unknown work key", {"work.0.promts": ["x"]}, "work[0].promts", ["did you mean 'prompts'"]),
    ("unknown model key", {"model.seed": [1]}, "model.seed", ["did you mean 'seeds'"]),
    ("unknown canary key", {"canary.0.promt": "x"}, "canary[0].promt", ["did you mean 'prompt'"]),
    ("model not a table", {"model": "models/base"}, "model", ["expected a table", "[model]"]),
    ("missing model", {"model": DELETE}, "model.pretrained", ["missing model", "--memorization-model"]),
    ("missing pretrained", {"model.pretrained": DELETE}, "model.pretrained", ["missing model"]),
    ("pretrained not found", {"model.pretrained": "models/nope"}, "model.pretrained", ["does not exist"]),
    ("config not a folder", {"model.config": "loras/style.safetensors"}, "model.config", ["is a file, expected a folder"]),
    ("missing image", {"work.0.image": "works/nope.png"}, "work[0].image", ["does not exist"]),
    ("text file named .png", {"work.0.image": "works/text.png"}, "work[0].image", ["cannot read image"]),
    ("truncated PNG", {"work.0.image": "works/truncated.png"}, "work[0].image", ["cannot read image"]),
    ("sha256 mismatch", {"work.0.sha256": "0" * 64}, "work[0].sha256", ["expected sha256 " + "0" * 64, "actual"]),
    ("sha256 not hex", {"work.0.sha256": "abc"}, "work[0].sha256", ["64 hex digits"]),
    ("duplicate work id", {"work.1": {"id": "astronaut", "image": "works/a.png", "prompts": ["b"]}},
     "work[1].id", ["duplicate id 'astronaut'", "work[0]"]),
    ("duplicate canary id", {"canary.1": {"id": "sks", "prompt": "b"}}, "canary[1].id", ["duplicate id 'sks'"]),
    ("unsafe id", {"work.0.id": "my work/1"}, "work[0].id", ["did you mean 'my-work-1'"]),
    ("id starting with a dot", {"canary.0.id": ".."}, "canary[0].id", ["test ids and file names"]),
    ("missing work id", {"work.0.id": DELETE}, "work[0].id", ["missing"]),
    ("prompts is a string", {"work.0.prompts": "an astronaut"}, "work[0].prompts", ["expected an array", "string"]),
    ("empty prompts", {"work.0.prompts": []}, "work[0].prompts", ["is empty"]),
    ("empty prompt", {"work.0.prompts": ["ok", ""]}, "work[0].prompts[1]", ["is empty"]),
    ("whitespace prompt", {"canary.0.prompt": "   "}, "canary[0].prompt", ["is empty"]),
    ("canary prompt is a list", {"canary.0.prompt": ["a", "b"]}, "canary[0].prompt", ["not an array"]),
    ("repeated prompt", {"work.0.prompts": ["a", "a"]}, "work[0].prompts[1]", ["repeats"]),
    ("threshold is a string", {"thresholds.clip": "0.9"}, "thresholds.clip", ["a string, not a number", "in [-1, 1] (no quotes)", "e.g. clip = 0.95"]),
    ("threshold is a boolean", {"thresholds.clip": True}, "thresholds.clip", ["boolean"]),
    ("threshold out of range", {"thresholds.tiled_l2": 1.5}, "thresholds.tiled_l2", ["out of range", "[0, 1]"]),
    ("lpips threshold 2", {"thresholds.lpips": 2.0}, "thresholds.lpips", ["[0, 2)"]),
    ("threshold NaN", {"thresholds.sscd": math.nan}, "thresholds.sscd", ["nan is not a finite number"]),
    ("unknown metric", {"thresholds.clipp": 0.9}, "thresholds.clipp", ["unknown metric", "did you mean 'clip'"]),
    ("per-work threshold", {"work.0.thresholds": {"ssim": 2}}, "work[0].thresholds.ssim", ["[-1, 1]"]),
    ("warn threshold", {"warn": {"tiled_l2": -0.1}}, "warn.tiled_l2", ["[0, 1]"]),
    ("negative seed", {"model.seeds": [0, -1]}, "model.seeds", ["out of range", "0 .. 2**63-1"]),
    ("float seed", {"model.seeds": [1.5]}, "model.seeds", ["[0, 1, 2, 3]"]),
    ("boolean seed", {"model.seeds": [True]}, "model.seeds", ["non-negative integers"]),
    ("seeds as a string", {"model.seeds": "0,1"}, "model.seeds", ["seeds = [0, 1, 2, 3]"]),
    ("repeated seed", {"model.seeds": [0, 0]}, "model.seeds", ["repeat"]),
    ("no seeds", {"model.seeds": []}, "model.seeds", ["no seeds"]),
    ("huge seed", {"model.seeds": [2**63]}, "model.seeds", ["out of range"]),
    ("steps 0", {"model.steps": 0}, "model.steps", [">= 1"]),
    ("height not multiple of 8", {"model.height": 500}, "model.height", ["multiple of 8"]),
    ("width 0", {"model.width": 0}, "model.width", ["multiple of 8"]),
    ("guidance is a string", {"model.guidance_scale": "7.5"}, "model.guidance_scale", ["not a number"]),
    ("lora_scale too big", {"model.lora_scale": 11}, "model.lora_scale", ["[0, 10]"]),
    ("negative_prompt not a string", {"model.negative_prompt": 3}, "model.negative_prompt", ["string"]),
    ("strength 0", {"work.0.img2img": {"strengths": [0.0]}}, "work[0].img2img.strengths[0]", ["(0, 1]"]),
    ("strength > 1", {"work.0.img2img": {"strengths": [0.5, 1.5]}}, "work[0].img2img.strengths[1]", ["(0, 1]"]),
    ("strengths not a list", {"work.0.img2img": {"strengths": 0.5}}, "work[0].img2img.strengths", ["array"]),
    ("min_safe_strength", {"work.0.img2img": {"strengths": [0.5], "min_safe_strength": 0}},
     "work[0].img2img.min_safe_strength", ["(0, 1]"]),
    ("unknown img2img key", {"work.0.img2img": {"strength": [0.5]}}, "work[0].img2img.strength",
     ["did you mean 'strengths'"]),
    ("negative paraphrases", {"work.0.paraphrases": -1}, "work[0].paraphrases", [">= 0"]),
    ("float paraphrases", {"canary.0.paraphrases": 1.5}, "canary[0].paraphrases", ["array of strings"]),
    ("too many paraphrases", {"canary.0.paraphrases": MAX_PARAPHRASES + 1}, "canary[0].paraphrases", ["more than"]),
    ("paraphrase not a string", {"work.0.paraphrases": ["ok", 2]}, "work[0].paraphrases[1]", ["string"]),
    ("paraphrase equals prompt", {"canary.0.paraphrases": ["a photo of sks person"]}, "canary[0].paraphrases[0]",
     ["already a prompt"]),
    ("paraphrase list with 2 prompts", {"work.0.prompts": ["a", "b"], "work.0.paraphrases": ["c"]},
     "work[0].paraphrases", ["one array per prompt"]),
    ("paraphrase lists count", {"work.0.paraphrases": [["a"], ["b"]]}, "work[0].paraphrases",
     ["2 lists for 1 prompts"]),
    ("unknown gate", {"model.gate": "base"}, "model.gate", ['"lora"']),
    ("lora gate without lora", {"model.gate": "lora"}, "model.gate", ["no lora"]),
    ("no works, no canaries", {"work": DELETE, "canary": DELETE}, None, ["no works and no canaries"]),
    ("work not an array", {"work": "x"}, "work", ["[[work]]"]),
    ("unknown detector", {"detectors": {"noise_magnitud": {}}}, "detectors.noise_magnitud",
     ["did you mean 'noise_magnitude'"]),
    ("detector threshold", {"detectors": {"noise_magnitude": {"threshold": -1}}}, "detectors.noise_magnitude.threshold",
     ["calibrated"]),
    ("detector key", {"detectors": {"seed_diversity": {"treshold": 1}}}, "detectors.seed_diversity.treshold",
     ["did you mean 'threshold'"]),
    ("detector gate", {"detectors": {"seed_diversity": {"gate": "yes"}}}, "detectors.seed_diversity.gate",
     ["true or false"]),
    ("detector not a table", {"detectors": {"noise_magnitude": 3.2}}, "detectors.noise_magnitude", ["table"]),
    ("unknown metric in metrics", {"metrics": ["ssim2"]}, "metrics[0]", ["did you mean 'ssim'"]),
    ("metrics is a string", {"metrics": "ssim"}, "metrics", ["array"]),
    ("huge integer", {"thresholds.clip": 10**400}, "thresholds.clip", ["not a finite number"]),
]


@pytest.mark.parametrize("changes,key,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest(proj: Path, changes: dict[str, Any], key: str | None, words: list[str]) -> None:
    data = mutate(base(), changes)
    if "model.gate" in changes or "model.lora" in changes:
        data["model"].pop("lora", None)
    e = error(proj, data)
    assert e.key == key, str(e)
    if key:
        assert f"key '{key}'" in str(e)
    for w in words:
        assert w in str(e), f"{w!r} not in {e}"


def test_good_variants_of_the_cases_load(proj: Path) -> None:
    """The boundaries just inside every range are accepted (the checks are not too strict)."""
    good = mutate(base(), {"thresholds": {"tiled_l2": 1, "lpips": 1.99, "ssim": -1, "clip": 0.999, "sscd": 0},
                           "model.lora_scale": 0, "model.guidance_scale": 0, "model.height": 8,
                           "work.0.img2img": {"strengths": [1.0, 0.01], "min_safe_strength": 1.0},
                           "work.0.paraphrases": 0, "canary.0.paraphrases": [],
                           "detectors": {"noise_magnitude": {}, "seed_diversity": {"threshold": 0}}})
    m = load_manifest(write(proj, good))
    assert m.works[0].paraphrases == [[]] and m.canaries[0].paraphrases == []
    assert m.detectors == {"noise_magnitude": {}, "seed_diversity": {"threshold": 0.0}}


@pytest.mark.parametrize("text,key,words", [
    ('[model]\npretrained = "models/base"\nsteps = \n', None, ["invalid TOML", "line 3, column", "steps ="]),
    ('[model]\npretrained = "models/base"\n[thresholds]\nclip = 0.9\nmetrics = ["clip"]\n[[canary]]\nprompt = "x"\n',
     "thresholds.metrics", ["must come before the first table", "[thresholds]"]),
    ('[model]\npretrained = "models/base"\n[work]\nid = "a"\n', "work", ["[[work]]", "double brackets"]),
    ('[model]\npretrained = "models/base"\n[[canary]]\nprompt = "x"\n[[canary]]\nid = "canary-0"\nprompt = "y"\n',
     "canary[1].id", ["duplicate id 'canary-0'"]),
    (b"\xff\xfe[model]", None, ["not UTF-8"]),
    ("x = " + "[" * 5000 + "]" * 5000, None, ["invalid TOML"]),
])
def test_bad_text(proj: Path, text: str | bytes, key: str | None, words: list[str]) -> None:
    e = error(proj, text)
    assert e.key == key
    for w in words:
        assert w in str(e), f"{w!r} not in {e}"


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="file not found"):
        load_manifest(tmp_path / "nope.toml")
    with pytest.raises(ManifestError):
        load_manifest(tmp_path)  # a folder


def test_bom_is_accepted(proj: Path) -> None:
    assert load_manifest(write(proj, "\ufeff" + dumps(base()))).works[0].id == "astronaut"


# --- fuzzing: arbitrary TOML never gives a traceback, only ManifestError ------------------------------

KEYS = ["model", "thresholds", "warn", "metrics", "detectors", "work", "canary", "pretrained", "config", "lora",
        "lora_scale", "gate", "seeds", "steps", "guidance_scale", "height", "width", "negative_prompt", "id",
        "image", "sha256", "prompts", "prompt", "paraphrases", "img2img", "strengths", "min_safe_strength",
        "tiled_l2", "ssim", "lpips", "clip", "sscd", "noise_magnitude", "seed_diversity", "threshold"]
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=12), st.sampled_from(["models/base", "works/a.png", "../outside.png", "/", "org/m",
                                           "works/text.png", "lora", "clip", "a\x00b", "~nouser/x", "x" * 300]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), VALUES, max_size=6))
def test_fuzz_random_documents(proj: Path, data: dict[str, Any]) -> None:
    _load_only_manifest_errors(write(proj, dumps(data), "fuzz.toml"))


@FUZZ
@given(path=st.sampled_from(["model.pretrained", "model.seeds", "model.steps", "model.height", "model.gate",
                             "model.lora", "thresholds", "thresholds.clip", "work", "work.0", "work.0.id",
                             "work.0.image", "work.0.prompts", "work.0.paraphrases", "work.0.img2img",
                             "work.0.thresholds", "work.0.sha256", "canary.0", "canary.0.paraphrases",
                             "canary.0.id", "detectors", "metrics", "warn"]), value=VALUES)
def test_fuzz_one_field_of_a_valid_manifest(proj: Path, path: str, value: Any) -> None:
    _load_only_manifest_errors(write(proj, dumps(mutate(base(), {path: value})), "fuzz.toml"))


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_random_bytes(proj: Path, raw: bytes) -> None:
    _load_only_manifest_errors(write(proj, raw, "fuzz.toml"))


def _load_only_manifest_errors(path: Path) -> None:
    try:
        load_manifest(path)
    except ManifestError as e:
        assert str(path) in str(e)
