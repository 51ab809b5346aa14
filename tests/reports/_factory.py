"""Synthetic but real report inputs: PNGs written from tensors, works from scikit-image photos.

Scores here are made-up numbers: these tests check the reports, not the metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MALICIOUS = '</script><script>document.title="pwned"</script><img src="x.png" onerror="alert(1)"> & "q"'


def photo(name: str, px: int = 64) -> Any:
    from support import photo as support_photo

    return support_photo(name, px)


def _near(img: Any, sigma: float, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(seed)
    return (img + sigma * torch.randn(img.shape, generator=g)).clamp(0, 1)


def make_results(report_dir: Path, works: dict[str, Any], mode: str = "thumbnail",
                 item_prefix: str = "tests/test_gate.py::test_canary", *,
                 four_seeds: bool = False) -> tuple[dict, list[dict]]:
    """A run dict and one result per kind of row, with their PNGs saved under report_dir; with
    ``four_seeds`` also one item of four seeds whose failing seed is not the first."""
    import torch

    from pytest_memorization.records import ImageResult
    from pytest_memorization.reports import generated_png_path, save_image, write_work_images

    work_paths = write_work_images(report_dir, works, mode)
    thr = {"clip": 0.95, "tiled_l2": 0.15}
    specs = [
        # item suffix, seed, work, generated pixels, scores, verdict, reasons, detectors, extra
        ("[astronaut]", 1, "astronaut", _near(works["astronaut"], 0.03, 1), {"clip": 0.98, "tiled_l2": 0.07},
         "fail", ["clip 0.98 >= 0.95 vs work astronaut"], {}, {}),
        ("[chelsea]", 0, "chelsea", _near(works["chelsea"], 0.25, 2), {"clip": 0.91, "tiled_l2": 0.2},
         "warn", ["clip 0.91 within 10% of 0.95"], {}, {}),
        ("[coffee]", 3, "coffee", torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3)),
         {"clip": 0.41, "tiled_l2": 0.5}, "pass", [], {}, {}),
        ("[broken]", 2, None, torch.full((3, 64, 64), float("nan")), {}, "error",
         ["generated image is NaN: a broken run, never a pass"], {}, {}),
        ("[prompt-only]", 0, None, _near(torch.full((3, 64, 64), 0.5), 0.1, 4), {}, "fail",
         ["noise_magnitude 3.1 >= 2.5 (uncalibrated)"],
         {"noise_magnitude": {"score": 3.1, "threshold": 2.5, "calibrated": False,
                              "trigger_tokens": ["sks", "portrait"]}}, {}),
        ("[malicious]", 5, "coffee", _near(works["coffee"], 0.4, 5), {"clip": 0.5, "tiled_l2": 0.4},
         "pass", [MALICIOUS], {}, {}),
        ("[lora]", 0, "chelsea", _near(works["chelsea"], 0.05, 6), {"clip": 0.97, "tiled_l2": 0.1},
         "fail", ["LoRA moved clip from 0.80 to 0.97 toward chelsea"], {}, {"lora_gate": {}}),
        ("[img2img]", 0, "astronaut", _near(works["astronaut"], 0.1, 7), {"clip": 0.93, "tiled_l2": 0.2},
         "warn", [], {}, {"img2img_curve": [{"strength": s, "clip": 1 - 0.4 * s, "tiled_l2": 0.5 * s}
                                           for s in (0.2, 0.4, 0.6, 0.8)], "img2img": {"strength": 0.5, "min_safe_strength": 0.6}}),
    ]
    results = []
    from pytest_memorization.records import Finding

    def found(rule: str, severity: str, message: str, *metrics: str, work: str | None = None) -> list[Finding]:
        return [Finding(rule, severity, message, metric=m, work=work) for m in metrics or (None,)]

    # the findings the judge would have left on each row (reports read them; they never re-judge)
    findings = {
        "[astronaut]": found("threshold", "fail", "clip 0.98 >= 0.95 vs work astronaut", "clip", "tiled_l2",
                             work="astronaut"),
        "[chelsea]": found("warn_band", "warn", "clip 0.91 within 10% of 0.95", "clip", work="chelsea"),
        "[broken]": found("error", "error", "generated image is NaN: a broken run, never a pass"),
        "[prompt-only]": found("noise_magnitude", "fail", "noise_magnitude 3.1 >= 2.5 (uncalibrated)", "noise_magnitude"),
        "[lora]": found("lora_gate.crossed", "fail", "LoRA moved clip from 0.80 to 0.97 toward chelsea", "clip",
                        "tiled_l2", work="chelsea"),
        "[img2img]": found("img2img.below_safe_strength", "warn", "copy at strength 0.5, below min_safe_strength 0.6",
                           "clip", work="astronaut"),
    }
    for suffix, seed, work, pixels, scores, verdict, reasons, detectors, extra in specs:
        item = item_prefix + suffix
        rel = generated_png_path(report_dir, item, seed)
        save_image(pixels, report_dir / rel)
        if "lora_gate" in extra:
            base_rel = generated_png_path(report_dir, item, seed, tag="base")
            save_image(_near(works["chelsea"], 0.3, 8), report_dir / base_rel)
            extra = {"lora_gate": {"base_scores": {"clip": 0.8, "tiled_l2": 0.3}, "base_image": base_rel}}
        prompt = MALICIOUS if suffix == "[malicious]" else f"a photo of {work or 'something'} {suffix}"
        results.append(ImageResult(
            item=item, prompt=prompt, seed=seed, work=work, scores=scores,
            thresholds=thr if scores else {}, verdict=verdict, reasons=reasons, image=rel,
            work_image=work_paths.get(work) if work else None, detectors=detectors, extra=extra,
            findings=findings.get(suffix, []),
        ).to_json())
    # one item with four seeds, the failing one (seed 2) not first: the report shows one card, seed 2 large
    from pytest_memorization.metrics.tiled_l2 import tile_rms

    item = item_prefix + "[seeds]"
    for seed in range(4 if four_seeds else 0):
        pixels = _near(works["astronaut"], 0.02 if seed == 2 else 0.35, 10 + seed)
        rel = generated_png_path(report_dir, item, seed)
        save_image(pixels, report_dir / rel)
        copy = seed == 2
        results.append(ImageResult(
            item=item, prompt="an astronaut, four seeds", seed=seed, work="astronaut",
            scores={"clip": 0.99 if copy else 0.6, "tiled_l2": 0.03 if copy else 0.4}, thresholds=thr,
            verdict="fail" if copy else "pass", reasons=["tiled_l2 0.03 <= 0.15 against 'astronaut'"] if copy else [],
            image=rel, work_image=work_paths.get("astronaut"),
            findings=[Finding("threshold", "fail", "tiled_l2 0.03 <= 0.15 against 'astronaut'", metric=m,
                              work="astronaut") for m in ("clip", "tiled_l2")] if copy else [],
            extra={"tiles": {"grid": 4, "rms": tile_rms(pixels, works["astronaut"])}},
        ).to_json())
    run = {
        # the shape session.run_info() gives for one model
        "model": "/models/tiny-sd", "model_hash": "ab12cd34ef567890", "model_kind": "diffusers",
        "lora": "/models/lora", "lora_hash": "77aa", "lora_scale": 0.8,
        "device": "cpu", "dtype": "float32",
        "versions": {"torch": "2.x", "diffusers": "0.42", "pytest_memorization": "0.1.0"},
        "metrics": {"clip": "ViT-B-32/laion2b", "tiled_l2": "tiled_l2-v1"},
        "steps": 2, "guidance_scale": 7.5, "height": 64, "width": 64, "seeds": [0, 1, 2, 3, 5],
        "started": "2025-01-01T10:00:00+00:00", "finished": "2025-01-01T10:01:00+00:00",
        "report_works": mode,
    }
    return run, results
