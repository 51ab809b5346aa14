"""Open index.html in a real headless Chromium: every image loads, failures come first."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_memorization.reports import write_report

from ._factory import make_results

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    pytest.skip("chromium not found: neither 'chromium' nor 'chromium-browser' is on PATH and "
                "/usr/bin/chromium is missing; install it with `apt-get install chromium`")


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(profile)}  # keep the browser's caches inside the test's tmp dir
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=60, env=env)


class Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.rows: list[dict[str, str | None]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "section" and "data-verdict" in a:
            self.rows.append(a)
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


def test_report_in_headless_chromium(tmp_path, works):
    browser = _chromium()
    d = tmp_path / "report"
    run, results = make_results(d, works, "thumbnail", four_seeds=True)
    # the passing rows are listed first on purpose: the report must reorder them
    results.sort(key=lambda r: r["verdict"] != "pass")
    write_report(d, run, results, complete=False)
    url = (d / "index.html").resolve().as_uri()

    dom = _run(browser, tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Rows()
    page.feed(dom.stdout)
    # one card per item: its worst seed's image (and base image), its work, and a strip of every seed when
    # it has several: 8 one-seed items (15 images) + the four-seed item (1 + 1 + 4)
    expected = sum(bool(r["image"]) + bool(r["work_image"]) + ("lora_gate" in r["extra"]) for r in results
                   if not r["item"].endswith("[seeds]")) + 6
    assert expected == 21
    assert page.body.get("data-images") == str(expected), page.body
    assert page.body.get("data-broken-count") == "0", "an image did not load: " + str(page.body)
    shown = [r for r in page.rows if "hidden" not in r]
    assert shown and shown[0]["data-verdict"] in ("error", "fail")
    assert [r["data-verdict"] for r in page.rows][:4] == ["error", "fail", "fail", "fail"]
    assert sorted(int(r["data-seeds"]) for r in page.rows) == [1] * 8 + [4]  # one card per item
    assert "pwned" not in page.title and page.title.startswith("Memorization report: ERROR")

    shot = tmp_path / "report.png"
    res = _run(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900",
               "--hide-scrollbars", url)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 900)
    assert len(data) > 20_000, "screenshot is nearly blank"
