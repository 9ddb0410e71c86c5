"""An iteration's structure figures: the partial RDFs of the final frames of each exploration
run against the reference structures (with a clustering verdict and an RDF distance for any run
metrics.json does not judge), and the VDOS curves metrics.json gives."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np

from alcgap.analysis.clustering import analyse_trajectory
from alcgap.analysis.plots import run_rdf_panel, vdos_plot
from alcgap.analysis.rdf import PartialRDF, cell_widths, partial_rdfs, rdf_distances
from alcgap.analysis.vdos import vdos
from alcgap.report.records import IterationRecord, int_or_none, number
from alcgap.structures import pair_name

BIN_WIDTH = 0.02  # Angstrom, of every RDF of the report


def reference_file(run: Path) -> Path | None:
    """Where the reference structures for RDFs are: reference.xyz, train.xyz, or iter-000's first xyz."""
    for candidate in [run / "reference.xyz", run / "train.xyz", *sorted((run / "iter-000").glob("*.xyz"))]:
        if candidate.exists():
            return candidate
    return None


def final_frames(path: Path, n_frames: int) -> list:
    """The last ``n_frames`` of a trajectory; of those, only the ones of its last protocol
    segment (``info["md_segment"]``, the quench of a melt-quench) when its frames say."""
    frames = ase.io.read(path, index=f"-{n_frames}:")
    last = frames[-1].info.get("md_segment") if frames else None
    return [f for f in frames if f.info.get("md_segment") == last] if last is not None else frames


def rdf_range(frames: Sequence, wanted: float = 6.0, bin_width: float = BIN_WIDTH) -> float:
    """The RDF range all frames allow (Angstrom): ``wanted``, or just under half the narrowest cell."""
    half = 0.5 * min((float(min(cell_widths(f))) for f in frames if f.pbc.all()), default=2.0 * wanted)
    return float(np.floor(min(wanted, half - 1e-6) / bin_width) * bin_width)


def first_peaks(rdf: PartialRDF) -> dict[str, float | None]:
    """Per pair, where g(r) is highest (Angstrom): the first shell of an oxide's RDF to ~3.5 A."""
    return {pair_name(p): (round(float(rdf.r[int(np.argmax(g))]), 3) if np.max(g) > 0 else None) for p, g in rdf.g.items()}


def iteration_rdfs(record: IterationRecord, reference: list, n_frames: int, out: Path,
                   reference_name: str | None = None, problems: list[str] | None = None) -> dict | None:
    """RDFs of the final frames of each trajectory against the reference, one row per run in one
    figure; fills in missing verdicts and RDF distances. Returns the figure, its caption and the
    numbers: per run its frames, distance to the reference (mean and per pair) and first peaks."""
    trajectories = _final_frames_of_runs(record, n_frames, problems)
    if not trajectories:
        return None
    r_max = rdf_range([f for frames in trajectories.values() for f in frames] + reference)
    ref_rdf = partial_rdfs(reference, r_max) if reference else None
    rdfs: dict[str, PartialRDF] = {}
    runs: dict[str, dict] = {}
    headings, colours, per_pair = {}, {}, {}
    for name, frames in trajectories.items():
        rdfs[name], runs[name], headings[name] = _judge_run(record, name, frames, r_max, ref_rdf)
        per_pair[name] = runs[name]["distance_by_pair"]
        colours[name] = {"clustered": "tab:red"}.get(runs[name]["verdict"], "black")
    path = run_rdf_panel(rdfs, out / f"iter-{record.iteration:03d}_rdf.png", ref_rdf, headings, per_pair, colours,
                         title=f"iteration {record.iteration}: partial RDFs of each exploration run")
    return {"plot": path, "caption": _rdf_caption(record, reference, reference_name, r_max), "r_max_A": r_max,
            "bin_width_A": BIN_WIDTH,
            "reference": {"source": reference_name, "n_frames": len(reference),
                          "first_peak_A": first_peaks(ref_rdf) if ref_rdf is not None else None},
            "runs": runs}


def _final_frames_of_runs(record: IterationRecord, n_frames: int, problems: list[str] | None) -> dict[str, list]:
    """Per exploration run of ``record`` (named by its file, or by its folder for a campaign's
    ``trajectory.xyz``): its final frames; runs without frames are left out."""
    trajectories = {}
    for p in record.trajectories:
        name = p.parent.name if p.name == "trajectory.xyz" else p.stem
        try:
            trajectories[name] = final_frames(p, n_frames)
        except Exception as err:  # noqa: BLE001  one unreadable run costs its own row only
            if problems is None:
                raise
            problems.append(f"iteration {record.iteration}: RDF of {name} failed ({type(err).__name__}: {err})")
    return {name: frames for name, frames in trajectories.items() if frames}


def _judge_run(record: IterationRecord, name: str, frames: list, r_max: float,
               ref_rdf: PartialRDF | None) -> tuple[PartialRDF, dict, str]:
    """One run's RDF, its numbers and the heading of its row; its verdict and RDF distance enter
    ``record`` where metrics.json gave none."""
    analysis = analyse_trajectory(frames, r_max=r_max, reference_rdf=ref_rdf)
    if name not in record.clustering:
        record.clustering[name] = analysis.verdict
        record.judged_by_report.append(name)
    if analysis.rdf_distance is not None:
        record.rdf_distance.setdefault(name, round(analysis.rdf_distance, 4))
    by_pair = rdf_distances(analysis.rdf, ref_rdf) if ref_rdf is not None else {}
    steps = [int_or_none(number(f.info.get("md_step"))) for f in frames]
    steps = [step for step in steps if step is not None]
    segment = int_or_none(number(frames[-1].info.get("md_segment")))
    verdict, distance = record.clustering.get(name), record.rdf_distance.get(name)
    numbers = {"distance": distance,
               "distance_by_pair": {pair_name(p): round(by_pair[p], 4) for p in analysis.rdf.g if p in by_pair},
               "verdict": verdict, "n_frames": len(frames), "n_atoms": len(frames[-1]),
               "md_steps": [min(steps), max(steps)] if steps else None, "md_segment": segment,
               "first_peak_A": first_peaks(analysis.rdf)}
    where = f", MD steps {min(steps)}-{max(steps)}" if steps else ""
    where += " (the last protocol segment)" if segment is not None else ""
    heading = (f"{name}: {verdict}{'*' if name in record.judged_by_report else ''}"
               + (f", RDF distance {distance:.3f}" if distance is not None else "")
               + f"; {len(frames)} frame{'s' if len(frames) != 1 else ''} of {len(frames[-1])} atoms{where}")
    return analysis.rdf, numbers, heading


def _rdf_caption(record: IterationRecord, reference: list, reference_name: str | None, r_max: float) -> str:
    source = (f"{len(reference)} frames of {reference_name}" if reference_name else f"{len(reference)} frames") \
        if reference else None
    return (f"Partial RDFs g(r) of the final frames of each exploration run of iteration {record.iteration} "
            "(blue; one row per run: its verdict, its RDF distance to the reference and which frames) "
            + (f"against the reference (black, dashed: {source}), " if source else "(no reference structures found), ")
            + f"r from 0 to {r_max:g} Å (under half the narrowest cell). RDF distance: the RMS difference of g(r) "
            "over that range (0: the same structure), per pair in each panel's title, their mean per run."
            + (" * judged by this report from these frames." if record.judged_by_report else ""))


def iteration_vdos(record: IterationRecord, out: Path) -> Path:
    """The VDOS curves of the phonon energies metrics.json lists (``vdos.modes_meV``), one plot."""
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
