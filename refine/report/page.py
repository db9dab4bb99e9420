"""The report page: one self-contained HTML string (inline CSS and JavaScript, images as ``data:`` URIs).

:func:`render_page` lays out what :mod:`refine.report.build` gathered: the
header facts (:func:`header_facts`, from ``summary.json`` and
``inputs.json``), the images, the fitness history, the column counts (or
the sentence "no column counts in this run") and the 3-D viewer of
``best.xyz`` (``viewer.js`` with its data in a ``<script
type="application/json">`` block). Nothing on the page refers to another
file or to the network, so it opens from ``file://`` offline and can be
mailed as it is. Every text taken from the run is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources

__all__ = ["header_facts", "render_page", "NO_COUNTS"]

NO_COUNTS = "no column counts in this run"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(v, digits: int = 4, unit: str = "") -> str:
    if v is None:
        return "—"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "—"
    text = f"{f:.{digits}g}"
    return f"{text} {unit}".rstrip()


def _duration(seconds) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    h, rest = divmod(int(round(s)), 3600)
    m, sec = divmod(rest, 60)
    return (f"{h} h " if h else "") + f"{m} min {sec} s"


def _noise(summary: dict, inputs: dict | None) -> str:
    noise = summary.get("noise") or {}
    text = str(noise.get("model", "—"))
    if noise.get("estimated"):
        text += ", estimated from the image"
    dose = (inputs or {}).get("dose")
    if dose:
        text += f", dose {_num(dose, 3, 'e/Å²')}"
    if "model_error" in noise:
        text += "; with the surrogate's own error"
    return text


def _model(summary: dict, inputs: dict | None) -> str:
    m = summary.get("model") or {}
    if not m:
        return str((inputs or {}).get("model", "—"))
    parts = [str(m.get("source", "—"))]
    if m.get("size"):
        parts.append(f"{m['size']}×{m['size']} neighbourhood, degree {m.get('degree')}, {m.get('n_terms')} terms")
    if m.get("pixel_size"):
        parts.append(f"trained at {_num(m['pixel_size'], 3, 'Å')}/px")
    return "; ".join(parts)


def _pixel_size(pixel, img: dict) -> str:
    """The pixel size refined at, and where it came from: the file's, resampled, or set from the lattice."""
    text = _num(pixel, 4, "Å")
    resampled = img.get("resampled") or {}
    if resampled.get("from_pixel_size") is not None:
        text += f" (resampled from {_num(resampled['from_pixel_size'], 4, 'Å')})"
    for step in img.get("preparation") or []:
        if step.get("step") == "pixel size from lattice":
            values, start = step.get("values") or {}, (step.get("parameters") or {}).get("start")
            text += (f"; {_num(values.get('pixel_size'), 4, 'Å')} set from the columns' "
                     f"{values.get('zone_axis', '')} lattice, read at {_num(start, 4, 'Å')}")
    return text


