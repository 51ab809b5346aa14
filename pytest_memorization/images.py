"""Reading protected works and turning anything image-like into a (3, H, W) float tensor in [0, 1].

Imported at plugin start-up (the manifest checks images with it), so torch, numpy and PIL
are imported inside the functions, never at module load.

Colour policy of ``load_image`` (and ``from_any`` for PIL images):

* PNG, JPEG and WebP are the supported formats (anything else Pillow reads also works;
  animated files give their first frame).
* The EXIF orientation tag is applied first (``PIL.ImageOps.exif_transpose``), so a
  phone photo stored sideways is compared the way viewers show it.
* Transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited
  on **white**, the way most viewers and web pages show it.
* Grayscale (1, L, and 16-bit ``I;16``/``I`` PNGs) is repeated over three channels; 16-bit
  values are divided by 65535, so no precision is clipped to 8 bits.
* CMYK, YCbCr, LAB and HSV images are converted to RGB by Pillow. No ICC colour
  management is done: pixels are taken as sRGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._io import sha256_file  # noqa: F401  (public: works are identified by it)
from .errors import MemorizationConfigError

__all__ = ["ImageError", "load_image", "check_image", "check_work", "sha256_file", "fit_to", "from_any", "to_tensor"]

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" (32-bit int) is read as 16-bit
_CHANNELS = (1, 2, 3, 4)
MAX_PIXELS = 50_000_000  # a protected work larger than this is refused before decoding
MIN_WORK_SIDE = 16  # a smaller work is upscaled to a blur
# A work is compared at the generation size (at most records.MAX_GENERATION_SIDE a side, usually 512-1024),
# so a larger one is reduced (box filter, an integer factor) right after decoding, to at most this many
# pixels: a 49 MP work then costs a few hundred MB instead of gigabytes of float copies.
LOAD_PIXELS = 8_000_000


class ImageError(MemorizationConfigError, ValueError):
    """An image cannot be read or is not image-like. The message names the file or the value."""


def _open(path: str | Path, reduce: bool = False) -> Any:
    """Open and fully decode ``path`` with Pillow; every failure becomes an ``ImageError``. ``reduce``:
    a work above ``LOAD_PIXELS`` comes back reduced by an integer factor (JPEG: decoded reduced)."""
    from PIL import Image

    p = Path(path)
    fix = "re-export it as PNG, JPEG or WebP, or fix the path"
    try:
        if not p.is_file():
            raise ImageError(f"{p}: no such image file; {fix}")
        img = Image.open(p)
        if img.width * img.height > MAX_PIXELS:  # read from the header, before decoding anything
            raise ImageError(f"{p}: image is {img.width}x{img.height} = {img.width * img.height / 1e6:.0f} MP, more "
                             f"than {MAX_PIXELS / 1e6:.0f} MP; downscale it (the gate compares at the generation size)")
        factor = _factor(img.width, img.height) if reduce else 1
        if factor > 1 and img.format == "JPEG":
            img.draft(img.mode, (img.width // factor, img.height // factor))  # decode at the reduced size
        img.load()  # decodes everything: truncated or corrupt data fails here, not later
        factor = _factor(img.width, img.height) if reduce else 1
        if factor > 1:
            img = _reduced(img, factor)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: image is too large to read safely ({e}); downscale it") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageError(f"{p}: cannot read image ({type(e).__name__}: {e}); {fix}") from None
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{p}: image has no pixels ({img.width}x{img.height}); {fix}")
    return img


def _factor(width: int, height: int) -> int:
    import math

    return max(1, math.ceil(math.sqrt(width * height / LOAD_PIXELS)))


def _reduced(img: Any, factor: int) -> Any:
    """``img`` made ``factor`` times smaller a side (box filter), in a mode Pillow can reduce."""
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img) or img  # before the EXIF tag is lost
    except Exception:  # broken EXIF: keep the stored orientation
        pass
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "I;16"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode in ("P", "PA") else "RGB")
    try:
        return img.reduce(factor)
    except (ValueError, NotImplementedError):
        return img.resize((max(1, img.width // factor), max(1, img.height // factor)), resample=4)  # BOX


def check_work(path: str | Path) -> str | None:
    """A protected work must be a still image of at least ``MIN_WORK_SIDE`` pixels a side (else
    ``ImageError``); returns a warning when it is a single colour (every flat image matches it)."""
    img = _open(path, reduce=True)
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise ImageError(f"{path}: animated image ({frames} frames); only its first frame would be compared. "
                         "Export each frame you protect as a still PNG and list it as a work")
    if min(img.width, img.height) < MIN_WORK_SIDE:
        raise ImageError(f"{path}: {img.width}x{img.height} is too small to compare (less than {MIN_WORK_SIDE} pixels "
                         "a side; it would be upscaled to a blur); use the original at full size")
    extrema = img.convert("RGB").getextrema()
    if all(lo == hi for lo, hi in extrema):
        return (f"{path}: the work is a single colour {tuple(lo for lo, _ in extrema)}: any flat generated image "
                "matches it, and no real copy is told apart; compared anyway")
    return None


def check_image(path: str | Path) -> tuple[int, int]:
    """Decode ``path`` with Pillow only (no torch) and return (height, width); ``ImageError`` if unreadable."""
    img = _open(path)
    return img.height, img.width


def load_image(path: str | Path) -> Any:
    """Read an image file as a float tensor (3, H, W) in [0, 1], following the module's colour policy.

    Raises ``ImageError`` (a ``MemorizationConfigError``) naming the file when it is missing,
    unreadable, truncated or not an image.
    """
    img = _open(path, reduce=True)
    try:
        return to_tensor(img)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    except Exception as e:
        raise ImageError(f"{path}: cannot convert image ({type(e).__name__}: {e}); re-export it as PNG") from None


def to_tensor(img: Any) -> Any:
    """A PIL image as (3, H, W) float32 in [0, 1]: EXIF orientation, alpha on white, 16-bit kept."""
    import numpy as np
    import torch
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # broken EXIF: keep the stored orientation
        pass
    mode = img.mode
    if mode in ("P", "PA", "RGBa", "La") or ("transparency" in img.info and mode in ("L", "RGB", "1")):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in _SIXTEEN_BIT:
        a = np.asarray(img).astype(np.float64)
        a = np.clip(a, 0, 65535) / 65535.0
        rgb, alpha = np.repeat(a[..., None], 3, axis=-1), None
    elif mode == "F":
        raise ImageError("32-bit float images are not supported; save it as an 8- or 16-bit PNG")
    else:
        if mode == "1":
            img = img.convert("L")
        elif mode not in ("L", "LA", "RGB", "RGBA"):
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
        a = np.asarray(img).astype(np.float64) / 255.0
        if a.ndim == 2:
            a = a[..., None]
        alpha = a[..., -1:] if img.mode in ("LA", "RGBA") else None
        color = a[..., :-1] if alpha is not None else a
        rgb = np.repeat(color, 3, axis=-1) if color.shape[-1] == 1 else color
    if alpha is not None:
        rgb = rgb * alpha + (1.0 - alpha)  # composite on white
    t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(torch.float32)
    return t.clamp_(0.0, 1.0)




def fit_inside(image: Any, height: int, width: int) -> Any:
    """Resize a work (3, H, W) so that it fits inside ``height`` x ``width`` with its aspect ratio kept
    (bicubic, antialiased, clamped to [0, 1]): nothing cropped, nothing padded. What ``local_copy``
    searches for, so that a wide logo keeps its ends."""
    import torch.nn.functional as F

    x = image.float()[None]
    h, w = x.shape[-2:]
    k = min(height / h, width / w)
    nh, nw = max(1, round(h * k)), max(1, round(w * k))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    return x[0].clamp(0.0, 1.0)


def fit_to(image: Any, height: int, width: int) -> Any:
    """Resize a work to the generation size for comparison: **cover, then center-crop**.

    The image is scaled (aspect ratio kept) by the smallest factor that makes it cover
    ``height`` x ``width``, using bicubic interpolation with antialiasing (so downscaling
    does not alias), then the central ``height`` x ``width`` window is cut out and values
    are clamped to [0, 1] (bicubic overshoots). Nothing is padded or stretched; the parts
    of a work with another aspect ratio that fall outside the window are not compared.
    Accepts (3, H, W) or (N, 3, H, W) and returns the same rank; an image already at the
    size is returned unchanged (as float).
    """
    import torch
    import torch.nn.functional as F

    if height < 1 or width < 1:
        raise ValueError(f"fit_to: height and width must be positive, got {height}x{width}")
    x = image if image.dim() == 4 else image.unsqueeze(0)
    x = x.float()
    h, w = x.shape[-2:]
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[..., top : top + height, left : left + width]
        x = torch.clamp(x, 0.0, 1.0).contiguous()
    return x if image.dim() == 4 else x[0]


def _from_array(a: Any, channels_first: bool) -> Any:
    """numpy (H, W), (H, W, C) or (C, H, W) -> (3, H, W) float32 tensor in [0, 1]."""
    import numpy as np
    import torch

    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
        channels_first = False
    if a.ndim != 3:
        raise ImageError(f"expected an image array (H, W, C) or (C, H, W), got shape {tuple(a.shape)}")
    if channels_first and a.shape[0] in _CHANNELS:
        a = a.transpose(1, 2, 0)
    elif not channels_first and a.shape[-1] not in _CHANNELS and a.shape[0] in _CHANNELS:
        a = a.transpose(1, 2, 0)
    if a.shape[-1] not in _CHANNELS:
        raise ImageError(f"expected 1 to 4 channels (gray, gray+alpha, RGB, RGBA), got shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        f = a.astype(np.float64) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float64) / 65535.0
    elif a.dtype == np.bool_:
        f = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise ImageError("image array contains NaN or infinity")
        if f.size and (f.min() < -1e-3 or f.max() > 1 + 1e-3):
            raise ImageError(
                f"float image values must be in [0, 1], got [{f.min():.3g}, {f.max():.3g}]; "
                "divide 8-bit values by 255"
            )
    else:
        raise ImageError(f"unsupported image dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    if f.shape[-1] in (2, 4):
        f = f[..., :-1] * f[..., -1:] + (1.0 - f[..., -1:])  # composite on white
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    t = torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1))).to(torch.float32)
    return t.clamp_(0.0, 1.0)


def from_any(x: Any) -> Any:
    """Anything image-like as a (3, H, W) float32 CPU tensor in [0, 1].

    Accepts a path (``str``/``Path``, read with ``load_image``), a PIL image, a numpy array
    (H, W, C) or (H, W) of uint8 (/255), uint16 (/65535) or float in [0, 1], or a torch
    tensor (C, H, W), (H, W, C) or (1, C, H, W) (uint8 or float in [0, 1]). Alpha channels
    are composited on white, one channel is repeated to three. Ambiguous shapes such as
    (3, 3, 3) are read as (H, W, C) for numpy and (C, H, W) for tensors.
    """
    if isinstance(x, (str, Path)):
        return load_image(x)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(x, Image.Image):
        try:
            return to_tensor(x)
        except ImageError:
            raise
        except Exception as e:  # a lazily opened, truncated or corrupt image
            raise ImageError(f"cannot read PIL image ({type(e).__name__}: {e})") from None
    import numpy as np

    if isinstance(x, np.ndarray):
        return _from_array(x, channels_first=False)
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        return _from_array(t.numpy(), channels_first=True)
    raise ImageError(
        f"cannot use a {type(x).__name__} as an image; pass a file path, a PIL image, "
        "a numpy array (H, W, C) or a tensor (C, H, W) in [0, 1]"
    )


def as_batch(x: Any) -> Any:
    """What users have, as one (N, 3, H, W) float32 CPU batch in [0, 1]: a diffusers pipeline's output
    (anything with ``.images``), a list of PIL images, numpy arrays (HWC uint8 or float), tensors
    (CHW) or paths, one numpy array (N, H, W, C) or (H, W, C), or one tensor (N, C, H, W) or (C, H, W).
    Each image goes through ``from_any``; images of different sizes are an ``ImageError``."""
    import numpy as np
    import torch

    if hasattr(x, "images") and not isinstance(x, (torch.Tensor, np.ndarray)):
        x = x.images
    if isinstance(x, torch.Tensor) and x.dim() == 4 or isinstance(x, np.ndarray) and x.ndim == 4:
        items = list(x)
    elif isinstance(x, (list, tuple)):
        items = list(x)
    else:
        items = [x]
    if not items:
        raise ImageError("no images given: pass at least one image")
    images = [from_any(i) for i in items]
    sizes = sorted({(int(t.shape[-2]), int(t.shape[-1])) for t in images})
    if len(sizes) > 1:
        raise ImageError(f"the images have different sizes (height x width {', '.join(f'{h}x{w}' for h, w in sizes)}); "
                         "score each size in its own call")
    return torch.stack(images)
