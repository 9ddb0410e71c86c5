"""Iteration 0, the same for ``alcgap fit`` and a campaign: the training cell, isolated atoms and
dimer scans labelled -> the auxiliary (checked, exported); the bootstrap frames (classical MD,
given structures or rattled copies) labelled -> the held-out split; for a campaign, the one
distance table. Each step is a checkpointed stage of ``iter-000/state.json``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from ase import Atoms

from alcgap.analysis.plots import aux_curves_plot
from alcgap.auxiliary import fit_repulsive_aux
from alcgap.auxiliary.exports import aux_plot_data, write_aux_exports
from alcgap.bootstrap import read_bootstrap_file, split
from alcgap.config import AuxSettings, FitConfig, TrainingData
from alcgap.dimers import DimerCurve, dimer_structure, scan_grid
from alcgap.explore.distances import OWN_BOOTSTRAP_MARGIN, STAND_IN_BOOTSTRAP_MARGIN, DistanceTable, base_criteria
from alcgap.md.classical import run_classical_md
from alcgap.reference import make_reference, vashishta_sio2_commands
from alcgap.reference.base import isolated
from alcgap.store import Provenance, atoms_from_row, fingerprint
from alcgap.structures import pair_key, pair_name, rattled_copies, supercell_with_atoms
from alcgap.workflow.context import Run
from alcgap.workflow.stages.label import Labeller
from alcgap.workflow.state import IterationState, read_frames, write_frames_atomic

#: a classical potential for LAMMPS: (pair commands, type order, charges or None)
Potential = tuple[list[str], list[str], dict[str, float] | None]


def starting_structure(data: TrainingData) -> Atoms:
    """The training cell: data.structure's crystal repeated to data.n_atoms (the most cubic supercell)."""
    unit = data.crystal()
    return supercell_with_atoms(unit, data.n_atoms or len(unit))


def bootstrap_potential(config: FitConfig) -> Potential | None:
    """The classical potential of a classical bootstrap: ``data.bootstrap.pair_commands``, else
    the reference's own when it is classical, else :meth:`FitConfig.bootstrap_potential`."""
    if config.data.bootstrap.kind != "classical":
        return None
    if config.data.bootstrap.pair_commands is None and config.reference.kind == "lammps":
        reference = make_reference(config.reference, config.species)
        return reference.pair_commands, reference.species, getattr(reference, "charges", None)
    return config.bootstrap_potential()


def bootstrap_frames(data: TrainingData, species: list[str], seed: int, potential: Potential | None) -> list[Atoms]:
    """The unlabelled frames of iteration 0, made as ``data.bootstrap`` says: classical MD of the
    starting cell with ``potential``, a subsample of a file, or rattled copies of the starting cell."""
    bootstrap = data.bootstrap
    if bootstrap.kind == "structures":
        return read_bootstrap_file(bootstrap.path, species, every=bootstrap.every, count=bootstrap.count,
                                   format=bootstrap.format)
    if bootstrap.kind == "rattle":
        return rattled_copies(starting_structure(data), bootstrap.temperatures, bootstrap.spring, bootstrap.copies,
                              bootstrap.max_strain, seed if bootstrap.seed is None else bootstrap.seed)
    commands, types, charges = potential
    return run_classical_md(starting_structure(data), commands, types, bootstrap.protocol, timestep=bootstrap.timestep,
                            sample_every=bootstrap.sample_every, seed=seed, charges=charges)


# -- apps --------------------------------------------------------------------------------------

def bootstrap_md(data: TrainingData, species: list[str], seed: int, potential: Potential | None, out_path: str) -> str:
    """The bootstrap frames (:func:`bootstrap_frames`) written to ``out_path``."""
    write_frames_atomic(out_path, bootstrap_frames(data, species, seed, potential))
    return out_path


def fit_aux(aux: AuxSettings, species: list[str], curves: dict, out_dir: str, threads: int | None) -> dict:
    """Fit and check the repulsive auxiliary from dimer curves; write its LAMMPS table and the
    plot of the aux against its target (``plots/aux_curves.png`` beside ``out_dir``)."""
    dimer_curves = {}
    for name, curve in curves.items():
        pair = pair_key(*name.split("-"))
        dimer_curves[pair] = DimerCurve(pair, np.array(curve["r"]), np.array(curve["energy"]), curve.get("failed", {}))
    out = Path(out_dir)
    fitted = fit_repulsive_aux(dimer_curves, aux.pair_cutoffs(), aux, out, threads=threads)
    table = write_aux_exports(fitted, out, species)
    plot = aux_curves_plot(aux_plot_data(fitted), out.parent / "plots" / "aux_curves.png")
    return {"aux_xml": str(fitted.xml), "aux_table": str(table), "plot": str(plot),
            "checks": {name: asdict(c) for name, c in fitted.checks.items()}, "record": fitted.record()}


# -- the stages --------------------------------------------------------------------------------