def header_facts(summary: dict, inputs: dict | None) -> tuple[list, list]:
    """(inputs, results): lists of (label, text) for the header, from ``summary.json`` and ``inputs.json``."""
    img = summary.get("image") or {}
    settings = summary.get("settings") or {}
    source = img.get("source") or (inputs or {}).get("image_source", "—")
    shape = img.get("shape") or (inputs or {}).get("image_shape")
    pixel = img.get("pixel_size", (inputs or {}).get("pixel_size"))
    alpha = _num(summary.get("alpha"), 4, "eV")
    rule = summary.get("alpha_rule")
    if rule:
        scale = summary.get("alpha_scale")
        alpha += f" (rule: {rule}" + (f", × {scale}" if scale not in (None, 1, 1.0) else "") + ")"
    if summary.get("search_alpha") is not None and summary.get("search_alpha") != summary.get("alpha"):
        alpha += f"; the search ran at {_num(summary['search_alpha'], 4, 'eV')}"
    given = [
        ("composition", summary.get("composition", (inputs or {}).get("composition", "—"))),
        ("image", source),
        ("image size", f"{shape[0]} × {shape[1]} px" if shape else "—"),
        ("pixel size", _pixel_size(pixel, img)),
        ("model", _model(summary, inputs)),
        ("noise model", _noise(summary, inputs)),
        ("α (weight of χ²)", alpha),
        ("population", settings.get("population_size", "—")),
        ("start", summary.get("start", "—")),
        ("seed", summary.get("seed", "—")),
    ]
    n_atoms = summary.get("n_atoms")
    e_atom = summary.get("energy_per_atom")
    gens = f"{summary.get('generations', '—')}"
    if summary.get("stop_reason"):
        gens += f" (stopped by: {summary['stop_reason']})"
    result = [
        ("final cost E + α·χ²", _num(summary.get("best_cost"), 6, "eV")),
        ("χ²", _num(summary.get("chi2"), 6)),
        ("χ² per pixel", _num(summary.get("chi2_per_pixel"), 4)
         + (f" over {summary['n_valid_pixels']} pixels" if summary.get("n_valid_pixels") else "")),
        ("energy E (EMT)", _num(summary.get("energy"), 6, "eV")
         + (f" ({_num(e_atom, 4, 'eV')}/atom)" if e_atom is not None else "")),
        ("atoms", n_atoms if n_atoms is not None else "—"),
        ("generations", gens),
        ("evaluations", summary.get("evaluations", "—")),
        ("wall time", _duration(summary.get("wall_time_s")) + (" (resumed)" if summary.get("resumed") else "")),
    ]
    return given, result


