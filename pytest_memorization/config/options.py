"""Every option, declared once: command line ``--memorization-X``, ini key ``memorization_X``.

The table drives ``pytest_addoption``, value parsing with clear errors, precedence
(marker > command line > ini > manifest > default) and the options table of the docs
(``python -m pytest_memorization options``, ``docs/gen_options.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import MemorizationConfigError

REPORT_WORKS_MODES = ("embed", "thumbnail", "omit")
DEVICES_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16")


class OptionError(MemorizationConfigError):
    def __init__(self, option: Option, value: object, fix: str) -> None:
        super().__init__(
            f"--memorization-{option.dashed} (ini memorization_{option.name}) = {value!r}: {fix}"
        )


def _int(lo: int) -> Callable[[Option, Any], int]:
    def parse(opt: Option, v: Any) -> int:
        try:
            n = int(str(v).strip())
        except ValueError:
            raise OptionError(opt, v, f"expected an integer >= {lo}") from None
        if n < lo:
            raise OptionError(opt, v, f"expected an integer >= {lo}")
        return n

    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[Option, Any], float]:
    def parse(opt: Option, v: Any) -> float:
        try:
            x = float(str(v).strip())
        except ValueError:
            raise OptionError(opt, v, "expected a number") from None
        if x != x or (lo is not None and x < lo) or (hi is not None and x > hi):
            raise OptionError(opt, v, f"expected a number in [{lo}, {hi}]")
        return x

    return parse


def _bool(opt: Option, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise OptionError(opt, v, "expected true or false")


def _str(opt: Option, v: Any) -> str:
    s = str(v).strip()
    if not s:
        raise OptionError(opt, v, "expected a non-empty value")
    return s


# A report URL goes into Markdown links and images of the GitHub step summary: only characters that
# cannot end or open Markdown syntax there (no ( ) [ ] < > ` ' " ! * _ \ or spaces, no control characters).
_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%/+=,;@:&?#$-]*)?")


def _url(opt: Option, v: Any) -> str:
    s = str(v).strip().rstrip("/")
    if not _URL_RE.fullmatch(s):
        raise OptionError(opt, v, "expected an http(s) URL of letters, digits and - . _ ~ % / + = , ; @ : & ? # $ "
                                  "only (it is written into Markdown), e.g. https://example.org/ci/123/memorization-report")
    return s


def _choice(*choices: str) -> Callable[[Option, Any], str]:
    def parse(opt: Option, v: Any) -> str:
        s = str(v).strip()
        if s not in choices:
            raise OptionError(opt, v, f"expected one of {', '.join(choices)}")
        return s

    return parse


def _variant(opt: Option, v: Any) -> str:
    s = str(v).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", s):
        raise OptionError(opt, v, "expected a diffusers variant name such as fp16 (the part of "
                                  "diffusion_pytorch_model.fp16.safetensors between the dots)")
    return s


def _device(opt: Option, v: Any) -> str:
    s = str(v).strip()
    if not DEVICES_RE.match(s):
        raise OptionError(opt, v, "expected auto, cpu, mps, cuda or cuda:N")
    return s


def parse_seeds(value: Any, where: str = "seeds") -> list[int]:
    """Seeds as a list of distinct non-negative integers; accepts '0,1,2' or '0-3' or a list."""
    items: list[Any]
    if isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            if re.fullmatch(r"\d+-\d+", part):
                a, b = map(int, part.split("-"))
                items.extend(range(a, b + 1))
            else:
                items.append(part)
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    seeds: list[int] = []
    for s in items:
        if isinstance(s, bool) or not (isinstance(s, int) or (isinstance(s, str) and s.isdigit())):
            raise MemorizationConfigError(
                f"{where}: {s!r} is not a non-negative integer; write seeds like 0,1,2,3"
            )
        n = int(s)
        if n < 0 or n >= 2**63:
            raise MemorizationConfigError(f"{where}: {n} is out of range; seeds are 0 .. 2**63-1")
        seeds.append(n)
    if not seeds:
        raise MemorizationConfigError(f"{where}: no seeds given; write seeds like 0,1,2,3")
    if len(set(seeds)) != len(seeds):
        raise MemorizationConfigError(f"{where}: seeds {seeds} repeat a seed; list each seed once")
    return seeds


def _seeds(opt: Option, v: Any) -> list[int]:
    try:
        return parse_seeds(v, f"--memorization-{opt.dashed}")
    except MemorizationConfigError as e:
        raise MemorizationConfigError(str(e)) from None


def parse_metric_values(value: Any, where: str, sep: str = "=") -> dict[str, float]:
    """'clip=0.9,tiled_l2=0.15' (or a list of such) -> {'clip': 0.9, 'tiled_l2': 0.15}."""
    parts: list[str] = []
    for chunk in value if isinstance(value, (list, tuple)) else [value]:
        parts.extend(p for p in str(chunk).split(",") if p.strip())
    out: dict[str, float] = {}
    for p in parts:
        name, s, num = p.partition(sep)
        try:
            x = float(num)
        except ValueError:
            x = float("nan")
        if not s or not name.strip() or x != x:
            raise MemorizationConfigError(
                f"{where}: {p!r} is not METRIC{sep}VALUE; write e.g. tiled_l2{sep}0.15"
            )
        out[name.strip()] = x
    return out


def _thresholds(opt: Option, v: Any) -> dict[str, float]:
    """Checked exactly as a manifest's thresholds (``policy.threshold_problem``)."""
    from .policy import threshold_problem

    values = parse_metric_values(v, f"--memorization-{opt.dashed}", "=")
    for name, x in values.items():
        problem = threshold_problem(name, x)
        if problem:
            raise OptionError(opt, v, problem)
    return values