def run_bootstrap(run: Run, *, distance_table: bool) -> None:
    """Iteration 0 to its last stage (a campaign's distance table only with ``distance_table``)."""
    config, state = run.config, run.iteration(0)
    if not (state.dir / "start.xyz").exists():  # every exploration run starts from this cell
        write_frames_atomic(state.dir / "start.xyz", [starting_structure(config.data)])
    labeller = Labeller(run)
    run.stage(state, "dimers", lambda: dimers(run, labeller))
    if run.potential == "plain":  # no aux: the main GAP alone learns the short range
        run.stage(state, "aux", lambda: {"aux_xml": None, "aux_table": None, "skipped": "potential: plain"})
    else:
        run.stage(state, "aux", lambda: run.apps.fit_aux(config.aux, config.species, state.get("dimers")["curves"],
                                                         str(state.dir / "aux"), run.threads).result())
    frames_path = state.dir / "bootstrap.xyz"
    run.stage(state, "bootstrap", lambda: {"frames": run.apps.bootstrap_md(
        config.data, config.species, config.seed, bootstrap_potential(config), str(frames_path)).result()})
    frames = read_frames(frames_path)
    run.stage(state, "label", lambda: labeller.label_all(frames, [Provenance(0, "bootstrap")] * len(frames)))
    run.stage(state, "split", lambda: held_out_split(run, frames))
    if distance_table:
        run.stage(state, "distances", lambda: distances(run, frames))


def dimers(run: Run, labeller: Labeller) -> dict:
    """Isolated atoms and, for a composite, the dimer scans up to each aux cutoff, labelled; the
    binding curves E(r) - E(a) - E(b) per pair (failed points named)."""
    config, scan = run.config, run.config.aux.scan
    structures, provenances, keys = [], [], []
    for symbol in config.species:
        structures.append(isolated(symbol))
        provenances.append(Provenance(0, "isolated"))
        keys.append(("atom", symbol, 0.0))
    scans = config.aux.pair_cutoffs().items() if run.potential == "composite" else ()  # plain: the atoms only
    for pair, r_cut in scans:
        for r in scan_grid(scan.r_min, r_cut, scan.step, scan.beyond_cutoff):
            structures.append(dimer_structure(pair, float(r)))
            provenances.append(Provenance(0, "dimer", min_distance=float(r)))
            keys.append(("dimer", pair, float(r)))
    labeller.label_all(structures, provenances)
    energies = {}
    for atoms, key in zip(structures, keys):
        row = run.store.reusable_row(atoms, run.settings_hash)
        energies[key] = row.energy if row is not None and row.status == "ok" else None
    atom_energies = {s: energies[("atom", s, 0.0)] for s in config.species}
    missing = [s for s, e in atom_energies.items() if e is None]
    if missing:
        raise RuntimeError(f"isolated-atom labels failed for {missing}: see {run.run_dir / 'data.db'} (status, label_reason)")
    curves: dict[str, dict] = {}
    for (kind, pair, r), energy in energies.items():
        if kind != "dimer":
            continue
        curve = curves.setdefault(pair_name(pair), {"r": [], "energy": [], "failed": {}})
        if energy is None:
            curve["failed"][str(r)] = "label failed (see data.db)"
        else:
            curve["r"].append(r)
            curve["energy"].append(energy - atom_energies[pair[0]] - atom_energies[pair[1]])
    return {"atom_energies": atom_energies, "curves": curves}


def bootstrap_labels(run: Run, frames: list[Atoms] | None = None) -> list[Atoms]:
    """The OK labels of the bootstrap frames, in trajectory order."""
    if frames is None:
        frames = read_frames(run.iteration(0).dir / "bootstrap.xyz")
    by_key = {row.fingerprint: row for row in run.store.rows(origin="bootstrap", settings_hash=run.settings_hash)}
    return [atoms_from_row(by_key[key]) for key in (fingerprint(f) for f in frames) if key in by_key]


def held_out_split(run: Run, frames: list[Atoms]) -> dict:
    """The held-out set, fixed once: contiguous blocks of the bootstrap trajectory."""
    train, test = split(bootstrap_labels(run, frames), run.config.data.test_fraction, run.config.seed)
    return {"test": [a.info["fingerprint"] for a in test], "train": [a.info["fingerprint"] for a in train]}


def bootstrap_split(run: Run) -> tuple[list[Atoms], list[Atoms]]:
    """(train, test) of the labelled bootstrap frames, as iteration 0's split stage fixed them."""
    test_keys = set(IterationState(run.run_dir, 0).get("split")["test"])
    labelled = bootstrap_labels(run)
    return ([a for a in labelled if a.info["fingerprint"] not in test_keys],
            [a for a in labelled if a.info["fingerprint"] in test_keys])


def distances(run: Run, frames: list[Atoms]) -> dict:
    """The one distance table (flags, clustering verdict, collapse) from the labelled bootstrap frames."""
    config = run.config
    shells = dict(base_criteria(config.species).neighbour_cutoff)
    shells.update((config.judge.clustering or {}).get("neighbour_cutoff", {}))
    margin = config.distances.cluster_margin
    if margin is None:  # see DistanceSettings.cluster_margin
        # the wider margin only when a classical potential other than the reference made the
        # bootstrap geometry (its shortest pairs are the stand-in's, not the reference's)
        potential = config.bootstrap_potential()
        reference = (config.reference.pair_commands or vashishta_sio2_commands()) if config.reference.kind == "lammps" else None
        stand_in = potential is not None and potential[0] != reference
        margin = STAND_IN_BOOTSTRAP_MARGIN if stand_in else OWN_BOOTSTRAP_MARGIN
    table = DistanceTable.from_data(bootstrap_labels(run, frames), config.species, data_margin=config.distances.data_margin,
                                    given=config.distances.flag, cluster_margin=margin,
                                    collapse_fraction=config.distances.collapse_fraction, shells=shells)
    run.log(f"distance table: {table.describe()}")
    return {"table": table.as_dict()}


def frames_of(config: FitConfig) -> list[Atoms]:
    """The bootstrap frames a config makes (:func:`bootstrap_frames` with its own potential)."""
    return bootstrap_frames(config.data, config.species, config.seed, bootstrap_potential(config))
