"""Helpers shared by the tests that build a manifest project with pytester.

(A module of its own, not conftest: several conftest.py files exist, and `from conftest import`
would pick whichever was imported first.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

COPY_PROMPT = "a photo of a red fox"
TINY_MODEL_TOML = '[model]\npretrained = "{prefix}models/tiny"\nseeds = {seeds}\nsteps = 2\nheight = 64\nwidth = 64\n'


def gate_project(pytester: pytest.Pytester, tiny_pipeline: Path, photos: tuple[str, ...] = ("astronaut", "coffee"),
                 files: dict[str, bytes] | None = None) -> Path:
    """A pytester project with the tiny model inside it (models/tiny), scikit-image photos as
    works/<name>.png at 64 px, extra works/ files, and an ini pointing the cache into the project."""
    import shutil

    from support import save_photo

    works = pytester.mkdir("works")
    for name in photos:
        save_photo(name, works / f"{name}.png")
    for name, content in (files or {}).items():
        (works / name).write_bytes(content)
    shutil.copytree(tiny_pipeline, pytester.path / "models" / "tiny")
    pytester.makeini(f"[pytest]\nmemorization_cache_dir = {pytester.path / '.cache'}\n")
    return pytester.path


def add_copy_project(pytester: pytest.Pytester) -> Path:
    """copies/memorization.toml: one work, works/fox.png (the model's own output, written by the
    caller), and its prompt: an item that fails because the model really draws the work."""
    folder = pytester.mkdir("copies")
    (folder / "memorization.toml").write_text(TINY_MODEL_TOML.format(prefix="../", seeds="[0]") + f"""
[[work]]
id = "fox"
image = "../works/fox.png"
prompts = ["{COPY_PROMPT}"]
""")
    return folder
