"""The measurements behind the paper's five claims, each with its uncertainty.

1. held-out energy MAE of composite and traditional GAP (bootstrap standard error over the test
   structures, and of their paired difference);
2. clustering verdicts (final quenched frame and every sampled frame) and the RDF distance of the
   quenched structure to the reference's, per seed;
3. VDOS overlap with the reference below a phonon energy, per seed;
4. the 10x cell's verdict;
5. cost of the composite over the traditional GAP (interleaved force calls; MD step time).

Pure functions of files and calculators; units meV/atom, Angstrom, meV, seconds.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from alcgap.analysis.clustering import ClusteringCriteria, analyse_trajectory, detect_clustering
from alcgap.analysis.metrics import ParityData, error_metrics, parity_data
from alcgap.analysis.rdf import PartialRDF, average_rdfs, cell_widths, partial_rdfs, rdf_distance
from alcgap.analysis.vdos import phonon_energies, vdos, vdos_similarity
from alcgap.reference import Reference
from alcgap.structures import pair_name

from mdruns import quenched_frames, read_frames


def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, min, max and the values (NaN-free)."""
    values = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": values}


# ---------------------------------------------------------------- claim 1: held-out errors


def bootstrap_se(values: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> float:
    """Standard error of the mean of ``values`` by bootstrap resampling."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    return float(means.std(ddof=1))


def held_out_errors(models: dict[str, str], test: list[Atoms], calculator) -> tuple[dict, dict[str, ParityData]]:
    """Energy MAE (meV/atom) of each model on ``test`` with bootstrap SEs, and the paired difference."""
    data = {name: parity_data(calculator(xml), test) for name, xml in models.items()}
    abs_err = {name: 1000.0 * np.abs(d.pred_energy - d.ref_energy) for name, d in data.items()}
    out = {}
    for name, d in data.items():
        metrics = error_metrics(d)
        out[name] = {"energy_mae": metrics.energy_mae, "energy_mae_se": bootstrap_se(abs_err[name]),
                     "energy_rmse": metrics.energy_rmse, "force_rmse": metrics.force_rmse,
                     "n_structures": metrics.n_structures}
    if {"composite", "traditional"} <= abs_err.keys():
        diff = abs_err["composite"] - abs_err["traditional"]
        out["difference"] = {"mean": float(diff.mean()), "se": bootstrap_se(diff),
                             "max_abs_prediction_difference_meV_atom": float(1000.0 * np.max(np.abs(
                                 data["composite"].pred_energy - data["traditional"].pred_energy)))}
    return out, data


def aux_reach(frames: list[Atoms], cutoffs: dict[str, float]) -> dict:
    """Does any data structure bring a pair inside its aux cutoff? (If none does, the aux is
    exactly zero on all of them and composite and traditional main GAPs learn identical targets.)"""
    from alcgap.md.monitors import pair_distances, shortest_pairs

    closest: dict[str, float] = {}
    inside = 0
    for atoms in frames:
        shortest = {pair_name(p): d for p, d in shortest_pairs(atoms, *pair_distances(atoms, 3.0)).items()}
        for name, d in shortest.items():
            closest[name] = min(closest.get(name, np.inf), d)
        inside += any(shortest.get(name, np.inf) < rc for name, rc in cutoffs.items())
    return {"n_structures": len(frames), "structures_inside_aux_cutoffs": inside,
            "closest_pair_distance": closest, "aux_cutoffs": cutoffs}


# ---------------------------------------------------------------- claim 2 and 4: structure


def rdf_range(frame: Atoms, bin_width: float, wanted: float = 6.0) -> float:
    """The largest r_max (a whole number of bins, at most ``wanted``) the cell resolves."""
    half = 0.5 * float(cell_widths(frame).min())
    return round(min(wanted, np.floor(half / bin_width) * bin_width), 6)


def analyse_run(folder: Path, result: dict, criteria: ClusteringCriteria, tail: float, r_max: float,
                bin_width: float) -> dict:
    """Verdicts, shortest distances and the quenched RDF of one melt-and-quench run."""
    frames = read_frames(folder)
    stopped = bool(result.get("stopped_early")) or bool(result.get("failed"))
    entry = {"folder": str(folder), "stopped_early": stopped, "stop_reason": result.get("stop_reason"),
             "steps_done": result.get("steps_done"), "n_frames": len(frames),
             "min_distances": result.get("min_distances", {}), "rdf": None,
             "cpu_s_per_step": _cpu_per_step(result)}
    if not frames:
        entry.update(final="failed", trajectory="failed")
        return entry
    final = detect_clustering(frames[-1], criteria)
    trajectory = analyse_trajectory(frames, criteria, r_max=r_max, bin_width=bin_width)
    entry["final"] = "failed" if stopped else final.verdict
    entry["final_detail"] = final.summary()
    entry["trajectory"] = "failed" if stopped else trajectory.verdict
    entry["clustered_frames"] = [k for k, v in enumerate(trajectory.verdicts) if not v.clean]
    entry["first_clustered_step"] = next((frames[k].info.get("md_step") for k in entry["clustered_frames"]), None)
    quenched = [] if stopped else quenched_frames(frames, tail)
    if quenched:
        entry["rdf"] = partial_rdfs(quenched, r_max, bin_width).as_dict()
        entry["n_quenched_frames"] = len(quenched)
    return entry


def _cpu_per_step(result: dict) -> float | None:
    timings, steps = result.get("timings") or {}, result.get("steps_done") or 0
    return timings["run_cpu_s"] / steps if steps and "run_cpu_s" in timings else None


def is_clustered(verdict: str) -> bool:
    return verdict != "clean"


def structure_figures(runs: dict[str, list[dict]], reference_runs: list[dict]) -> dict:
    """Per potential: fraction of seeds clustered, RDF distances to the pooled reference, shortest
    distances. The reference itself gets the same treatment: its own seed-to-seed RDF distance
    (each seed against the others pooled) is the noise floor of the RDF distance."""
    ref_rdfs = [PartialRDF.from_dict(r["rdf"]) for r in reference_runs if r["rdf"]]
    pooled = average_rdfs(ref_rdfs) if ref_rdfs else None
    out = {}
    for potential, entries in {**runs, "reference": reference_runs}.items():
        n = len(entries)
        figures = {
            "n_seeds": n,
            "clustered_final": sum(is_clustered(e["final"]) for e in entries),
            "clustered_trajectory": sum(is_clustered(e["trajectory"]) for e in entries),
            "stopped_early": sum(e["stopped_early"] for e in entries),
            "min_distances": _shortest(entries),
        }
        if potential == "reference":
            floor = []
            for k, rdf in enumerate(ref_rdfs):
                others = [x for j, x in enumerate(ref_rdfs) if j != k]
                if others:
                    floor.append(rdf_distance(rdf, average_rdfs(others)))
            figures["rdf_distance"] = spread(floor)
        elif pooled is not None:
            distances = [rdf_distance(PartialRDF.from_dict(e["rdf"]), pooled) if e["rdf"] else None for e in entries]
            figures["rdf_distance"] = spread(distances)
            figures["rdf_missing"] = sum(d is None for d in distances)
        out[potential] = figures
    return out


def _shortest(entries: list[dict]) -> dict:
    pairs = {p for e in entries for p in e["min_distances"]}
    return {p: spread([e["min_distances"][p] for e in entries if p in e["min_distances"]]) for p in sorted(pairs)}


def aux_engaged(min_distances: dict[str, float], cutoffs: dict[str, float]) -> list[str]:
    """The pairs whose shortest distance in a run came inside their aux cutoff (where the
    composite and the traditional GAP differ at all)."""
    return sorted(p for p, rc in cutoffs.items() if min_distances.get(p, np.inf) < rc)


def trajectory_difference(folder_a: Path, folder_b: Path) -> float | None:
    """Largest position difference (Angstrom, minimum image) between two runs' sampled frames:
    0 when the composite's aux never acted and both GAPs integrated the same trajectory."""
    a, b = read_frames(folder_a), read_frames(folder_b)
    if not a or not b:
        return None
    largest = 0.0
    for x, y in zip(a, b):
        delta = x.positions - y.positions
        fractional = np.linalg.solve(x.cell.array.T, delta.T).T
        largest = max(largest, float(np.abs((fractional - np.round(fractional)) @ x.cell.array).max()))
    return largest


def pooled_rdf(entries: list[dict]) -> PartialRDF | None:
    rdfs = [PartialRDF.from_dict(e["rdf"]) for e in entries if e.get("rdf")]
    return average_rdfs(rdfs) if rdfs else None


# ---------------------------------------------------------------- claim 3: VDOS


class ReferenceCalculator(Calculator):
    """Any alcgap :class:`Reference` (classical LAMMPS, CP2K) as an ASE calculator, through the
    labelling interface: energy and forces of one structure per call. A failed label raises."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, reference: Reference, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        label = self.reference.compute(self.atoms)
        if not label.ok:
            raise RuntimeError(f"reference label failed ({label.status.value}): {label.reason[:300]}")
        self.results = {"energy": label.energy, "free_energy": label.energy, "forces": np.array(label.forces)}


def relaxed(atoms: Atoms, calc: Calculator, fmax: float, steps: int) -> tuple[Atoms, dict]:
    """Positions relaxed at fixed cell (BFGS) to ``fmax`` eV/A or ``steps`` steps."""
    from ase.optimize import BFGS

    work = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)
    work.calc = calc
    optimizer = BFGS(work, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=steps))
    forces = work.get_forces()
    info = {"converged": converged, "steps": optimizer.nsteps, "fmax": float(np.linalg.norm(forces, axis=1).max())}
    work.calc = None
    return work, info


def vdos_pair(start: Atoms, model: Calculator, reference: Calculator, scale, reference_phonons=None) -> dict:
    """The paper's Fig. 5a for one structure: relax it with the model and with the reference,
    phonon energies of each by finite differences (``scale.vdos_delta``), and their overlap.
    ``reference_phonons(atoms, delta)`` replaces the serial finite differences of the reference
    (the paper scale hands the 6N displaced structures of DFT to a site at once)."""
    out = {}
    for name, calc in (("model", model), ("reference", reference)):
        started = time.perf_counter()
        structure, info = relaxed(start, calc, scale.relax_fmax, scale.relax_steps)
        if name == "reference" and reference_phonons is not None:
            energies = reference_phonons(structure, scale.vdos_delta)
        else:
            energies = phonon_energies(structure, calc, scale.vdos_delta)
        out[name] = {"modes_meV": energies.tolist(), "relax": info, "n_unstable": int((energies < -1.0).sum()),
                     "seconds": round(time.perf_counter() - started, 1)}
    a = vdos(np.array(out["reference"]["modes_meV"]), scale.vdos_sigma)
    b = vdos(np.array(out["model"]["modes_meV"]), scale.vdos_sigma)
    # few modes fall below the window in a small cell: how many the low-energy overlap rests on
    out["reference_modes_below_window"] = int(np.sum((np.array(out["reference"]["modes_meV"]) >= 1.0)
                                                     & (np.array(out["reference"]["modes_meV"]) <= scale.vdos_e_max)))
    out["similarity_low"] = vdos_similarity(a, b, scale.vdos_e_max)
    out["similarity_all"] = vdos_similarity(a, b)
    return out


# ---------------------------------------------------------------- claim 5: cost


def timed_call(calc, atoms: Atoms) -> tuple[float, float]:
    """Wall and CPU seconds of one energy+forces call (cache cleared first)."""
    calc.reset()
    work = atoms.copy()
    work.calc = calc
    wall, cpu = time.perf_counter(), time.process_time()
    work.get_forces()
    return time.perf_counter() - wall, time.process_time() - cpu


def force_call_cost(calcs: dict[str, Calculator], cells: dict[int, Atoms], repeats: int) -> dict:
    """Interleaved calls (composite, traditional, composite, ...) so that the machine's drifts hit
    both alike, as benchmarks/composite_cost.py; the ratio of median CPU times, and the spread
    of the per-round ratios."""
    out = {}
    for n_atoms, atoms in cells.items():
        for calc in calcs.values():
            timed_call(calc, atoms)  # warm-up: descriptor set-up
        wall = {name: [] for name in calcs}
        cpu = {name: [] for name in calcs}
        for _ in range(repeats):
            for name, calc in calcs.items():
                w, c = timed_call(calc, atoms)
                wall[name].append(w)
                cpu[name].append(c)
        rounds = [c / t for c, t in zip(cpu["composite"], cpu["traditional"])]
        out[str(n_atoms)] = {
            "median_cpu_s": {name: statistics.median(v) for name, v in cpu.items()},
            "median_wall_s": {name: statistics.median(v) for name, v in wall.items()},
            "ratio_cpu": statistics.median(cpu["composite"]) / statistics.median(cpu["traditional"]),
            "ratio_wall": statistics.median(wall["composite"]) / statistics.median(wall["traditional"]),
            "round_ratios_cpu": spread(rounds),
        }
    return out


def md_step_cost(runs: dict[str, list[dict]]) -> dict:
    """CPU seconds per MD step of each potential's 1x runs (LAMMPS' run commands, force calls
    included), and the composite/traditional ratio seed by seed (same seed, same protocol)."""
    per = {name: [e["cpu_s_per_step"] for e in entries] for name, entries in runs.items()}
    ratios = [c / t for c, t in zip(per.get("composite", []), per.get("traditional", [])) if c and t]
    return {"cpu_s_per_step": {name: spread(v) for name, v in per.items()}, "ratio": spread(ratios)}


# ---------------------------------------------------------------- claim 2 by the stress test


def stress_figures(records: Sequence[dict]) -> dict:
    """Per potential and temperature, over the seeds: runs physical to the end (no pair inside an
    aux cutoff, no failure), runs held (:func:`alcgap.survival.held`: survived, no pair below 0.9 of
    its cutoff), the first unphysical step, the deepest pair, the failures by class."""
    from alcgap.survival import held

    out: dict = {}
    for r in records:
        out.setdefault(r["potential"], {}).setdefault(f"{r['temperature']:g}", []).append(r)
    figures = {}
    for potential, by_t in out.items():
        figures[potential] = {}
        for t, runs in by_t.items():
            deepest = [min(r["cutoff_fractions"].values()) for r in runs if r.get("cutoff_fractions")]
            figures[potential][t] = {
                "runs": len(runs),
                "physical": sum(r["physical"] for r in runs),
                "held": sum(held(r) for r in runs),
                "first_unphysical_step": spread([r["first_unphysical_step"] for r in runs]),
                "first_unheld_step": spread([r.get("first_unheld_step") for r in runs]),
                "first_unphysical_steps": [r["first_unphysical_step"] for r in runs],
                "deepest_fraction": spread(deepest),
                "failures": {kind: sum(r["outcome_of"] == kind for r in runs) for kind in ("potential", "integration")},
                "outcomes": [r["outcome"] for r in runs],
                "min_distances": {pair: min(r["min_distances"][pair] for r in runs if pair in r["min_distances"])
                                  for pair in sorted({p for r in runs for p in r["min_distances"]})},
                "drift_meV_atom_ps": spread([r.get("energy_drift_meV_atom_ps") for r in runs]),
            }
    return figures
