"""SSCD copy-detection descriptor (Pizzi et al. 2022, facebookresearch/sscd-copy-detection).

Imported only by ``get_metric("sscd")``. Needs the authors' TorchScript file, given by option
``path`` (``--memorization-sscd-model``) or found in ``weights_dir`` as
``sscd_disc_mixup.torchscript.pt``. Preprocessing as the authors recommend for inference: resize the
short side to 288 px (bilinear, antialias, like torchvision's ``Resize(288)``), ImageNet mean/std;
embeddings are L2-normalised and compared by cosine (one matmul).

Threshold 0.5: the replication threshold of Somepalli et al. 2023 (CVPR), reused by later papers.
The SSCD authors' own operating point is about 0.75 for copies at 90% precision.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, WeightsNotFoundError
from ._util import as_images, check_scores, resize_short_side, sha256_file
from .base import Metric

FILENAME = "sscd_disc_mixup.torchscript.pt"
URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt"
README = "https://github.com/facebookresearch/sscd-copy-detection#pretrained-models"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SSCDMetric(Metric):
    name = "sscd"
    direction = "similarity"
    default_threshold = 0.5
    threshold_source = (
        "Somepalli et al. 2023 (CVPR), > 0.5 = replication; SSCD authors: about 0.75 for 90% precision"
    )
    needs_weights = True
    lower_bound = -1.0
    upper_bound = 1.0

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights_dir: str | os.PathLike[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        size: int = 288,
    ) -> None:
        import torch

        self.device, self.size = device, int(size)
        if path is not None:
            p = Path(path).expanduser()
            looked = [str(p)]
        else:
            looked = [str(Path(weights_dir).expanduser() / FILENAME)] if weights_dir is not None else []
            p = Path(looked[0]) if looked else Path(FILENAME)
        if not looked or not p.is_file():
            where = f"looked for {', '.join(looked)}" if looked else "no path and no weights_dir was given"
            raise WeightsNotFoundError(
                f"metric 'sscd' needs the SSCD TorchScript file {FILENAME} ({where}). On a connected machine "
                f"download it from {URL} (listed in {README}), copy it here and set --memorization-sscd-model "
                "(ini memorization_sscd_model) to the file, or put it in the folder given by "
                "--memorization-weights-dir. Nothing is downloaded here."
            )
        try:
            self.model = torch.jit.load(str(p), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - any unreadable file is a config error
            raise MemorizationConfigError(f"metric 'sscd': cannot load TorchScript file {p}: {e}") from e
        self.path = p
        self._wsig = f"{p.name}@sha256:{sha256_file(p)}"
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    @property
    def version(self) -> str:
        return f"sscd/{self._wsig}/short{self.size}-bilinear-aa/imagenet-norm/l2-cosine"

    def features(self, images: Any, batch: int = 32) -> Any:
        import torch

        x = as_images(images, self.name, device=self.device)
        x = (resize_short_side(x, self.size, mode="bilinear") - self.mean) / self.std
        with torch.no_grad():
            e = torch.cat([self.model(x[i : i + batch]) for i in range(0, len(x), batch)])
        if e.dim() != 2:
            raise MemorizationConfigError(
                f"metric 'sscd': {self.path} returned shape {tuple(e.shape)}; expected (N, D) embeddings"
            )
        return torch.nn.functional.normalize(e.float(), dim=1)

    def compare(self, a: Any, b: Any) -> Any:
        return check_scores(self.name, a @ b.T)
