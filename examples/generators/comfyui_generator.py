"""A generator hook for a ComfyUI server: gate whatever model ComfyUI serves.

Copy this file next to your memorization.toml and point the gate at it::

    [model]
    generator = "comfyui_generator:generate"
    seeds = [0, 1, 2, 3]
    steps = 25
    height = 512
    width = 512

    COMFYUI_URL=http://127.0.0.1:8188 COMFYUI_CHECKPOINT=sdxl_base.safetensors pytest --memorization

For each (prompt, seed) it queues one txt2img workflow (``POST /prompt``), polls
``GET /history/<prompt_id>`` until the image is saved, and downloads it (``GET /view``). One
request per image, so an image never depends on its batch. Every request has a timeout and
polling is bounded: a slow or dead server is an error, never a hang. Edit ``workflow`` for
your own graph (LoRA loaders, samplers, ...); the gate only needs the images back.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_S = float(os.environ.get("COMFYUI_TIMEOUT", "30"))  # per HTTP request
MAX_POLLS = int(os.environ.get("COMFYUI_MAX_POLLS", "600"))  # history polls per image
POLL_S = float(os.environ.get("COMFYUI_POLL_S", "0.5"))


def workflow(prompt: str, seed: int, settings: Any, checkpoint: str) -> dict[str, Any]:
    """ComfyUI's API-format graph for plain txt2img (node ids are arbitrary strings)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": settings.negative_prompt or "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage",
              "inputs": {"width": settings.width, "height": settings.height, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": int(seed), "steps": settings.steps, "cfg": settings.guidance_scale,
            "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "memorization"}},
    }


def _request(url: str, data: dict[str, Any] | None = None) -> bytes:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - the user's own server
        return resp.read()


def generate_one(base: str, prompt: str, seed: int, settings: Any, checkpoint: str) -> Any:
    from PIL import Image

    queued = json.loads(_request(f"{base}/prompt", {"prompt": workflow(prompt, seed, settings, checkpoint),
                                                     "client_id": "pytest-memorization"}))
    prompt_id = queued["prompt_id"]
    for _ in range(MAX_POLLS):
        history = json.loads(_request(f"{base}/history/{urllib.parse.quote(prompt_id)}"))
        outputs = history.get(prompt_id, {}).get("outputs", {})
        images = [img for node in outputs.values() for img in node.get("images", [])]
        if images:
            query = urllib.parse.urlencode({k: images[0].get(k, "") for k in ("filename", "subfolder", "type")})
            return Image.open(io.BytesIO(_request(f"{base}/view?{query}"))).convert("RGB")
        time.sleep(POLL_S)
    raise TimeoutError(f"ComfyUI at {base} produced no image for prompt id {prompt_id} after {MAX_POLLS} polls")


def generate(prompts: list[str], seeds: list[int], settings: Any) -> list[Any]:
    """The hook: image i is ``prompts[i]`` at ``seeds[i]``; returns PIL images."""
    base = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188").rstrip("/")
    checkpoint = os.environ.get("COMFYUI_CHECKPOINT", "model.safetensors")
    return [generate_one(base, p, s, settings, checkpoint) for p, s in zip(prompts, seeds)]
