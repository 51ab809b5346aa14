"""``index.html``: one standalone page that opens from disk and makes no network request.

Images are referenced by relative path (never embedded), all text is escaped, and a
Content-Security-Policy allows only this page's own inline style and script (by hash) and
images from the report folder. Pure standard library.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any, TextIO
from urllib.parse import quote

from .maps import detector_map_figures
from .order import search_meta
from .overlays import box_svg
from .page import CSS, PAGE, SCRIPT
from .schema import (
    VERDICTS,
    crossed,
    direction_of,
    fmt_num,
    is_number,
    lora_label,
    model_label,
    overall,
    safe_relpath,
    verdict_label,
)
from .terminal import strength_label

PALETTE = ("#c0392b", "#2471a3", "#1e8449", "#b9770e", "#6c3483", "#117a65")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def _img(rel: Any, alt: str, cls: str = "") -> str:
    path = safe_relpath(rel) if isinstance(rel, str) else None
    if path is None:
        return f'<div class="ph">{e(alt)}: {"no image" if not rel else "invalid image path"}</div>'
    c = f' class="{cls}"' if cls else ""
    return f'<img src="{e(quote(path, safe="/"))}" alt="{e(alt)}"{c}>'


def _figure(inner: str, caption: str) -> str:
    return f"<figure>{inner}<figcaption>{e(caption)}</figcaption></figure>"


def _work_figure(r: dict[str, Any]) -> str:
    work = r.get("work")
    if work is None:
        why = "no work compared" if r.get("verdict") == "error" else "no protected work: prompt-only canary"
        return _figure(f'<div class="ph">{why}</div>', "work")
    rel = r.get("work_image")
    if not rel:
        ph = f'<div class="ph">work {e(work)}<br>image not included (report-works=omit)</div>'
        return _figure(ph, f"work {work}")
    cls = "thumb" if "-thumb." in str(rel) else ""
    return _figure(_img(rel, f"protected work {work}", cls), f"work {work}")


def _scores_table(r: dict[str, Any], run: dict[str, Any]) -> str:
    scores, thr = r.get("scores") or {}, r.get("thresholds") or {}
    if not scores:
        return ""
    lora = (r.get("extra") or {}).get("lora_gate")
    base = lora.get("base_scores") if isinstance(lora, dict) else None
    base = base if isinstance(base, dict) else {}
    vae = (r.get("extra") or {}).get("vae_floor")
    both = (vae.get("work") or {}, vae.get("vae_round_trip") or {}) if isinstance(vae, dict) else None
    rows = []
    for m in sorted(set(scores) | set(thr)):
        s, t, d = scores.get(m), thr.get(m), direction_of(m, run, r)
        c = crossed(r, m)
        mark = "crossed" if c else ""
        op = {"distance": "&le;", "similarity": "&ge;"}.get(d or "", "")
        base_td = f"<td>{e(fmt_num(base.get(m)))}</td>" if base else ""
        vae_td = "".join(f"<td>{e(fmt_num(x.get(m)))}</td>" for x in both) if both else ""
        rows.append(
            f'<tr{" class=crossed" if c else ""}><td>{e(m)}</td>{base_td}<td>{e(fmt_num(s))}</td>{vae_td}'
            f"<td>{op} {e(fmt_num(t))}</td><td>{e(d or 'unknown')}</td><td>{mark}</td></tr>"
        )
    score_th = "LoRA" if base else "score"
    score_th += "</th><th>vs work</th><th>vs VAE round trip" if both else ""
    base_th = "<th>base</th>" if base else ""
    return (f'<table class="scores"><tr><th>metric</th>{base_th}<th>{score_th}</th><th>copy when</th>'
            f"<th>direction</th><th></th></tr>{''.join(rows)}</table>")


def _detectors_table(r: dict[str, Any]) -> str:
    dets = r.get("detectors") or {}
    if not dets:
        return ""
    rows = []
    for name in sorted(dets):
        d = dets[name] if isinstance(dets[name], dict) else {"score": dets[name]}
        c = crossed(r, name)
        cal = {True: "calibrated", False: "uncalibrated"}.get(d.get("calibrated"), "")
        toks = "".join(f'<span class="tok">{e(t)}</span>' for t in d.get("trigger_tokens") or [])
        rows.append(f'<tr{" class=crossed" if c else ""}><td>{e(name)}</td><td>{e(fmt_num(d.get("score")))}</td>'
                    f"<td>{e(fmt_num(d.get('threshold')))}</td><td>{cal}</td><td>{toks}</td></tr>")
    return ('<table class="detectors"><tr><th>detector</th><th>score</th><th>threshold</th><th></th>'
            f"<th>trigger tokens</th></tr>{''.join(rows)}</table>")


def _curve_points(curve: list[Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for pt in curve:
        if not isinstance(pt, dict) or not is_number(pt.get("strength")):
            continue
        vals = pt.get("scores") if isinstance(pt.get("scores"), dict) else pt
        for m, v in vals.items():
            if m not in ("strength", "scores", "seed") and is_number(v):
                series.setdefault(str(m), []).append((float(pt["strength"]), float(v)))
    return {m: sorted(p) for m, p in sorted(series.items())}


def curve_svg(curve: list[Any], thresholds: dict[str, Any] | None = None, safe: Any = None) -> str:
    """A small line chart: score of each metric vs img2img strength; thresholds dashed, the work's
    ``min_safe_strength`` a grey vertical line; a legend says which is which."""
    series = _curve_points(curve if isinstance(curve, list) else [])
    if not series:
        return ""
    W, H, L, R, T, B = 300, 170, 38, 90, 10, 30
    xs = [x for p in series.values() for x, _ in p]
    ys = [y for p in series.values() for _, y in p]
    x0, x1 = min(0.0, min(xs)), max(1.0, max(xs))
    thr = {m: t for m, t in (thresholds or {}).items() if m in series and is_number(t)}
    y0, y1 = min(0.0, min(ys)), max([1.0, *ys, *thr.values()])

    def px(x: float) -> float:
        return L + (x - x0) / (x1 - x0 or 1) * (W - L - R)

    def py(y: float) -> float:
        return H - B - (y - y0) / (y1 - y0 or 1) * (H - T - B)

    out = [f'<svg class="curve" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
           'aria-label="similarity vs img2img strength" xmlns="http://www.w3.org/2000/svg">',
           f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#555"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#555"/>']
    for v in (x0, (x0 + x1) / 2, x1):
        out.append(f'<text x="{px(v):.1f}" y="{H - B + 13}" font-size="10" text-anchor="middle">{v:.2g}</text>')
    for v in (y0, y1):
        out.append(f'<text x="{L - 4}" y="{py(v) + 3:.1f}" font-size="10" text-anchor="end">{v:.2g}</text>')
    out.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 3}" font-size="10" text-anchor="middle">strength</text>')
    for i, (m, pts) in enumerate(series.items()):
        col = PALETTE[i % len(PALETTE)]
        poly = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{poly}" fill="none" stroke="{col}" stroke-width="2"/>')
        out.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{col}"/>' for x, y in pts)
        if m in thr:
            out.append(f'<line x1="{L}" x2="{W - R}" y1="{py(thr[m]):.1f}" y2="{py(thr[m]):.1f}" '
                       f'stroke="{col}" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{W - R + 6}" y="{T + 12 + 14 * i}" font-size="11" fill="{col}">{e(m)}</text>')
    n = len(series)
    out.append(f'<line x1="{W - R + 6}" x2="{W - R + 20}" y1="{T + 16 + 14 * n}" y2="{T + 16 + 14 * n}" '
               'stroke="#555" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{W - R + 24}" y="{T + 19 + 14 * n}" font-size="10">threshold</text>')
    if is_number(safe) and x0 <= float(safe) <= x1:
        out.append(f'<line x1="{px(float(safe)):.1f}" x2="{px(float(safe)):.1f}" y1="{T}" y2="{H - B}" '
                   'stroke="#7f8c8d" stroke-width="2"/>')
        out.append(f'<text x="{W - R + 6}" y="{T + 33 + 14 * n}" font-size="10" fill="#7f8c8d">'
                   f"safe from {float(safe):g}</text>")
    out.append("</svg>")
    return "".join(out)


HEAT_SPAN = 0.3  # tile RMS at which a tile counts as not matching at all (twice Carlini's 0.15)


def heat_svg(tiles: Any) -> str:
    """A grid over the generated image: red where its tiles match the work (tile RMS near 0)."""
    rms = tiles.get("rms") if isinstance(tiles, dict) else None
    if not (isinstance(rms, list) and rms and all(isinstance(row, list) and row for row in rms)):
        return ""
    n_rows, n_cols = len(rms), max(len(row) for row in rms)
    cells = []
    for i, row in enumerate(rms):
        for j, v in enumerate(row):
            if not is_number(v):
                continue
            strength = max(0.0, 1.0 - float(v) / HEAT_SPAN)
            cells.append(f'<rect x="{j}" y="{i}" width="1" height="1" fill="#e5262b" '
                         f'fill-opacity="{0.45 * strength:.2f}" stroke="#fff" stroke-opacity="0.5" '
                         f'stroke-width="0.02"><title>tile {i + 1},{j + 1}: RMS {float(v):.3f}</title></rect>')
    return (f'<svg class="heat" viewBox="0 0 {n_cols} {n_rows}" preserveAspectRatio="none" role="img" '
            f'aria-label="where the image matches the work" xmlns="http://www.w3.org/2000/svg">{"".join(cells)}</svg>')


def _generated_figure(r: dict[str, Any], caption: str) -> str:
    extra = r.get("extra") or {}
    heat = heat_svg(extra.get("tiles"))
    box = box_svg(extra.get("local_copy"), (r.get("thresholds") or {}).get("local_copy"))
    img = _img(r.get("image"), f"{caption} image")
    if not heat and not box:
        return _figure(img, caption)
    note = f"{caption}: red tiles match the work" if heat else caption
    note += "; red box: the work found inside it" if 'stroke="#e5262b"' in box else ""
    return _figure(f'<div class="heatwrap">{img}{heat}{box}</div>', note)


def _seed_strip(rows: list[dict[str, Any]]) -> str:
    if len(rows) < 2:
        return ""
    figs = []
    for r in rows:
        v = str(r.get("verdict"))
        alt = f"seed {r.get('seed')}{strength_label(r)}"
        figs.append(f'<figure class="s-{e(v)}">{_img(r.get("image"), alt)}'
                    f"<figcaption>{e(alt)} &middot; {e(v)}</figcaption></figure>")
    return f'<div class="strip" aria-label="every seed">{"".join(figs)}</div>'


def _seeds_table(rows: list[dict[str, Any]]) -> str:
    metrics = sorted({m for r in rows for m in (r.get("scores") or {})})
    if len(rows) < 2 or not metrics:
        return ""
    head = "".join(f"<th>{e(m)}</th>" for m in metrics)
    body = "".join(f"<tr><td>{e(r.get('seed'))}{e(strength_label(r))}</td><td>{e(r.get('verdict'))}</td>"
                   + "".join(f"<td>{e(fmt_num((r.get('scores') or {}).get(m)))}</td>" for m in metrics) + "</tr>"
                   for r in rows)
    return f'<details><summary>every seed</summary><table class="seeds"><tr><th>seed</th><th></th>{head}</tr>{body}</table></details>'


def _card(rows: list[dict[str, Any]], run: dict[str, Any], idx: int) -> str:
    """One item: the worst seed large (base / generated with its heat map / work), every seed in a
    strip, the reasons and scores of the worst seed, the img2img curve once."""
    lead = rows[0]
    v = str(lead["verdict"])
    extra = dict(lead.get("extra") or {})
    lora = extra.get("lora_gate") if isinstance(extra.get("lora_gate"), dict) else None
    figs = []
    if lora is not None:
        figs.append(_figure(_img(lora.get("base_image"), "base model image"), "base"))
        figs.append(_generated_figure(lead, "LoRA"))
    else:
        figs.append(_generated_figure(lead, "generated"))
    figs.append(_work_figure(lead))
    figs += detector_map_figures(lead, _img(lead.get("image"), "generated image"), _figure)
    lead_reasons = list(dict.fromkeys(lead.get("reasons") or []))
    reasons_html = "".join(f"<li>{e(x)}</li>" for x in lead_reasons)
    more = [x for x in dict.fromkeys(x for r in rows[1:] for x in (r.get("reasons") or [])) if x not in lead_reasons]
    if more:  # the other seeds' reasons, folded: the worst seed speaks for the card
        reasons_html += (f"<li><details><summary>{len(more)} more on the other seeds</summary><ul>"
                         + "".join(f"<li>{e(x)}</li>" for x in more) + "</ul></details></li>")
    curve = ""
    if "img2img_curve" in extra:
        i2i = extra.get("img2img") if isinstance(extra.get("img2img"), dict) else {}
        curve = curve_svg(extra.get("img2img_curve"), lead.get("thresholds"), safe=i2i.get("min_safe_strength"))
    rest = {k: x for k, x in extra.items() if k not in ("img2img_curve", "tiles", "local_copy")}
    details = (f"<details><summary>extra</summary><pre>{e(json.dumps(rest, indent=1, sort_keys=True))}</pre>"
               "</details>") if rest else ""
    work = f"<span>work <b>{e(lead.get('work'))}</b></span>" if lead.get("work") is not None else ""
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    tally = ", ".join(f"{counts[k]} {k}" for k in VERDICTS if k in counts)
    worst = f"{lead.get('seed')}{strength_label(lead)}"
    seeds = f"<span>seed {e(worst)}</span>" if len(rows) == 1 else \
        f"<span>{len(rows)} {'images' if strength_label(lead) else 'seeds'}: {e(tally)}; worst seed {e(worst)} shown large</span>"
    return (
        f'<section class="row v-{e(v)}" data-verdict="{e(v)}" data-seeds="{len(rows)}" id="r{idx}">'
        f'<div class="rowhead"><span class="badge b-{e(v)}">{e(verdict_label(lead).upper())}</span>'
        f"<code>{e(lead.get('item'))}</code>{seeds}{work}</div>"
        f'<div class="body"><div><div class="imgs">{"".join(figs)}</div>{_seed_strip(rows)}</div><div class="info">'
        f'<div class="prompt">{e(lead.get("prompt"))}</div>'
        f"{f'<ul class=reasons>{reasons_html}</ul>' if reasons_html else ''}"
        f"{_scores_table(lead, run)}{_detectors_table(lead)}{curve}{_seeds_table(rows)}{details}</div></div></section>"
    )


def _run_table(run: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [("model", model_label(run))]
    lora = lora_label(run)
    if lora:
        rows.append(("LoRA", lora))
    shown = {"model", "model_hash", "model_sha256", "lora", "lora_scale", "height", "width"}
    for k in ("device", "dtype", "steps", "guidance_scale", "seeds", "report_works", "started", "finished"):
        if run.get(k) is not None:
            val = run[k]
            rows.append((k, ", ".join(map(str, val)) if isinstance(val, list) else fmt_num(val)))
            shown.add(k)
    if run.get("height") or run.get("width"):
        rows.append(("size", f"{run.get('width')} x {run.get('height')} px"))
    for k in ("metrics", "versions"):
        if isinstance(run.get(k), dict):
            rows.append((k, ", ".join(f"{a} {b}" for a, b in sorted(run[k].items()))))
            shown.add(k)
    body = "".join(f"<span><b>{e(k)}</b> {e(v)}</span>" for k, v in rows)
    rest = {k: v for k, v in run.items() if k not in shown}
    more = (f"<details><summary>more run details</summary><pre>{e(json.dumps(rest, indent=1, sort_keys=True))}"
            "</pre></details>") if rest else ""
    return f'<div class="run">{body}</div>{more}'


def _extras(doc: dict[str, Any]) -> str:
    known = {"schema_version", "complete", "generated_by", "run", "summary", "results"}
    parts = []
    for k in sorted(set(doc) - known):
        v = doc[k]
        if k in ("item_durations", "image_sha256") and isinstance(v, dict):  # machine data: shard durations,
            continue                                                        # what a merge checks images against
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            body = "<ul>" + "".join(f"<li><code>{e(x)}</code></li>" for x in v) + "</ul>" if v else "<p>none</p>"
        else:
            body = f"<pre>{e(json.dumps(v, indent=1, sort_keys=True))}</pre>"
        parts.append(f"<h3>{e(k.replace('_', ' '))}</h3>{body}")
    return f'<section class="extras"><h2>Other findings</h2>{"".join(parts)}</section>' if parts else ""


CHUNK = 250  # cards per JSON block past the first page: small blocks let the parser yield and paint


def _safe_json(x: Any) -> str:
    """JSON safe inside a <script type="application/json"> element (no "</" and no "<!--")."""
    return json.dumps(x, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "\\u003c!--")


def _write_cards_json(out: TextIO, meta: list[list[str]], rest: Iterable[list[dict[str, Any]]],
                      run: dict[str, Any]) -> None:
    """Every item's verdict and search text (``meta``), and the cards past the first ``PAGE`` (``rest``:
    each item's rows, in page order) as HTML strings, as JSON blocks of ``CHUNK`` cards. Each card is
    rendered and written out a block at a time, so the rows are never all held at once."""
    block: list[str] = []
    first = True
    for i, rows in enumerate(rest, start=PAGE):
        block.append(_card(rows, run, i))
        if len(block) == CHUNK:
            out.write(_block(first, meta, block))
            first, block = False, []
    if block or first:
        out.write(_block(first, meta, block))


def _block(first: bool, meta: list[Any], html: list[str]) -> str:
    if first:
        return f'<script type="application/json" id="cards">{_safe_json({"meta": meta, "html": html})}</script>'
    return f'<script type="application/json" class="more">{_safe_json(html)}</script>'


def render_html(doc: dict[str, Any]) -> str:
    """The index.html text for a report document held in memory (as built by writer.build_report)."""
    import io

    from .order import Rows, plan

    rows = Rows(doc.get("results") or [])
    buf = io.StringIO()
    write_html(buf, doc, rows, plan(rows, doc.get("run") or {}).groups)
    return buf.getvalue()


def write_html(out: TextIO, doc: dict[str, Any], rows: Sequence[dict[str, Any]], groups: list[list[int]]) -> None:
    """index.html into ``out``: ``doc`` gives the run, summary and other top-level keys (its ``results``
    are not read); ``rows[i]`` for ``i`` in each of ``groups`` (items in page order, worst seed first,
    as ``order.plan`` makes them) are read when their card is written."""
    run = doc.get("run") or {}
    summary, complete = doc.get("summary") or {}, bool(doc.get("complete", True))
    word = overall(summary, complete)
    counts = ", ".join(f"{summary.get(v, 0)} {v}" for v in VERDICTS)
    csp = (f"default-src 'none'; img-src 'self' file:; style-src {_csp_hash(CSS)}; "
           f"script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'")
    banner = "" if complete else (
        '<div class="banner incomplete">Incomplete: this run was interrupted. The report holds only the '
        "images scored before it stopped; missing items were not checked and are not passes.</div>")
    filters = "".join(
        f'<label><input type="checkbox" class="vf" value="{v}" checked> '
        f'<span class="badge b-{v}">{v}</span> {summary.get(v, 0)}</label>' for v in VERDICTS)
    first = [[rows[i] for i in g] for g in groups[:PAGE]]
    out.write(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Memorization report: {e(word)} ({e(counts)})</title><style>{CSS}</style></head>\n<body>"
        f'<h1>Memorization report <span class="badge b-{e(word.lower())}">{e(word)}</span></h1>{banner}'
        '<div class="banner broken" id="broken" hidden></div>'
        f"{_run_table(run)}<p>{e(summary.get('total', len(rows)))} images: {e(counts)}. "
        f"<small>{e(doc.get('generated_by', ''))}, report schema {e(doc.get('schema_version'))}</small></p>"
        f'<div class="filters">Show: {filters} <input type="search" id="q" placeholder="search item, prompt or work" '
        f'aria-label="search item, prompt or work"> <span>(<span id="shown">{len(groups)}</span> of {len(groups)} '
        "items match; an item shows its worst verdict; failing items first, more load as you scroll)</span></div>"
        f'<main id="results">{"".join(_card(g, run, i) for i, g in enumerate(first)) or "<p>No images were scored.</p>"}'
        f'</main><div id="end"></div>{_extras(doc)}'
    )
    meta = [search_meta(g[0]) for g in first] + [search_meta(rows[g[0]]) for g in groups[PAGE:]]
    del first
    _write_cards_json(out, meta, ([rows[i] for i in g] for g in groups[PAGE:]), run)
    out.write(f"<script>{SCRIPT}</script></body></html>\n")
