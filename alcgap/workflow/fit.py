"""The composite fit, end to end, in a run directory:
reference -> dimers -> aux -> training data -> main (composite and traditional) -> metrics + plots.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms
from rich.console import Console

from alcgap.analysis.metrics import error_metrics, parity_data
from alcgap.analysis.plots import aux_curves_plot, parity_plot, short_range_plot
from alcgap.calculator import GapCalculator
from alcgap.config import FitConfig
from alcgap.auxiliary import AuxFit, fit_repulsive_aux, table_pair_commands
from alcgap.dimers import dimer_curve, isolated_atom_energies, pair_curve, scan_grid
from alcgap.fit.gapfit import find_gap_fit
from alcgap.fit.main import VIRIAL_KEY, fit_main_gap, training_frames
from alcgap.md.classical import run_classical_md
from alcgap.reference import Reference, make_reference
from alcgap.structures import pair_name, rattled_copies, supercell_with_atoms

console = Console(stderr=True)


def starting_structure(config: FitConfig) -> Atoms:
    """The training cell: data.structure's crystal repeated to data.n_atoms (the most cubic supercell)."""
    unit = config.data.crystal()
    return supercell_with_atoms(unit, config.data.n_atoms or len(unit))


def bootstrap_frames(config: FitConfig, reference: Reference | None = None) -> list[Atoms]:
    """The unlabelled frames of iteration 0, made as ``data.bootstrap`` says: classical MD of the
    starting cell (a classical bootstrap without pair_commands runs ``reference``'s own potential
    when it is classical, else :meth:`FitConfig.bootstrap_potential`), a subsample of a file, or
    rattled copies of the starting cell."""
    bootstrap = config.data.bootstrap
    if bootstrap.kind == "structures":
        return read_bootstrap_file(bootstrap.path, config.species, every=bootstrap.every, count=bootstrap.count,
                                   format=bootstrap.format)
    if bootstrap.kind == "rattle":
        seed = config.seed if bootstrap.seed is None else bootstrap.seed
        return rattled_copies(starting_structure(config), bootstrap.temperatures, bootstrap.spring, bootstrap.copies,
                              bootstrap.max_strain, seed)
    if bootstrap.pair_commands is None and getattr(reference, "pair_commands", None):
        commands, types, charges = reference.pair_commands, reference.species, getattr(reference, "charges", None)
    else:
        commands, types, charges = config.bootstrap_potential()
    return run_classical_md(starting_structure(config), commands, types, bootstrap.protocol,
                            timestep=bootstrap.timestep, sample_every=bootstrap.sample_every, seed=config.seed,
                            charges=charges)


def subsample_indices(n_frames: int, every: int | None = None, count: int | None = None) -> list[int]:
    """Frames kept of ``n_frames``: every ``every``-th from the first; or ``count`` spread evenly
    from the first to the last, round(i (n - 1) / (count - 1)); or all of them."""
    if count is not None:
        if count > n_frames:
            raise ValueError(f"data.bootstrap.count={count}: the file holds only {n_frames} frames")
        return [int(i) for i in np.round(np.linspace(0, n_frames - 1, count))]
    return list(range(0, n_frames, every or 1))


def read_bootstrap_file(path: str | os.PathLike, species: list[str], *, every: int | None = None,
                        count: int | None = None, format: str | None = None) -> list[Atoms]:
    """The frames of ``path`` (any file ``ase.io`` reads) kept by :func:`subsample_indices`, as bare
    periodic structures (symbols, positions, cell; ``info["source_frame"]``: index in the file)."""
    frames = ase.io.read(path, index=":", format=format)
    kept = []
    for index in subsample_indices(len(frames), every, count):
        frame = frames[index]
        extra = set(frame.get_chemical_symbols()) - set(species)
        if extra:
            raise ValueError(f"data.bootstrap.path: frame {index} of {path} holds {sorted(extra)}, not in species {species}")
        if not all(frame.pbc) or frame.cell.volume <= 0.0:
            raise ValueError(f"data.bootstrap.path: frame {index} of {path} has no periodic cell (pbc {frame.pbc.tolist()})")
        bare = Atoms(frame.get_chemical_symbols(), positions=frame.positions, cell=frame.cell, pbc=True)
        bare.info = {"source_frame": index}
        kept.append(bare)
    return kept


def label_frames(reference: Reference, frames: list[Atoms]) -> tuple[list[Atoms], list[dict]]:
    """Labelled copies of the frames that succeeded, and a record of those that failed."""
    labelled, failed = [], []
    for index, frame in enumerate(frames):
        label = reference.compute(frame)
        if label.ok:
            labelled.append(label.attach(frame))
        else:
            failed.append({"frame": index, "status": label.status.value, "reason": label.reason})
    return labelled, failed