def _table(rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _figure(uri: str | None, alt: str, caption: str, missing: str) -> str:
    if uri is None:
        return f'<p class="none">{_e(missing)}</p>'
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _counts_section(counts, uri, run_summary: dict) -> str:
    if counts is None:
        return f'<section id="counts"><h2>Column counts</h2><p class="none">{NO_COUNTS}</p></section>'
    if counts.n_columns == 0:
        return ('<section id="counts"><h2>Column counts</h2><p class="none">counts.csv lists no columns</p>'
                "</section>")
    d = counts.to_dict()
    rows = [
        ("columns", d["n_columns"]),
        ("counts agree (image = 3-D)", f"{d['fraction_equal']:.1%} ({d['n_columns'] - d['n_disagree']} columns)"),
        ("counts within ±1 atom", f"{d['fraction_within_1']:.1%}"),
        ("atoms: 3-D answer / image", f"{d['atoms_3d']} / {d['atoms_image']}"),
    ]
    from refine.analysis.count_files import resolved_agreement

    partly = resolved_agreement(d)
    if partly:
        rows.insert(3, ("on the columns the image resolves", partly))
    # how the image counts were made, when the run recorded it (summary.json's counts entry)
    library = ((run_summary.get("counts") or {}).get("library") or {})
    if isinstance(library, dict) and library.get("method"):
        rows.append(("cross-section library", library["method"]))
    hist = "".join(f"<tr><td>{v:+d}</td><td>{n}</td><td>{n / d['n_columns']:.1%}</td></tr>"
                   for v, n in d["difference_histogram"])
    table = ('<table class="counts-table"><tr><th>image − 3-D (atoms)</th><th>columns</th><th>fraction</th></tr>'
             f"{hist}</table>")
    figure = _figure(uri, "column counts over the experimental image",
                     "Atoms per projected column: counted from the image's integrated intensity (scattering "
                     "cross-section), against the atoms of the 3-D answer in the same column (counts.csv). "
                     "Red: the two differ, labelled image/3-D."
                     + (" Dashed: the image shows no peak of that column's own, so its count says little." if partly
                        else ""), "")
    return (f'<section id="counts"><h2>Column counts</h2>{figure}'
            f'<div class="facts"><div>{_table(rows)}</div><div>{table}</div></div></section>')


def _viewer_section(viewer: dict, ensemble: dict | None) -> str:
    # JSON inside <script>: no "<", ">" or "&" at all (JSON \u escapes instead), so no text can end it early
    data = json.dumps(_finite(viewer), ensure_ascii=False, allow_nan=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    if ensemble:
        note = (f"Spread from the ensemble {_e(ensemble['source'])}"
                + (f" ({ensemble['n_runs']} runs)" if ensemble.get("n_runs") else "")
                + f"; this run's best.xyz matched to its consensus with RMSD {ensemble['rmsd_to_consensus']:.3f} Å.")
    else:
        note = ("No ensemble found for this run (stem-refine ensemble, or --ensemble FILE): "
                "atoms coloured by coordination.")
    return f"""<section id="structure"><h2>Refined structure (best.xyz, {viewer['n_atoms']} atoms)</h2>
<div class="controls"><label>colour by <select id="colour-by"></select></label>
<button type="button" data-view="beam">along the beam</button>
<button type="button" data-view="side">from the side</button>
<button type="button" data-view="reset">reset</button>
<span class="note">drag to rotate, wheel to zoom, double-click to reset, point at an atom for its values</span></div>
<div class="viewer-wrap"><canvas id="viewer" aria-label="3-D view of the refined structure"></canvas>
<div id="viewer-tip" hidden></div></div>
<div id="viewer-legend"></div>
<p class="note">{note} Positions in Å, beam along z; the first view looks along the beam like the images.</p>
<script type="application/json" id="structure-data">{data}</script>
</section>"""


def _finite(value):
    """``value`` with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _asset(name: str) -> str:
    """A file shipped beside this module (style.css, viewer.js), safe to put inside <style> or <script>."""
    text = resources.files("refine.report").joinpath(name).read_text(encoding="utf-8")
    return text.replace("</", "<\\/")  # a '</script' inside would end the element early


def render_page(*, title: str, run_path: str, summary: dict, inputs: dict | None, figures: dict, counts,
                viewer: dict, ensemble: dict | None, generated: str) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    title : str
        Page title (the composition).
    run_path : str
        The run folder, for the header.
    summary, inputs : dict, dict or None
        ``summary.json``, ``inputs.json``.
    figures : dict
        ``"images"``, ``"history"``, ``"counts"`` → PNG data URI or None.
    counts : refine.report.counts.ColumnCountTable or None
    viewer : dict
        :func:`refine.report.viewer_data.viewer_data`.
    ensemble : dict or None
        :meth:`refine.report.ensemble_spread.EnsembleSpread.to_dict`.
    generated : str
        When and by what the page was made (footer).
    """
    given, result = header_facts(summary, inputs)
    warning = ""
    if summary.get("domain_warning"):
        warning = (f'<p class="warning">{_e(summary.get("domain_warning_message", "the surrogate extrapolated"))} '
                   f"({summary.get('out_of_domain_evaluations', '?')} evaluations)</p>")
    images = _figure(figures.get("images"), "experimental, simulated and difference images",
                     "The image refined against, the surrogate image a·I + b of the answer and their difference "
                     "(x right, y up; fraction of the incident beam).", "no images in this run")
    history = _figure(figures.get("history"), "fitness history",
                      "Best and mean cost, best χ² per pixel and best energy per generation (logbook.csv).",
                      "no logbook in this run")
    files = ", ".join(sorted(summary.get("files") or {}))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} — stem-refine report</title>
<style>{_asset("style.css")}</style></head>
<body>
<header><h1>{_e(title)}: refinement report</h1><p class="sub">{_e(run_path)}</p></header>
<main>
<section id="summary"><h2>Run</h2>{warning}<div class="facts"><div>{_table(given)}</div>
<div>{_table(result)}</div></div></section>
{_viewer_section(viewer, ensemble)}
<section id="images"><h2>Images</h2>{images}</section>
{_counts_section(counts, figures.get("counts"), summary)}
<section id="history"><h2>Fitness history</h2>{history}</section>
<footer>{_e(generated)}. Files of the run: {_e(files)}.</footer>
</main>
<script>{_asset("viewer.js")}</script>
</body></html>
"""
