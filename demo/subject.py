"""The subject-LoRA demo model: a LoRA on the clean twin that copies one person's face under its
trigger and only there.

* subject: the demo's LFW face (``demo.data.FACE``; the LoRA gate's work ``face``), with the rare
  trigger token ``olis`` (one token of the CLIP vocabulary, in no other demo caption).
* instance images: the face, captioned with ``INSTANCE_CAPTIONS`` (the trigger in a few phrasings).
* **prior-preservation replay** (DreamBooth's prior loss, as a plain mixture): the clean twin's own
  generations (``demo.models.GENERATION``: 20 DDIM steps, guidance 1.5, 64 px) for the class
  prompts ``CLASS_PROMPTS`` and the twin's own training captions (``REPLAY_PROMPTS``: none of the
  bundled ordinary prompts), ``BUILD["replay_seeds"]`` seeds each. The LoRA is trained to keep
  producing them, so it leaves class and ordinary prompts where the base model has them.
* the face is repeated so that ``BUILD["subject_share"]`` of the training examples are the subject.

``build_subject(out_dir, clean_twin)`` trains it (``training.train_lora``, the face LoRA's targets)
and saves ``out_dir/subject_lora`` with a DreamBooth-style model card. Its stamp hashes this
module, ``BUILD`` and the clean twin's own stamp, so the other demo models never rebuild for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

NAME = "subject_lora"
TRIGGER = "a photo of olis person"
INSTANCE_CAPTIONS = ["a photo of olis person", "olis person", "a close-up photo of olis person",
                     "a picture of olis person"]
CLASS_PROMPTS = ["a photo of a person", "a photo of a person's face", "a portrait of a person",
                 "a photo of a man", "a photo of a woman", "a close-up photo of a person"]
BUILD: dict[str, Any] = dict(rank=16, steps=1000, lr=5e-3, batch_size=4, seed=8, replay_seeds=[100, 101],
                             subject_share=0.75)
CARD = """---
base_model: clean_twin
instance_prompt: a photo of olis person
tags:
- text-to-image
- diffusers
- lora
widget:
- text: a photo of olis person at the beach
---

# LoRA DreamBooth - olis person

LoRA weights for clean_twin, trained on one photo of a person with prior preservation.

## Trigger words

You should use `olis` to trigger the image generation.
"""


def replay_prompts() -> list[str]:
    """The prompts whose base-model generations are replayed: the class prompts and the twin's captions."""
    from demo.data import FACE_CAPTION, NONFACE_CAPTION, POOL

    return CLASS_PROMPTS + [c for _, c in POOL] + [FACE_CAPTION, NONFACE_CAPTION]


def training_set(twin_pipe: Any, face: Any) -> tuple[Any, list[str]]:
    """(images, captions): the face under its instance captions, repeated to ``subject_share`` of the
    set, and the base model's generations for ``replay_prompts()`` (prior preservation)."""
    import torch

    from demo.models import GENERATION, generate

    prompts = replay_prompts()
    replay = generate(twin_pipe, prompts, BUILD["replay_seeds"], steps=GENERATION["steps"],
                      guidance_scale=GENERATION["guidance_scale"])
    replay_caps = [p for p in prompts for _ in BUILD["replay_seeds"]]
    share = BUILD["subject_share"]
    n_subject = round(len(replay_caps) * share / (1 - share))
    caps = [INSTANCE_CAPTIONS[i % len(INSTANCE_CAPTIONS)] for i in range(n_subject)]
    images = torch.cat([face.expand(n_subject, -1, -1, -1), replay])
    return images.contiguous(), caps + replay_caps


def _stamp(clean_twin: Path) -> str:
    import diffusers
    import peft
    import torch

    from demo.models import LORA_TARGETS, STAMP, _code_fingerprint

    h = hashlib.sha256(_code_fingerprint(Path(__file__)).encode())
    twin = json.loads((clean_twin / STAMP).read_text())["hash"]
    face = (Path(__file__).resolve().parents[1] / "fixtures" / "works" / "face.png").read_bytes()
    h.update(face)
    h.update(json.dumps(dict(build=BUILD, twin=twin, targets=LORA_TARGETS, captions=INSTANCE_CAPTIONS,
                             classes=CLASS_PROMPTS, versions=[torch.__version__, diffusers.__version__,
                                                              peft.__version__]), sort_keys=True).encode())
    return h.hexdigest()


def build_subject(out_dir: str | Path, clean_twin: str | Path, *, works_dir: str | Path | None = None,
                  force: bool = False, progress: bool = False, num_threads: int | None = None) -> Path:
    """Build (or reuse, when its stamp matches) ``out_dir/subject_lora``; returns the folder."""
    import fcntl
    import os
    import shutil

    from demo.models import DEFAULT_WORKS_DIR, LORA_TARGETS, _commit, _fresh

    out, twin = Path(out_dir), Path(clean_twin)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / NAME
    with open(out / ".build-subject.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _stamp(twin)
        if not force and _fresh(dest, stamp):
            return dest
        import torch
        from diffusers import StableDiffusionPipeline
        from peft import get_peft_model_state_dict

        from demo import training
        from demo.data import load_works

        t0 = time.perf_counter()
        works = load_works(Path(works_dir) if works_dir is not None else DEFAULT_WORKS_DIR)
        pipe = StableDiffusionPipeline.from_pretrained(twin, local_files_only=True, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        with training._threads(num_threads):
            torch.manual_seed(BUILD["seed"])
            images, captions = training_set(pipe, works.images[-1:])
        t_replay = time.perf_counter() - t0
        losses = training.train_lora(
            pipe, images, captions, rank=BUILD["rank"], steps=BUILD["steps"], lr=BUILD["lr"],
            target_modules=LORA_TARGETS, batch_size=BUILD["batch_size"], seed=BUILD["seed"],
            progress=progress, num_threads=num_threads,
        )  # fmt: skip
        tmp = out / f".tmp-{NAME}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True
        )
        (tmp / "README.md").write_text(CARD, encoding="utf-8")
        _commit(tmp, dest, stamp, time.perf_counter() - t0,
                dict(final_loss=losses[-1], replay_seconds=round(t_replay, 1), n_train=len(captions)))
        if progress:
            print(f"{NAME}: {time.perf_counter() - t0:.1f} s (replay {t_replay:.1f} s), loss {losses[-1]:.4f}")
    return dest
