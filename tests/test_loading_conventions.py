"""diffusers' loading conventions on the tiny pipelines: ``variant``, ``revision``, ``subfolder``,
``torch_dtype``, LoRAs by hub id (from the local cache only), several LoRAs at once (together and
each alone), and a LoRA for another base (its card's ``base_model``, or its shapes): each with the
good case loading and the bad case a clear error that names both sides and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pytest_memorization.errors import CheckpointError, ManifestError
from pytest_memorization.manifest.load import load_manifest
from pytest_memorization.model.generation import MemorizationModel
from pytest_memorization.model.loading import ModelSource, content_hash, load

PROMPT = "a photo of an astronaut"


def _model(source: ModelSource) -> MemorizationModel:
    pipe, info = load(source)
    return MemorizationModel(pipe, info, batch_size=4)


def _gen(model: MemorizationModel) -> torch.Tensor:
    return model.generate([PROMPT], [0], steps=2, height=32, width=32).images


def _in_cache(hub: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Place ``folder`` where the Hugging Face cache keeps ``repo_id`` at ``commit`` (refs name it)."""
    import hashlib
    import os

    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):  # as the real cache: links to blobs
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline saved as the fp16 variant only (``*.fp16.safetensors``), as hub repos ship it."""
    from pytest_memorization.testing import pipeline_from_components, tiny_components

    folder = tmp_path_factory.mktemp("variant") / "tiny-fp16"
    pipeline_from_components(tiny_components(seed=0)).save_pretrained(folder, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def base_model(tiny_pipeline: Path) -> MemorizationModel:
    return _model(ModelSource(str(tiny_pipeline)))


def test_variant_loads_fp16_files_and_without_it_our_error_names_the_fix(
        fp16_folder: Path, base_model: MemorizationModel) -> None:
    with pytest.raises(CheckpointError, match=r"component '(unet|text_encoder|vae)' holds only fp16 variant weights "
                                              r".*add variant = \"fp16\" to the manifest's \[model\] "
                                              r"\(or pass --memorization-variant fp16\)"):
        load(ModelSource(str(fp16_folder)))
    with pytest.raises(CheckpointError, match=r"variant \"bf16\" was asked for, but component '\w+' has no bf16 "
                                              r"weights .*use variant = \"fp16\""):
        load(ModelSource(str(fp16_folder), variant="bf16"))
    model = _model(ModelSource(str(fp16_folder), variant="fp16"))
    assert model.info.extra["variant"] == "fp16"
    assert torch.allclose(_gen(model), _gen(base_model), atol=1e-5), "same weights, saved as the fp16 variant"
    assert model.info.content_hash != content_hash(fp16_folder), "the variant is part of the model's identity"


def test_revision_picks_the_cached_snapshot_and_subfolder_the_pipeline_inside(
        tiny_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_model: MemorizationModel) -> None:
    from pytest_memorization.testing import build_tiny_pipeline

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    _in_cache(hub, "acme/tiny", tiny_pipeline, "a" * 40)
    v2 = _in_cache(hub, "acme/tiny", other, "b" * 40, refs=("v2",))
    main = _model(ModelSource("acme/tiny"))
    tagged = _model(ModelSource("acme/tiny", revision="v2"))
    by_commit = _model(ModelSource("acme/tiny", revision="b" * 12))
    assert tagged.info.content_hash == by_commit.info.content_hash == content_hash(v2) != main.info.content_hash
    assert torch.allclose(_gen(main), _gen(base_model), atol=1e-5)
    assert not torch.allclose(_gen(tagged), _gen(main), atol=1e-3), "revision v2 is the other pipeline"
    with pytest.raises(CheckpointError, match=r"hub id 'acme/tiny' at revision 'v3' is not in the local Hugging "
                                              r"Face cache .*hf download acme/tiny --revision v3"):
        load(ModelSource("acme/tiny", revision="v3"))
    with pytest.raises(CheckpointError, match=r"revision = \"v2\" applies to a hub id; .* is a local folder"):
        load(ModelSource(str(tiny_pipeline), revision="v2"))

    repo = tmp_path / "repo"  # a folder (or hub repo) holding pipelines in subfolders
    shutil.copytree(tiny_pipeline, repo / "pipelines" / "a")
    (repo / "README.md").write_text("several pipelines\n")
    sub = _model(ModelSource(str(repo), subfolder="pipelines/a"))
    assert sub.info.extra["subfolder"] == "pipelines/a"
    assert torch.allclose(_gen(sub), _gen(base_model), atol=1e-5)
    with pytest.raises(CheckpointError, match=r"subfolder \"pipelines/b\" is not a folder inside it .*folders "
                                              r"there: pipelines"):
        load(ModelSource(str(repo), subfolder="pipelines/b"))
    _in_cache(hub, "acme/multi", repo, "c" * 40)
    assert _model(ModelSource("acme/multi", subfolder="pipelines/a")).info.content_hash == sub.info.content_hash


def test_torch_dtype_loads_the_weights_in_that_dtype(tiny_pipeline: Path) -> None:
    pipe, info = load(ModelSource(str(tiny_pipeline), dtype="bfloat16"))
    assert info.dtype == "bfloat16" and pipe.unet.dtype == torch.bfloat16


def _lora_card(folder: Path, base: str) -> None:
    (folder / "README.md").write_text(f"---\nbase_model: {base}\ninstance_prompt: a photo of sks astronaut\n---\n"
                                      "# a LoRA\n")


def test_a_lora_by_hub_id_comes_from_the_local_cache_only(tiny_pipeline: Path, tiny_lora: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    _in_cache(hub, "acme/astronaut-lora", tiny_lora, "d" * 40)
    model = _model(ModelSource(str(tiny_pipeline), lora="acme/astronaut-lora"))
    by_path = _model(ModelSource(str(tiny_pipeline), lora=str(tiny_lora)))
    assert model.info.lora == "acme/astronaut-lora" and model.info.lora_hash == by_path.info.lora_hash
    assert torch.allclose(_gen(model), _gen(by_path), atol=1e-6)
    with pytest.raises(CheckpointError, match=r"LoRA acme/missing not found: no such file or folder .*and as a hub "
                                              r"id it is not in the local Hugging Face cache .*hf download acme/missing"):
        load(ModelSource(str(tiny_pipeline), lora="acme/missing"))


def test_several_loras_load_at_once_and_each_runs_alone(tiny_pipeline: Path, tiny_lora: Path, tmp_path: Path,
                                                        base_model: MemorizationModel) -> None:
    from pytest_memorization.records import GenerationSettings
    from pytest_memorization.testing import build_tiny_lora

    second = build_tiny_lora(tiny_pipeline, tmp_path / "second", seed=5)
    model = _model(ModelSource(str(tiny_pipeline), loras=((str(tiny_lora), 1.0), (str(second), 0.5))))
    assert [lo.adapter for lo in model.info.loras] == ["memorization_lora_0", "memorization_lora_1"]
    assert model.info.lora == f"{tiny_lora} + {second}"
    first_only = _model(ModelSource(str(tiny_pipeline), lora=str(tiny_lora)))
    second_only = _model(ModelSource(str(tiny_pipeline), lora=str(second), lora_scale=0.5))
    both = _gen(model)
    names = {}
    with model.lora_alone(0):
        assert torch.allclose(_gen(model), _gen(first_only), atol=1e-5), "LoRA 1 alone = a model with only it"
        names["first"] = model._cache_name((PROMPT, 0), GenerationSettings())
        with model.lora_scale(0.0):
            assert torch.allclose(_gen(model), _gen(base_model), atol=1e-5), "weight 0: the base model"
    with model.lora_alone(1):
        assert torch.allclose(_gen(model), _gen(second_only), atol=1e-5), "LoRA 2 alone, at its own scale"
        names["second"] = model._cache_name((PROMPT, 0), GenerationSettings())
    assert torch.allclose(_gen(model), both), "back to all together"
    assert not torch.allclose(both, _gen(first_only), atol=1e-3) and not torch.allclose(both, _gen(second_only), atol=1e-3)
    names["both"] = model._cache_name((PROMPT, 0), GenerationSettings())
    assert len(set(names.values())) == 3, "each selection has its own generation-cache entry"
    with model.lora_scale(0.0):
        assert model._cache_name((PROMPT, 0), GenerationSettings()) == \
            base_model._cache_name((PROMPT, 0), GenerationSettings()), "the base images are shared with the base"


def test_a_lora_for_another_base_is_an_error_naming_both_bases(tiny_pipeline: Path, tiny_lora: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    _in_cache(hub, "acme/tiny-sd", tiny_pipeline, "e" * 40)
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_lora, wrong)
    _lora_card(wrong, "acme/other-base")
    with pytest.raises(CheckpointError, match=r"LoRA .*wrong was made for base model acme/other-base \(its model "
                                              r"card .*README.md says base_model: acme/other-base\), but the base "
                                              r"model in use is acme/tiny-sd .*--memorization-lora-base-check=no"):
        load(ModelSource("acme/tiny-sd", lora=str(wrong)))
    assert _model(ModelSource("acme/tiny-sd", lora=str(wrong), lora_base_check=False)).info.lora
    right = tmp_path / "right"
    shutil.copytree(tiny_lora, right)
    _lora_card(right, "acme/tiny-sd")
    model = _model(ModelSource("acme/tiny-sd", lora=str(right)))
    assert model.info.extra["lora_base_model"] == ["acme/tiny-sd"]
    fine_tune = tmp_path / "fine-tune"  # a base whose own card says it derives from the LoRA's base
    shutil.copytree(tiny_pipeline, fine_tune)
    _lora_card(fine_tune, "acme/other-base")
    _in_cache(hub, "acme/tiny-sd-ft", fine_tune, "f" * 40)
    assert _model(ModelSource("acme/tiny-sd-ft", lora=str(wrong))).info.lora


def test_a_lora_whose_shapes_do_not_fit_is_an_error_naming_both_sides(tiny_pipeline: Path, tiny_lora: Path,
                                                                      tmp_path: Path) -> None:
    """An SD LoRA on an SDXL base (the tiny ones): a clear line, not diffusers' list of size mismatches."""
    from pytest_memorization.testing.families import build_tiny_sdxl

    sdxl = build_tiny_sdxl(tmp_path / "sdxl")
    with pytest.raises(CheckpointError) as e:
        load(ModelSource(str(sdxl), lora=str(tiny_lora)))
    msg = str(e.value)
    assert f"LoRA {tiny_lora} does not fit base model {sdxl} (sdxl)" in msg, msg
    assert "attn2.to_k takes 32 inputs in the LoRA and 64 in the base" in msg, msg
    assert "cross-attention width 32; this base has 64" in msg and "size mismatch" not in msg, msg


