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

The steps of a run live in their own modules: where it writes (:mod:`~alcgap.md.attempts`), the
system in LAMMPS (:mod:`~alcgap.md.lammps_system`), the stepping (:mod:`~alcgap.md.integrate`),
what it records (:mod:`~alcgap.md.observe`) and where it continues (:mod:`~alcgap.md.checkpoint`).
This module is the driver's public face: :func:`run_md`, :class:`MDResult`, and the few helpers
callers take from here (``__all__``).
"""

from __future__ import annotations

import shutil
import time
from typing import Sequence

from ase import Atoms

from alcgap.lammps_module import lammps_class, open_lammps
from alcgap.md.attempts import RunFolders, open_run_folders, promote_attempt, remove_killed_attempts
from alcgap.md.checkpoint import CHECKPOINTS, flagged_to_checkpoint, load_checkpoint, restore_result, run_signature
from alcgap.md.forces import ForceField, make_backend
from alcgap.md.integrate import integrate
from alcgap.md.lammps_run import LammpsRun
from alcgap.md.lammps_system import gather_frame  # noqa: F401  (md.classical imports it from here)
from alcgap.md.monitors import Monitor, MonitorSettings
from alcgap.md.protocols import Segment, total_steps
from alcgap.md.result import MDResult

__all__ = ["MDResult", "flagged_to_checkpoint", "gather_frame", "run_md"]


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
    ``output_dir/checkpoint/`` (see :mod:`alcgap.md.checkpoint`); a run started again with the
    same arguments continues from the last one, on any number of ranks, and its files continue
    without a repeated or a missing frame.

    ``max_displacement`` (Angstrom): an adaptive timestep, no atom moves more than this in one
    step, never longer than ``timestep``; ``max_energy_change`` (eV, with ``max_displacement``):
    also no atom's kinetic energy changes by more than this in one step. Why both, see
    :func:`~alcgap.md.lammps_system.adaptive_timestep_fix`.
    """
    lammps_class()  # libmpi (MPICH ABI) loaded before mpi4py picks one
    from mpi4py import MPI  # only now: see the line above

    comm = comm or MPI.COMM_WORLD
    clock = time.perf_counter()
    folders = open_run_folders(output_dir, comm)
    signature = (run_signature(atoms, force_field, segments, timestep, seed, sample_every, monitor, charges)
                 if folders.final is not None and checkpoint_every else None)
    resume = _checkpoint_to_continue(folders, signature, comm)
    _check_neutral(atoms, charges)
    lmp = open_lammps(log_file=folders.workdir / "log.lammps" if folders.final is not None else None, comm=comm)
    result = MDResult(force_backend="", n_atoms=len(atoms), n_ranks=comm.size, steps_requested=total_steps(segments),
                      output_dir=str(folders.final) if folders.final is not None else None)
    try:
        backend = make_backend(force_field, lmp, comm, folders.workdir)
        result.force_backend = backend.name
        run = LammpsRun(lmp, backend, force_field.species, comm, folders.workdir if folders.final is not None else None,
                        Monitor(monitor) if monitor else None, keep_frames,
                        checkpoints=_checkpoint_plan(folders, checkpoint_every, signature),
                        max_displacement=max_displacement,
                        max_energy_change=max_energy_change if max_displacement else None)
        if resume is not None:
            restore_result(result, resume)
        integrate(run, atoms, segments, timestep=timestep, seed=seed, sample_every=sample_every,
                  thermo_every=thermo_every or sample_every, result=result, velocities=velocities, charges=charges,
                  resume=resume)
        result.timings = {key: round(value, 6) for key, value in {**run.clock, **run.backend.timings()}.items()}
    except BaseException:
        if folders.final is not None and comm.rank == 0:  # what it wrote up to the failure stays readable
            lmp.close()
            promote_attempt(folders.workdir, folders.final)
        raise
    finally:
        lmp.close()
        if folders.temporary is not None:
            shutil.rmtree(folders.temporary, ignore_errors=True)
    _finish(result, folders, comm, clock)
    return result


def _checkpoint_to_continue(folders: RunFolders, signature: str | None, comm) -> dict | None:
    """The checkpoint this run continues from (None: it starts at step 0); rank 0 then removes
    the folders of killed attempts, read by now."""
    resume = None
    if folders.final is not None:
        if signature is not None:
            resume = comm.bcast(load_checkpoint(folders.final, signature, folders.workdir) if comm.rank == 0 else None,
                                root=0)
        if comm.rank == 0:
            remove_killed_attempts(folders.final, folders.workdir)
    return resume


def _check_neutral(atoms: Atoms, charges: dict[str, float] | None) -> None:
    """A charge for every species, and a neutral cell (a periodic cell must be)."""
    if charges is None:
        return
    missing = set(atoms.get_chemical_symbols()) - set(charges)
    if missing:
        raise ValueError(f"charges: no charge for {sorted(missing)}")
    net = sum(charges[s] for s in atoms.get_chemical_symbols())
    if abs(net) > 1e-6:
        raise ValueError(f"charges {charges}: the cell carries a net charge of {net:+.6g} e; a periodic cell must be neutral")


def _checkpoint_plan(folders: RunFolders, checkpoint_every: int | None, signature: str | None):
    """(folder, every N steps, run signature) of a run that writes checkpoints, else None."""
    if folders.final is not None and checkpoint_every:
        return folders.final / CHECKPOINTS, int(checkpoint_every), signature
    return None


def _finish(result: MDResult, folders: RunFolders, comm, clock: float) -> None:
    """Timings; rank 0 writes ``result.json`` and promotes the attempt. The run ended: its
    checkpoints go, there is nothing to continue."""
    result.wall_time_s = time.perf_counter() - clock
    result.seconds_per_step = result.wall_time_s / max(1, result.steps_done)
    if folders.final is not None and comm.rank == 0:
        result.write(folders.workdir / "result.json")
        promote_attempt(folders.workdir, folders.final)
        shutil.rmtree(folders.final / CHECKPOINTS, ignore_errors=True)
