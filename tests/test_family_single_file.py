"""Single files of SDXL and SD3: the tiny pipelines exported to the original key layout
(``testing/family_export.py``) load through diffusers' ``from_single_file(file, config=folder)``
offline and, through `pytest --memorization`, generate exactly what the folder generates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy.fft  # noqa: F401  - imported here, not first inside a pytester run (it cannot load twice)
import pytest
import support  # noqa: F401  - likewise: scikit-image's photos

from pytest_memorization.errors import CheckpointError

FAMILIES = ("sdxl", "sd3")

MANIFEST = """
[model]
pretrained = "{pretrained}"
{config}
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

[[canary]]
id = "sks"
prompt = "a photo of sks person"
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    from pytest_memorization.testing.families import build_tiny_family
    from pytest_memorization.testing.family_export import copy_family_config, save_family_single_file

    root = tmp_path_factory.mktemp("single")
    out = {}
    for family in FAMILIES:
        folder = build_tiny_family(family, root / family, seed=1)
        out[family] = dict(folder=folder, file=save_family_single_file(folder, root / f"{family}.safetensors"),
                           config=copy_family_config(folder, root / f"{family}-config"))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_the_file_holds_the_denoiser_and_vae_in_the_original_layout(exported: dict[str, dict[str, Path]],
                                                                    family: str) -> None:
    from pytest_memorization.model.families import checkpoint_keys, family_of_keys

    keys = checkpoint_keys(exported[family]["file"])
    assert family_of_keys(keys).name == family  # type: ignore[union-attr]
    assert {k.split(".")[0] for k in keys} == {"model", "first_stage_model"}
    marker = "model.diffusion_model.label_emb.0.0.weight" if family == "sdxl" else \
        "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"
    assert marker in keys
    weights = {p.relative_to(exported[family]["config"]).parts[0]
               for p in exported[family]["config"].rglob("*.safetensors")}
    # the config folder holds weights only for what the file does not: the text encoders
    assert weights == {"text_encoder", "text_encoder_2"} | ({"text_encoder_3"} if family == "sd3" else set())


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_generates_what_the_folder_generates_through_pytest_memorization(
        pytester: pytest.Pytester, exported: dict[str, dict[str, Path]], family: str) -> None:
    from gate_projects import gate_project

    e = exported[family]
    gate_project(pytester, e["folder"], photos=("astronaut",))
    shutil.copy(e["file"], pytester.path / "model.safetensors")
    shutil.copytree(e["config"], pytester.path / "config")
    reports = {}
    for name, pretrained, config in (("folder", "models/tiny", ""),
                                     ("file", "model.safetensors", 'config = "config"')):
        (pytester.path / "memorization.toml").write_text(MANIFEST.format(pretrained=pretrained, config=config))
        result = pytester.runpytest("--memorization", "--memorization-report", f"rep-{name}")
        result.assert_outcomes(passed=2)
        reports[name] = json.loads((pytester.path / f"rep-{name}" / "report.json").read_text())
    folder, single = reports["folder"], reports["file"]
    assert single["run"]["family"] == folder["run"]["family"] == family
    assert single["run"]["model_kind"] == "single-file" and folder["run"]["model_kind"] == "folder"
    rows = {r["item"] + str(r["seed"]): r for r in folder["results"]}
    assert len(single["results"]) == len(rows) == 4
    for r in single["results"]:
        ref = rows[r["item"] + str(r["seed"])]
        assert r["scores"] == pytest.approx(ref["scores"], abs=1e-6), r["item"]
    pngs = sorted((pytester.path / "rep-folder").rglob("*.png"))
    assert pngs, "the report saved no images to compare"
    for png in pngs:
        twin = pytester.path / "rep-file" / png.relative_to(pytester.path / "rep-folder")
        assert twin.read_bytes() == png.read_bytes(), png.name