def test_manifest_keys_are_checked_before_anything_loads(tmp_path: Path, tiny_pipeline: Path, tiny_lora: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(tiny_pipeline, tmp_path / "models" / "tiny")
    shutil.copytree(tiny_lora, tmp_path / "loras" / "a")
    shutil.copytree(tiny_lora, tmp_path / "loras" / "b")
    work = '[[work]]\nid = "w"\nimage = "w.png"\nprompts = ["a"]\n'
    from PIL import Image

    Image.effect_noise((32, 32), 50).convert("RGB").save(tmp_path / "w.png")

    def manifest(model: str) -> object:
        (tmp_path / "m.toml").write_text(f'[model]\npretrained = "models/tiny"\n{model}\n{work}')
        return load_manifest(tmp_path / "m.toml", offline_hub=True)

    spec = manifest('variant = "fp16"\nsubfolder = "unet"\ntorch_dtype = "torch.bfloat16"\n'
                    'loras = [{ path = "loras/a", scale = 0.8 }, { path = "loras/b" }]').model  # type: ignore[attr-defined]
    assert (spec.variant, spec.subfolder, spec.torch_dtype) == ("fp16", "unet", "bfloat16")
    assert [s for _, s in spec.loras] == [0.8, 1.0]
    bad = {
        'variant = "fp 16"': r"model.variant.*is not a variant name",
        'revision = "v2"': r"model.revision.*applies to a hub id, but pretrained is the local folder",
        'subfolder = "../x"': r"model.subfolder.*without \"..\"",
        'subfolder = "nope"': r"model.subfolder.*'nope' is not a folder in",
        'torch_dtype = "float8"': r"model.torch_dtype.*not one of auto, float32, float16, bfloat16",
        'lora = "acme/not-cached"': r"model.lora.*nor a hub id in the local Hugging Face cache.*hf download",
        'loras = []': r"model.loras.*non-empty array",
        'loras = [{ scale = 1.0 }]': r"model.loras\[0\].path.*missing",
        'loras = [{ path = "loras/a" }, { path = "loras/a" }]': r"model.loras\[1\].path.*listed twice",
        'lora = "loras/a"\nloras = [{ path = "loras/a" }]': r"model.loras.*either lora .* or loras",
    }
    for text, pattern in bad.items():
        with pytest.raises(ManifestError, match=pattern):
            manifest(text)
    _in_cache(tmp_path / "hub", "acme/cached", tiny_lora, "1" * 40)
    assert manifest('loras = [{ path = "acme/cached" }, { path = "loras/a" }]').model.loras[0] == (  # type: ignore[attr-defined]
        "acme/cached", 1.0)


def test_the_manifest_conventions_reach_the_loader_through_pytest(pytester: pytest.Pytester, tiny_pipeline: Path,
                                                                  fp16_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id at a revision, in a subfolder, as the fp16 variant, in float32: one manifest, one pytest run.
    Without variant the same manifest is an ERROR with our message, not diffusers'."""
    from support import save_photo

    hub = pytester.path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    repo = pytester.path / "repo"
    shutil.copytree(fp16_folder, repo / "pipelines" / "sd")
    _in_cache(hub, "acme/tiny", repo, "9" * 40, refs=("release",))
    save_photo("astronaut", pytester.path / "astronaut.png")
    model = ('[model]\npretrained = "acme/tiny"\nrevision = "release"\nsubfolder = "pipelines/sd"\n'
             'torch_dtype = "float32"\nseeds = [0]\nsteps = 2\nheight = 32\nwidth = 32\n{variant}'
             '[[work]]\nid = "astronaut"\nimage = "astronaut.png"\nprompts = ["a photo of an astronaut"]\n')
    pytester.path.joinpath("memorization.toml").write_text(model.format(variant='variant = "fp16"\n'))
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    result = pytester.runpytest("--memorization", "--memorization-report", "rep", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    import json

    run = json.loads((pytester.path / "rep" / "report.json").read_text())["run"]
    assert (run["variant"], run["revision"], run["subfolder"], run["dtype"]) == ("fp16", "release", "pipelines/sd",
                                                                                  "float32")
    pytester.path.joinpath("memorization.toml").write_text(model.format(variant=""))
    bad = pytester.runpytest("--memorization", "-p", "no:cacheprovider")
    bad.assert_outcomes(errors=1)
    bad.stdout.fnmatch_lines(['*holds only fp16 variant weights*add variant = "fp16"*'])
