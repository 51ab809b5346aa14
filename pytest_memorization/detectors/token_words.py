"""Token pieces -> the words a user typed: CLIP's byte-level BPE (``</w>`` ends a word) and
SentencePiece (T5: ``\u2581`` starts a word). A word's score is the L2 norm of its pieces' scores."""

from __future__ import annotations

from typing import Any

__all__ = ["STOP_WORDS", "bytes_to_unicode", "clip_words", "t5_words"]

# English function words (articles, prepositions, conjunctions, pronouns, auxiliaries): a prompt's
# grammar, never what it depicts. Trigger tokens leave them out of the ranking (issue #18: they
# came first for most memorized prompts, through causal attention's first rows).
STOP_WORDS = frozenset("""
a an the this that these those some any each every no
of in on at by for with without from to into onto over under above below near beside between
behind through across along around about against among upon off out up down after before during
and or but nor so yet as than then while if because
i me my we us our you your he him his she her it its they them their who whom whose which what
is are was were be been being am has have had do does did will would can could shall should may
might must not there here
""".split())


def _decode(pieces: str) -> str:
    """CLIP BPE pieces -> text: ``</w>`` marks a word end; other characters map back to bytes."""
    inverse = {c: b for b, c in bytes_to_unicode().items()}
    text = pieces.replace("</w>", " ")
    raw = bytes(inverse.get(ch, ord(" ")) if ch != " " else 32 for ch in text)
    return raw.decode("utf-8", errors="replace").strip()


def clip_words(tokenizer: Any, pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Merge BPE pieces into words: a piece ending in ``</w>`` ends a word (CLIP's BPE)."""
    words: list[tuple[str, float]] = []
    group: list[tuple[str, float]] = []
    for i, (piece, mag) in enumerate(pieces):
        group.append((piece, mag))
        if piece.endswith("</w>") or i == len(pieces) - 1:
            text = _decode("".join(p for p, _ in group))
            score = sum(m * m for _, m in group) ** 0.5
            if any(ch.isalnum() for ch in text):
                words.append((text, score))
            group = []
    return words


def t5_words(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """SentencePiece pieces -> words: ``\u2581`` starts a word; a word's score is its pieces' L2 norm."""
    groups: list[list[tuple[str, float]]] = []
    for piece, mag in pieces:
        if piece.startswith("\u2581") or not groups:
            groups.append([])
        groups[-1].append((piece, mag))
    return [("".join(p for p, _ in g).replace("\u2581", " ").strip(), sum(m * m for _, m in g) ** 0.5)
            for g in groups]


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character map that CLIP's BPE is built on."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))
