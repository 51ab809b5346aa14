"""``pytest-memorization validate PATH...``: check manifests as collection would, without torch.

The pre-commit hook (``.pre-commit-hooks.yaml``) runs it on every changed ``memorization.toml``. It
uses the gate's own loader (``manifest.load``), so its errors are the ones ``pytest --memorization``
would raise at collection, printed as ``file:line: message`` (the line of the ``[[work]]`` or
``[[canary]]`` that holds the bad key) so editors and CI annotations jump there.
"""

from __future__ import annotations

import re
from pathlib import Path

from ._paths import CLIError

KEY_ENTRY = re.compile(r"^(work|canary)\[(\d+)\]")
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "data" / "memorization.schema.json"


def manifest_paths(sources: list[str]) -> list[Path]:
    """Files as given; folders searched for ``memorization.toml``."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found = sorted(p.rglob("memorization.toml"))
            if not found:
                raise CLIError(f"{p}: no memorization.toml in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise CLIError(f"{p}: no such file or folder")
    return out


def line_of(path: Path, key: str | None) -> int:
    """1-based line for an error at ``key`` (the line of its ``[[work]]``/``[[canary]]``), else 1."""
    from ..manifest.lines import file_entry_lines

    m = KEY_ENTRY.match(key or "")
    if m:
        lines = file_entry_lines(path)[m.group(1)]
        if int(m.group(2)) < len(lines):
            return lines[int(m.group(2))] + 1
    return 1


def validate(path: Path, *, check_files: bool, allow_outside_root: bool) -> str:
    """One line: what the manifest holds. Raises ``ManifestError``."""
    from ..manifest.load import load_manifest

    m = load_manifest(path, allow_outside_root=allow_outside_root, check_images=check_files, require_model=False)
    prompts = sum(len(w.prompts) for w in m.works)
    model = m.model.pretrained or m.model.generator or "model from the ini or command line"
    return (f"{path}: ok ({len(m.works)} work(s), {prompts} prompt(s), {len(m.canaries)} canary(ies); "
            f"model {Path(model).name if m.model.pretrained_kind != 'hub' else model})")


def cmd_validate(args) -> int:  # noqa: ANN001 - argparse.Namespace
    from ..errors import ManifestError

    if args.schema:
        print(SCHEMA_FILE)
        return 0
    if not args.paths:
        raise CLIError("validate: give manifests or folders (pytest-memorization validate memorization.toml)")
    failed = 0
    for path in manifest_paths(args.paths):
        try:
            line = validate(path, check_files=not args.no_files, allow_outside_root=args.allow_outside_root)
        except ManifestError as e:
            failed += 1
            text = str(e).removeprefix(f"{e.path}: ")
            print(f"{path}:{line_of(path, e.key)}: {text}")
            continue
        if not args.quiet:
            print(line)
    return 1 if failed else 0


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    p = sub.add_parser("validate", help="check manifests as collection would, without loading torch")
    p.add_argument("paths", nargs="*", metavar="PATH", help="manifests, or folders searched for memorization.toml")
    p.add_argument("--no-files", action="store_true",
                   help="do not open the works or check that model paths exist (e.g. models not in the repository)")
    p.add_argument("--allow-outside-root", action="store_true", help="allow paths that leave the project root")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("--schema", action="store_true", help="print the path of the manifest's JSON Schema and exit")
    p.set_defaults(func=cmd_validate)