def test_a_text_encoder_in_neither_the_file_nor_the_config_is_our_error(exported: dict[str, dict[str, Path]],
                                                                          tmp_path: Path) -> None:
    from pytest_memorization.model.loading import ModelSource, load

    config = shutil.copytree(exported["sd3"]["config"], tmp_path / "config")
    (config / "text_encoder_2" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights for 'text_encoder_2' and the config folder "
                                              r".*text_encoder_2 has none either"):
        load(ModelSource(str(exported["sd3"]["file"]), config=str(config), device="cpu"))


def test_flux_is_refused_by_the_exporter_with_the_reason(tmp_path: Path) -> None:
    from pytest_memorization.testing.families import build_tiny_flux
    from pytest_memorization.testing.family_export import save_family_single_file

    folder = build_tiny_flux(tmp_path / "flux")
    with pytest.raises(CheckpointError, match="a FluxPipeline; this exporter writes SDXL and SD3"):
        save_family_single_file(folder, tmp_path / "flux.safetensors")


def test_an_all_in_one_sdxl_file_with_both_text_encoders_loads_with_a_weightless_config(tmp_path: Path) -> None:
    """As real SDXL files are: UNet, VAE, CLIP-L and OpenCLIP-G (open_clip keys) all in the file;
    the config folder has no weights at all, so every weight provably comes from the file."""
    import torch

    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.testing.families import build_tiny_sdxl
    from pytest_memorization.testing.family_export import save_family_single_file

    narrow = build_tiny_sdxl(tmp_path / "narrow")
    with pytest.raises(CheckpointError, match="both 32 wide: diffusers tells an SDXL file's two encoders apart"):
        save_family_single_file(narrow, tmp_path / "narrow.safetensors", text_encoders=True)
    folder = build_tiny_sdxl(tmp_path / "sdxl", seed=2, width_2=48)
    f = save_family_single_file(folder, tmp_path / "sdxl.safetensors", text_encoders=True)
    config = tmp_path / "config"
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix != ".safetensors":
            (config / p.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, config / p.relative_to(folder))
    ref, _ = load(ModelSource(str(folder), device="cpu"))
    pipe, info = load(ModelSource(str(f), config=str(config), device="cpu"))
    assert info.kind == "single-file" and info.extra["family"] == "sdxl"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(ref, name).state_dict(), getattr(pipe, name).state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), name
    kw = dict(num_inference_steps=2, height=64, width=64, output_type="pt")
    a = ref("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    b = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


def test_a_denoiser_only_file_takes_its_vae_from_the_config_folder(exported: dict[str, dict[str, Path]],
                                                                   tmp_path: Path) -> None:
    """The shape of FLUX.1's files (the transformer alone), proven on SD3: the loader passes the
    VAE from the config folder; without VAE weights there, our error names the folder."""
    import torch

    from pytest_memorization.model.families import checkpoint_keys
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.testing.family_export import copy_family_config, save_family_single_file

    folder = exported["sd3"]["folder"]
    f = save_family_single_file(folder, tmp_path / "mmdit.safetensors", vae=False)
    assert not [k for k in checkpoint_keys(f) if k.startswith("first_stage_model.")]
    with pytest.raises(CheckpointError, match=r"holds no VAE and the config folder .*vae has no weights either"):
        load(ModelSource(str(f), config=str(exported["sd3"]["config"]), device="cpu"))
    config = copy_family_config(folder, tmp_path / "config", vae=True)
    ref, _ = load(ModelSource(str(folder), device="cpu"))
    pipe, _ = load(ModelSource(str(f), config=str(config), device="cpu"))
    for name in ("transformer", "vae"):
        want, got = getattr(ref, name).state_dict(), getattr(pipe, name).state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), name
    kw = dict(num_inference_steps=2, height=64, width=64, output_type="pt")
    a = ref("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    b = pipe("a cat", generator=torch.Generator().manual_seed(0), **kw).images
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
