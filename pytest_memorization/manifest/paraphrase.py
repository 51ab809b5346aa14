"""Deterministic small perturbations of a canary prompt.

Memorized images are often re-triggered by prompts that differ slightly from the
training caption: MemBench (2024) and "Finding Dori" (2025) show that paraphrased or
perturbed prompts bring back memorized images, so a gate that only tries the exact
caption misses them. ``paraphrases`` makes such variants without any model:

* insertion of neutral words ("a photo of ...", "..., detailed", "high quality"),
* repetition of one word ("astronaut astronaut"), which strengthens a token the way
  memorization triggers are known to be amplified,
* reordering of comma-separated phrases, or swapping two adjacent words.

Variants are stable across runs, machines and ``PYTHONHASHSEED``: the random generator is
seeded from a SHA-256 of (seed, prompt), never from ``hash()``. They are prefix-stable:
``paraphrases(p, 3)`` starts with ``paraphrases(p, 2)``, so raising the count keeps the
earlier variants (and their baseline entries).
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["paraphrases", "MAX_PARAPHRASES"]

MAX_PARAPHRASES = 64
PREFIXES = ("a photo of", "an image of", "a picture of", "a photograph of")
SUFFIXES = ("detailed", "high quality", "highly detailed", "photograph", "sharp focus", "4k")
INFIXES = ("detailed", "high quality", "sharp")
_STOP = {"a", "an", "the", "of", "in", "on", "and", "with", "at", "to", "by", "for"}


def _rng(prompt: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _insert(words: list[str], text: str, rng: random.Random) -> str:
    where = rng.randrange(3)
    if where == 0:
        prefix = rng.choice(PREFIXES)
        if text.lower().startswith(prefix):
            return f"{text}, {rng.choice(SUFFIXES)}"
        return f"{prefix} {text}"
    # before a content word that does not follow an article: "a white detailed suit"
    spots = [i for i in range(1, len(words)) if words[i].lower() not in _STOP
             and words[i - 1].lower() not in ("a", "an", "the")]
    if where == 1 or not spots:
        return f"{text}, {rng.choice(SUFFIXES)}"
    i = rng.choice(spots)
    return " ".join(words[:i] + [rng.choice(INFIXES)] + words[i:])


def _repeat(words: list[str], text: str, rng: random.Random) -> str:
    content = [i for i, w in enumerate(words) if w.strip(",.;:!?").lower() not in _STOP]
    i = rng.choice(content or list(range(len(words))))
    word = words[i].rstrip(",.;:!?")
    tail = words[i][len(word):]
    return " ".join(words[:i] + [word, word + tail] + words[i + 1 :])


def _reorder(words: list[str], text: str, rng: random.Random) -> str:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) >= 2:
        if len(parts) == 2:
            parts.reverse()
        else:
            for _ in range(8):
                shuffled = parts[:]
                rng.shuffle(shuffled)
                if shuffled != parts:
                    break
            parts = shuffled
        return ", ".join(parts)
    pairs = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    if not pairs:
        return _insert(words, text, rng)
    i = rng.choice(pairs)
    words = words[:]
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


_OPS = (_insert, _repeat, _reorder)


def paraphrases(prompt: str, n: int, *, seed: int = 0) -> list[str]:
    """``n`` deterministic variants of ``prompt``, each different from it and from each other.

    The first variants apply one perturbation to the prompt, cycling through insertion,
    repetition and reordering; later ones perturb earlier variants again, so any ``n`` up to
    ``MAX_PARAPHRASES`` gets distinct strings. Whitespace is normalised to single spaces.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"paraphrases: n must be a non-negative integer, got {n!r}")
    if n > MAX_PARAPHRASES:
        raise ValueError(f"paraphrases: n = {n} is more than the maximum {MAX_PARAPHRASES}")
    base = " ".join(str(prompt).split())
    if not base:
        raise ValueError("paraphrases: the prompt is empty")
    rng = _rng(base, seed)
    seen = {base}
    out: list[str] = []
    attempt = 0
    while len(out) < n:
        # First pass: one operation on the prompt itself; then build on earlier variants too.
        source = base if attempt < 3 * len(_OPS) or not out else rng.choice([base, *out])
        op = _OPS[attempt % len(_OPS)] if attempt < len(_OPS) else rng.choice(_OPS)
        candidate = " ".join(op(source.split(), source, rng).split())
        attempt += 1
        if candidate and candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
        if attempt > 200 * (n + 1):  # cannot happen: insertion always grows a string
            raise RuntimeError(f"paraphrases: could not make {n} distinct variants of {prompt!r}")
    return out
