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
- ``<run>/iter-NNN/md/*.xyz`` (or ``.extxyz``), or a campaign's ``md/<run>/trajectory.xyz``:
  exploration trajectories, one per run. Their final frames (of the last ``rdf_frames``, those
  of the last protocol segment where the frames carry ``md_segment``: the quench) give the
  iteration's RDF figure, a row per run against the reference, and a clustering verdict and RDF
  distance for any run metrics.json does not judge.
- the reference structures for RDFs: ``<run>/reference.xyz``, else ``<run>/train.xyz``, else
  ``<run>/iter-000/*.xyz``.
- ``<run>/iter-NNN/plots/parity.png`` and ``plots/variance_vs_error.png`` (a campaign's held-out
  parity and variance calibration), shown under their iteration with the numbers behind them
  (:func:`alcgap.analysis.campaign_report.iteration_checks`).
- ``<run>/summary.json`` (folded away at the end of the page) and every other ``*.png`` below
  the run directory ("plots of the run").

It writes ``<run>/report/``: ``index.html`` (images inlined as base64 data URIs, so the page
travels alone), ``report.json`` (the figures the page shows; a campaign's per-iteration numbers
under ``campaign.iterations``: ``parity``, ``calibration``, ``rdf``) and its own PNGs. A part
that fails is an entry in ``problems``, never a missing page.
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
from alcgap.analysis.rdf import PartialRDF, cell_widths, partial_rdfs, rdf_distances
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


def run_rdf_panel(runs: Mapping[str, PartialRDF], path: str | os.PathLike, reference: PartialRDF | None = None,
                  headings: Mapping[str, str] | None = None, distances: Mapping[str, Mapping[str, float]] | None = None,
                  colours: Mapping[str, str] | None = None, title: str = "") -> Path:
    """One row per exploration run, one column per species pair: the run's partial RDF against
    the reference's (black, dashed), on one g(r) scale per pair so rows compare at a glance.

    ``headings``: a line over each run's row (its verdict, frames); ``distances``: run -> pair
    name -> RDF distance, shown in the panel's title; ``colours``: run -> colour of its heading.
    The legend sits above the panels, never over a curve."""
    headings, distances, colours = headings or {}, distances or {}, colours or {}
    pairs = list(dict.fromkeys(p for rdf in [*runs.values(), *([reference] if reference else [])] for p in rdf.g))
    if not runs or not pairs:
        raise ValueError("no RDF to draw")
    top = {p: max(float(np.max(rdf.g[p])) for rdf in [*runs.values(), *([reference] if reference else [])]
                  if p in rdf.g) for p in pairs}
    r_max = max(float(rdf.r_max) for rdf in runs.values())
    fig = plt.figure(figsize=(4.3 * len(pairs), 2.75 * len(runs) + 0.9), layout="constrained")
    rows = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
    handles = {}
    for row, (name, rdf) in zip(rows, runs.items()):
        axes = row.subplots(1, len(pairs), squeeze=False)[0]
        row.suptitle(headings.get(name, name), x=0.01, ha="left", fontsize=10, color=colours.get(name, "black"),
                     fontweight="bold")
        for ax, pair in zip(axes, pairs):
            if reference is not None and pair in reference.g:
                handles["reference"] = ax.plot(reference.r, reference.g[pair], "--", color="black", lw=1.4)[0]
            if pair in rdf.g:
                handles["this run's final frames"] = ax.plot(rdf.r, rdf.g[pair], "-", color="tab:blue", lw=1.2)[0]
            ax.axhline(1.0, color="grey", lw=0.5)
            distance = distances.get(name, {}).get(pair_name(pair))
            ax.set(xlim=(0.0, r_max), ylim=(0.0, 1.08 * max(top[pair], 1.2)), xlabel="r (Å)", ylabel="g(r)",
                   title=pair_name(pair) + (f": distance {distance:.3f}" if distance is not None else ""))
            ax.title.set_fontsize(9)
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=len(handles), fontsize=9,
               frameon=False, title=title or None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    """Per iteration: held-out errors, labels used and the clustering verdict of every run.

    Iterations with nothing to show (a campaign's iteration 0) are left out; with a few
    iterations every point carries its value, so a one- or two-point curve still reads. The
    legends sit under the panels, off the data."""
    records = [r for r in records if r.errors or r.labels is not None or r.new_labels is not None or r.clustering] \
        or list(records)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    x = [r.iteration for r in records]
    few = len(x) <= 4
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "frameon": False}
    ax = axes[0]
    twin = ax.twinx()
    models = list(dict.fromkeys(m for r in records for m in r.errors))
    for k, model in enumerate(models):
        colour = COLOURS.get(model, f"C{k}")
        prefix = "" if models == ["model"] else f"{model} "
        for axis, key, style, name, digits in ((ax, "energy_mae_meV_atom", "o-", "energy MAE (left)", 1),
                                               (ax, "energy_rmse_meV_atom", "s--", "energy RMSE (left)", 1),
                                               (twin, "force_rmse_eV_A", "^:", "force RMSE (right)", 3)):
            known = [(r.iteration, r.errors[model][key]) for r in records if key in r.errors.get(model, {})]
            if known:  # iterations without the figure are skipped, not drawn as gaps
                axis.plot(*zip(*known), style, color=colour if axis is ax else "tab:gray", label=f"{prefix}{name}")
                for xi, yi in known if few else []:  # energies left of their point, forces right: no overlap
                    axis.annotate(f"{yi:.{digits}f}", (xi, yi), textcoords="offset points", fontsize=7,
                                  xytext=(-7, -3) if axis is ax else (7, -3), ha="right" if axis is ax else "left",
                                  color=colour if axis is ax else "dimgray")
    ax.set(xlabel="iteration", ylabel="energy error (meV/atom)", title="held-out errors")
    twin.set_ylabel("force RMSE (eV/Å)")
    for axis in (ax, twin):  # a little room for the values beside the points
        low, high = axis.get_ylim()
        axis.set_ylim(low - 0.08 * (high - low), high + 0.08 * (high - low))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=7, ncol=min(3, len(handles)), **below)
    ax = axes[1]
    labels = [(r.iteration, r.labels) for r in records if r.labels is not None]
    new = [(r.iteration, r.new_labels) for r in records if r.new_labels is not None]
    handles = []
    if labels:
        handles += ax.plot(*zip(*labels), "o-", color="black", label="labels in the fit (left)")
        for xi, yi in labels if few else []:
            ax.annotate(str(yi), (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_ylim(0, 1.15 * max(v for _, v in labels) + 1)
    ax.set(xlabel="iteration", ylabel="labelled structures", title="labels used")
    if new:  # on their own axis: a handful of new labels next to hundreds in the fit is no bar at all
        right = ax.twinx()
        bars = right.bar(*zip(*new), width=0.5, color="tab:blue", alpha=0.45, label="new labels (right)")
        right.bar_label(bars, fontsize=8, padding=2)
        right.set_ylim(0, 2.0 * max(max(v for _, v in new), 1))  # bars in the lower half, under the line
        right.set_ylabel("new labels this iteration")
        ax.set_zorder(right.get_zorder() + 1)  # the line over the bars
        ax.patch.set_visible(False)
        handles.append(bars)
    if handles:
        ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=8, ncol=2, **below)
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
    ax.legend(fontsize=8, ncol=3, **below)
    for a in axes:
        if x:
            a.set_xticks(x)
            a.set_xlim(min(x) - 0.5, max(x) + 0.5)
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


def _number(value: Any) -> Any:
    """A number as Python's: numpy's (extxyz gives np.int64) or one kept as text ("400"); else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


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


def _reference_file(run: Path) -> Path | None:
    """Where the reference structures for RDFs are: reference.xyz, train.xyz, or iter-000's first xyz."""
    for candidate in [run / "reference.xyz", run / "train.xyz", *sorted((run / "iter-000").glob("*.xyz"))]:
        if candidate.exists():
            return candidate
    return None


def _reference_frames(run: Path) -> list:
    found = _reference_file(run)
    return ase.io.read(found, index=":") if found else []


def _final_frames(path: Path, n_frames: int) -> list:
    """The last ``n_frames`` of a trajectory; of those, only the ones of its last protocol
    segment (``info["md_segment"]``, the quench of a melt-quench) when its frames say."""
    frames = ase.io.read(path, index=f"-{n_frames}:")
    last = frames[-1].info.get("md_segment") if frames else None
    return [f for f in frames if f.info.get("md_segment") == last] if last is not None else frames


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
    reference_file = _reference_file(run) if any(r.trajectories for r in records) else None
    reference = ase.io.read(reference_file, index=":") if reference_file else []
    # per iteration: its sections in page order, and the numbers behind them (report.json)
    by_iteration: dict[int, list[tuple[int, Section]]] = {r.iteration: [] for r in records}
    numbers: dict[int, dict] = {r.iteration: {} for r in records}
    for record in records:  # first: verdicts the trajectories give enter the learning curve
        group = f"iteration {record.iteration}"
        try:
            rdf = _iteration_rdfs(record, reference, rdf_frames, out, reference_file and _relative(reference_file, run),
                                  problems)
            if rdf:
                numbers[record.iteration]["rdf"] = {k: v for k, v in rdf.items() if k not in ("plot", "caption")}
                by_iteration[record.iteration].append((5, Section(f"{group}: RDF of each exploration run",
                                                                  [(rdf["plot"], rdf["caption"])], group)))
        except Exception as err:  # a broken trajectory must not cost the rest of the page
            problems.append(f"iteration {record.iteration}: RDFs failed ({type(err).__name__}: {err})")
        if record.vdos:
            try:
                image = _iteration_vdos(record, out)
                by_iteration[record.iteration].append((6, Section(f"{group}: VDOS", [(image, _relative(image, run))], group)))
            except Exception as err:
                problems.append(f"iteration {record.iteration}: VDOS failed ({type(err).__name__}: {err})")
    is_campaign = (run / "iter-000" / "state.json").exists()
    campaign = _campaign_parts(run, records, out, problems) if is_campaign else {}
    for record in records:
        try:
            checks = _iteration_checks(run, record, campaign.get("labels"), is_campaign)
        except Exception as err:  # noqa: BLE001
            problems.append(f"iteration {record.iteration}: parity and calibration failed ({type(err).__name__}: {err})")
            continue
        for order, (key, section) in enumerate(checks.items()):
            numbers[record.iteration][key] = section.pop("numbers")
            by_iteration[record.iteration].append((1 + order, Section(**section)))
    for iteration, image in campaign.get("run_plots", {}).items():
        by_iteration.setdefault(iteration, []).append((3, Section(
            f"iteration {iteration}: exploration runs over time", [(image, _relative(image, run))], f"iteration {iteration}")))
    for cluster in campaign.get("clusters", []):
        k = cluster["iteration"]
        by_iteration.setdefault(k, []).append((4, Section(
            f"iteration {k}: cluster in {cluster['run']} at step {cluster['md_step']}: groups {', '.join(cluster['formulas'][:6])}",
            [(cluster["picture"], f"The first clustered frame of {cluster['run']} judged again: {cluster.get('summary', '')}. "
                                  "Drawn: its largest group (large spheres) and every atom within 3 Å of it, in one "
                                  "periodic image, in the elements' jmol colours. "
                                  f"({_relative(cluster['picture'], run)})")], f"iteration {k}")))
    sections: list[Section] = []
    if records:
        image = learning_curve_plot(records, out / "learning_curve.png")
        sections.append(Section("learning curve", [(image, _relative(image, run))]))
    if campaign.get("aux_plot"):
        sections.append(Section("the auxiliary: dimer curves, target and aux",
                                [(campaign["aux_plot"], _relative(campaign["aux_plot"], run))]))
    for iteration in sorted(by_iteration):
        sections += [section for _, section in sorted(by_iteration[iteration], key=lambda item: item[0])]
    ours = {p.resolve() for section in sections for p, _ in section.figures}
    existing = sorted(p for p in run.rglob("*.png") if p.resolve() not in ours and out not in p.parents)
    if existing:
        sections.append(Section("plots of the run", [(p, _relative(p, run)) for p in existing]))
    summary = _json_or_none(run / "summary.json", problems)
    page = out / "index.html"
    page.write_text(_html(run, records, summary, sections, problems, campaign))
    campaign_numbers = {key: value for key, value in campaign.items() if key not in ("aux_plot", "run_plots")}
    campaign_numbers["iterations"] = {k: v for k, v in numbers.items() if v}
    report = {
        "run_dir": str(run), "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "html": str(page),
        "iterations": [r.as_dict() for r in records],
        "latest_clustering": records[-1].clustering if records else {},
        "latest_all_clean": (all(v == "clean" for v in records[-1].clustering.values())
                             if records and records[-1].clustering else None),
        "plots": {section.title: [str(p) for p, _ in section.figures] for section in sections},
        "summary": summary, "problems": problems,
        "campaign": campaign_numbers,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return page


@dataclass
class Section:
    """A part of the page: a heading, its figures with their captions, and before them an HTML
    table of the numbers behind them; sections of one ``group`` (an iteration) share a heading."""

    title: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    group: str | None = None
    table: str = ""


def _relative(path: Path | str, run: Path) -> str:
    path = Path(path)
    return str(path.relative_to(run)) if run in path.parents else path.name


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


def _iteration_rdfs(record: IterationRecord, reference: list, n_frames: int, out: Path,
                    reference_name: str | None = None, problems: list[str] | None = None) -> dict | None:
    """RDFs of the final frames of each trajectory against the reference, one row per run in one
    figure; fills in missing verdicts and RDF distances. Returns the figure, its caption and the
    numbers: per run its frames, distance to the reference (mean and per pair) and first peaks."""
    if not record.trajectories:
        return None
    trajectories = {}
    for p in record.trajectories:
        name = p.parent.name if p.name == "trajectory.xyz" else p.stem
        try:
            trajectories[name] = _final_frames(p, n_frames)
        except Exception as err:  # noqa: BLE001  one unreadable run costs its own row only
            if problems is None:
                raise
            problems.append(f"iteration {record.iteration}: RDF of {name} failed ({type(err).__name__}: {err})")
    trajectories = {name: frames for name, frames in trajectories.items() if frames}
    if not trajectories:
        return None
    r_max = _rdf_range([f for frames in trajectories.values() for f in frames] + reference)
    ref_rdf = partial_rdfs(reference, r_max) if reference else None
    rdfs: dict[str, PartialRDF] = {}
    runs: dict[str, dict] = {}
    headings, colours, per_pair = {}, {}, {}
    for name, frames in trajectories.items():
        analysis = analyse_trajectory(frames, r_max=r_max, reference_rdf=ref_rdf)
        rdfs[name] = analysis.rdf
        if name not in record.clustering:
            record.clustering[name] = analysis.verdict
            record.judged_by_report.append(name)
        if analysis.rdf_distance is not None:
            record.rdf_distance.setdefault(name, round(analysis.rdf_distance, 4))
        by_pair = rdf_distances(analysis.rdf, ref_rdf) if ref_rdf is not None else {}
        per_pair[name] = {pair_name(p): round(by_pair[p], 4) for p in analysis.rdf.g if p in by_pair}
        steps = [_int_or_none(_number(f.info.get("md_step"))) for f in frames]
        steps = [step for step in steps if step is not None]
        segment = _int_or_none(_number(frames[-1].info.get("md_segment")))
        verdict = record.clustering.get(name)
        runs[name] = {"distance": record.rdf_distance.get(name), "distance_by_pair": per_pair[name],
                      "verdict": verdict, "n_frames": len(frames), "n_atoms": len(frames[-1]),
                      "md_steps": [min(steps), max(steps)] if steps else None, "md_segment": segment,
                      "first_peak_A": _first_peaks(analysis.rdf)}
        where = f", MD steps {min(steps)}-{max(steps)}" if steps else ""
        where += " (the last protocol segment)" if segment is not None else ""
        distance = runs[name]["distance"]
        headings[name] = (f"{name}: {verdict}{'*' if name in record.judged_by_report else ''}"
                          + (f", RDF distance {distance:.3f}" if distance is not None else "")
                          + f"; {len(frames)} frame{'s' if len(frames) != 1 else ''} of {len(frames[-1])} atoms{where}")
        colours[name] = {"clustered": "tab:red"}.get(verdict, "black")
    path = run_rdf_panel(rdfs, out / f"iter-{record.iteration:03d}_rdf.png", ref_rdf, headings, per_pair, colours,
                         title=f"iteration {record.iteration}: partial RDFs of each exploration run")
    source = (f"{len(reference)} frames of {reference_name}" if reference_name else f"{len(reference)} frames") \
        if reference else None
    caption = (f"Partial RDFs g(r) of the final frames of each exploration run of iteration {record.iteration} "
               "(blue; one row per run: its verdict, its RDF distance to the reference and which frames) "
               + (f"against the reference (black, dashed: {source}), " if source else "(no reference structures found), ")
               + f"r from 0 to {r_max:g} Å (under half the narrowest cell). RDF distance: the RMS difference of g(r) "
               "over that range (0: the same structure), per pair in each panel's title, their mean per run."
               + (" * judged by this report from these frames." if record.judged_by_report else ""))
    return {"plot": path, "caption": caption, "r_max_A": r_max, "bin_width_A": 0.02,
            "reference": {"source": reference_name, "n_frames": len(reference),
                          "first_peak_A": _first_peaks(ref_rdf) if ref_rdf is not None else None},
            "runs": runs}


def _first_peaks(rdf: PartialRDF) -> dict[str, float | None]:
    """Per pair, where g(r) is highest (Angstrom): the first shell of an oxide's RDF to ~3.5 A."""
    return {pair_name(p): (round(float(rdf.r[int(np.argmax(g))]), 3) if np.max(g) > 0 else None) for p, g in rdf.g.items()}


def _iteration_checks(run: Path, record: IterationRecord, labels: list[dict] | None, is_campaign: bool) -> dict:
    """The held-out parity and the variance calibration of one iteration, as page sections (their
    figure where the run wrote it, a table of the numbers behind it) with their numbers."""
    from alcgap.analysis import campaign_report as parts

    checks = parts.iteration_checks(run, record.iteration, labels)
    group = f"iteration {record.iteration}"
    found = {}
    parity = checks["parity"]
    if parity and (parity["plot"] or is_campaign):
        models = ", ".join(parity["errors"]) or "its model"
        caption = (f"Held-out parity of iteration {record.iteration}'s fit ({models}): predicted against reference "
                   "energy per atom (left) and force components (right)"
                   + (f" on the {parity['n_test']} held-out bootstrap frames no fit trains on" if parity["n_test"] else "")
                   + "; dashed: y = x; each model's errors in the legend.")
        figures = [(Path(parity["plot"]), f"{caption} ({_relative(parity['plot'], run)})")] if parity["plot"] else []
        found["parity"] = {"title": f"{group}: held-out parity", "figures": figures, "group": group,
                           "table": _parity_table(parity) + ("" if figures else "<p>(the run has written no parity plot)</p>"),
                           "numbers": parity}
    calibration = checks["calibration"]
    if calibration and (calibration["plot"] or is_campaign):
        threshold = calibration["threshold"]
        caption = (f"Variance calibration of iteration {record.iteration}'s model: each atom's force error "
                   "|F_model - F_reference| (eV/Å) against the variance the model predicted for it (eV²), log-log, on "
                   f"the {_cell(calibration['new_labels'])} frames this iteration selected and then labelled"
                   + (f"; dashed red: the selection (flag) threshold {threshold:.3g} eV²" if threshold else "")
                   + ". A calibrated variance puts the large errors right of the threshold.")
        figures = [(Path(calibration["plot"]), f"{caption} ({_relative(calibration['plot'], run)})")] \
            if calibration["plot"] else []
        missing = "" if figures else ("<p>(no plot: the iteration selected no new labels to check the variance on)</p>"
                                      if not calibration["new_labels"] else "<p>(the run has written no calibration plot, or not yet)</p>")
        found["calibration"] = {"title": f"{group}: variance calibration", "figures": figures, "group": group,
                                "table": _calibration_table(calibration) + missing, "numbers": calibration}
    return found


def _parity_table(parity: dict) -> str:
    head = ["model", "held-out frames", "atoms", "E MAE (meV/atom)", "E RMSE (meV/atom)", "F RMSE (eV/Å)",
            "F MAE (eV/Å)", "S RMSE (GPa)"]
    rows = []
    for name, e in parity["errors"].items():
        deployed = " (deployed)" if name == parity.get("deployed") and len(parity["errors"]) > 1 else ""
        cells = [html.escape(name) + deployed, _cell(e.get("n_structures", parity.get("n_test"))), _cell(e.get("n_atoms")),
                 _cell(_num(e, "energy_mae")), _cell(_num(e, "energy_rmse")), _cell(_num(e, "force_rmse"), 3),
                 _cell(_num(e, "force_mae"), 3), _cell(_num(e, "stress_rmse"), 2)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return "<p>(no held-out errors recorded)</p>"
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _num(errors: dict, name: str) -> float | None:
    """An error by its ErrorMetrics name or its canonical report name."""
    value = errors.get(name, errors.get({v: k for k, v in ERROR_KEYS.items()}.get(name, ""), None))
    return float(value) if isinstance(value, (int, float)) else None


def _calibration_table(c: dict) -> str:
    how = (f"{c['factor']:g} x the {100 * c['quantile']:g}th percentile ({_cell(c['quantile_value'], 5)} eV²) "
           f"of the per-atom variance over {_cell(c['held_out_atoms'])} held-out atoms (median {_cell(c['held_out_median'], 5)}, "
           f"max {_cell(c['held_out_max'], 5)})" if c.get("quantile") is not None and c.get("factor") is not None
           else html.escape(str(c.get("set_by") or "not recorded")))
    over = (f"{c['labels_over_threshold']} of {c['labels_with_variance']} ({100 * c['fraction_over_threshold']:.0f}%)"
            if c.get("fraction_over_threshold") is not None else "&ndash;")
    ratio = (f"{_cell(c['prospective_force_rmse'], 3)} against {_cell(c['held_out_force_rmse'], 3)} held out "
             f"({c['prospective_over_held_out']:.1f}x)" if c.get("prospective_over_held_out") is not None else "&ndash;")
    rows = [("selection threshold (eV²)", _cell(c["threshold"], 5)), ("set as", how),
            ("variance-error Spearman (atoms)", f"{_cell(c['spearman'], 2)} ({_cell(c['n_atoms'])})"),
            ("new labels; over the threshold when picked", f"{_cell(c['new_labels'])}; {over}"),
            ("their force RMSE (eV/Å), this model", ratio)]
    return "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


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


def _html(run: Path, records: list[IterationRecord], summary: Any, sections: list["Section"],
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
        "figure{margin:0 0 1em 0} figcaption{color:#555;font-size:85%;max-width:1100px}",
        "h2.group{border-top:2px solid #888;padding-top:0.6em;margin-top:1.6em} h3{margin-bottom:0.3em}",
        "table.kv th{text-align:left;background:#f4f4f4;font-weight:normal} details.raw{margin-top:2em} details.raw summary{cursor:pointer;color:#555}",
        "details.raw pre{font-size:80%;max-height:40em;overflow:auto;background:#f8f8f8;padding:0.5em}</style></head><body>",
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
    group = None
    for section in sections:
        if section.group and section.group != group:
            parts.append(f"<h2 class='group'>{html.escape(section.group)}</h2>")
        group = section.group
        parts.append(f"<h{3 if group else 2}>{html.escape(section.title)}</h{3 if group else 2}>")
        parts.append(section.table)
        for image, caption in section.figures:
            parts.append(f"<figure>{_img(image)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if summary is not None:
        text = json.dumps(summary, indent=1)
        cut = f"\n... ({len(text) - 200000} more characters in summary.json)" if len(text) > 200000 else ""
        parts.append("<details class='raw'><summary>summary.json</summary>"
                     f"<pre>{html.escape(text[:200000] + cut)}</pre></details>")
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
