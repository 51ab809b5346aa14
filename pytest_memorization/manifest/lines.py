"""Where each ``[[work]]`` and ``[[canary]]`` starts in a manifest's text, so that a failure (pytest's
location, junit, a GitHub annotation) points at the entry, not at the top of the file.

tomllib keeps no positions, so the headers are found in the text itself: the i-th ``[[work]]``
header line is work[i]. Lines are 0-based, as pytest's ``reportinfo`` wants them.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADER = re.compile(r"^\s*\[\[\s*(work|canary)\s*\]\]\s*(#.*)?$")
MULTILINE = re.compile(r'"""|\'\'\'')


def entry_lines(text: str) -> dict[str, list[int]]:
    """``{"work": [line of work[0], ...], "canary": [...]}``; headers inside multi-line strings are skipped."""
    found: dict[str, list[int]] = {"work": [], "canary": []}
    in_string: str | None = None
    for n, line in enumerate(text.splitlines()):
        if in_string is None and (m := HEADER.match(line)):
            found[m.group(1)].append(n)
            continue
        for quote in MULTILINE.findall(line):
            if in_string is None:
                in_string = quote
            elif quote == in_string:
                in_string = None
    return found


def file_entry_lines(path: str | Path) -> dict[str, list[int]]:
    try:
        text = Path(path).read_bytes().decode("utf-8", "replace")
    except OSError:
        return {"work": [], "canary": []}
    return entry_lines(text)
