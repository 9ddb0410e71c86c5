"""The report's HTML page: one self-contained file (images inlined as base64 data URIs) with the
campaign's status, a row per iteration, the active-learning table, the labels the loop added,
any problems, then the figures section by section and the run's summary.json folded away."""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alcgap.report.records import IterationRecord

STYLE = "\n".join((
    "body{font-family:sans-serif;margin:2em;max-width:1500px} table{border-collapse:collapse}",
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%} img{max-width:100%;margin:6px 0}",
    ".clean{color:#2a2} .clustered{color:#c22;font-weight:bold} .missing{color:#999}",
    "figure{margin:0 0 1em 0} figcaption{color:#555;font-size:85%;max-width:1100px}",
    "h2.group{border-top:2px solid #888;padding-top:0.6em;margin-top:1.6em} h3{margin-bottom:0.3em}",
    "table.kv th{text-align:left;background:#f4f4f4;font-weight:normal} details.raw{margin-top:2em} details.raw summary{cursor:pointer;color:#555}",
    "details.raw pre{font-size:80%;max-height:40em;overflow:auto;background:#f8f8f8;padding:0.5em}",
))
#: summary.json is shown up to this many characters
SUMMARY_CHARS = 200000
LEARNING_HEAD = [
    "iteration", "flagged atoms (% of monitored)", "new labels",
    "prospective F RMSE at the explored geometry (eV/A) [relative]; all atoms: E MAE (meV/atom), F RMSE (eV/A); "
    "the previous model on the same frames",
    "held-out E MAE, F RMSE, S RMSE (GPa)", "variance-error Spearman", "target-size runs: verdict (first bad step, T held)",
    "decision"]
LEARNING_NOTE = (
    "<p>prospective: the error of iteration k's model on the frames iteration k selected, labelled after "
    "its fit. First the force error on the atoms at the geometry exploration found (a carved cell's "
    "event and surroundings, not the boundary the carve added, which this same model relaxed: on those "
    "atoms and in the cell's energy the figures are biased against it); then energy and force over all "
    "atoms. [relative]: the force RMSE over the reference forces' RMS on the same atoms, which "
    "compares iterations whose frames differ in hardness. The previous model's error on the same frames "
    "(it has not seen them either) is the like-for-like measure of what the refit learned. Flagged atoms: in a pair closer than its flag distance, over the calibrated variance "
    "threshold, or in a cluster, per monitored frame and atom.</p>")
LABELS_HEAD = ("<h2>labels the loop added, and why</h2><table><tr><th>iteration</th><th>from run</th>"
               "<th>MD step</th><th>why</th><th>atoms</th><th>status</th><th>max variance (eV^2)</th>"
               "<th>shortest pair (A)</th><th>selection reason</th></tr>")


@dataclass
class Section:
    """A part of the page: a heading, its figures with their captions, and before them an HTML
    table of the numbers behind them; sections of one ``group`` (an iteration) share a heading."""

    title: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    group: str | None = None
    table: str = ""


def relative(path: Path | str, run: Path) -> str:
    """A path as the page names it: relative to the run directory, else its file name."""
    path = Path(path)
    return str(path.relative_to(run)) if run in path.parents else path.name


