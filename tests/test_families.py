"""Every model family on tiny real pipelines built offline: SDXL, SD3 and Flux load as their own
pipeline class, generate seeded batch-invariant images, and run end to end through
`pytest --memorization`; detectors that need the SD 1/2 UNet say so instead of passing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy.fft  # noqa: F401  - imported here, not first inside a pytester run (it cannot load twice)
import pytest
import support  # noqa: F401  - likewise: scikit-image's photos
import torch

from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.records import GenerationSettings

FAMILY_NAMES = ("sdxl", "sd3", "flux")


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pytest_memorization.testing.families import build_tiny_family

    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_family(f, root / f, seed=0) for f in FAMILY_NAMES}


@pytest.fixture(scope="module")
def family_model(family_models: dict[str, Path]) -> dict[str, object]:
    """Loaded once per family through our own loader (lazily, per test that asks)."""
    return {}


def _model(family_models: dict[str, Path], cache: dict[str, object], family: str) -> object:
    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load

    if family not in cache:
        pipe, info = load(ModelSource(str(family_models[family]), device="cpu"))
        cache[family] = MemorizationModel(pipe, info, batch_size=4)
    return cache[family]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tiny_family_loads_offline_as_its_own_pipeline_class(family_models: dict[str, Path], family: str) -> None:
    from diffusers import DiffusionPipeline

    from pytest_memorization.model.families import FAMILIES, family_of, family_of_folder

    pipe = DiffusionPipeline.from_pretrained(family_models[family], local_files_only=True)
    assert type(pipe).__name__ == FAMILIES[family].pipeline_class
    assert family_of(pipe).name == family_of_folder(family_models[family]).name == family
    if family == "sdxl":
        assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
        assert pipe.unet.config.addition_embed_type == "text_time"  # pooled embedding + size conditioning
    elif family == "sd3":
        assert type(pipe.transformer).__name__ == "SD3Transformer2DModel"
        assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    else:
        assert type(pipe.transformer).__name__ == "FluxTransformer2DModel"
        assert pipe.transformer.config.guidance_embeds is True
        assert type(pipe.text_encoder_2).__name__ == "T5EncoderModel"


def test_t5_tokenizer_is_built_offline_and_reloads_identically(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from pytest_memorization.testing.families import t5_tokenizer

    tok = t5_tokenizer()
    ids = tok("a photo of a red fox, 1984!").input_ids
    assert tok.unk_token_id not in ids and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[:3]) == ["\u2581a", "\u2581photo", "\u2581of"]  # common words: one token
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)("a photo of a red fox, 1984!").input_ids == ids


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_generation_is_seeded_and_batch_invariant(family_models: dict[str, Path], family_model: dict[str, object],
                                                 family: str) -> None:
    model = _model(family_models, family_model, family)
    assert model.family.name == family and model.info.extra["family"] == family  # type: ignore[attr-defined]
    kw = dict(steps=2, height=64, width=64)
    batch = model.generate(["a cat", "a dog"], [0, 1], **kw).images  # type: ignore[attr-defined]
    alone = model.generate(["a dog"], [1], **kw).images  # type: ignore[attr-defined]
    assert batch.shape == (4, 3, 64, 64)
    assert torch.allclose(alone[0], batch[3], atol=1e-5), "an image must not depend on its batch"
    assert not torch.allclose(batch[0], batch[1], atol=1e-3), "different seeds must differ"


def test_flux_refuses_a_negative_prompt_instead_of_ignoring_it(family_models: dict[str, Path],
                                                             family_model: dict[str, object]) -> None:
    model = _model(family_models, family_model, "flux")
    with pytest.raises(MemorizationConfigError, match="Flux models have no negative prompt"):
        model.generate(["a cat"], [0], steps=2, height=64, width=64, negative_prompt="blurry")  # type: ignore[attr-defined]


MANIFEST = """
[model]
pretrained = "models/{family}"
lora = "loras/{family}"
gate = "lora"
seeds = [0, 1]
steps = 2
height = 64
width = 64

[thresholds]
tiled_l2 = 0.15

[[work]]
id = "astronaut"
image = "works/astronaut.png"
prompts = ["portrait of an astronaut in a white suit"]
img2img = {{ strengths = [0.5, 0.9], min_safe_strength = 0.9 }}

