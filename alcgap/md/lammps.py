"""The MD driver: ASE Atoms in, LAMMPS integrates, frames and a verdict out.

One driver for every force field (classical pair styles, GAP via ``pair_style quip`` or via
``fix external``, see :mod:`alcgap.md.forces`), serial or across MPI ranks: every rank calls
:func:`run_md` with the same arguments (that is what ``python -m alcgap.md.task`` does under
``mpiexec``); rank 0 writes the files.

Files in ``output_dir``: ``in.lammps`` (the commands as run; atoms in ``start.data``),
``log.lammps`` (thermo output), ``trajectory.xyz`` (every ``sample_every`` steps: energy,
forces, velocities, per-atom variance), ``flagged.xyz`` (frames the monitors flagged, with
their reasons), ``monitor.jsonl`` (one line per monitored step) and ``result.json``.
Units: fs, K, bar (LAMMPS metal), eV, Angstrom.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, atomic_numbers

from alcgap.calculator import VARIANCE
from alcgap.lammps_module import lammps_class, open_lammps
from alcgap.md.forces import ForceBackend, ForceField, lammps_cell, make_backend
from alcgap.md.monitors import Monitor, MonitorSettings, Verdict
from alcgap.md.protocols import Segment, total_steps
from alcgap.structures import lammps_path, pair_name

#: econserve: etotal plus the energy the thermostat/barostat exchanged (its drift is the integration error)
THERMO = "step temp pe ke etotal econserve press vol"


@dataclass
class MDResult:
    """What a run did. ``stopped_early``/``stop_reason`` say why it ended before its last step."""

    force_backend: str
    n_atoms: int
    n_ranks: int
    steps_requested: int
    steps_done: int = 0
    n_frames: int = 0
    n_flagged: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None
    wall_time_s: float = 0.0
    seconds_per_step: float = 0.0
    #: shortest distance seen per species pair over the monitored steps (Angstrom)
    min_distances: dict[str, float] = field(default_factory=dict)
    #: largest per-atom predicted variance seen on the monitored steps (eV^2)
    max_variance: float | None = None
    #: the clustering verdict on every monitored step: the first step judged clustered (None:
    #: every monitored frame clean), its finding, and how many monitored frames were clustered
    first_clustered_step: int | None = None
    first_clustered: str | None = None
    n_clustered: int = 0
    n_monitored: int = 0
    #: flagged atoms summed over the monitored frames (in a short pair, over the variance
    #: threshold, or in a cluster): per frame and atom, the measure of how much a model does not know
    n_flagged_atoms: int = 0
    #: temperature actually reached: per protocol segment, its target range and the mean of the
    #: observed temperature (K) over its monitored and sampled steps; and the highest seen
    segment_temperatures: list[dict] = field(default_factory=list)
    peak_temperature: float | None = None
    #: thermo of the last step: temp (K), pe, ke, etotal (eV), press (bar), vol (A^3)
    final_thermo: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    output_dir: str | None = None
    #: the checkpoint step this attempt continued from (None: it ran from step 0)
    resumed_from_step: int | None = None
    #: with an adaptive timestep (max_displacement): the smallest timestep LAMMPS took, seen at
    #: the end of each run chunk (fs), and the time the run covered (fs)
    smallest_timestep_fs: float | None = None
    elapsed_fs: float | None = None
    frames: list[Atoms] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frames"}

    def write(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


# --------------------------------------------------------------------------- LAMMPS set-up


def setup_commands(atoms: Atoms, species: Sequence[str], atom_style: str = "atomic") -> list[str]:
    """Units, atom style ("charge" for a Coulomb model), box (from ASE's Prism: LAMMPS'
    lower-triangular frame) and masses."""
    from ase.calculators.lammps import Prism

    # Python floats print the shortest string that reads back exactly
    xhi, yhi, zhi, xy, xz, yz = (float(v) for v in Prism(atoms.cell.array).get_lammps_prism())
    commands = [
        "units metal",
        f"atom_style {atom_style}",
        "atom_modify map array sort 0 0.0",
        "boundary p p p",
        f"region cell prism 0 {xhi} 0 {yhi} 0 {zhi} {xy} {xz} {yz} units box",
        f"create_box {len(species)} cell",
    ]
    commands += [f"mass {i} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(species, start=1)]
    return commands


def create_atoms(lmp, atoms: Atoms, species: Sequence[str]) -> None:
    """Every rank passes all atoms; each keeps those in its sub-domain."""
    from ase.calculators.lammps import Prism

    unknown = set(atoms.get_chemical_symbols()) - set(species)
    if unknown:
        raise ValueError(f"atoms contain {sorted(unknown)}, not among the force field's species {list(species)}")
    positions = Prism(atoms.cell.array).vector_to_lammps(atoms.positions, wrap=True)
    types = [list(species).index(s) + 1 for s in atoms.get_chemical_symbols()]
    # explicit ids: passing None segfaults in the 2025.7 wheel
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.flatten().tolist())


def gather_frame(lmp, species: Sequence[str]) -> Atoms:
    """The current configuration as ASE Atoms in LAMMPS' frame, ordered by atom id (collective:
    every rank calls it and gets the whole frame): positions, velocities, LAMMPS' total forces."""
    n = lmp.get_natoms()
    as_array = lambda name, kind, count: np.ctypeslib.as_array(lmp.gather_atoms(name, kind, count))  # noqa: E731
    types = as_array("type", 0, 1)
    cell, origin = lammps_cell(lmp)
    atoms = Atoms([species[t - 1] for t in types], positions=as_array("x", 1, 3).reshape(n, 3) - origin,
                  cell=cell, pbc=True)
    # metal units: A/ps -> ASE's A per ASE time unit
    atoms.set_velocities(as_array("v", 1, 3).reshape(n, 3) / (1000.0 * units.fs))
    atoms.arrays["lammps_forces"] = as_array("f", 1, 3).reshape(n, 3)
    atoms.wrap()
    return atoms


