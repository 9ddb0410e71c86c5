"""Every figure of the five claims for one training mode, from finished fits and MD runs.

Shared by both scales: the fast scale runs its MD here and calls :func:`measure_mode`; the paper
scale runs its MD through a site and calls the same function on the same folders.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import ase.io
from ase import Atoms
from rich.console import Console
from rich.progress import Progress

from alcgap.analysis.clustering import ClusteringCriteria
from alcgap.structures import beta_cristobalite, rattled, supercell_with_atoms

import claims
import tables
from mdruns import read_frames

console = Console(stderr=True)

#: the paper's aux cutoffs (Angstrom), for the "does the data ever reach the aux?" check
AUX_CUTOFFS = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}


class Stages:
    """Progress over the units of work, and the wall time of each stage."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress = progress
        self.task = progress.add_task("paper benchmark", total=total) if progress else None
        self.seconds: dict[str, float] = {}

    def advance(self) -> None:
        if self.progress:
            self.progress.advance(self.task)

    def run(self, name: str, work: Callable, *args, **kwargs):
        if self.progress:
            self.progress.update(self.task, description=name)
        started = time.perf_counter()
        result = work(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - started, 1)
        self.advance()
        console.log(f"[bold]{name}[/] {self.seconds[name]:.0f} s")
        return result


def measure_mode(stages: Stages, scale, mode: str, base: Path, start: Path, fit: dict, runs: dict[str, list[dict]],
                 big: list[dict], reference: list[dict], reference_calc, phonons=None) -> dict:
    """The five claims of one mode. ``fit``: {"models", "test", "train", "summary_errors"};
    ``runs``/``big``/``reference``: finished MD runs ({"spec", "folder", "result"});
    ``reference_calc``: the reference as an ASE calculator (VDOS); ``phonons``: how the
    reference's phonon energies are computed (default: serial finite differences)."""
    criteria = ClusteringCriteria.sio2()
    r_max = claims.rdf_range(ase.io.read(start), scale.rdf_bin_width)

    def analyse(run: dict) -> dict:
        return claims.analyse_run(run["folder"], run["result"], criteria, scale.quench_tail, r_max, scale.rdf_bin_width)

    ref_entries = [analyse(r) for r in reference]
    entries = {p: [analyse(r) for r in rs] for p, rs in runs.items()}
    big_entries = [analyse(r) for r in big]
    same = [claims.trajectory_difference(c["folder"], t["folder"]) for c, t in zip(runs["composite"], runs["traditional"])]
    engaged = {p: [claims.aux_engaged(e["min_distances"], AUX_CUTOFFS) for e in es] for p, es in entries.items()}
    figures = {
        "mode": mode,
        # where the two potentials can differ at all: pairs inside the aux cutoffs
        "aux_engaged": engaged,
        "composite_vs_traditional_max_position_difference_A": same,
        "models": fit["models"],
        "held_out": stages.run(f"held-out errors {mode}", held_out, fit, base.parent / "figures" / f"fig3-parity-{base.name}.png"),
        "structure": claims.structure_figures(entries, ref_entries),
        "runs": {**entries, "reference": ref_entries},
        "big": {"factor": scale.big_factor, "runs": big_entries,
                "figures": claims.structure_figures({"composite": big_entries}, ref_entries)["composite"]},
        "rdf_r_max": r_max,
    }
    vdos_runs = {p: rs[: scale.vdos_seeds or len(rs)] for p, rs in runs.items()}
    figures["vdos"] = vdos_mode(stages, scale, mode, vdos_runs, fit["models"], reference_calc, phonons)
    figures["cost"] = stages.run(f"cost {mode}", cost_mode, scale, fit["models"], entries)
    seeds = [r["spec"].seed for r in runs["composite"]]
    figures["stress"] = stages.run(f"stress {mode}", stress_mode, scale, base, start, fit["models"], seeds)
    (base / "claims.json").write_text(json.dumps(figures, indent=1, default=str))
    return figures


