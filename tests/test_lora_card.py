"""Model-card canaries: the prompts a LoRA's README.md front matter and text give (pure parsing
here; on the trained demo LoRAs in tests/test_demo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_memorization.errors import MemorizationConfigError
from pytest_memorization.manifest.card import class_prompt, read_card, trigger_words

DREAMBOOTH_CARD = """---
base_model: runwayml/stable-diffusion-v1-5
instance_prompt: a photo of sks dog
tags:
- lora
widget:
- text: a photo of sks dog in a bucket
- text: a photo of sks dog in a bucket
---

# LoRA DreamBooth - sks dog

## Trigger words

You should use `sks` to trigger the image generation. Also `zwx style`.
"""


def test_the_card_gives_instance_class_widget_and_trigger_prompts(tmp_path: Path) -> None:
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (tmp_path / "README.md").write_text(DREAMBOOTH_CARD)
    for where in (tmp_path, tmp_path / "pytorch_lora_weights.safetensors"):  # the folder or the file
        card = read_card(where)
        assert card is not None and card.base_model == "runwayml/stable-diffusion-v1-5"
        assert card.prompts == [("instance", "a photo of sks dog"), ("class", "a photo of a dog"),
                                ("widget-1", "a photo of sks dog in a bucket"), ("trigger-1", "zwx style")]


def test_class_prompt_replaces_the_rare_token_by_an_article() -> None:
    assert class_prompt("a photo of sks person", []) == "a photo of a person"
    assert class_prompt("a sks dog on a beach", []) == "a dog on a beach"
    assert class_prompt("portrait of qwx man", ["qwx"]) == "portrait of a man"
    assert class_prompt("a photo of a dog", []) is None, "no rare token: no class prompt"
    assert class_prompt("a photo of sks astronaut", []) == "a photo of an astronaut"
    assert class_prompt("a sks astronaut in space", []) == "an astronaut in space"
    assert class_prompt("A sks owl", []) == "An owl"
    assert class_prompt("an sks dog", []) == "a dog"
    assert class_prompt("a photo of sks unicorn", []) == "a photo of a unicorn"
    assert trigger_words("Use `ohwx` to trigger it.\n") == ["ohwx"]


def test_no_card_no_prompts_and_a_broken_card_is_an_error_naming_it(tmp_path: Path) -> None:
    assert read_card(tmp_path) is None
    (tmp_path / "README.md").write_text("just text, no front matter, `sks` in quotes\n")
    card = read_card(tmp_path)
    assert card is not None and card.prompts == []
    (tmp_path / "README.md").write_text("---\ninstance_prompt: [unclosed\n---\n")
    with pytest.raises(MemorizationConfigError, match=r"README.md: the model card's YAML front matter does not "
                                                      r"parse.*--memorization-lora-card-canaries=no"):
        read_card(tmp_path)


def test_the_gate_result_section_is_replaced_in_place_and_keeps_the_card(tmp_path: Path) -> None:
    import datetime as dt

    from pytest_memorization.reports.card_section import BEGIN, END, write_card_results

    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "README.md").write_text(DREAMBOOTH_CARD)
    row = {"item": "m.toml::dog[0]", "prompt": "p", "seed": 0, "work": "dog", "scores": {}, "thresholds": {},
           "verdict": "fail", "reasons": [], "extra": {"lora_gate": {}}}
    run = {"model": "org/base", "lora": str(lora)}
    assert write_card_results(run, [row], True, dt.date(2026, 1, 2)) == [f"wrote the LoRA gate's result into {lora / 'README.md'}"]
    first = (lora / "README.md").read_text()
    assert first.startswith(DREAMBOOTH_CARD.rstrip("\n")) and first.count(BEGIN) == 1 and first.count(END) == 1
    assert "**FAIL** for this LoRA on base `org/base`: 1 images" in first and "`dog[0]`" in first
    write_card_results(run, [{**row, "verdict": "pass"}], True, dt.date(2026, 1, 3))
    second = (lora / "README.md").read_text()
    assert second.count(BEGIN) == 1 and "**PASS**" in second and "FAIL" not in second and "2026-01-03" in second
    assert read_card(lora) is not None, "still a card huggingface_hub reads"
    no_gate = {**row, "extra": {}}
    assert write_card_results(run, [no_gate], True) == [], "nothing to write without the LoRA gate"
    hub = write_card_results({**run, "lora": "org/hub-lora"}, [row], True)
    assert "is a hub id" in hub[0]
