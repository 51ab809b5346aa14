"""The report folder is replaced only when the plugin wrote it: never a folder someone else owns.

A run writes its report into a staging folder beside ``--memorization-report`` and then puts it in
the folder's place, so the old folder is deleted. That is safe only for a folder this plugin wrote:
each report holds the marker file ``MARKER``. A folder that exists, is not empty and has no marker
(the works folder, the project, a folder of the pull request) is refused before anything runs, and
so are the root folder, the folder pytest was started in, any folder above them, and any folder that
holds a manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MemorizationConfigError, printable

MARKER = ".pytest-memorization-report"


def ours(folder: Path) -> bool:
    """True when ``folder`` may be replaced: it does not exist, is empty, or holds the marker."""
    try:
        if folder.is_symlink():
            return False
        if not folder.exists():
            return True
        return folder.is_dir() and ((folder / MARKER).is_file() or _earlier_report(folder) or not any(folder.iterdir()))
    except OSError:
        return False


def _earlier_report(folder: Path) -> bool:
    """A report written before reports carried the marker: report.json (with its run) and index.html, and
    nothing but report files."""
    import json

    names = {p.name for p in folder.iterdir()}
    if not {"report.json", "index.html"} <= names or not names <= {"report.json", "index.html", "images", "works",
                                                                      MARKER}:
        return False
    try:
        return "run" in json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def check(settings: Any, invocation_dir: Path, folder: Path, staging: Path) -> None:
    """Raise ``MemorizationConfigError`` when the report folder (or its staging sibling) may not be replaced."""
    target = folder.resolve()
    where = f"--memorization-report {printable(settings.raw('report'))}"
    roots = {"the root folder": Path(settings.rootdir).resolve(), "the folder pytest was started in":
             Path(invocation_dir).resolve()}
    for name, root in roots.items():
        if target == root or target in root.parents:
            raise MemorizationConfigError(f"{where}: {target} is {name}" + ("" if target == root else f"'s parent "
                                          f"({root})") + "; replacing it with the report would delete it. Choose a "
                                          "folder of its own, e.g. --memorization-report=memorization-report")
    for manifest in settings.manifest:
        m = Path(manifest).resolve()
        if target in m.parents:
            raise MemorizationConfigError(f"{where}: {target} holds the manifest {m}; replacing it with the report "
                                          "would delete it. Choose a folder of its own")
    if target.is_dir() and not (target / MARKER).is_file():
        found = next(iter(_manifests(target, settings.manifests)), None)
        if found is not None:
            raise MemorizationConfigError(f"{where}: {target} holds the manifest {found}; replacing it with the report "
                                          "would delete it. Choose a folder of its own")
    for path, what in ((target, "folder"), (staging, "staging folder")):
        if not ours(path):
            raise MemorizationConfigError(
                f"{where}: the {what} {path} exists and was not written by pytest-memorization (it holds no {MARKER} "
                "file), so the report will not replace it. Choose another folder, or empty it")


def _manifests(folder: Path, pattern: str) -> Any:
    try:
        return folder.rglob(pattern)
    except (OSError, ValueError):
        return iter(())


def mark(staging: Path) -> None:
    """Put the marker in a report's staging folder."""
    (staging / MARKER).write_text("written by pytest-memorization; this folder is replaced by the next run\n",
                                  encoding="utf-8")
