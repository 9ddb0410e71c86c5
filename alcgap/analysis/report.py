"""Reports of a run directory: RDF, VDOS and learning-curve plots and one self-contained HTML page.

What the report reads (every piece optional; an iteration without MD yet still gets its row):

- ``<run>/iter-NNN/metrics.json``, one object per iteration::

    {
      "iteration": 3,                      # int; default: NNN of the directory name
      "labels": 420,                       # labelled structures used for this iteration's fit
      "new_labels": 60,                    # labels this iteration added
      "errors": {                          # held-out errors: flat for one model, or per model
        "energy_mae_meV_atom": 4.7, "energy_rmse_meV_atom": 6.1,
        "force_rmse_eV_A": 0.31, "force_mae_eV_A": 0.22
      },                                   # ErrorMetrics.as_dict() keys are accepted as well
      "clustering": {"seed-1x": "clean", "seed-10x": "clustered"},
                                           # per exploration run: a verdict string, or an
                                           # as_dict() of a ClusteringVerdict/TrajectoryAnalysis
      "rdf_distance": {"seed-10x": 0.21},  # per run (or one float) against the reference RDF
      "vdos": {"modes_meV": {"composite": [...], "reference": [...]}, "sigma_meV": 2.0}
    }
- ``<run>/iter-NNN/md/*.xyz`` (or ``.extxyz``): exploration trajectories, one per run, named
  by the file stem. Their last frames give the iteration's RDF plot, and a clustering verdict
  and RDF distance for any run metrics.json does not judge.
- the reference structures for RDFs: ``<run>/reference.xyz``, else ``<run>/train.xyz``, else
  ``<run>/iter-000/*.xyz``.
- ``<run>/summary.json`` (shown as it is) and every ``*.png`` below the run directory.

It writes ``<run>/report/``: ``index.html`` (images inlined as base64 data URIs, so the page
travels alone), ``report.json`` (the figures the page shows) and its own PNGs.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ase.io
import numpy as np

from alcgap.analysis.clustering import analyse_trajectory
from alcgap.analysis.plots import COLOURS, _save, plt
from alcgap.analysis.rdf import PartialRDF, cell_widths, partial_rdfs
from alcgap.analysis.vdos import VDOS, vdos, vdos_similarity
from alcgap.structures import pair_name

#: canonical error names and the other spellings accepted for them (ErrorMetrics fields)
ERROR_KEYS = {"energy_mae_meV_atom": "energy_mae", "energy_rmse_meV_atom": "energy_rmse",
              "force_rmse_eV_A": "force_rmse", "force_mae_eV_A": "force_mae", "stress_rmse_GPa": "stress_rmse"}
REPORT_DIR = "report"
VERDICT_COLOURS = {"clean": "tab:green", "clustered": "tab:red"}


# ---------------------------------------------------------------- plots


def rdf_plot(rdfs: Mapping[str, PartialRDF], path: str | os.PathLike, reference: str | None = "reference",
             title: str = "") -> Path:
    """Partial RDFs of several structures, one panel per species pair; ``reference`` in black (Fig. 4e)."""
    pairs = list(dict.fromkeys(p for rdf in rdfs.values() for p in rdf.g))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for k, (name, rdf) in enumerate(rdfs.items()):
            if pair in rdf.g:
                is_ref = name == reference
                ax.plot(rdf.r, rdf.g[pair], lw=1.6 if is_ref else 1.1, ls="--" if is_ref else "-", label=name,
                        color="black" if is_ref else COLOURS.get(name, f"C{k}"))
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set(xlabel="r (A)", ylabel="g(r)", title=f"{pair_name(pair)} {title}".strip())
        ax.legend(fontsize=8)
    return _save(fig, path)


def vdos_plot(curves: Mapping[str, VDOS], path: str | os.PathLike, reference: str | None = "reference",
              e_max: float | None = None) -> Path:
    """VDOS curves (1/meV against meV), ``reference`` in black; the legend gives each one's similarity
    to the reference (over [0, e_max] meV when given) (Fig. 5a)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = curves.get(reference) if reference else None
    for k, (name, curve) in enumerate(curves.items()):
        label = name
        if ref is not None and name != reference:
            label += f" (similarity {vdos_similarity(ref, curve):.3f}"
            label += f", {vdos_similarity(ref, curve, e_max):.3f} below {e_max:g} meV)" if e_max else ")"
        colour = "black" if name == reference else COLOURS.get(name, f"C{k}")
        ax.plot(curve.energy, curve.dos, label=label, color=colour)
    if e_max is not None:
        ax.axvline(e_max, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="phonon energy (meV)", ylabel="VDOS (1/meV)", title="vibrational density of states")
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curve_plot(records: Sequence["IterationRecord"], path: str | os.PathLike) -> Path:
    """Per iteration: held-out errors, labels used and the clustering verdict of every run."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = [r.iteration for r in records]
    ax = axes[0]
    twin = ax.twinx()
    models = list(dict.fromkeys(m for r in records for m in r.errors))
    for k, model in enumerate(models):
        colour = COLOURS.get(model, f"C{k}")
        for axis, key, style, name in ((ax, "energy_mae_meV_atom", "o-", "energy MAE"),
                                       (ax, "energy_rmse_meV_atom", "s--", "energy RMSE"),
                                       (twin, "force_rmse_eV_A", "^:", "force RMSE")):
            known = [(r.iteration, r.errors[model][key]) for r in records if key in r.errors.get(model, {})]
            if known:  # iterations without the figure are skipped, not drawn as gaps
                axis.plot(*zip(*known), style, color=colour, label=f"{model} {name}")
    ax.set(xlabel="iteration", ylabel="energy error (meV/atom)", title="held-out errors")
    twin.set_ylabel("force RMSE (eV/A)")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=7)
    ax = axes[1]
    labels = [(r.iteration, r.labels) for r in records if r.labels is not None]
    if labels:
        ax.plot(*zip(*labels), "o-", color="black", label="labels in the fit")
    new = [(r.iteration, r.new_labels) for r in records if r.new_labels is not None]
    if new:
        ax.bar(*zip(*new), color="tab:blue", alpha=0.5, label="new labels")
    ax.set(xlabel="iteration", ylabel="labelled structures", title="labels used")
    if labels or new:
        ax.legend(fontsize=8)
    ax = axes[2]
    runs = sorted({run for r in records for run in r.clustering})
    for r in records:
        for row, run in enumerate(runs):
            verdict = r.clustering.get(run, "missing")
            ax.scatter(r.iteration, row, s=120, marker="x" if verdict == "clustered" else "o",
                       color=VERDICT_COLOURS.get(verdict, "lightgrey"))
    for verdict, colour in {**VERDICT_COLOURS, "not run": "lightgrey"}.items():
        ax.scatter([], [], color=colour, marker="x" if verdict == "clustered" else "o", label=verdict)
    ax.set_yticks(range(len(runs)), runs)
    ax.set(xlabel="iteration", title="clustering verdicts", ylim=(-0.7, max(len(runs), 1) - 0.3))
    ax.legend(fontsize=8, loc="upper left")
    for a in axes:
        if x:
            a.set_xticks(x)
    return _save(fig, path)


# ---------------------------------------------------------------- reading a run directory


@dataclass
class IterationRecord:
    """What one ``iter-NNN`` directory says; fields a run has not written yet stay empty."""

    iteration: int
    path: Path
    labels: int | None = None
    new_labels: int | None = None
    #: model -> canonical error name -> value (meV/atom, eV/A)
    errors: dict[str, dict[str, float]] = field(default_factory=dict)
    #: run -> "clean" | "clustered"
    clustering: dict[str, str] = field(default_factory=dict)
    #: runs whose verdict the report judged from their trajectory (metrics.json had none)
    judged_by_report: list[str] = field(default_factory=list)
    rdf_distance: dict[str, float] = field(default_factory=dict)
    vdos: dict[str, Any] | None = None
    trajectories: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: the campaign's learning figures of the iteration (metrics.json of alcgap.workflow.campaign):
    #: flagged atom fraction per run, prospective errors, where each run first went wrong, decision
    learning: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        out["trajectories"] = [str(p) for p in self.trajectories]
        return out


def read_iteration(directory: Path) -> IterationRecord:
    """The record of one ``iter-NNN`` directory, tolerant of missing or malformed pieces."""
    match = re.search(r"(\d+)$", directory.name)
    record = IterationRecord(int(match.group(1)) if match else -1, directory)
    # files md/<run>.xyz, or a campaign's md/<run>/trajectory.xyz (named by its folder)
    record.trajectories = sorted(p for ext in ("xyz", "extxyz") for p in (directory / "md").glob(f"*.{ext}"))
    record.trajectories += sorted(p for p in (directory / "md").glob("*/trajectory.xyz") if p.stat().st_size)
    metrics_file = directory / "metrics.json"
    if not metrics_file.exists():
        return record
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        record.problems.append(f"{metrics_file}: unreadable ({err})")
        return record
    record.iteration = int(metrics.get("iteration", record.iteration))
    record.labels = _int_or_none(metrics.get("labels"))
    record.new_labels = _int_or_none(metrics.get("new_labels"))
    record.errors = _errors(metrics.get("errors") or {})
    for run, value in (metrics.get("clustering") or {}).items():
        verdict = value.get("verdict") if isinstance(value, dict) else value
        if verdict in ("clean", "clustered"):
            record.clustering[run] = verdict
        else:
            record.problems.append(f"{metrics_file}: clustering of {run} is {value!r}, not clean/clustered")
    distance = metrics.get("rdf_distance")
    if isinstance(distance, (int, float)):
        record.rdf_distance["all"] = float(distance)
    elif isinstance(distance, dict):
        record.rdf_distance = {k: float(v) for k, v in distance.items() if isinstance(v, (int, float))}
    record.vdos = metrics.get("vdos") if isinstance(metrics.get("vdos"), dict) else None
    runs = metrics.get("runs") if isinstance(metrics.get("runs"), dict) else {}
    record.learning = {
        "flagged_atom_fraction": metrics.get("flagged_atom_fraction") or {},
        "prospective": metrics.get("prospective_errors") or {},
        "first_bad_step": {run: value.get("first_bad_step") for run, value in runs.items() if isinstance(value, dict)},
        "temperature": {run: (value.get("temperature") or {}).get("hold_mean") for run, value in runs.items()
                        if isinstance(value, dict)},
        "sizes": metrics.get("sizes") or {}, "target_size": metrics.get("target_size"),
        "spearman": (metrics.get("variance_vs_error") or {}).get("spearman"),
        "decision": metrics.get("decision") or {},
    }
    return record


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _errors(errors: Mapping) -> dict[str, dict[str, float]]:
    """Flat ({error: value}) or per model ({model: {error: value}}) -> per model, canonical names."""
    per_model = errors if errors and all(isinstance(v, dict) for v in errors.values()) else {"model": errors}
    out = {}
    for model, values in per_model.items():
        clean = {}
        for canonical, alias in ERROR_KEYS.items():
            value = values.get(canonical, values.get(alias))
            if isinstance(value, (int, float)):
                clean[canonical] = float(value)
        if clean:
            out[model] = clean
    return out


def read_run(run_dir: str | os.PathLike) -> list[IterationRecord]:
    """Records of every ``iter-NNN`` directory of a run, in iteration order."""
    directories = [p for p in Path(run_dir).glob("iter-*") if p.is_dir()]
    return sorted((read_iteration(p) for p in directories), key=lambda r: r.iteration)


def _reference_frames(run: Path) -> list:
    for candidate in [run / "reference.xyz", run / "train.xyz", *sorted((run / "iter-000").glob("*.xyz"))]:
        if candidate.exists():
            return ase.io.read(candidate, index=":")
    return []


def _rdf_range(frames: Sequence, wanted: float = 6.0, bin_width: float = 0.02) -> float:
    """The RDF range all frames allow: ``wanted``, or just under half the narrowest cell."""
    half = 0.5 * min((float(min(cell_widths(f))) for f in frames if f.pbc.all()), default=2.0 * wanted)
    return float(np.floor(min(wanted, half - 1e-6) / bin_width) * bin_width)


# ---------------------------------------------------------------- the page


def write_report(run_dir: str | os.PathLike, rdf_frames: int = 10) -> Path:
    """Render ``<run>/report/index.html`` and ``report.json`` from whatever the run has written.

    ``rdf_frames``: how many final frames of each exploration trajectory enter its RDF.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}")
    out = run / REPORT_DIR
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    records = read_run(run)
    problems = [p for r in records for p in r.problems]
    reference = _reference_frames(run) if any(r.trajectories for r in records) else []
    sections: list[tuple[str, list[Path]]] = []
    for record in records:  # first: verdicts the trajectories give enter the learning curve
        images = []
        try:
            images += _iteration_rdfs(record, reference, rdf_frames, out)
        except Exception as err:  # a broken trajectory must not cost the rest of the page
            problems.append(f"iteration {record.iteration}: RDFs failed ({type(err).__name__}: {err})")
        if record.vdos:
            try:
                images.append(_iteration_vdos(record, out))
            except Exception as err:
                problems.append(f"iteration {record.iteration}: VDOS failed ({type(err).__name__}: {err})")
        if images:
            sections.append((f"iteration {record.iteration}", images))
    campaign = _campaign_parts(run, records, out, problems) if (run / "iter-000" / "state.json").exists() else {}
    for iteration, image in campaign.get("run_plots", {}).items():
        sections.append((f"iteration {iteration}: exploration runs over time", [image]))
    for cluster in campaign.get("clusters", []):
        sections.append((f"iteration {cluster['iteration']}: cluster in {cluster['run']} at step {cluster['md_step']}: "
                         f"groups {', '.join(cluster['formulas'][:6])}", [cluster["picture"]]))
    if campaign.get("aux_plot"):
        sections.insert(0, ("the auxiliary: dimer curves, target and aux", [campaign["aux_plot"]]))
    if records:
        sections.insert(0, ("learning curve", [learning_curve_plot(records, out / "learning_curve.png")]))
    ours = {p.resolve() for _, images in sections for p in images}
    existing = sorted(p for p in run.rglob("*.png") if p.resolve() not in ours and out not in p.parents)
    if existing:
        sections.append(("plots of the run", existing))
    summary = _json_or_none(run / "summary.json", problems)
    page = out / "index.html"
    page.write_text(_html(run, records, summary, sections, problems, campaign))
    report = {
        "run_dir": str(run), "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "html": str(page),
        "iterations": [r.as_dict() for r in records],
        "latest_clustering": records[-1].clustering if records else {},
        "latest_all_clean": (all(v == "clean" for v in records[-1].clustering.values())
                             if records and records[-1].clustering else None),
        "plots": {title: [str(p) for p in images] for title, images in sections},
        "summary": summary, "problems": problems,
        "campaign": {key: value for key, value in campaign.items() if key not in ("aux_plot", "run_plots")},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return page


def _campaign_parts(run: Path, records: list[IterationRecord], out: Path, problems: list[str]) -> dict:
    """A campaign's status, aux curves, exploration time series and selected labels (each part
    on its own: one that fails is a problem on the page, not a missing page)."""
    from alcgap.analysis import campaign_report as parts

    found: dict[str, Any] = {"run_plots": {}, "series": {}}
    for name, make in (("status", lambda: parts.campaign_status(run)), ("aux_curves", lambda: parts.aux_curves(run)),
                       ("labels", lambda: parts.label_rows(run))):
        try:
            found[name] = make()
        except Exception as err:  # noqa: BLE001
            problems.append(f"campaign {name}: {type(err).__name__}: {err}")
    try:
        image = parts.aux_plot(found.get("aux_curves") or {}, out / "aux_dimers.png")
        if image:
            found["aux_plot"] = image
    except Exception as err:  # noqa: BLE001
        problems.append(f"aux plot: {type(err).__name__}: {err}")
    for record in records:
        if record.iteration < 1:
            continue
        try:
            series = found["series"][record.iteration] = parts.run_series(run, record.iteration)
            image = parts.run_plots(series, record.iteration, out / f"iter-{record.iteration:03d}_runs.png")
            if image:
                found["run_plots"][record.iteration] = image
            found.setdefault("clusters", []).extend(parts.cluster_pictures(run, record.iteration, series, out))
        except Exception as err:  # noqa: BLE001
            problems.append(f"iteration {record.iteration}: run plots failed ({type(err).__name__}: {err})")
    return found


def _iteration_rdfs(record: IterationRecord, reference: list, n_frames: int, out: Path) -> list[Path]:
    """RDFs of the final frames of each trajectory against the reference; fills in missing verdicts."""
    if not record.trajectories:
        return []
    trajectories = {(p.parent.name if p.name == "trajectory.xyz" else p.stem): ase.io.read(p, index=f"-{n_frames}:")
                    for p in record.trajectories}
    r_max = _rdf_range([f for frames in trajectories.values() for f in frames] + reference)
    rdfs: dict[str, PartialRDF] = {}
    ref_rdf = None
    if reference:
        ref_rdf = rdfs["reference"] = partial_rdfs(reference, r_max)
    for name, frames in trajectories.items():
        analysis = analyse_trajectory(frames, r_max=r_max, reference_rdf=ref_rdf)
        rdfs[name] = analysis.rdf
        if name not in record.clustering:
            record.clustering[name] = analysis.verdict
            record.judged_by_report.append(name)
        if analysis.rdf_distance is not None:
            record.rdf_distance.setdefault(name, round(analysis.rdf_distance, 4))
    return [rdf_plot(rdfs, out / f"iter-{record.iteration:03d}_rdf.png", title=f"(iteration {record.iteration})")]


def _iteration_vdos(record: IterationRecord, out: Path) -> Path:
    spec = record.vdos or {}
    sigma = float(spec.get("sigma_meV", 2.0))
    modes = {name: np.asarray(values, dtype=float) for name, values in spec.get("modes_meV", {}).items()}
    if not modes or not all(m.size for m in modes.values()):
        raise ValueError("metrics.json 'vdos' needs non-empty 'modes_meV' lists")
    top = max(float(m.max()) for m in modes.values()) + 4.0 * sigma  # one grid for every curve
    curves = {name: vdos(m, sigma, e_max=top) for name, m in modes.items()}
    reference = spec.get("reference", "reference")
    return vdos_plot(curves, out / f"iter-{record.iteration:03d}_vdos.png", reference=reference,
                     e_max=spec.get("similarity_below_meV"))


def _json_or_none(path: Path, problems: list[str]) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable ({err})")
        return None


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _cell(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "&ndash;"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _html(run: Path, records: list[IterationRecord], summary: Any, sections: list[tuple[str, list[Path]]],
          problems: list[str], campaign: dict | None = None) -> str:
    runs = sorted({name for r in records for name in r.clustering})
    models = list(dict.fromkeys(m for r in records for m in r.errors))
    head = ["iteration", "labels", "new labels"]
    head += [f"{m}: E MAE / RMSE (meV/atom), F RMSE (eV/A), S RMSE (GPa)" for m in models] + runs + ["RDF distance"]
    rows = []
    for r in records:
        cells = [_cell(r.iteration), _cell(r.labels), _cell(r.new_labels)]
        for m in models:
            e = r.errors.get(m, {})
            cells.append(f"{_cell(e.get('energy_mae_meV_atom'))} / {_cell(e.get('energy_rmse_meV_atom'))}, "
                         f"{_cell(e.get('force_rmse_eV_A'), 3)}, {_cell(e.get('stress_rmse_GPa'), 2)}")
        for name in runs:
            verdict = r.clustering.get(name)
            mark = "*" if name in r.judged_by_report else ""
            cells.append(f'<span class="{verdict or "missing"}">{verdict or "not run"}{mark}</span>')
        cells.append(", ".join(f"{html.escape(k)} {v:.3f}" for k, v in r.rdf_distance.items()) or "&ndash;")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>alcgap report: {html.escape(run.name)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1500px} table{border-collapse:collapse}",
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%} img{max-width:100%;margin:6px 0}",
        ".clean{color:#2a2} .clustered{color:#c22;font-weight:bold} .missing{color:#999}",
        "figure{margin:0 0 1em 0} figcaption{color:#555;font-size:85%}</style></head><body>",
        f"<h1>alcgap run {html.escape(run.name)}</h1>",
        f"<p>{html.escape(str(run.resolve()))}, report of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
    ]
    parts += _campaign_html(campaign or {}, "status")
    if records:
        parts += ["<h2>iterations</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>",
                  *rows, "</table>"]
        if any(r.judged_by_report for r in records):  # a run without the campaign's own verdict
            parts.append("<p>* judged by this report from the trajectory's last frames</p>")
    else:
        parts.append("<p>No iteration directories (iter-NNN) yet.</p>")
    if any(r.learning.get("decision") for r in records):
        parts += _learning_table(records, summary)
    parts += _campaign_html(campaign or {}, "labels")
    if problems:
        parts += ["<h2>problems</h2><ul>", *(f"<li>{html.escape(p)}</li>" for p in problems), "</ul>"]
    for title, images in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for image in images:
            caption = html.escape(str(image.relative_to(run)) if run in image.parents else image.name)
            parts.append(f"<figure>{_img(image)}<figcaption>{caption}</figcaption></figure>")
    if summary is not None:
        parts.append(f"<h2>summary.json</h2><pre>{html.escape(json.dumps(summary, indent=1)[:20000])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _campaign_html(campaign: dict, part: str) -> list[str]:
    """The campaign's ``part``: "status" (finished by which rule, running, or killed) or
    "labels" (the labels the loop selected)."""
    parts = []
    status = campaign.get("status") if part == "status" else None
    if status:
        text = {"finished": f"finished: stopped by <b>{html.escape(str(status.get('stopped_by')))}</b>: "
                            f"{html.escape(str(status.get('why') or ''))}",
                "running": f"<b>running</b> (driver pid {html.escape(str((status.get('driver') or {}).get('pid')))} on "
                           f"{html.escape(str((status.get('driver') or {}).get('host')))}); what is shown is what has "
                           "finished so far"}.get(status["state"], f"<b>{html.escape(status['state'])}</b>. "
                                                                    f"{html.escape(status.get('hint') or '')}")
        if status.get("current"):
            text += f" &mdash; not finished: {html.escape(status['current'])}"
        parts.append(f"<p class='status'>Campaign {text}</p>")
    labels = campaign.get("labels") or [] if part == "labels" else []
    if labels:
        parts.append("<h2>labels the loop added, and why</h2><table><tr><th>iteration</th><th>from run</th>"
                     "<th>MD step</th><th>why</th><th>atoms</th><th>status</th><th>max variance (eV^2)</th>"
                     "<th>shortest pair (A)</th><th>selection reason</th></tr>")
        for r in labels:
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                _cell(r["iteration"]), _cell(r["run"]), _cell(r["md_step"]), _cell(r["why"]), _cell(r["atoms"]),
                _cell(r["status"]), _cell(r["variance"], 4), _cell(r["min_distance"], 3), _cell(r["reason"]))) + "</tr>")
        parts.append("</table>")
    return parts


