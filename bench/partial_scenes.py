"""Partial copies in scenes: the default gate against protected works pasted into larger images.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/partial_scenes.py            # the proof set (prints the table)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/partial_scenes.py --calibrate   # derives local_copy's threshold

Two disjoint sets of scenes, each with its own pasted non-protected images:

* **calibration** (``CALIBRATION``): the only images that thresholds were chosen on
  (``local_copy``'s default threshold, docs/partial-copies.md);
* **proof** (``PROOF``): scenes and pasted images the thresholds never saw. The README's table is
  this set's.

(``skimage.data.cat`` is the protected ``chelsea`` photo, so it is never a distractor.) Each scene is a
scikit-image photograph (or a synthetic low-structure image: a sky gradient, cloud-like
smoothed noise, white noise) at ``SIZE`` px. **Copies**: every protected work (the demo's seven:
``fixtures/works`` and the emblem) pasted once into every scene at a seeded scale between 20% and 60% of
the side and a seeded place, then one of: as pasted, JPEG at quality 55-75, a tint (each channel scaled
by up to 5% and the hue turned by up to 5 degrees), mirrored left to right, or JPEG after a tint.
**Non-copies**: each scene alone, after JPEG, and with each of the set's non-protected images pasted the
same way. Every image is judged against all seven works by ``pytest_memorization.evaluate``: the same
judge and rules as a manifest item, with the default metrics (the gate a user gets with no ``metrics``
key) and then each metric alone. A copy is caught when its row against the pasted work fails; a
non-copy is a false fail when any of its rows fails.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE = 128
WORKS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "face", "emblem")
CALIBRATION = {
    "scenes": ("camera", "coins", "page", "grass", "moon", "cell", "binary_blobs", "~sky:1", "~clouds:1", "~noise:1"),
    "pasted": ("logo", "colorwheel", "lfw:20"),
}
PROOF = {
    "scenes": ("brick", "clock", "gravel", "hubble_deep_field", "immunohistochemistry", "text", "horse",
               "microaneurysms", "motorcycle_left", "checkerboard", "~sky:2", "~clouds:2", "~noise:2", "~sky:3",
               "~clouds:3", "~noise:3"),
    "pasted": ("lfw:57", "shepp_logan_phantom"),
}
VARIANTS = ("pasted", "jpeg", "tint", "mirror", "tint+jpeg")


def _tensor(arr: Any) -> Any:
    import torch

    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255


def photo(name: str, size: int = SIZE) -> Any:
    """A scikit-image photograph, centre-cropped square and resized, as (3, size, size) in [0, 1]."""
    import numpy as np
    from PIL import Image
    from skimage import data

    if name.startswith("lfw:"):  # another person's face from Labeled Faces in the Wild (the protected face is 0)
        im = data.lfw_subset()[int(name[4:])]
    else:
        im = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    if im.dtype != np.uint8:
        f = im.astype("float64")
        im = (255 * (f - f.min()) / max(1e-9, float(f.max() - f.min()))).astype("uint8")
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    im = im[..., :3]
    h, w = im.shape[:2]
    s = min(h, w)
    im = im[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return _tensor(np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)))


def synthetic(kind: str, seed: int, size: int = SIZE) -> Any:
    """Low-structure scenes: ``sky`` (a vertical colour gradient with faint noise), ``clouds`` (smoothed
    noise over a sky), ``noise`` (white noise around a grey)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1000 + seed)
    t = torch.linspace(0, 1, size).view(1, size, 1).expand(1, size, size)
    top = torch.rand(3, 1, 1, generator=g) * 0.4 + torch.tensor([0.2, 0.35, 0.55]).view(3, 1, 1)
    bottom = torch.rand(3, 1, 1, generator=g) * 0.3 + torch.tensor([0.6, 0.65, 0.7]).view(3, 1, 1)
    sky = top * (1 - t) + bottom * t
    if kind == "sky":
        return (sky + 0.01 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    if kind == "clouds":
        n = torch.randn(1, 1, size // 8, size // 8, generator=g)
        c = F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)[0]
        return (sky + 0.12 * c.clamp(-2, 2)).clamp(0, 1)
    if kind == "noise":
        return (0.5 + 0.18 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    raise ValueError(kind)


def scene(name: str) -> Any:
    if name.startswith("~"):
        kind, seed = name[1:].split(":")
        return synthetic(kind, int(seed))
    return photo(name)


def works() -> dict[str, Any]:
    """The seven protected works, read as the plugin reads them."""
    from pytest_memorization.images import load_image

    paths = {w: REPO / "fixtures" / "works" / f"{w}.png" for w in WORKS if w != "emblem"}
    paths["emblem"] = REPO / "examples" / "works" / "emblem.png"
    return {w: load_image(paths[w]) for w in WORKS}


def paste(background: Any, work: Any, scale: float, rng: random.Random) -> tuple[Any, tuple[float, ...]]:
    """``work`` fitted to ``scale`` of the side (aspect kept) and pasted at a seeded place -> (image, box)."""
    import torch.nn.functional as F

    size = background.shape[-1]
    h, w = work.shape[-2:]
    k = scale * size / max(h, w)
    sh, sw = max(4, round(h * k)), max(4, round(w * k))
    y, x = rng.randrange(size - sh + 1), rng.randrange(size - sw + 1)
    out = background.clone()
    out[:, y : y + sh, x : x + sw] = F.interpolate(work[None], size=(sh, sw), mode="bicubic",
                                                   antialias=True, align_corners=False).clamp(0, 1)[0]
    return out, (x / size, y / size, (x + sw) / size, (y + sh) / size)


def jpeg(x: Any, quality: int) -> Any:
    import numpy as np
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return _tensor(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))


def tint(x: Any, rng: random.Random) -> Any:
    """Each channel scaled by up to 5% and the hue turned by up to 5 degrees."""
    import numpy as np

    arr = x.permute(1, 2, 0).numpy().astype("float64")
    gains = np.array([1 + rng.uniform(-0.05, 0.05) for _ in range(3)])
    arr = np.clip(arr * gains, 0, 1)
    dh = rng.uniform(-5, 5) / 360
    flat = arr.reshape(-1, 3)
    out = np.array([colorsys.hsv_to_rgb((h + dh) % 1.0, s, v) for h, s, v in (colorsys.rgb_to_hsv(*p) for p in flat)])
    return _tensor((out.reshape(arr.shape) * 255).round().astype("uint8"))


def variant(x: Any, name: str, rng: random.Random) -> Any:
    if name == "pasted" or name == "mirror":
        return x
    if name == "jpeg":
        return jpeg(x, rng.randint(55, 75))
    if name == "tint":
        return tint(x, rng)
    if name == "tint+jpeg":
        return jpeg(tint(x, rng), rng.randint(55, 75))
    raise ValueError(name)


def build(which: dict[str, Any], seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(copies, non_copies, works): each case a dict with ``image`` (3, SIZE, SIZE) and its labels."""
    wk = works()
    rng = random.Random(seed)
    copies, non = [], []
    for si, sname in enumerate(which["scenes"]):
        bg = scene(sname)
        for wi, wname in enumerate(WORKS):
            v = VARIANTS[(si + wi) % len(VARIANTS)]
            scale = rng.uniform(0.2, 0.6)
            w = wk[wname].flip(-1) if v == "mirror" else wk[wname]
            img, box = paste(bg, w, scale, rng)
            copies.append({"scene": sname, "work": wname, "variant": v, "scale": scale, "box": box,
                           "image": variant(img, v, rng)})
        non.append({"scene": sname, "case": "scene alone", "image": bg})
        non.append({"scene": sname, "case": "scene, JPEG", "image": jpeg(bg, rng.randint(55, 75))})
        for p in which["pasted"]:
            img, _ = paste(bg, photo(p), rng.uniform(0.2, 0.6), rng)
            non.append({"scene": sname, "case": f"{p} pasted", "image": variant(img, VARIANTS[si % 5], rng)})
    return copies, non, wk


def score_all(images: list[Any], wk: dict[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], list[Any]]:
    """Every image against every work with each metric, once: ({metric: (N, M)}, the works)."""
    import torch

    from pytest_memorization.metrics import get_metric
    from pytest_memorization.metrics.matrix import score_matrices
    from pytest_memorization.run.assertions import as_works

    works_list = as_works(wk)
    return score_matrices({n: get_metric(n) for n in names}, torch.stack(images), works_list), works_list


def judge_all(images: list[Any], scores: dict[str, Any], works_list: list[Any], names: tuple[str, ...]) -> list[Any]:
    """One row per image from the plugin's judge (``judging.judge``: thresholds, warn band, SSIM agreement,
    flat guard; the rules every path runs), with the default thresholds and only the ``names`` metrics."""
    import torch

    from pytest_memorization.judging.judge import Measured, judge, make_rules
    from pytest_memorization.metrics import get_metric

    chosen = {n: get_metric(n) for n in names}
    rules = make_rules(chosen, {}, {}, 0.1, {})
    n = len(images)
    m = Measured("bench", [""] * n, list(range(n)), works_list, {k: scores[k] for k in names},
                 images=torch.stack(images))
    return judge(m, rules).results


def caught(row: Any, work: str) -> bool:
    """The row fails with a finding about ``work`` (the pasted one), not about another work."""
    return row.verdict == "fail" and any(f.severity == "fail" and f.work == work for f in row.findings)


def calibrate() -> float:
    """local_copy's threshold from the calibration set alone: midway between the highest score of a
    non-copy (a scene, or a pasted image, against a work it does not hold) and the 5th percentile of
    the copies at 25-60% of the side (against the work pasted). Prints both sides and returns it."""
    import torch

    from pytest_memorization.images import fit_inside
    from pytest_memorization.metrics import get_metric

    copies, non, wk = build(CALIBRATION)
    m = get_metric("local_copy")
    works_in = [fit_inside(wk[w], SIZE, SIZE) for w in WORKS]
    sc = m.compare(torch.stack([c["image"] for c in copies]), works_in)
    sn = m.compare(torch.stack([c["image"] for c in non]), works_in)
    hit = sorted(float(sc[i, WORKS.index(c["work"])]) for i, c in enumerate(copies) if c["scale"] >= 0.25)
    miss = [float(sn[i, j]) for i in range(len(non)) for j in range(len(WORKS))]
    miss += [float(sc[i, j]) for i, c in enumerate(copies) for j, w in enumerate(WORKS) if w != c["work"]]
    p5 = hit[int(0.05 * len(hit))]
    t = (max(miss) + p5) / 2
    print(f"calibration: {len(hit)} copies at 25-60%: min {hit[0]:.3f}, 5th percentile {p5:.3f}; "
          f"{len(miss)} non-copy scores: max {max(miss):.3f}; threshold midway: {t:.3f}")
    print("null levels: " + ", ".join(f"{w} {float(m.null_levels([x], SIZE, SIZE)[0]):.3f}"
                                      for w, x in zip(WORKS, works_in)))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=("proof", "calibration"), default="proof")
    ap.add_argument("--calibrate", action="store_true", help="derive local_copy's threshold and exit")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from pytest_memorization.config.settings import DEFAULT_METRICS

    torch.set_num_threads(args.threads)
    if args.calibrate:
        calibrate()
        return
    which = PROOF if args.set == "proof" else CALIBRATION
    t0 = time.perf_counter()
    copies, non, wk = build(which)
    print(f"{args.set} set: {len(which['scenes'])} scenes, {len(copies)} copies, {len(non)} non-copies, "
          f"{len(wk)} works, {SIZE} px (built in {time.perf_counter() - t0:.1f} s)")
    gates = {"default gate": tuple(DEFAULT_METRICS), **{m: (m,) for m in DEFAULT_METRICS}}
    t = time.perf_counter()
    images = [c["image"] for c in copies] + [c["image"] for c in non]
    scores, works_list = score_all(images, wk, tuple(DEFAULT_METRICS))
    print(f"scored {len(images)} images x {len(works_list)} works with {', '.join(DEFAULT_METRICS)} "
          f"in {time.perf_counter() - t:.0f} s")
    res = {}
    for gate, names in gates.items():
        rows = judge_all(images, scores, works_list, names)
        res[gate] = (rows[: len(copies)], rows[len(copies):])
    print()
    print("| copies | n | " + " | ".join(f"{g}: caught" for g in gates) + " |")
    print("|---|---|" + "---|" * len(gates))
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(copies):
        band = "20-25%" if c["scale"] < 0.25 else "25-60%"
        groups.setdefault(f"at {band}, {c['variant']}", []).append(i)
        groups.setdefault(f"**at {band}, all**", []).append(i)
    for name in sorted(groups, key=lambda k: (k.replace("*", "")[:9], k.startswith("**"), k)):
        idx = groups[name]
        cells = [f"{sum(caught(res[g][0][i], copies[i]['work']) for i in idx)}/{len(idx)}" for g in gates]
        print(f"| {name} | {len(idx)} | " + " | ".join(cells) + " |")
    print()
    print("| non-copies | n | " + " | ".join(f"{g}: false fails / warns" for g in gates) + " |")
    print("|---|---|" + "---|" * len(gates))
    cases: dict[str, list[int]] = {}
    for i, c in enumerate(non):
        cases.setdefault(c["case"] if "pasted" not in c["case"] else "another image pasted in", []).append(i)
    cases["**all**"] = list(range(len(non)))
    for name, idx in cases.items():
        cells = []
        for g in gates:
            rn = res[g][1]
            cells.append(f"{sum(rn[i].verdict == 'fail' for i in idx)} / {sum(rn[i].verdict == 'warn' for i in idx)}")
        print(f"| {name} | {len(idx)} | " + " | ".join(cells) + " |")
    print()
    _margins(copies, non, scores, works_list)
    missed = [(c["work"], c["scene"], c["variant"], f"{c['scale']:.0%}") for i, c in enumerate(copies)
              if c["scale"] >= 0.25 and not caught(res["default gate"][0][i], c["work"])]
    print(f"\ncopies at 25-60% the default gate missed: {missed or 'none'}")
    ff = [(non[i]["scene"], non[i]["case"], r.reasons[:1]) for i, r in enumerate(res["default gate"][1]) if r.verdict == "fail"]
    print(f"non-copies the default gate failed: {ff or 'none'}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


def _margins(copies: list[dict[str, Any]], non: list[dict[str, Any]], scores: dict[str, Any], works_list: list[Any]) -> None:
    """Per default metric: its threshold, the weakest copy at 25-60% (against the pasted work) and the
    closest non-copy (any work; a pasted image against the works it does not hold counts too)."""
    from pytest_memorization.metrics import KNOWN_DEFAULTS, KNOWN_DIRECTIONS

    ids = [w.id for w in works_list]
    nc = len(copies)
    print("| metric | threshold | weakest copy at 25-60% | closest non-copy | margins (copy side / non-copy side) |")
    print("|---|---|---|---|---|")
    for m, s in scores.items():
        t = KNOWN_DEFAULTS[m]
        sim = KNOWN_DIRECTIONS[m] == "similarity"
        cs = [(float(s[i, ids.index(c["work"])]), c) for i, c in enumerate(copies) if c["scale"] >= 0.25]
        wv, wc = (min if sim else max)(cs, key=lambda x: x[0])
        ns = [(float(s[nc + i, j]), f"{ids[j]} vs {c['scene']}, {c['case']}") for i, c in enumerate(non) for j in range(len(ids))]
        ns += [(float(s[i, j]), f"{ids[j]} vs {c['scene']} holding {c['work']}") for i, c in enumerate(copies)
               for j in range(len(ids)) if ids[j] != c["work"]]
        nv, nd = (max if sim else min)(ns, key=lambda x: x[0])
        m_copy = (wv - t) if sim else (t - wv)
        m_non = (t - nv) if sim else (nv - t)
        print(f"| {m} | {t} | {wv:.3f} ({wc['work']} in {wc['scene']}, {wc['variant']}, {wc['scale']:.0%}) | "
              f"{nv:.3f} ({nd}) | {m_copy:+.3f} / {m_non:+.3f} |")


if __name__ == "__main__":
    main()
