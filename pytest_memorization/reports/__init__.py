"""Reports of a memorization run: report.json, a standalone index.html, PNGs, terminal and
GitHub summaries, and merging of shard/worker reports.

Importing this package (or any module in it) imports only the standard library; ``pngs``
imports numpy, PIL and torch inside its functions.
"""

from __future__ import annotations

from .github import append_step_summary, step_summary
from .html import render_html
from .merge import merge_reports, merge_results
from .pngs import THUMBNAIL_PX, generated_png_path, prune_work_images, save_image, write_work_images
from .schema import SCHEMA_VERSION, ReportError, sort_results, summarize
from .terminal import summary_lines
from .writer import build_report, load_report, write_report

__all__ = [
    "SCHEMA_VERSION",
    "THUMBNAIL_PX",
    "ReportError",
    "append_step_summary",
    "build_report",
    "generated_png_path",
    "load_report",
    "merge_reports",
    "merge_results",
    "prune_work_images",
    "render_html",
    "save_image",
    "sort_results",
    "step_summary",
    "summarize",
    "summary_lines",
    "write_report",
    "write_work_images",
]