def _prospective_cell(pe: dict) -> str:
    def one(errors: dict) -> str:
        core, relative = errors.get("core_force_rmse"), errors.get("core_force_relative")
        return ((f"<b>{_cell(core, 3)}</b>" + (f" [{relative:.2f}]" if relative is not None else "") + "; "
                 if core is not None else "")
                + f"{_cell(errors.get('energy_mae'))}, {_cell(errors.get('force_rmse'), 3)}")

    return one(pe) + (f"; previous model: {one(pe['previous_model'])}" if pe.get("previous_model") else "")


def _learning_table(records: list[IterationRecord], summary: Any) -> list[str]:
    """Iteration by iteration: what was flagged and learned, prospective against held-out error,
    the target-size runs (and the step each first went wrong), and the stop rule's decision."""
    head = ["iteration", "flagged atoms (% of monitored)", "new labels", "prospective F RMSE at the explored geometry (eV/A) [relative]; all atoms: E MAE (meV/atom), F RMSE (eV/A); the previous model on the same frames",
            "held-out E MAE, F RMSE, S RMSE (GPa)", "variance-error Spearman", "target-size runs: verdict (first bad step, T held)",
            "decision"]
    rows = []
    for r in records:
        if not r.learning.get("decision"):
            continue
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
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in [
            _cell(r.iteration), flagged or "&ndash;", _cell(r.new_labels),
            _prospective_cell(pe) if pe else "&ndash;",
            f"{_cell(errors.get('energy_mae_meV_atom'))}, {_cell(errors.get('force_rmse_eV_A'), 3)}, "
            f"{_cell(errors.get('stress_rmse_GPa'), 2)}",
            _cell(learning.get("spearman"), 2), "<br>".join(verdicts) or "&ndash;",
            f"<b>{html.escape(str(decision.get('rule')))}</b>: {html.escape(str(decision.get('why', ''))[:300])}"]) + "</tr>")
    parts = ["<h2>active learning</h2>"]
    if isinstance(summary, dict) and summary.get("stopped_by"):
        size = summary.get("target_size")
        note = "" if summary.get("target_is_10x", True) else f" (judged at {size}x the training cell, not the paper's 10x)"
        parts.append(f"<p>stopped by <b>{html.escape(str(summary['stopped_by']))}</b>{note}: "
                     f"{html.escape(str(summary.get('why', '')))}</p>")
    parts += ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>", *rows, "</table>",
              "<p>prospective: the error of iteration k's model on the frames iteration k selected, labelled after "
              "its fit. First the force error on the atoms at the geometry exploration found (a carved cell's "
              "event and surroundings, not the boundary the carve added, which this same model relaxed: on those "
              "atoms and in the cell's energy the figures are biased against it); then energy and force over all "
              "atoms. [relative]: the force RMSE over the reference forces' RMS on the same atoms, which "
              "compares iterations whose frames differ in hardness. The previous model's error on the same frames "
              "(it has not seen them either) is the like-for-like measure of what the refit learned. Flagged atoms: in a pair closer than its flag distance, over the calibrated variance "
              "threshold, or in a cluster, per monitored frame and atom.</p>"]
    return parts


def main_report(run_dir: str | os.PathLike) -> int:
    """``alcgap report RUN_DIR``: write the report and print where it is; 2 if there is no run."""
    try:
        page = write_report(run_dir)
    except FileNotFoundError as err:
        print(f"alcgap report: {err}", file=sys.stderr)
        return 2
    print(page)
    return 0
