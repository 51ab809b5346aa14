"""Several LoRAs under the LoRA gate (``loras = [...]`` in [model]), end to end on the tiny pipeline:
one item with all of them together and one per LoRA alone (``fox[0-lora1]``), plus each LoRA's
model-card prompts with that LoRA alone. Proven both ways: the protected work is what LoRA 1 alone
draws, so ``fox[0-lora1]`` FAILS (the LoRA crosses the threshold, the base does not), while LoRA 2
alone and both together PASS (their images are far from it; at most SSIM alone warns). With ``--memorization-lora-card-result``
each LoRA's card gets the gate's result as a section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROMPT = "a photo of a red fox"
MANIFEST = f"""[model]
pretrained = "models/tiny"
seeds = [0]
steps = 2
height = 32
width = 32
gate = "lora"
loras = [{{ path = "loras/a" }}, {{ path = "loras/b", scale = 1.0 }}]

[[work]]
id = "fox"
image = "works/fox.png"
prompts = ["{PROMPT}"]
"""


@pytest.fixture
def several(pytester: pytest.Pytester, tiny_pipeline: Path) -> pytest.Pytester:
    import shutil

    from pytest_memorization.model.generation import MemorizationModel
    from pytest_memorization.model.loading import ModelSource, load
    from pytest_memorization.reports.pngs import save_image
    from pytest_memorization.testing import build_tiny_lora

    root = pytester.path
    shutil.copytree(tiny_pipeline, root / "models" / "tiny")
    a = build_tiny_lora(root / "models" / "tiny", root / "loras" / "a", seed=1, init_scale=3.0)
    build_tiny_lora(root / "models" / "tiny", root / "loras" / "b", seed=2, init_scale=3.0)
    (root / "loras" / "b" / "README.md").write_text("---\ninstance_prompt: a photo of sks fox\n---\n# LoRA b\n")
    model = MemorizationModel(*load(ModelSource(str(root / "models" / "tiny"), lora=str(a))))
    image = model.generate([PROMPT], [0], steps=2, height=32, width=32).images[0]
    save_image(image, root / "works" / "fox.png")  # what LoRA 1 alone draws: the work it copies
    (root / "memorization.toml").write_text(MANIFEST)
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {root / '.cache'}\n")
    return pytester


def test_each_lora_is_gated_alone_and_all_together(several: pytest.Pytester) -> None:
    ids = several.runpytest("--memorization", "--collect-only", "-q")
    ids.stdout.fnmatch_lines(["memorization.toml::fox[[]0[]]", "memorization.toml::fox[[]0-lora1[]]",
                              "memorization.toml::fox[[]0-lora2[]]", "memorization.toml::card[[]lora2-instance[]]"])
    result = several.runpytest("--memorization", "--memorization-report", "rep", "--memorization-lora-card-result",
                               "-p", "no:cacheprovider", "--memorization-lora-card-canaries=no")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "FAILED memorization.toml::fox[0-lora1]" in out, out
    assert f"(LoRA 1 alone: {several.path / 'loras' / 'a'})" in out, out
    report = json.loads((several.path / "rep" / "report.json").read_text())
    rows = {r["item"].rpartition("::")[2]: r for r in report["results"]}
    assert rows["fox[0-lora1]"]["verdict"] == "fail" and rows["fox[0-lora1]"]["scores"]["tiled_l2"] < 0.01
    for ok in ("fox[0]", "fox[0-lora2]"):  # margins: their distance to the work is far above the threshold
        assert rows[ok]["verdict"] in ("pass", "warn") and rows[ok]["scores"]["tiled_l2"] > 0.2, rows[ok]
        assert rows[ok]["scores"]["local_copy"] < 0.1, rows[ok]
        # 32 px images from one seed share their noise: SSIM may come near the work, and SSIM alone only warns
        assert {f["metric"] for f in rows[ok]["findings"]} <= {"ssim"}, rows[ok]["findings"]
        assert all(f["severity"] == "warn" for f in rows[ok]["findings"]), rows[ok]["findings"]
    assert rows["fox[0-lora2]"]["extra"]["lora_alone"]["index"] == 2
    assert {lo["path"] for lo in report["run"]["loras"]} == {str(several.path / "loras" / p) for p in "ab"}
    assert report["run"]["lora"] == f"{several.path / 'loras' / 'a'} + {several.path / 'loras' / 'b'}"
    assert any(line.startswith("memorization: FAIL") and "; LoRA /" in line for line in out.splitlines())
    card_a = (several.path / "loras" / "a" / "README.md").read_text()
    card_b = (several.path / "loras" / "b" / "README.md").read_text()
    assert "## Memorization gate" in card_a and "**FAIL**" in card_a and "`fox[0-lora1]`" in card_a, card_a
    assert card_b.startswith("---\ninstance_prompt: a photo of sks fox\n---\n# LoRA b\n"), "the card is kept"
    assert "**FAIL**" not in card_b and ("**PASS**" in card_b or "**WARN**" in card_b) and "lora1" not in card_b.split("## Memorization gate")[1], card_b
