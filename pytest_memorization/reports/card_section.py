"""The LoRA gate's result as a section of each LoRA's model card (``--memorization-lora-card-result``).

The section sits between two HTML comments, so a later run replaces it in place and the rest of the
card (front matter included) is kept byte for byte. The card is checked with
``huggingface_hub.ModelCard`` before it is written. A LoRA in the Hugging Face cache is not written
(its files are the cache's blobs): the caller is told so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .schema import VERDICTS, overall, summarize, to_result_dict

BEGIN, END = "<!-- pytest-memorization:begin -->", "<!-- pytest-memorization:end -->"


def gate_section(label: str, rows: list[dict[str, Any]], base: str, complete: bool, today: dt.date) -> str:
    s = summarize(rows)
    counts = ", ".join(f"{s[v]} {v}" for v in VERDICTS)
    bad = sorted({r["item"].rpartition("::")[2] for r in rows if r["verdict"] in ("fail", "error")})
    lines = [BEGIN, "## Memorization gate", "",
             f"Checked with [pytest-memorization](https://pypi.org/project/pytest-memorization/) on "
             f"{today.isoformat()}: **{overall(s, complete)}** for {label} on base `{base}`: {s['total']} images "
             f"({counts}).", ""]
    if bad:
        lines += ["Items that failed or errored: " + ", ".join(f"`{b}`" for b in bad[:20]), ""]
    lines.append(END)
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        head, rest = text.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def write_card_results(run: dict[str, Any], results: Sequence[Any], complete: bool,
                       today: dt.date | None = None) -> list[str]:
    """Write the section into the card of each LoRA of ``run``; returns notes (what was written or not)."""
    from huggingface_hub import ModelCard

    rows = [to_result_dict(r, i) for i, r in enumerate(results)]
    gate = [r for r in rows if isinstance((r.get("extra") or {}).get("lora_gate"), dict)]
    if not gate:
        return []
    several = run.get("loras") if isinstance(run.get("loras"), list) else None
    loras = [str(lo.get("path")) for lo in several] if several else [str(run.get("lora"))] if run.get("lora") else []
    notes = []
    for k, path in enumerate(loras):
        p = Path(path).expanduser()
        if not p.exists():
            notes.append(f"LoRA card not written: {path} is a hub id (its card is in the Hugging Face cache); "
                         "write the result into the repository's README.md instead")
            continue
        card = (p if p.is_dir() else p.parent) / "README.md"
        mine = [r for r in gate if ((r.get("extra") or {}).get("lora_alone") or {}).get("index") == k + 1]
        together = [r for r in gate if not (r.get("extra") or {}).get("lora_alone")]
        label = "this LoRA" if not several else f"this LoRA alone and with {', '.join(loras[:k] + loras[k + 1:])}"
        section = gate_section(label, together + mine, str(run.get("model")), complete, today or dt.date.today())
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
        new = replace_section(text, section)
        ModelCard(new)  # a card huggingface_hub can read, or its own error
        atomic_write_text(card, new)
        notes.append(f"wrote the LoRA gate's result into {card}")
    return notes