def split(frames: list[Atoms], test_fraction: float, seed: int, block: int | None = None) -> tuple[list[Atoms], list[Atoms]]:
    """Train/test split of a trajectory by contiguous blocks; the test set is never used in a fit.

    Frames of one MD run 100 fs apart are correlated: a per-frame random split puts neighbours on
    both sides, and the test error measures interpolation, not generalisation. Here the frames
    (in trajectory order) are cut into blocks of ``block`` consecutive frames (default: a tenth
    of the trajectory, at least 2); round(test_fraction x blocks) of them, at least one, evenly
    spaced through the run from a seeded offset (so heating, melt and quench are all tested),
    are the test set.
    """
    n = len(frames)
    block = block or max(2, n // 10)
    starts = list(range(0, n, block))
    n_test = max(1, int(round(test_fraction * len(starts))))
    if n_test >= len(starts):
        raise ValueError(f"{n} frames in {len(starts)} blocks of {block} cannot hold {n_test} test blocks and a training set; "
                         "sample more frames (data.sample_every) or lower data.test_fraction")
    stride = len(starts) / n_test
    offset = np.random.default_rng(seed).uniform(0, stride)
    chosen = sorted({int(offset + k * stride) % len(starts) for k in range(n_test)})
    test_index = {i for b in chosen for i in range(starts[b], min(n, starts[b] + block))}
    return [f for i, f in enumerate(frames) if i not in test_index], [f for i, f in enumerate(frames) if i in test_index]


def short_range_curves(models: dict[str, Path], config: FitConfig) -> dict[str, dict[str, np.ndarray]]:
    """Dimer energy of each model from the scan's r_min to 2.5 A, per pair."""
    out = {}
    calcs = {name: GapCalculator(xml) for name, xml in models.items()}
    for pair in config.aux.pair_cutoffs():
        r = np.round(np.arange(config.aux.scan.r_min, 2.5, 0.02), 6)
        entry: dict[str, np.ndarray] = {"r": r}
        for name, calc in calcs.items():
            energies, _ = pair_curve(calc, pair, r)
            entry[name] = energies - energies[-1]
        out[pair_name(pair)] = entry
    return out


def write_aux_exports(aux: AuxFit, out_dir: Path, species: list[str]) -> Path:
    """The aux's ``pair_style table`` file and the LAMMPS lines that load it (``aux.lammps``)."""
    table = out_dir / "aux.table"
    entries = aux.table.write_lammps(table, species, header=f"from {aux.xml.name}")
    (out_dir / "aux.lammps").write_text("\n".join(table_pair_commands(table, entries)) + "\n")
    return table


def aux_plot_data(aux: AuxFit) -> dict[str, dict]:
    """Per pair: scanned target, core points, the tabulated aux from 0.02 A past the cutoff."""
    out = {}
    for name, target in aux.targets.items():
        r_dense = np.geomspace(0.02, target.r_cut, 400)
        out[name] = {
            "r_scan": target.r_scan, "target": target.scan, "r_core": target.r_core, "core": target.core_energy,
            "r_dense": r_dense, "fit": aux.table.pair(*target.pair).curve(r_dense)[0], "r_cut": target.r_cut,
            "r_scan_min": float(target.r_scan.min()),
        }
    return out


#: an unguarded range wider than this fraction of the data's shortest pair is logged as a warning
UNGUARDED_WARN_FRACTION = 0.1


def unguarded_ranges(cutoffs: dict, frames) -> dict[str, dict]:
    """Per pair: the aux cutoff, the shortest distance of the pair in ``frames`` and the width of
    the range between them, where only the main GAP's extrapolation sets the energy. Measured on
    energies-only SiO2 fits (Vashishta, paper cutoffs): Si-O 1.1 vs 1.33 A; hot runs fell through
    that range into the aux wall, and with cutoffs just below the data's shortest pairs the same
    runs stayed out of it (``benchmarks/survival_sweep.py``, issue 17 note)."""
    from alcgap.explore.distances import shortest_in_frames

    seen = shortest_in_frames(frames) if frames else {}
    return {pair_name(pair): {"aux_cutoff_A": float(rc), "data_shortest_A": round(float(seen[pair]), 4),
                              "width_A": round(max(float(seen[pair]) - float(rc), 0.0), 4)}
            for pair, rc in cutoffs.items() if pair in seen}


def run_fit(config: FitConfig, run_dir: str | os.PathLike) -> dict:
    """Run the whole composite fit in ``run_dir``; return (and write) the summary."""
    find_gap_fit()  # fail before any work if gap_fit is missing
    run_dir = Path(run_dir).absolute()
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    (run_dir / "fit.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 2)
        console.log(f"[bold]{stage}[/] done in {timings[stage]:.1f} s")
        clock = now

    reference = make_reference(config.reference, config.species)
    cutoffs = config.aux.pair_cutoffs()
    scan = config.aux.scan
    console.log(f"reference {reference.name} ({reference.settings_hash()}); dimer scans for {[pair_name(p) for p in cutoffs]}")
    atom_energies = isolated_atom_energies(reference, config.species)
    curves = {p: dimer_curve(reference, p, scan_grid(scan.r_min, rc, scan.step, scan.beyond_cutoff), atom_energies) for p, rc in cutoffs.items()}
    (run_dir / "dimers.json").write_text(json.dumps({
        "atom_energies": atom_energies,
        "curves": {c.name: {"r": c.distances.tolist(), "energy": c.energies.tolist(), "failed": c.failed} for c in curves.values()},
    }, indent=1))
    lap("dimers")

    aux = fit_repulsive_aux(curves, cutoffs, config.aux, run_dir / "aux", threads=config.threads)
    table = write_aux_exports(aux, run_dir / "aux", config.species)
    console.log("aux sparse covariance condition numbers: " + ", ".join(
        f"{name} {c['condition_number']:.3g}" for name, c in aux.conditioning["K_MM"].items()))
    aux_curves_plot(aux_plot_data(aux), run_dir / "plots" / "aux_curves.png")
    lap("aux")

    frames = bootstrap_frames(config, reference)
    labelled, failed = label_frames(reference, frames)
    train, test = split(labelled, config.data.test_fraction, config.seed)
    ase.io.write(run_dir / "train.xyz", train, format="extxyz")
    ase.io.write(run_dir / "test.xyz", test, format="extxyz")
    console.log(f"{len(frames)} MD frames, {len(labelled)} labelled ({len(failed)} failed): {len(train)} train / {len(test)} test")
    unguarded = unguarded_ranges(cutoffs, train)
    for pair, gap in unguarded.items():
        if gap["width_A"] > UNGUARDED_WARN_FRACTION * gap["data_shortest_A"]:
            console.log(f"[yellow]{pair}: neither the aux (cutoff {gap['aux_cutoff_A']} A) nor the training data "
                        f"(shortest {gap['data_shortest_A']} A) covers {gap['width_A']:.2f} A between them: there the "
                        "main GAP extrapolates, and a hot run can fall into a hole before it meets the aux wall. "
                        "A campaign flags and labels pairs there (distances.flag); a single fit does not: raise "
                        f"aux.cutoffs.{pair} towards {gap['data_shortest_A']} A or add data that reaches it[/]")
    lap("data")

    models = {"composite": fit_main_gap(train, config.main, atom_energies, run_dir / "composite", aux_xml=aux.xml,
                                        name="composite.xml", threads=config.threads, seed=config.seed)}
    lap("fit composite")
    if config.traditional:
        models["traditional"] = fit_main_gap(train, config.main, atom_energies, run_dir / "traditional",
                                             name="traditional.xml", threads=config.threads, seed=config.seed)
        lap("fit traditional")

    evaluated = {}
    for name, xml in models.items():
        data = parity_data(GapCalculator(xml), test)
        evaluated[name] = (data, error_metrics(data))
    parity_plot(evaluated, run_dir / "plots" / "parity.png")
    short = short_range_curves(models, config)
    short_range_plot(short, run_dir / "plots" / "short_range.png")
    lap("evaluate")

    summary = {
        "run_dir": str(run_dir),
        "reference": {"name": reference.name, "settings_hash": reference.settings_hash()},
        "atom_energies_eV": atom_energies,
        "n_frames": len(frames), "n_train": len(train), "n_test": len(test), "failed_labels": failed,
        "aux": {name: asdict(check) for name, check in aux.checks.items()},
        "aux_fit": aux.record(),
        "aux_xml": str(aux.xml),
        "models": {name: str(xml) for name, xml in models.items()},
        "aux_table": str(table),
        "test_errors": {name: m.as_dict() for name, (_, m) in evaluated.items()},
        # training frames whose virial went into the fits (main.use_virials, periodic frames with a stress)
        "n_train_virials": sum(VIRIAL_KEY in f.info
                               for f in training_frames(train, use_forces=False, use_virials=config.main.use_virials)),
        # dimer energy relative to 2.5 A at 0.8 x the aux cutoff, per model: the composite must repel
        "short_range_eV": {pair: {name: float(np.interp(0.8 * cutoffs[tuple(pair.split("-"))], c["r"], e))
                                  for name, e in c.items() if name != "r"} for pair, c in short.items()},
        # per pair, the range neither the aux nor the training data covers (the main GAP's alone)
        "unguarded_range": unguarded,
        "timings_s": timings,
        "plots": sorted(str(p) for p in (run_dir / "plots").glob("*.png")),
    }
    from alcgap.workflow.state import relocatable

    # paths in the file relative to the run directory (read it back with read_run_json); the
    # caller gets them as they are
    (run_dir / "summary.json").write_text(json.dumps(relocatable(summary, run_dir), indent=1))
    return summary
