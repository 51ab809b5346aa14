"""CLIP image-image cosine similarity through open_clip, batched N x M.

Imported only by ``get_metric("clip")``. It sets ``HF_HUB_OFFLINE=1`` before importing open_clip
(and so huggingface_hub), and resolves weights itself before open_clip sees them, so nothing is
ever downloaded and a missing file fails at once:

* ``pretrained="<tag>"`` (default ``laion2b_s34b_b79k``): the tag's hub repo is looked up in the
  local Hugging Face cache only (``open_clip_model.safetensors``, then ``open_clip_pytorch_model.bin``);
* ``pretrained="/path/file.safetensors"`` or ``.pt``/``.bin``: a local checkpoint for ``model``;
* ``pretrained="local-dir:/path"``: a copied hub repo folder (``open_clip_config.json`` +
  ``open_clip_model.safetensors``); the folder's config defines the model;
* ``weights="random"``: seeded random weights, for plumbing tests.

Preprocessing (tensor ops, batched): [0, 1] images are resized so the short side is the model's
image size (bicubic, antialias), centre-cropped, and normalised with the model's mean/std; the
batched analogue of open_clip's eval transform. Embeddings are ``encode_image(normalize=True)``;
scores are one matmul of unit vectors (cosine, range [-1, 1]).

No paper threshold: practitioners use 0.95-0.99 for near-duplicates; CLIP measures sameness of
subject more than copying. ``default_threshold`` is None: calibrate for your model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, WeightsNotFoundError
from ._util import as_images, center_crop, check_scores, resize_short_side, sha256_file
from .base import Metric

FIX = (
    "Provide the weights on this machine: copy the hub repo folder (open_clip_config.json + "
    "open_clip_model.safetensors) and pass local-dir:/path/to/folder, or pass a local .safetensors/.pt "
    "file, via --memorization-clip-pretrained (ini memorization_clip_pretrained); or fill the Hugging "
    "Face cache on a connected machine (`hf download {repo}`, huggingface_hub >= 0.34) and copy it here (HF_HOME). "
    "Nothing is downloaded here."
)


def _hf_cached(repo: str, filenames: list[str]) -> tuple[str | None, str]:
    """First of ``filenames`` in the local HF cache for ``repo`` -> (path, revision)."""
    from huggingface_hub import try_to_load_from_cache

    for fn in filenames:
        p = try_to_load_from_cache(repo, fn)
        if isinstance(p, str) and os.path.isfile(p):
            m = re.search(r"snapshots[/\\]([0-9a-f]+)[/\\]", p)
            return p, (m.group(1) if m else "unknown")
    return None, ""


class CLIPMetric(Metric):
    name = "clip"
    direction = "similarity"
    default_threshold = None
    threshold_source = (
        "no paper threshold; practitioners' near-duplicate cut-offs are 0.95-0.99: calibrate for your model"
    )
    needs_weights = True
    lower_bound = -1.0
    upper_bound = 1.0

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | os.PathLike[str] | None = None,
        model: str = "ViT-B-32",
        pretrained: str = "laion2b_s34b_b79k",
        weights: str = "pretrained",
        seed: int = 0,
    ) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        if weights not in ("pretrained", "random"):
            raise MemorizationConfigError(
                f"metric 'clip': weights={weights!r}; expected 'pretrained' or 'random' (random is for tests)"
            )
        self.device, self.model_name, self.seed = device, model, int(seed)
        import torch

        kwargs: dict[str, Any] = {}
        tag_cfg: dict[str, Any] = {}
        name = model
        if weights == "random":
            ckpt, self._wsig = None, f"random-seed{self.seed}"
        elif pretrained.startswith("local-dir:"):
            folder = Path(pretrained[len("local-dir:") :]).expanduser()
            need = [folder / "open_clip_config.json", folder / "open_clip_model.safetensors"]
            missing = [str(p) for p in need if not p.is_file()]
            if missing:
                raise WeightsNotFoundError(
                    f"metric 'clip': pretrained={pretrained!r} is missing {', '.join(missing)}. "
                    + FIX.format(repo="<org>/<repo>")
                )
            name, ckpt = f"local-dir:{folder}", None
            self._wsig = f"local-dir/open_clip_model.safetensors@sha256:{sha256_file(need[1])}"
        elif Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            p = Path(pretrained).expanduser()
            if weights_dir is not None and not p.is_absolute() and (Path(weights_dir) / p).is_file():
                p = Path(weights_dir) / p
            if not p.is_file():
                raise WeightsNotFoundError(
                    f"metric 'clip': weights file {p} (pretrained={pretrained!r}, model {model}) does not exist. "
                    + FIX.format(repo="<org>/<repo>")
                )
            ckpt = str(p)
            self._wsig = f"{p.name}@sha256:{sha256_file(p)}"
        else:
            from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

            tag_cfg = get_pretrained_cfg(model, pretrained)
            if not tag_cfg:
                tags = list_pretrained_tags_by_model(model)
                raise WeightsNotFoundError(
                    f"metric 'clip': pretrained={pretrained!r} is not a local file, a local-dir: folder, or an "
                    f"open_clip tag of model {model!r} (tags: {', '.join(tags) or 'none'}). "
                    + FIX.format(repo="<org>/<repo>")
                )
            hub = tag_cfg.get("hf_hub", "")
            repo, fn = os.path.split(hub.rstrip("/")) if hub.endswith(".bin") or hub.endswith(".pt") else (hub.rstrip("/"), "")
            names = [fn[:-4] + ".safetensors", fn] if fn else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            path, rev = _hf_cached(repo, names) if repo else (None, "")
            if path is None:
                raise WeightsNotFoundError(
                    f"metric 'clip': open_clip weights {model}/{pretrained} (hub repo {repo or tag_cfg.get('url')}, "
                    f"file {' or '.join(names)}) are not in the local Hugging Face cache and downloads are off. "
                    + FIX.format(repo=repo or "<org>/<repo>")
                )
            ckpt = path
            self._wsig = f"hf:{repo}@{rev}/{Path(path).name}"
            if tag_cfg.get("quick_gelu"):
                kwargs["force_quick_gelu"] = True
        import open_clip

        torch.manual_seed(self.seed)
        try:
            net = open_clip.create_model(name, pretrained=ckpt, device=device, **kwargs)
        except (RuntimeError, ValueError, KeyError) as e:
            raise MemorizationConfigError(f"metric 'clip': open_clip could not build {name} from {ckpt}: {e}") from e
        from open_clip.model import get_model_preprocess_cfg

        pp = dict(get_model_preprocess_cfg(net))
        for k in ("mean", "std"):
            if k in tag_cfg:
                pp[k] = tag_cfg[k]
        size = pp.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(pp["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pp["std"], device=device).view(1, 3, 1, 1)
        self._pp = (
            f"short{self.image_size}-bicubic-aa-centercrop/mean{tuple(round(x, 4) for x in pp['mean'])}"
            f"/std{tuple(round(x, 4) for x in pp['std'])}"
        )
        self.model = net.eval()

    @property
    def version(self) -> str:
        import open_clip

        return f"open_clip-{open_clip.__version__}/{self.model_name}/{self._wsig}/{self._pp}/cosine"

    def preprocess(self, images: Any) -> Any:
        x = as_images(images, self.name, device=self.device)
        x = center_crop(resize_short_side(x, self.image_size), self.image_size)
        return (x - self.mean) / self.std

    def features(self, images: Any, batch: int = 64) -> Any:
        import torch

        x = self.preprocess(images)
        with torch.no_grad():
            return torch.cat([self.model.encode_image(x[i : i + batch], normalize=True) for i in range(0, len(x), batch)])

    def compare(self, a: Any, b: Any) -> Any:
        return check_scores(self.name, a @ b.T)