def ensemble_fix(segment: Segment, timestep: float) -> str:
    t_damp = segment.t_damp * timestep / 1000.0  # ps
    if segment.ensemble == "nve":
        return "fix alcgap_md all nve"
    if segment.ensemble == "nvt":
        return f"fix alcgap_md all nvt temp {segment.t_start} {segment.t_end} {t_damp}"
    p_damp = segment.p_damp * timestep / 1000.0
    return (f"fix alcgap_md all npt temp {segment.t_start} {segment.t_end} {t_damp} "
            f"iso {segment.pressure} {segment.pressure} {p_damp}")


def _next_stop(step: int, stop: int, *periods: int | None) -> int:
    candidates = [stop] + [(step // p + 1) * p for p in periods if p]
    return min(candidates)


# --------------------------------------------------------------------------- the run


class _Run:
    """State of one run on one rank; rank 0 owns the files."""

    def __init__(self, lmp, backend: ForceBackend, species, comm, workdir: Path | None, monitor: Monitor | None,
                 keep_frames: bool):
        self.lmp, self.backend, self.species, self.comm = lmp, backend, list(species), comm
        #: where the files go (every rank knows; LAMMPS commands that write are collective)
        self.workdir = workdir
        #: this rank writes the Python-side files
        self.writer = workdir is not None and comm.rank == 0
        self.monitor, self.keep_frames = monitor, keep_frames
        self.input_lines: list[str] = []
        #: (folder, every N steps, run signature) when the run writes checkpoints
        self.checkpoints: tuple[Path, int, str] | None = None
        #: Angstrom per step at most (fix dt/reset), or None: a fixed timestep
        self.max_displacement: float | None = None
        #: eV of kinetic energy gained or lost by any atom in one step at most (fix dt/reset emax)
        self.max_energy_change: float | None = None
        #: wall time inside LAMMPS "run" commands (MD steps) and in frames + monitors (s)
        self.clock = {"run_s": 0.0, "run_cpu_s": 0.0, "observe_s": 0.0}

    def command(self, line: str) -> None:
        self.input_lines.append(line)
        self.lmp.command(line)

    def thermo(self) -> dict[str, float]:
        return {key: float(self.lmp.get_thermo(key)) for key in THERMO.split()[1:]}

    def frame(self, step: int, want_variance: bool) -> Atoms:
        atoms = gather_frame(self.lmp, self.species)
        thermo = self.thermo()
        forces = atoms.arrays.pop("lammps_forces")
        atoms.calc = SinglePointCalculator(atoms, energy=thermo["pe"], free_energy=thermo["pe"], forces=forces)
        atoms.info.update(md_step=step, temperature=thermo["temp"], pressure_bar=thermo["press"],
                          kinetic_energy=thermo["ke"], total_energy=thermo["etotal"], conserved_energy=thermo["econserve"],
                          time_fs=float(self.lmp.extract_global("atime")) * 1000.0)
        if want_variance and self.backend.has_variance:
            atoms.arrays[VARIANCE] = np.array(self.backend.variance(step, atoms))
        return atoms

    def write(self, name: str, atoms: Atoms) -> None:
        if self.writer:
            # parallel=False: ASE's default would broadcast over MPI_COMM_WORLD from this one rank,
            # and the other ranks' next collective would receive it
            ase.io.write(self.workdir / name, atoms, format="extxyz", append=True, parallel=False)

    def judge(self, atoms: Atoms, step: int, result: MDResult) -> str | None:
        """Monitors on rank 0; the verdict is broadcast so every rank stops at the same step."""
        verdict: Verdict | None = self.monitor.check(atoms, step) if self.comm.rank == 0 else None
        verdict = self.comm.bcast(verdict, root=0)
        for pair, r in verdict.min_distances.items():
            key = pair_name(pair)
            result.min_distances[key] = min(r, result.min_distances.get(key, np.inf))
        if verdict.max_variance is not None:
            result.max_variance = max(verdict.max_variance, result.max_variance or 0.0)
        result.n_monitored += 1
        result.n_flagged_atoms += verdict.n_flagged_atoms
        if verdict.clustered:
            result.n_clustered += 1
            if result.first_clustered_step is None:
                result.first_clustered_step, result.first_clustered = step, verdict.clustered
        if verdict.stop_reason:
            verdict.flag_reasons.append(f"stop: {verdict.stop_reason}")
        if verdict.flag_reasons:
            flagged = verdict.annotate(atoms.copy())
            flagged.calc = atoms.calc
            self.write("flagged.xyz", flagged)
            result.n_flagged += 1
        if self.writer:
            line = {"step": step, "time_fs": atoms.info.get("time_fs"), "temperature": atoms.info.get("temperature"),
                    "conserved_eV": atoms.info.get("conserved_energy"), "max_variance": verdict.max_variance,
                    "clustered": verdict.clustered, "flags": verdict.flag_reasons,
                    "min_distances": {pair_name(p): r for p, r in verdict.min_distances.items()}}
            with open(self.workdir / "monitor.jsonl", "a") as stream:
                stream.write(json.dumps(line) + "\n")
        return verdict.stop_reason


def run_md(
    atoms: Atoms,
    force_field: ForceField,
    segments: Sequence[Segment],
    *,
    timestep: float = 1.0,
    seed: int = 1,
    sample_every: int = 100,
    monitor: MonitorSettings | None = None,
    output_dir=None,
    thermo_every: int | None = None,
    keep_frames: bool = False,
    velocities: bool = False,
    charges: dict[str, float] | None = None,
    checkpoint_every: int | None = None,
    max_displacement: float | None = None,
    max_energy_change: float | None = None,
    comm=None,
) -> MDResult:
    """Run ``segments`` from ``atoms`` (velocities drawn at the first segment's ``t_start`` with
    ``seed``; with ``velocities=True`` the atoms' own), timestep in fs. Returns an :class:`MDResult`; ``keep_frames`` also returns the
    sampled frames in memory. With ``output_dir=None`` nothing is kept on disk. ``charges``: a
    fixed charge (e) per species for a Coulomb model (atom_style charge); the cell must be neutral.

    Collective over ``comm`` (default MPI.COMM_WORLD): every rank calls it with the same
    arguments. A run stops early -- and says why -- when a monitor sees a collapse or non-finite
    energies, or LAMMPS stops with an error (lost atoms, a pair inside the aux table).

    ``checkpoint_every`` (steps, with ``output_dir``): a checkpoint every that many steps in
    ``output_dir/checkpoint/`` (see :func:`write_checkpoint`); a run started again with the same
    arguments continues from the last one, on any number of ranks, and its files continue
    without a repeated or a missing frame.

    ``max_displacement`` (Angstrom): an adaptive timestep (LAMMPS ``fix dt/reset``, checked every
    step): no atom moves more than this in one step; the timestep never exceeds ``timestep``, so
    a run whose atoms stay slower is integrated exactly as without it. A hot run that reaches a
    stiff repulsive wall (the aux) is then integrated through it instead of exploding.
    ``max_energy_change`` (eV, with ``max_displacement``): also no atom's kinetic energy changes by
    more than this in one step (``fix dt/reset ... emax``). The displacement bound alone lets an
    atom move 0.1 A into a wall that rises by tens of eV over that distance; the energy bound
    shortens the step there, where the wall's curvature, not the atom's speed, limits it.
    """
    lammps_class()  # libmpi (MPICH ABI) loaded before mpi4py picks one
    from mpi4py import MPI

    comm = comm or MPI.COMM_WORLD
    clock = time.perf_counter()
    temporary = None
    if output_dir is None:
        temporary = tempfile.mkdtemp(prefix="alcgap-md-") if comm.rank == 0 else None
        workdir = Path(comm.bcast(temporary, root=0))
    else:
        # this attempt writes into a folder of its own and is promoted into output_dir when it
        # ends (promote_attempt), so two attempts (a stale worker's and a resumed one's) never
        # write into one file; a killed attempt leaves only its hidden folder, no result.json
        final = Path(output_dir).resolve()
        attempt = None
        if comm.rank == 0:
            final.mkdir(parents=True, exist_ok=True)
            for name in OUTPUTS:
                (final / name).unlink(missing_ok=True)
            attempt = tempfile.mkdtemp(prefix=".attempt-", dir=final)
        workdir = Path(comm.bcast(attempt, root=0))
    resume = signature = None
    if output_dir is not None:
        if checkpoint_every:
            signature = run_signature(atoms, force_field, segments, timestep, seed, sample_every, monitor, charges)
            resume = comm.bcast(load_checkpoint(final, signature, workdir) if comm.rank == 0 else None, root=0)
        if comm.rank == 0:
            for old in final.glob(".attempt-*"):  # of attempts that were killed, now read
                if old != workdir:
                    shutil.rmtree(old, ignore_errors=True)
    species = list(force_field.species)
    if charges is not None:
        missing = set(atoms.get_chemical_symbols()) - set(charges)
        if missing:
            raise ValueError(f"charges: no charge for {sorted(missing)}")
        net = sum(charges[s] for s in atoms.get_chemical_symbols())
        if abs(net) > 1e-6:
            raise ValueError(f"charges {charges}: the cell carries a net charge of {net:+.6g} e; a periodic cell must be neutral")
    lmp = open_lammps(log_file=workdir / "log.lammps" if output_dir is not None else None, comm=comm)
    result = MDResult(force_backend="", n_atoms=len(atoms), n_ranks=comm.size, steps_requested=total_steps(segments),
                      output_dir=str(final) if output_dir is not None else None)
    try:
        backend = make_backend(force_field, lmp, comm, workdir)
        result.force_backend = backend.name
        run = _Run(lmp, backend, species, comm, workdir if output_dir is not None else None,
                   Monitor(monitor) if monitor else None, keep_frames)
        if output_dir is not None and checkpoint_every:
            run.checkpoints = (final / CHECKPOINTS, int(checkpoint_every), signature)
        run.max_displacement = max_displacement
        run.max_energy_change = max_energy_change if max_displacement else None
        if resume is not None:
            restore_result(result, resume)
        _integrate(run, atoms, segments, timestep=timestep, seed=seed, sample_every=sample_every,
                   thermo_every=thermo_every or sample_every, result=result, velocities=velocities, charges=charges,
                   resume=resume)
        result.timings = {key: round(value, 6) for key, value in {**run.clock, **backend.timings()}.items()}
    except BaseException:
        if output_dir is not None and comm.rank == 0:  # what it wrote up to the failure stays readable
            lmp.close()
            promote_attempt(workdir, final)
        raise
    finally:
        lmp.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    result.wall_time_s = time.perf_counter() - clock
    result.seconds_per_step = result.wall_time_s / max(1, result.steps_done)
    if output_dir is not None and comm.rank == 0:
        result.write(workdir / "result.json")
        promote_attempt(workdir, final)
        shutil.rmtree(final / CHECKPOINTS, ignore_errors=True)  # the run ended: nothing to continue
    return result


# --------------------------------------------------------------------------- checkpoints

#: checkpoints of a run, inside its output_dir: ``step-NNNNNNNNN/`` folders and ``latest.json``
CHECKPOINTS = "checkpoint"
#: the files of a run up to a checkpoint: kept in the attempt's folder (they only grow), their
#: sizes recorded, cut back to those sizes by the attempt that continues
_KEPT = ("trajectory.xyz", "flagged.xyz", "monitor.jsonl", "start.data", "aux.table")
#: MDResult fields that describe the run so far (restored on resume); the rest is per attempt
_RESUMED = ("steps_done", "n_frames", "n_flagged", "min_distances", "max_variance", "first_clustered_step",
            "first_clustered", "n_clustered", "n_monitored", "n_flagged_atoms", "segment_temperatures",
            "peak_temperature")


def run_signature(atoms, force_field, segments, timestep, seed, sample_every, monitor, charges) -> str:
    """What makes two runs the same run: a checkpoint of another one is never continued."""
    import hashlib

    def portable(value):  # the same run after its run directory moved: file names, not paths
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        if isinstance(value, dict):
            return {key: portable(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [portable(item) for item in value]
        return Path(value).name if isinstance(value, str) and os.sep in value else value

    xml = getattr(force_field, "xml", None)
    model = Path(xml).stat().st_size if xml and Path(xml).exists() else None
    data = {"symbols": atoms.get_chemical_symbols(), "positions": np.round(atoms.positions, 8).tolist(),
            "cell": np.round(atoms.cell.array, 8).tolist(), "force_field": portable(force_field), "model_bytes": model,
            "segments": [repr(s) for s in segments], "timestep": timestep, "seed": seed,
            "sample_every": sample_every, "monitor": portable(monitor), "charges": charges}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_checkpoint(run: "_Run", step: int, segment: int, result: MDResult) -> None:
    """Collective. LAMMPS' ``write_restart`` (positions, velocities, box, the thermostat's and
    barostat's own state) into a new ``step-N`` folder, with the step, the protocol position, the
    run's figures so far and the sizes of its files (which stay in the attempt's folder: nothing
    is copied, however long the trajectory), then ``latest.json`` pointing at it (an atomic rename:
    a kill at any moment leaves the previous checkpoint)."""
    folder, _, signature = run.checkpoints
    name = f"step-{step:09d}"
    staging = folder / f".{name}"
    if run.comm.rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    run.comm.Barrier()
    run.lmp.command(f"write_restart {lammps_path(staging / 'restart.lmp')}")
    if run.comm.rank == 0:
        sizes = {kept: (run.workdir / kept).stat().st_size for kept in _KEPT if (run.workdir / kept).exists()}
        state = {"step": step, "segment": segment, "signature": signature, "attempt": run.workdir.name,
                 "sizes": sizes, "result": {key: getattr(result, key) for key in _RESUMED},
                 "input_lines": run.input_lines}
        (staging / "state.json").write_text(json.dumps(state, indent=1))
        shutil.rmtree(folder / name, ignore_errors=True)
        os.replace(staging, folder / name)
        pointer = folder / ".latest.json"
        pointer.write_text(json.dumps({"checkpoint": name, "step": step}))
        os.replace(pointer, folder / "latest.json")
        for old in folder.glob("step-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    run.comm.Barrier()


def load_checkpoint(final: Path, signature: str, attempt: Path) -> dict | None:
    """Rank 0: the last checkpoint of this run in ``final/checkpoint`` (None: none, one of another
    run, or the attempt it belongs to is gone), its files cut back to the checkpoint's step into
    the new attempt's folder."""
    folder = final / CHECKPOINTS
    try:
        latest = json.loads((folder / "latest.json").read_text())
        where = folder / latest["checkpoint"]
        state = json.loads((where / "state.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    source = final / state.get("attempt", "")
    if state.get("signature") != signature or not (where / "restart.lmp").exists() or not source.is_dir():
        return None
    if any(not (source / kept).exists() or (source / kept).stat().st_size < size for kept, size in state["sizes"].items()):
        return None
    for kept, size in state["sizes"].items():
        with open(source / kept, "rb") as reading, open(attempt / kept, "wb") as writing:
            writing.write(reading.read(size))
    # the continuing attempt owns the checkpoint from now on: its files are the ones it grows
    state["attempt"] = attempt.name
    (where / ".state.json").write_text(json.dumps(state, indent=1))
    os.replace(where / ".state.json", where / "state.json")
    return {**state, "restart": str(where / "restart.lmp")}


def flagged_to_checkpoint(final: Path) -> Path | None:
    """For a run that left no result (a rank killed, a node lost): the frames it flagged up to
    its last checkpoint, the part of its attempt's ``flagged.xyz`` that checkpoint vouches for,
    copied to ``flagged-to-checkpoint.xyz`` in ``final``; None without such a checkpoint."""
    folder = Path(final) / CHECKPOINTS
    try:
        latest = json.loads((folder / "latest.json").read_text())
        state = json.loads((folder / latest["checkpoint"] / "state.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    size = state.get("sizes", {}).get("flagged.xyz")
    source = Path(final) / state.get("attempt", "") / "flagged.xyz"
    if not size or not source.is_file() or source.stat().st_size < size:
        return None
    out = Path(final) / "flagged-to-checkpoint.xyz"
    with open(source, "rb") as reading, open(out.with_suffix(".part"), "wb") as writing:
        writing.write(reading.read(size))
    os.replace(out.with_suffix(".part"), out)
    return out


def restore_result(result: MDResult, resume: dict) -> None:
    for key, value in resume["result"].items():
        setattr(result, key, value)
    result.resumed_from_step = resume["step"]


#: the files of a run in output_dir; result.json is promoted last: once it is there, the rest is
OUTPUTS = ("in.lammps", "start.data", "log.lammps", "aux.table", "trajectory.xyz", "flagged.xyz", "monitor.jsonl",
           "result.json")


def promote_attempt(attempt: Path, final: Path) -> None:
    """Move an attempt's files into ``final`` (each an atomic rename, ``result.json`` last) and
    remove the attempt's folder."""
    if not attempt.is_dir():
        return
    try:
        names = sorted((p.name for p in attempt.iterdir()), key=lambda name: name == "result.json")
    except FileNotFoundError:  # another rank that saw the same one-rank error promoted it first
        return
    for name in names:
        try:
            os.replace(attempt / name, final / name)
        except FileNotFoundError:
            pass
    shutil.rmtree(attempt, ignore_errors=True)


def _integrate(run: _Run, atoms: Atoms, segments: Sequence[Segment], *, timestep: float, seed: int,
               sample_every: int, thermo_every: int, result: MDResult, velocities: bool = False,
               charges: dict[str, float] | None = None, resume: dict | None = None) -> None:
    from lammps.core import MPIAbortException

    lmp, comm = run.lmp, run.comm
    atom_style = "atomic" if charges is None else "charge"
    if resume is not None:
        # positions, velocities, box, masses, charges and the thermostat's state; atom sorting is
        # not in a restart file and would reorder the per-rank atoms (and the force sums)
        lmp.command(f"read_restart {lammps_path(resume['restart'])}")
        lmp.command("atom_modify sort 0 0.0")
        run.input_lines = list(resume["input_lines"]) + [f"# continued at step {resume['step']} from {resume['restart']}"]
    else:
        for line in setup_commands(atoms, run.species, atom_style):
            lmp.command(line)
        create_atoms(lmp, atoms, run.species)
        for i, symbol in enumerate(run.species, start=1):
            if charges is not None and symbol in charges:
                lmp.command(f"set type {i} charge {charges[symbol]}")  # start.data keeps them
        if run.workdir is not None:
            lmp.command(f"write_data {lammps_path(run.workdir / 'start.data')} nocoeff")
        # in.lammps reads the atoms back from start.data, so a user can rerun it by hand
        run.input_lines += [line for line in setup_commands(atoms, run.species, atom_style)[:4]] + ["read_data start.data"]
    for line in run.backend.input_lines():
        run.command(line)
    run.backend.attach(lmp, run.species)
    every = run.monitor.settings.every if run.monitor else None
    run.backend.set_variance_steps(lambda s: bool(every and s % every == 0) or s % sample_every == 0)
    run.command(f"timestep {timestep / 1000.0}")
    if resume is not None:
        pass  # the restart holds the velocities
    elif velocities:
        from ase.calculators.lammps import Prism

        # ASE velocity units -> A/ps (metal), rotated into LAMMPS' frame like the positions
        v = Prism(atoms.cell.array).vector_to_lammps(atoms.get_velocities()) * (1000.0 * units.fs)
        lmp.scatter_atoms("v", 1, 3, (ctypes.c_double * v.size)(*v.ravel()))
    else:
        run.command(f"velocity all create {segments[0].t_start} {seed} dist gaussian mom yes rot no")
    run.command(f"thermo_style custom {THERMO}")
    run.command(f"thermo {thermo_every}")
    if run.max_displacement:
        # never longer than the nominal step, never shorter than 1/1000 of it
        ps = timestep / 1000.0
        emax = f" emax {run.max_energy_change}" if run.max_energy_change else ""
        run.command(f"fix alcgap_dt all dt/reset 1 {ps / 1000.0} {ps} {run.max_displacement}{emax} units box")
        result.smallest_timestep_fs = timestep
        result.elapsed_fs = 0.0
    step = target = resume["step"] if resume is not None else 0
    checkpoint_every = run.checkpoints[1] if run.checkpoints else None
    last = total_steps(segments)
    try:
        if resume is None:
            run.command("run 0 post no")
            run.backend.check()
            if run.monitor and _observe(run, 0, sample=False, monitored=True, result=result, segment=None):
                return
        begin = 0
        for index, segment in enumerate(segments):
            start, stop = begin, begin + segment.steps
            begin = stop
            if stop <= step:
                continue  # done before the checkpoint this run continues from
            # the same fix ID and style after read_restart takes back its saved state
            run.command(ensemble_fix(segment, timestep))
            first = True
            while step < stop:
                target = _next_stop(step, stop, sample_every, every, checkpoint_every)
                # setup (pre yes) is needed on the first run after a fix changes; skipping it segfaults
                pre = "yes" if first else "no"
                first = False
                tick, tick_cpu = time.perf_counter(), time.process_time()
                run.command(f"run {target - step} start {start} stop {stop} pre {pre} post no")
                run.clock["run_s"] += time.perf_counter() - tick
                run.clock["run_cpu_s"] += time.process_time() - tick_cpu
                run.backend.check()
                if run.max_displacement:
                    dt_fs = float(lmp.extract_global("dt")) * 1000.0
                    result.smallest_timestep_fs = min(result.smallest_timestep_fs or dt_fs, dt_fs)
                    result.elapsed_fs = float(lmp.extract_global("atime")) * 1000.0
                step = result.steps_done = target
                sample, monitored = step % sample_every == 0, bool(every) and step % every == 0
                if (sample or monitored) and _observe(run, step, sample, monitored, result, (index, segment, step - start)):
                    return
                if checkpoint_every and step % checkpoint_every == 0 and step < last:
                    write_checkpoint(run, step, index, result)
            # before the unfix: LAMMPS' econserve still reads the removed thermostat (a segfault)
            result.final_thermo = run.thermo()
            run.command("unfix alcgap_md")
    except MPIAbortException as err:
        # an error on one rank only (e.g. "Pair distance < table inner cutoff"): the other ranks
        # wait in a collective forever, so this rank reports and aborts the whole job
        result.stopped_early, result.stop_reason = True, f"LAMMPS error in steps {step}-{target}: {err.message}"
        if comm.size > 1:
            if result.output_dir and run.workdir is not None:
                # this rank alone knows: it promotes the attempt (rank 0's open files move with it);
                # where the pair straddles two ranks' domains both may get here at once
                try:
                    (run.workdir / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
                except OSError:
                    pass
                promote_attempt(run.workdir, Path(result.output_dir))
            comm.Abort(3)
    except Exception as err:  # LAMMPS errors seen by all ranks, e.g. "Lost atoms"
        if type(err) is not Exception:
            raise
        result.stopped_early, result.stop_reason = True, f"LAMMPS error in steps {step}-{target}: {err}"
    finally:
        if run.writer and run.workdir.is_dir():  # (gone: promoted by a rank that saw a one-rank error)
            try:
                (run.workdir / "in.lammps").write_text("\n".join(run.input_lines) + "\n")
            except OSError:
                pass


def _observe(run: _Run, step: int, sample: bool, monitored: bool, result: MDResult, segment) -> bool:
    """Gather the frame, write it, run the monitors; True if the run must stop."""
    tick = time.perf_counter()
    try:
        return _observe_frame(run, step, sample, monitored, result, segment)
    finally:
        run.clock["observe_s"] += time.perf_counter() - tick


def _observe_frame(run: _Run, step: int, sample: bool, monitored: bool, result: MDResult, segment) -> bool:
    atoms = run.frame(step, want_variance=True)
    temperature = atoms.info["temperature"]
    result.peak_temperature = max(temperature, result.peak_temperature or 0.0)
    if segment is not None:
        index, seg, into = segment
        atoms.info.update(md_segment=index, md_target_temperature=seg.target_temperature(into))
        while len(result.segment_temperatures) <= index:
            result.segment_temperatures.append({"t_start": None, "t_end": None, "mean": 0.0, "n": 0})
        record = result.segment_temperatures[index]
        record.update(t_start=seg.t_start, t_end=seg.t_end, n=record["n"] + 1)
        record["mean"] += (temperature - record["mean"]) / record["n"]
    stop_reason = run.judge(atoms, step, result) if monitored and run.monitor else None
    if sample:
        run.write("trajectory.xyz", atoms)
        result.n_frames += 1
        if run.keep_frames:
            result.frames.append(atoms)
    if stop_reason:
        result.stopped_early, result.stop_reason = True, f"step {step}: {stop_reason}"
        result.final_thermo = run.thermo()
        return True
    return False