def _steps(opt: Option, v: Any) -> int:
    from .policy import steps_problem

    n = _int(1)(opt, v)
    problem = steps_problem(n)
    if problem:
        raise OptionError(opt, v, problem)
    return n


def _tolerances(opt: Option, v: Any) -> dict[str, float]:
    tol = parse_metric_values(v, f"--memorization-{opt.dashed}", ":")
    for k, x in tol.items():
        if not 0 <= x < float("inf"):  # an infinite tolerance would never fail
            raise OptionError(opt, v, f"tolerance for {k} must be a finite number >= 0")
    return tol


def _names(opt: Option, v: Any) -> list[str]:
    parts = v if isinstance(v, (list, tuple)) else str(v).split(",")
    names = [str(p).strip() for p in parts if str(p).strip()]
    if not names:
        raise OptionError(opt, v, "expected a comma-separated list of names")
    return names


def _shard(opt: Option, v: Any) -> tuple[int, int]:
    import os

    from .shards import ShardError, parse_shard

    try:
        return parse_shard(v, os.environ)
    except ShardError as e:
        raise OptionError(opt, v, str(e)) from None


def _paths(opt: Option, v: Any) -> list[str]:
    return [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


@dataclass(frozen=True)
class Option:
    name: str  # snake_case; ini key is memorization_<name>
    help: str
    default: Any = None
    parse: Callable[[Option, Any], Any] = _str
    flag: bool = False  # a command-line switch (store_true)
    repeat: bool = False  # repeatable on the command line (append)
    ini_type: str | None = None  # None: string
    cli: bool = True
    ini: bool = True  # False: command line only (what the pull request's ini file must never set)

    @property
    def dashed(self) -> str:
        return self.name.replace("_", "-")


OPTIONS: Sequence[Option] = (
    Option("required", "Fail the run (usage error) when --memorization is missing.", False, _bool, flag=True, ini_type="bool"),
    Option("model", "Checkpoint: diffusers folder, single .safetensors file (with --memorization-config), or cached hub id.", None),
    Option("generator", "Any other generator: a callable package.module:function (prompts, seeds, settings) -> images, used instead of a diffusers model.", None),
    Option("config", "Local diffusers folder giving the configs for a single-file checkpoint.", None),
    Option("variant", "diffusers variant of the model's weights, e.g. fp16: load *.fp16.safetensors (manifest: variant in [model]).", None, _variant),
    Option("revision", "Branch, tag or commit of a hub-id model in the local cache (default: main).", None),
    Option("subfolder", "The folder inside the model folder or hub repo that holds the pipeline.", None),
    Option("lora", "LoRA to apply: folder, .safetensors file or hub id in the local cache (several: loras in [model]).", None),
    Option("lora_base_check", "A LoRA whose model card names another base_model than the base in use is an error; no for a base fine-tuned from it.", True, _bool, ini_type="bool"),
    Option("lora_card_result", "Under the LoRA gate, write the gate's result into each LoRA's model card (README.md) as a section.", False, _bool, flag=True, ini_type="bool"),
    Option("lora_scale", "LoRA weight.", 1.0, _float(0.0, 10.0)),
    Option("lora_gate", "Generate with base and base+LoRA; fail when the LoRA moves images toward a work.", False, _bool, flag=True, ini_type="bool"),
    Option("lora_card_canaries", "Under the LoRA gate, add the prompts of the LoRA's model card (README.md: instance, class, widget, trigger words) as items scored against the works; no to opt out.", True, _bool, ini_type="bool"),
    Option("lora_amplify", "Under the LoRA gate, also generate at LoRA weight lambda x the LoRA scale (extraction amplification, FineXtract) and judge those images too; 0 turns it off.", 0.0, _float(0.0, 10.0)),
    Option("lora_gate_tolerance", "How much the LoRA may move each metric toward a work, e.g. clip:0.02,tiled_l2:0.03.", {}, _tolerances),
    Option("device", "auto (cuda, then mps, then cpu), cpu, mps, cuda or cuda:N.", "auto", _device),
    Option("dtype", "auto (CUDA: float16 for SD 1/2/XL, bfloat16 for SD3/Flux; float32 elsewhere), float32, float16 or bfloat16.", "auto", _choice(*DTYPES)),
    Option("batch_size", "Images per pipeline call; halved automatically on GPU out-of-memory.", 8, _int(1)),
    Option("seeds", "Seeds for every prompt, e.g. 0,1,2,3 or 0-7 (overrides the manifest).", None, _seeds),
    Option("steps", "Denoising steps (overrides the manifest); at least 2.", None, _steps),
    Option("metrics", "Metrics to score, comma-separated (default: those with a threshold).", None, _names),
    Option("threshold", "Threshold override METRIC=VALUE; repeatable or comma-separated.", {}, _thresholds, repeat=True),
    Option("align", "Alignment-tolerant tiled L2 and SSIM: the best score over small shifts and rescalings of each generated image; false compares pixels as they are.", True, _bool, ini_type="bool"),
    Option("vae_floor", "Also score each image against the model's own VAE round trip of each work (cached per model and work) and gate on the closer of the two; reports both.", False, _bool, flag=True, ini_type="bool"),
    Option("warn_band", "Warn when a score is within this fraction of its threshold (0 disables).", 0.1, _float(0.0, 1.0)),
    Option("manifest", "A manifest to collect (repeatable), in addition to memorization_manifests.", [], _paths, repeat=True),
    Option("manifests", "Glob of manifest file names collected under the test paths.", "memorization.toml", _str, cli=False),
    Option("report", "Write report.json, index.html and PNGs into this folder.", None),
    Option("report_works", "How protected works appear in reports: embed, thumbnail or omit.", "thumbnail", _choice(*REPORT_WORKS_MODES)),
    Option("report_url", "Where CI publishes the --memorization-report folder; the GitHub step summary then shows thumbnails of the failing images and their works from there (GitHub strips inline images).", None, _url),
    Option("save", "Write a baseline JSON with each item's worst score per metric.", None),
    Option("compare", "Compare with this baseline JSON; see --memorization-compare-fail.", None),
    Option("compare_fail", "Tolerated worsening per metric vs the baseline, e.g. clip:0.02,tiled_l2:0.03.", {}, _tolerances),
    Option("update_baseline", "Rewrite the entries of the baseline given by --memorization-compare for the items that ran.", False, _bool, flag=True, ini_type="bool"),
    Option("prune_baseline", "Drop stale baseline entries (items whose content changed or that no longer exist) from the --memorization-save or --memorization-compare file.", False, _bool, flag=True, ini_type="bool"),
    Option("calibrate", "Score ordinary prompts and store the noise-magnitude threshold for this model (and the zero_step / lora_delta ones when [detectors] lists them, each in its own file beside it).", False, _bool, flag=True, ini_type="bool"),
    Option("calibration", "Calibration file (read, and written by --memorization-calibrate).", "memorization-calibration.json"),
    Option("calibration_prompts", "Text file of ordinary prompts for calibration (default: the bundled list).", None),
    Option("target_fpr", "False-positive rate on ordinary prompts at which calibration sets the threshold.", 0.01, _float(0.0001, 0.5)),
    Option("weights_dir", "Folder searched first for metric weights (LPIPS backbones, CLIP, SSCD).", None),
    Option("lpips_net", "LPIPS backbone: alex, vgg or squeeze.", "alex", _choice("alex", "vgg", "squeeze")),
    Option("clip_model", "open_clip model name for the clip metric.", "ViT-B-32"),
    Option("clip_pretrained", "open_clip weights: cached tag, local file, or local-dir:/path.", "laion2b_s34b_b79k"),
    Option("sscd_model", "SSCD TorchScript file (sscd_disc_mixup.torchscript.pt) for the sscd metric.", None),
    Option("cache_dir", "Cache for reference features and generated images.", ".memorization_cache"),
    Option("generation_cache", "Cache every generated image in the cache dir, keyed by what changes its pixels (model, LoRA, prompt, seed, settings; not thresholds, metrics or works), so a rerun that changes only those regenerates nothing; false regenerates every image.", True, _bool, ini_type="bool"),
    Option("allow_pickle", "Allow pickle checkpoints (.ckpt/.bin/.pt), loaded with weights_only=True.", False, _bool, flag=True, ini_type="bool"),
    Option("allow_download", "Allow Hugging Face downloads (default: local cache only, HF_HUB_OFFLINE=1).", False, _bool, flag=True, ini_type="bool"),
    Option("allow_outside_root", "Allow manifest paths that leave the manifest's project root.", False, _bool, flag=True, ini_type="bool"),
    Option("early_exit", "Stop generating a batch once every image's predicted clean image x0 is clearly far from every work (2x past each tiled_l2/ssim threshold, checked from 40 percent of the steps); SD 1/2 and SDXL; the report marks those images.", False, _bool, flag=True, ini_type="bool"),
    Option("progress", "One progress line for the run (images done / total, ETA): auto draws it live on a terminal and prints plain lines under -q or without a terminal (CI); plain always prints plain lines; off prints nothing.", "auto", _choice("auto", "plain", "off")),
    Option("progress_every", "Seconds between plain progress lines (0: one per update).", 30.0, _float(0.0, 86400.0)),
    Option("policy", "Policy file (TOML) from outside the pull request: metrics always scored, threshold limits, minimum seeds and steps, the LoRA scale, waivers, trusted hooks and calibrations (docs/security.md); also read from the environment. Command line only, never an ini key.", None, ini=False),
    Option("shard", "Run only shard I of N of the items, e.g. 0/4, balanced by the images each item generates (or by --memorization-shard-durations); auto takes I and N from a SLURM array, auto/N takes I from a SLURM array or a Kubernetes Indexed Job ($JOB_COMPLETION_INDEX).", None, _shard),
    Option("shard_durations", "Balance the shards by each item's duration in an earlier run: its --memorization-report folder (or report.json), or a pytest-split .test_durations file; items it does not list count by their images.", None),
)
BY_NAME = {o.name: o for o in OPTIONS}


def addoption(parser: Any) -> None:
    group = parser.getgroup("memorization", "memorization gate (pytest-memorization)")
    group.addoption("--memorization", action="store_true", default=False,
                    help="Run the memorization checks (otherwise they are reported as skipped).")
    for opt in OPTIONS:
        if opt.cli:
            kwargs: dict[str, Any] = {"dest": f"memorization_{opt.name}", "help": help_text(opt)}
            if opt.flag:
                kwargs.update(action="store_true", default=None)
            elif opt.repeat:
                kwargs.update(action="append", default=None, metavar=metavar(opt))
            else:
                kwargs.update(default=None, metavar=metavar(opt))
            group.addoption(f"--memorization-{opt.dashed}", **kwargs)
        if opt.ini:
            _addini(parser, opt)


_PATHS = {"policy", "model", "config", "lora", "report", "save", "compare", "calibration", "calibration_prompts",
          "weights_dir", "sscd_model", "cache_dir", "manifest", "shard_durations"}


def metavar(opt: Option) -> str:
    """A readable placeholder for ``pytest --help``: PATH, N, X, METRIC=VALUE, a choice list, ..."""
    kind = getattr(opt.parse, "__qualname__", "").split(".")[0]
    if opt.name in _PATHS:
        return "PATH"
    return {"_int": "N", "_steps": "N", "_float": "X", "_seeds": "SEEDS", "_thresholds": "METRIC=VALUE",
            "_tolerances": "METRIC:DELTA", "_bool": "true|false", "_names": "NAME[,NAME]", "_shard": "I/N|auto[/N]", "_device": "DEVICE",
            "_choice": "{" + ",".join(_choices_of(opt)) + "}"}.get(kind, "VALUE")


def _choices_of(opt: Option) -> list[str]:
    cells = getattr(opt.parse, "__closure__", None) or ()
    for c in cells:
        if isinstance(c.cell_contents, tuple):
            return [str(x) for x in c.cell_contents]
    return []


def help_text(opt: Option) -> str:
    """The option's help with its default, as ``pytest --help`` shows it."""
    if opt.flag or opt.default in (None, {}, []):
        return opt.help
    return f"{opt.help} Default: {opt.default}."


def _addini(parser: Any, opt: Option) -> None:
    """Numbers are typed ``int``/``float`` ini keys where pytest knows those types (pytest >= 8.4)."""
    kind = getattr(opt.parse, "__qualname__", "").split(".")[0]
    typed = {"_int": "int", "_steps": "int", "_float": "float"}.get(kind, opt.ini_type)
    try:
        parser.addini(f"memorization_{opt.name}", help_text(opt), type=typed, default=None)
    except (AssertionError, ValueError, TypeError):  # an older pytest without int/float ini types
        parser.addini(f"memorization_{opt.name}", help_text(opt), type=opt.ini_type, default=None)


def markdown_table() -> str:
    """The options table of the docs (docs/options.md, written by docs/gen_options.py)."""
    rows = ["| command line | ini key | default | what it does |", "|---|---|---|---|",
            "| `--memorization` | - | off | Run the memorization checks; without it they are reported as skipped. |"]
    for o in OPTIONS:
        cli = f"`--memorization-{o.dashed}`" if o.cli else "-"
        default = "off" if o.flag else ("-" if o.default in (None, {}, []) else f"`{o.default}`")
        ini = f"`memorization_{o.name}`" if o.ini else "-"
        rows.append(f"| {cli} | {ini} | {default} | {o.help} |")
    return "\n".join(rows)


def check_value_form(args: Sequence[str], invocation_dir: Any) -> None:
    """Refuse ``--memorization-X VALUE`` (space, not ``=``) where VALUE is an existing path outside the
    invocation folder: pytest picks the root folder and the ini from the paths on the command line
    before plugin options exist, so it took VALUE for a test path, and the root (and the ini, and
    ``memorization_required``) moved with it. ``--memorization-X=VALUE`` is never taken for a path."""
    from pathlib import Path

    here = Path(invocation_dir).resolve()
    takes_value = {f"--memorization-{o.dashed}" for o in OPTIONS if o.cli and not o.flag}
    for opt, value in zip(args, args[1:]):
        if str(opt) not in takes_value or str(value).startswith("-"):
            continue
        p = Path(str(value).split("::")[0]).expanduser()
        try:
            p = (p if p.is_absolute() else here / p).resolve()
            outside = p.exists() and p != here and here not in p.parents
        except (OSError, ValueError):
            continue
        if outside:
            raise MemorizationConfigError(
                f"{opt} {value}: write {opt}={value} (with '='). Written with a space, pytest reads {value} as a "
                "test path while it picks the root folder and the ini file (before plugin options exist), so "
                "the root and the ini moved outside this project and its settings (memorization_required "
                "among them) were not read")