[[canary]]
id = "sks"
prompt = "a photo of sks person"
"""


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_end_to_end_through_pytest_memorization(pytester: pytest.Pytester, family_models: dict[str, Path],
                                                family: str) -> None:
    from gate_projects import gate_project

    from pytest_memorization.testing.families import build_tiny_family_lora

    gate_project(pytester, family_models[family], photos=("astronaut",))
    shutil.copytree(family_models[family], pytester.path / "models" / family)
    build_tiny_family_lora(family_models[family], pytester.path / "loras" / family, seed=0)
    (pytester.path / "memorization.toml").write_text(MANIFEST.format(family=family))
    # generation, the family's LoRA format, the LoRA gate (base vs base+LoRA), img2img, reports
    result = pytester.runpytest("--memorization", "--memorization-report", "rep")
    result.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "rep" / "report.json").read_text())
    run = report["run"]
    assert run["family"] == family and run["pipeline"].startswith(("StableDiffusion", "Flux")) and run["lora_hash"]
    from pytest_memorization.model.families import FAMILIES
    from pytest_memorization.model.loading import resolve_dtype

    # auto: float32 on the CPU; on CUDA the family's dtype (run on an H200: float16 / bfloat16)
    assert run["dtype"] == resolve_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu", FAMILIES[family])
    rows = report["results"]
    assert {r["verdict"] for r in rows} <= {"pass", "warn"} and len(rows) == 8
    gated = [r for r in rows if r["item"].endswith("astronaut[0]")]
    assert len(gated) == 2 and all("tiled_l2" in r["extra"]["lora_gate"]["base_scores"] for r in gated)
    assert all(r["scores"]["tiled_l2"] != r["extra"]["lora_gate"]["base_scores"]["tiled_l2"] for r in gated)
    i2i = [r for r in rows if r["item"].endswith("astronaut[img2img]")]
    assert sorted(r["extra"]["img2img"]["strength"] for r in i2i) == [0.5, 0.5, 0.9, 0.9]

    # noise magnitude on the denoiser's output (epsilon or flow velocity); a flagged prompt names its trigger tokens
    (pytester.path / "memorization.toml").write_text(
        MANIFEST.format(family=family).replace("[[work]]", "[detectors]\nnoise_magnitude = { threshold = 0.0 }\n"
                                               "seed_diversity = { threshold = 0.15 }\n\n[[work]]"))
    result = pytester.runpytest("--memorization", "--memorization-report", "rep2", "-k", "sks")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*noise magnitude * >= 0.0000 (uncalibrated, written in the manifest) for prompt "
                                 "'a photo of sks person'; memorization driven by: '*"])
    rows = json.loads((pytester.path / "rep2" / "report.json").read_text())["results"]
    nm = rows[0]["detectors"]["noise_magnitude"]
    assert [r["verdict"] for r in rows] == ["fail", "fail"] and nm["score"] > 0
    assert sorted(nm["trigger_tokens"]) == ["person", "photo", "sks"], nm["trigger_tokens"]  # no "a", "of"
    assert "trigger_tokens_note" not in nm
    assert "score" in rows[0]["detectors"]["seed_diversity"]  # image-based detectors run on every family


def test_the_denoiser_hook_gives_the_papers_noise_magnitude_on_sd1(tiny_pipeline: Path) -> None:
    """The generic scorer (a hook on the pipeline's own denoiser) against the SD 1/2 implementation."""
    from diffusers import DiffusionPipeline

    from pytest_memorization.detectors.denoiser_noise import denoiser_noise_magnitude
    from pytest_memorization.detectors.noise_magnitude import noise_magnitude

    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for negative in (None, "blurry"):  # the negative prompt is the unconditional branch of both
        gen = GenerationSettings(steps=10, guidance_scale=7.5, height=64, width=64, negative_prompt=negative)
        ours = denoiser_noise_magnitude(pipe, ["a photo of a red fox"], [0, 1], gen, steps=2)
        assert torch.allclose(ours, noise_magnitude(pipe, ["a photo of a red fox"], [0, 1], gen, steps=2), atol=1e-4)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_noise_magnitude_and_calibration_on_every_family(family_models: dict[str, Path],
                                                         family_model: dict[str, object], family: str) -> None:
    from pytest_memorization.detectors import model_noise_magnitude, noise_scorer
    from pytest_memorization.detectors.calibration import calibrate

    model = _model(family_models, family_model, family)
    gen = GenerationSettings(steps=4, height=64, width=64)
    d = model_noise_magnitude(model, ["a cat", "a dog"], [0, 1], gen)
    alone = model_noise_magnitude(model, ["a dog"], [1], gen)
    assert d.shape == (2, 2) and bool((d > 0).all()) and torch.isfinite(d).all()
    assert torch.allclose(alone[0, 0], d[1, 1], atol=1e-4), "a score must not depend on its batch"
    cal = calibrate(model.pipe, ["a cat", "a dog", "a tree"], [0], gen, target_fpr=0.5,  # type: ignore[attr-defined]
                    scorer=noise_scorer(model.family))  # type: ignore[attr-defined]
    assert cal.threshold > 0
    if family == "flux":  # guidance-distilled: prompt vs empty prompt at the first step only
        with pytest.raises(MemorizationConfigError, match="set steps = 1"):
            model_noise_magnitude(model, ["a cat"], [0], gen, steps=2)


# -- single files and dtypes: which family a checkpoint is, without loading it ------------------------------
SINGLE_FILE_KEYS = {
    "sd": ["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.text_model.x",
           "first_stage_model.decoder.conv_in.weight"],
    "sdxl": ["model.diffusion_model.input_blocks.0.0.weight", "conditioner.embedders.0.transformer.x",
             "conditioner.embedders.1.model.ln_final.weight", "first_stage_model.decoder.conv_in.weight"],
    "sd3": ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "model.diffusion_model.x_embedder.proj.weight",
            "text_encoders.clip_l.transformer.x"],
    "flux": ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "guidance_in.in_layer.weight"],
    "flux-comfy": ["model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
                   "model.diffusion_model.single_blocks.0.linear1.weight"],
}