def img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def cell(value: Any, digits: int = 2) -> str:
    """A table cell's text: a float to ``digits`` places, a missing value as a dash, escaped."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _row(cells) -> str:
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _head(titles) -> str:
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in titles) + "</tr>"


def page_html(run: Path, records: list[IterationRecord], summary: Any, sections: list[Section],
              problems: list[str], campaign: dict | None = None) -> str:
    """The whole page of a run's report."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>alcgap report: {html.escape(run.name)}</title><style>", STYLE + "</style></head><body>",
        f"<h1>alcgap run {html.escape(run.name)}</h1>",
        f"<p>{html.escape(str(run.resolve()))}, report of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
    ]
    parts += _status_html((campaign or {}).get("status"))
    parts += _iterations_html(records)
    if any(r.learning.get("decision") for r in records):
        parts += _learning_table(records, summary)
    parts += _labels_html((campaign or {}).get("labels") or [])
    if problems:
        parts += ["<h2>problems</h2><ul>", *(f"<li>{html.escape(p)}</li>" for p in problems), "</ul>"]
    parts += _sections_html(sections)
    if summary is not None:
        text = json.dumps(summary, indent=1)
        cut = f"\n... ({len(text) - SUMMARY_CHARS} more characters in summary.json)" if len(text) > SUMMARY_CHARS else ""
        parts.append("<details class='raw'><summary>summary.json</summary>"
                     f"<pre>{html.escape(text[:SUMMARY_CHARS] + cut)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _iterations_html(records: list[IterationRecord]) -> list[str]:
    """A row per iteration: labels, held-out errors of every model, run verdicts, RDF distances."""
    if not records:
        return ["<p>No iteration directories (iter-NNN) yet.</p>"]
    runs = sorted({name for r in records for name in r.clustering})
    models = list(dict.fromkeys(m for r in records for m in r.errors))
    head = ["iteration", "labels", "new labels"]
    head += [f"{m}: E MAE / RMSE (meV/atom), F RMSE (eV/A), S RMSE (GPa)" for m in models] + runs + ["RDF distance"]
    rows = []
    for r in records:
        cells = [cell(r.iteration), cell(r.labels), cell(r.new_labels)]
        for m in models:
            e = r.errors.get(m, {})
            cells.append(f"{cell(e.get('energy_mae_meV_atom'))} / {cell(e.get('energy_rmse_meV_atom'))}, "
                         f"{cell(e.get('force_rmse_eV_A'), 3)}, {cell(e.get('stress_rmse_GPa'), 2)}")
        for name in runs:
            verdict = r.clustering.get(name)
            mark = "*" if name in r.judged_by_report else ""
            cells.append(f'<span class="{verdict or "missing"}">{verdict or "not run"}{mark}</span>')
        cells.append(", ".join(f"{html.escape(k)} {v:.3f}" for k, v in r.rdf_distance.items()) or "&ndash;")
        rows.append(_row(cells))
    parts = ["<h2>iterations</h2>" + _head(head), *rows, "</table>"]
    if any(r.judged_by_report for r in records):  # a run without the campaign's own verdict
        parts.append("<p>* judged by this report from the trajectory's last frames</p>")
    return parts


def _sections_html(sections: list[Section]) -> list[str]:
    """Every section: a group's heading where the group changes, the section's heading, its table
    and its figures with their captions."""
    parts = []
    group = None
    for section in sections:
        if section.group and section.group != group:
            parts.append(f"<h2 class='group'>{html.escape(section.group)}</h2>")
        group = section.group
        parts.append(f"<h{3 if group else 2}>{html.escape(section.title)}</h{3 if group else 2}>")
        parts.append(section.table)
        for image, caption in section.figures:
            parts.append(f"<figure>{img(image)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return parts


def _status_html(status: dict | None) -> list[str]:
    """The campaign's status: finished by which rule, running, or killed (and how to resume it)."""
    if not status:
        return []
    driver = status.get("driver") or {}
    text = {"finished": f"finished: stopped by <b>{html.escape(str(status.get('stopped_by')))}</b>: "
                        f"{html.escape(str(status.get('why') or ''))}",
            "running": f"<b>running</b> (driver pid {html.escape(str(driver.get('pid')))} on "
                       f"{html.escape(str(driver.get('host')))}); what is shown is what has "
                       "finished so far"}.get(status["state"], f"<b>{html.escape(status['state'])}</b>. "
                                                                f"{html.escape(status.get('hint') or '')}")
    if status.get("current"):
        text += f" &mdash; not finished: {html.escape(status['current'])}"
    return [f"<p class='status'>Campaign {text}</p>"]


def _labels_html(labels: list[dict]) -> list[str]:
    """The labels the loop selected: from which run and step, why, and how labelling went."""
    if not labels:
        return []
    rows = [_row((cell(r["iteration"]), cell(r["run"]), cell(r["md_step"]), cell(r["why"]), cell(r["atoms"]),
                  cell(r["status"]), cell(r["variance"], 4), cell(r["min_distance"], 3), cell(r["reason"])))
            for r in labels]
    return [LABELS_HEAD, *rows, "</table>"]


def _prospective_cell(pe: dict) -> str:
    def one(errors: dict) -> str:
        core, relative_error = errors.get("core_force_rmse"), errors.get("core_force_relative")
        return ((f"<b>{cell(core, 3)}</b>" + (f" [{relative_error:.2f}]" if relative_error is not None else "") + "; "
                 if core is not None else "")
                + f"{cell(errors.get('energy_mae'))}, {cell(errors.get('force_rmse'), 3)}")

    return one(pe) + (f"; previous model: {one(pe['previous_model'])}" if pe.get("previous_model") else "")


def _learning_row(r: IterationRecord) -> str:
    learning, errors = r.learning, next(iter(r.errors.values()), {})
    flagged = ", ".join(f"{html.escape(k)} {100 * v:.1f}" for k, v in learning["flagged_atom_fraction"].items() if v is not None)
    pe = learning["prospective"]
    target = [t for t, size in learning["sizes"].items() if size == learning["target_size"]]
    verdicts = []
    for t in target:
        verdict = r.clustering.get(t, "not run")
        step = learning["first_bad_step"].get(t)
        held = learning["temperature"].get(t)
        notes = ([f"first at step {step}"] if step is not None else []) + ([f"held {held:.0f} K"] if held else [])
        verdicts.append(f'<span class="{verdict}">{html.escape(t)} {verdict}</span>'
                        + (f" ({', '.join(notes)})" if notes else ""))
    decision = learning["decision"]
    return _row([
        cell(r.iteration), flagged or "&ndash;", cell(r.new_labels),
        _prospective_cell(pe) if pe else "&ndash;",
        f"{cell(errors.get('energy_mae_meV_atom'))}, {cell(errors.get('force_rmse_eV_A'), 3)}, "
        f"{cell(errors.get('stress_rmse_GPa'), 2)}",
        cell(learning.get("spearman"), 2), "<br>".join(verdicts) or "&ndash;",
        f"<b>{html.escape(str(decision.get('rule')))}</b>: {html.escape(str(decision.get('why', ''))[:300])}"])


def _learning_table(records: list[IterationRecord], summary: Any) -> list[str]:
    """Iteration by iteration: what was flagged and learned, prospective against held-out error,
    the target-size runs (and the step each first went wrong), and the stop rule's decision."""
    rows = [_learning_row(r) for r in records if r.learning.get("decision")]
    parts = ["<h2>active learning</h2>"]
    if isinstance(summary, dict) and summary.get("stopped_by"):
        size = summary.get("target_size")
        note = "" if summary.get("target_is_10x", True) else f" (judged at {size}x the training cell, not the paper's 10x)"
        parts.append(f"<p>stopped by <b>{html.escape(str(summary['stopped_by']))}</b>{note}: "
                     f"{html.escape(str(summary.get('why', '')))}</p>")
    parts += [_head(LEARNING_HEAD), *rows, "</table>", LEARNING_NOTE]
    return parts