def held_out(fit: dict, figure: Path) -> dict:
    """Claim 1 with Fig. 3: both models on the same held-out structures."""
    from alcgap.calculator import GapCalculator

    errors, data = claims.held_out_errors(fit["models"], fit["test"], GapCalculator)
    tables.parity_figure({name: (d, claims.error_metrics(d)) for name, d in data.items()}, figure)
    return {"errors": errors, "aux_reach": claims.aux_reach(fit["train"] + fit["test"], AUX_CUTOFFS),
            "fit_summary_errors": fit.get("summary_errors"), "n_train": len(fit["train"]), "n_test": len(fit["test"])}


def vdos_mode(stages: Stages, scale, mode: str, runs: dict, models: dict, reference_calc, phonons=None) -> dict:
    """Claim 3 per seed: each model's own quenched structure, relaxed with it and with the reference."""
    from alcgap.calculator import GapCalculator

    out = {}
    for potential, seed_runs in runs.items():
        model = GapCalculator(models[potential])
        out[potential] = []
        for run in seed_runs:
            frames = read_frames(run["folder"])
            if not frames or run["result"].get("stopped_early"):
                out[potential].append({"seed": run["spec"].seed, "skipped": "no quenched structure"})
                stages.advance()
                continue
            entry = stages.run(f"VDOS {mode} {potential} seed {run['spec'].seed}", claims.vdos_pair, _bare(frames[-1]),
                               model, reference_calc, scale, phonons)
            out[potential].append({"seed": run["spec"].seed, **entry})
    return out


def _bare(atoms: Atoms) -> Atoms:
    return Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)


def stress_mode(scale, base: Path, start: Path, models: dict, seeds: list[int]) -> dict:
    """Claim 2 by the stress test: composite and traditional of this mode, and the reference once
    for both modes (``<out>/reference/stress``), the same runs for each. A finished sweep with the
    same settings is read back, not run again."""
    from alcgap.reference import vashishta_sio2_commands

    settings = {"temperatures": list(scale.stress_temperatures), "seeds": seeds, "steps": scale.stress_steps,
                "timestep_fs": scale.timestep, "aux_cutoffs": AUX_CUTOFFS, "start": str(start)}
    sweeps = {"models": _sweep({p: models[p] for p in ("composite", "traditional")}, base / "stress", start, settings),
              "reference": _sweep({"reference": vashishta_sio2_commands()}, base.parent / "reference" / "stress", start,
                                  settings)}
    records = sweeps["models"]["records"] + sweeps["reference"]["records"]
    return {"settings": settings, "records": records, "by_potential": claims.stress_figures(records),
            "survival_plot": str(base / "stress" / "survival.png")}


def _sweep(potentials: dict, out: Path, start: Path, settings: dict) -> dict:
    from alcgap.survival import read_sweep, survival_sweep, write_sweep

    saved = out / "survival.json"
    if saved.exists() and json.loads(saved.read_text()).get("settings") == settings:
        return write_sweep(read_sweep(out), out, settings["steps"], settings=settings)  # tables of today's code
    records = survival_sweep(potentials, ["Si", "O"], ase.io.read(start), out, temperatures=settings["temperatures"],
                           seeds=settings["seeds"], steps=settings["steps"], timestep=settings["timestep_fs"],
                           aux_cutoffs=AUX_CUTOFFS, progress=console.log)
    return write_sweep(records, out, settings["steps"], settings=settings)


def cost_mode(scale, models: dict, entries: dict) -> dict:
    """Claim 5: interleaved force calls on rattled crystals of the timed sizes, and the MD steps."""
    from alcgap.calculator import GapCalculator

    calcs = {name: GapCalculator(models[name]) for name in ("composite", "traditional")}
    crystal = beta_cristobalite()
    cells = {n: rattled(supercell_with_atoms(crystal, n), 0.08, seed=n) for n in scale.cost_cells}
    return {"force_call": claims.force_call_cost(calcs, cells, scale.cost_repeats),
            "md_step": claims.md_step_cost(entries)}