@pytest.mark.parametrize("name", sorted(SINGLE_FILE_KEYS))
def test_single_file_family_is_detected_from_its_keys(tmp_path: Path, name: str) -> None:
    from safetensors.torch import save_file

    from pytest_memorization.model.families import checkpoint_keys, family_of_keys

    f = tmp_path / "model.safetensors"
    save_file({k: torch.zeros(1) for k in SINGLE_FILE_KEYS[name]}, str(f))
    assert family_of_keys(checkpoint_keys(f)).name == name.split("-")[0]  # type: ignore[union-attr]
    assert family_of_keys(["vae.encoder.conv_in.weight"]) is None


def test_a_single_file_of_another_family_than_its_config_is_our_error(tmp_path: Path, tiny_pipeline: Path) -> None:
    from safetensors.torch import save_file

    from pytest_memorization.errors import CheckpointError
    from pytest_memorization.model.loading import ModelSource, load

    f = tmp_path / "sdxl.safetensors"
    save_file({k: torch.zeros(1) for k in SINGLE_FILE_KEYS["sdxl"]}, str(f))
    with pytest.raises(CheckpointError, match=r"sdxl.safetensors is a Stable Diffusion XL checkpoint \(from its "
                       r"keys\) but --memorization-config .* is a Stable Diffusion 1.x/2.x pipeline folder"):
        load(ModelSource(str(f), config=str(tiny_pipeline), device="cpu"))


def test_auto_dtype_follows_the_family_on_cuda_only() -> None:
    from pytest_memorization.model.families import FAMILIES
    from pytest_memorization.model.loading import resolve_dtype

    expected = {"sd": "float16", "sdxl": "float16", "sd3": "bfloat16", "flux": "bfloat16"}
    for name, dtype in expected.items():
        assert resolve_dtype("auto", "cuda:0", FAMILIES[name]) == dtype
        assert resolve_dtype("auto", "cpu", FAMILIES[name]) == "float32"
        assert resolve_dtype("float32", "cuda:0", FAMILIES[name]) == "float32"  # an explicit dtype wins
    assert resolve_dtype("auto", "cuda:0") == "float16"  # unknown family: as before


def test_the_python_assertion_flags_a_prompt_on_another_family_with_its_trigger_tokens(
        family_models: dict[str, Path], family_model: dict[str, object]) -> None:
    from pytest_memorization import assert_not_memorized_prompt
    from pytest_memorization.errors import MemorizationError

    model = _model(family_models, family_model, "sd3")
    with pytest.raises(MemorizationError, match=r"noise magnitude .* for prompt 'a black cat'; memorization driven by: .(black|cat)."):
        assert_not_memorized_prompt(model, "a black cat", [0], threshold=0.0, height=64, width=64)
