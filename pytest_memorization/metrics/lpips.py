"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, batched N x M.

Imported only by ``get_metric("lpips")`` (imports torch and lpips).

* Inputs in [0, 1] are mapped to [-1, 1]. Resize policy: every image (generated and reference) is
  resized to ``size`` x ``size`` (default 256, at least 64; bicubic with antialias; aspect ratio not
  kept) so features of separately computed batches line up and can be cached.
* Backbone weights: the torchvision file (``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``,
  ``squeezenet1_1-b8a52dc0.pth``) is looked up in ``weights_dir`` then in
  ``$TORCH_HOME/hub/checkpoints`` before anything is built; missing -> ``WeightsNotFoundError``.
  The network is built with a random trunk (``pnet_rand=True``, no download possible) and the file's
  ``features.*`` tensors are loaded into it, which is exactly what torchvision's loader would do.
  ``weights="random"`` keeps the seeded random trunk (plumbing tests only).
* The linear heads are lpips' own v0.1 files. ``use_dropout`` keeps its default (``False`` renames
  the layers and the heads would silently not load).
* Batched: features (unit-normalised per layer) are computed once per image; all pairs are then
  compared with the heads, without re-running the backbone per pair. Equals per-pair
  ``lpips.LPIPS(...)(a, b)`` to about 1e-6.

No paper gives an LPIPS copy threshold: ``default_threshold`` is None; calibrate for your model.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, WeightsNotFoundError
from ._util import as_images, check_scores, find_weights, resize, sha256_file
from .base import Metric

BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


class LPIPSMetric(Metric):
    name = "lpips"
    direction = "distance"
    default_threshold = None
    threshold_source = "no published copy threshold for LPIPS; calibrate for your model"
    needs_weights = True
    lower_bound = 0.0

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | os.PathLike[str] | None = None,
        net: str = "alex",
        weights: str = "pretrained",
        seed: int = 0,
        size: int = 256,
    ) -> None:
        import torch

        if net not in BACKBONE_FILES:
            raise MemorizationConfigError(
                f"metric 'lpips': net={net!r} is not one of {', '.join(BACKBONE_FILES)} "
                "(--memorization-lpips-net)"
            )
        if weights not in ("pretrained", "random"):
            raise MemorizationConfigError(
                f"metric 'lpips': weights={weights!r}; expected 'pretrained' or 'random' (random is for tests)"
            )
        if int(size) < 64:
            raise MemorizationConfigError(f"metric 'lpips': size={size} is below the 64 px minimum")
        self.device, self.net, self.weights, self.seed, self.size = device, net, weights, int(seed), int(size)
        path: Path | None = None
        if weights == "pretrained":
            fname = BACKBONE_FILES[net]
            path, places = find_weights(fname, weights_dir)
            if path is None:
                raise WeightsNotFoundError(
                    f"metric 'lpips' (net={net}) needs the torchvision backbone file {fname}; looked in "
                    + ", ".join(str(p) for p in places)
                    + f". Fix: copy {fname} into the folder given by --memorization-weights-dir "
                    f"(ini memorization_weights_dir) or into $TORCH_HOME/hub/checkpoints ({places[-1]}). "
                    f"On a connected machine `python -c \"import lpips; lpips.LPIPS(net='{net}')\"` "
                    "downloads it into $TORCH_HOME/hub/checkpoints. Nothing is downloaded here."
                )
        import lpips

        torch.manual_seed(self.seed)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        if path is not None:
            self._load_backbone(model, path)
            self._wsig = f"{BACKBONE_FILES[net]}@sha256:{sha256_file(path)}"
        else:
            self._wsig = f"random-seed{self.seed}"
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
        self._heads = f"heads-v0.1-sha256:{sha256_file(heads)[:16]}"
        self.model = model.eval().to(device)
        self.path = path

    @staticmethod
    def _load_backbone(model: Any, path: Path) -> None:
        import torch

        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a config error
            raise MemorizationConfigError(f"metric 'lpips': cannot read backbone file {path}: {e}") from e
        own = {}
        for name, t in list(model.net.named_parameters()) + list(model.net.named_buffers()):
            key = "features." + name.split(".", 1)[1]  # slice3.6.weight -> features.6.weight
            if key not in sd:
                raise MemorizationConfigError(
                    f"metric 'lpips': backbone file {path} has no tensor '{key}'; it is not the torchvision "
                    "file lpips expects (re-download it)"
                )
            if tuple(sd[key].shape) != tuple(t.shape):
                raise MemorizationConfigError(
                    f"metric 'lpips': backbone file {path}: '{key}' has shape {tuple(sd[key].shape)}, "
                    f"expected {tuple(t.shape)}"
                )
            own[name] = sd[key]
        model.net.load_state_dict(own, strict=False)

    @property
    def version(self) -> str:
        import lpips

        ver = getattr(lpips, "__version__", "0.1.4")
        return (
            f"lpips-{ver}/{self.net}/{self._wsig}/{self._heads}/"
            f"resize-{self.size}sq-bicubic-aa/in[-1,1]"
        )

    def features(self, images: Any) -> list[Any]:
        import lpips
        import torch

        x = as_images(images, self.name, device=self.device)
        x = resize(x, (self.size, self.size)) * 2.0 - 1.0
        with torch.no_grad():
            outs = self.model.net(self.model.scaling_layer(x))
            return [lpips.normalize_tensor(o) for o in outs]

    def compare(self, a: list[Any], b: list[Any], chunk_elems: int = 1 << 24) -> Any:
        import torch

        n, m = a[0].shape[0], b[0].shape[0]
        total = torch.zeros(n, m, device=a[0].device)
        with torch.no_grad():
            for k, (fa, fb) in enumerate(zip(a, b)):
                head = self.model.lins[k]
                per = max(1, chunk_elems // max(1, m * fa[0].numel()))
                for s in range(0, n, per):
                    d = (fa[s : s + per, None] - fb[None]) ** 2  # (n', M, C, H, W)
                    r = head(d.flatten(0, 1)).mean(dim=(2, 3))  # (n'*M, 1)
                    total[s : s + per] += r.view(-1, m)
        return check_scores(self.name, total)
