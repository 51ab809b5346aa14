"""Canary prompts a LoRA repository does not have to write: read from its model card.

The card is the ``README.md`` next to the LoRA weights, with YAML front matter as the diffusers
DreamBooth/LoRA training scripts and the Hugging Face hub write it:

    ---
    base_model: runwayml/stable-diffusion-v1-5
    instance_prompt: a photo of sks dog
    widget:
    - text: a photo of sks dog in a bucket
    ---
    ... You should use `sks` to trigger the image generation.

Prompts taken: ``instance_prompt`` (``card[instance]``), each widget ``text`` (``card[widget-N]``),
each trigger word alone when no other prompt holds it (``card[trigger-N]``) and the *class prompt*
(``card[class]``): the instance prompt with its rare token (the trigger words, else a known
DreamBooth identifier) replaced by an article, "a photo of sks person" -> "a photo of a person". A
LoRA that leaks its subject into the class prompt has overwritten the class, which DreamBooth's prior
preservation is there to prevent. The card is read with ``huggingface_hub.ModelCard``, imported only here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError

# Identifiers the DreamBooth guides and scripts use for the rare token, when the card names none.
KNOWN_IDENTIFIERS = ("sks", "ohwx", "zwx", "skd", "xjy", "tok", "<s0>", "<s1>")
ARTICLES = ("a", "an", "the")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRIGGER_HEADING = re.compile(r"^#+\s*trigger words?\s*$\n+(?P<body>(?:(?!#).*\n?)+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class CardPrompts:
    path: Path
    base_model: str | None = None
    prompts: list[tuple[str, str]] = field(default_factory=list)  # (id param, prompt)


def card_path(lora: str | Path) -> Path:
    """The README.md beside a LoRA: its folder's, its file's folder's, or (a hub id) its cached snapshot's."""
    p = Path(lora).expanduser()
    if not p.exists() and HUB_ID.fullmatch(str(lora)):
        from .._io import hub_snapshot_dir

        snap = hub_snapshot_dir(str(lora))
        if snap is not None:
            p = snap
    return (p if p.is_dir() else p.parent) / "README.md"


def load_card(path: Path) -> tuple[dict[str, Any], str]:
    """(front matter, text) of a model card, read with ``huggingface_hub.ModelCard``."""
    from huggingface_hub import ModelCard

    text = path.read_text(encoding="utf-8", errors="replace")
    if text.startswith("---") and "\n---" not in text[3:]:
        raise MemorizationConfigError(f"{path}: the model card's YAML front matter has no closing '---' line; "
                                      "fix the card or pass --memorization-lora-card-canaries=no")
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as e:  # yaml.YAMLError, ValueError: the front matter does not parse
        raise MemorizationConfigError(f"{path}: the model card's YAML front matter does not parse "
                                      f"({' '.join(str(e).split())[:300]}); fix it or pass "
                                      "--memorization-lora-card-canaries=no") from None
    return card.data.to_dict(), card.text


def trigger_words(text: str) -> list[str]:
    """Backticked words in sentences about triggering, and the words under a "Trigger words" heading."""
    sentences = re.split(r"(?<=[.!?])\s+|\n", text)
    words = [w.strip() for s in sentences if "trigger" in s.lower() for w in re.findall(r"`([^`]+)`", s)]
    for m in _TRIGGER_HEADING.finditer(text):
        words += [w.strip() for w in re.findall(r"`([^`]+)`", m.group("body"))]
    return list(dict.fromkeys(w for w in words if w))


def class_prompt(instance: str, rare: list[str]) -> str | None:
    """``instance`` without its rare token: "a photo of sks person" -> "a photo of a person",
    "a photo of sks astronaut" -> "a photo of an astronaut"."""
    words = instance.split()
    tokens = [w for w in rare if w in words] or [w for w in KNOWN_IDENTIFIERS if w in words]
    if not tokens:
        return None
    out: list[str] = []
    fix: set[int] = set()  # articles that now stand before another word than the one they were written for
    for w in words:
        if w in tokens:
            if not out or out[-1].lower() not in ARTICLES:
                out.append("a")
            fix.add(len(out) - 1)
            continue
        out.append(w)
    for i in fix:
        if i + 1 < len(out) and out[i].lower() in ("a", "an"):
            article = "an" if _vowel_sound(out[i + 1]) else "a"
            out[i] = article.capitalize() if out[i][0].isupper() else article
    return " ".join(out)


def _vowel_sound(word: str) -> bool:
    """Whether "an" goes before ``word``: a vowel letter, except the usual "u"/"eu"/"one" that sound like "y"/"w"."""
    w = word.lower().lstrip("\"'(")
    if w.startswith(("uni", "use", "usu", "uti", "eu", "one", "once")):
        return False
    return w[:1] in ("a", "e", "i", "o", "u") or w.startswith(("hour", "honest", "honou", "heir"))


def read_card(lora: str | Path) -> CardPrompts | None:
    """The card's canary prompts, or None when the LoRA has no README.md next to it."""
    path = card_path(lora)
    if not path.is_file():
        return None
    meta, _ = load_card(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    card = CardPrompts(path=path, base_model=_base_model(meta.get("base_model")))
    instance = meta.get("instance_prompt")
    seen: set[str] = set()

    def add(param: str, prompt: Any) -> None:
        if isinstance(prompt, str) and prompt.strip() and prompt.strip() not in seen:
            seen.add(prompt.strip())
            card.prompts.append((param, prompt.strip()))

    add("instance", instance)
    triggers = trigger_words(text)
    if isinstance(instance, str):
        add("class", class_prompt(instance, triggers))
    widgets = meta.get("widget") or []
    for k, w in enumerate(widgets if isinstance(widgets, list) else [widgets]):
        add(f"widget-{k + 1}", w.get("text") if isinstance(w, dict) else w)
    for word in [w for w in triggers if not any(w in p.split() for p in seen)]:
        add(f"trigger-{sum(k.startswith('trigger') for k, _ in card.prompts) + 1}", word)
    return card


def _base_model(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None
