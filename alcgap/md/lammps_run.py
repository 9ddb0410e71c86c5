"""One MD run as each rank holds it: the LAMMPS instance, the force back-end, the monitors, the
commands as run, and the files rank 0 writes (every rank knows where they go: LAMMPS commands
that write are collective).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from alcgap.calculator import VARIANCE
from alcgap.md.forces import ForceBackend
from alcgap.md.lammps_system import THERMO, gather_frame
from alcgap.md.monitors import Monitor


class LammpsRun:
    """State of one run on one rank; rank 0 owns the files."""

    def __init__(self, lmp, backend: ForceBackend, species, comm, workdir: Path | None, monitor: Monitor | None,
                 keep_frames: bool, *, checkpoints: tuple[Path, int, str] | None = None,
                 max_displacement: float | None = None, max_energy_change: float | None = None):
        self.lmp, self.backend, self.species, self.comm = lmp, backend, list(species), comm
        #: where the files go (every rank knows; LAMMPS commands that write are collective)
        self.workdir = workdir
        #: this rank writes the Python-side files
        self.writer = workdir is not None and comm.rank == 0
        self.monitor, self.keep_frames = monitor, keep_frames
        self.input_lines: list[str] = []
        #: (folder, every N steps, run signature) when the run writes checkpoints
        self.checkpoints = checkpoints
        #: Angstrom per step at most (fix dt/reset), or None: a fixed timestep
        self.max_displacement = max_displacement
        #: eV of kinetic energy gained or lost by any atom in one step at most (fix dt/reset emax)
        self.max_energy_change = max_energy_change
        #: wall time inside LAMMPS "run" commands (MD steps) and in frames + monitors (s)
        self.clock = {"run_s": 0.0, "run_cpu_s": 0.0, "observe_s": 0.0}

    @property
    def monitor_every(self) -> int | None:
        """Steps between monitored frames (None: no monitors)."""
        return self.monitor.settings.every if self.monitor else None

    @property
    def checkpoint_every(self) -> int | None:
        """Steps between checkpoints (None: no checkpoints)."""
        return self.checkpoints[1] if self.checkpoints else None

    def command(self, line: str) -> None:
        """Run one LAMMPS command and keep it for ``in.lammps``."""
        self.input_lines.append(line)
        self.lmp.command(line)

    def thermo(self) -> dict[str, float]:
        return {key: float(self.lmp.get_thermo(key)) for key in THERMO.split()[1:]}

    def frame(self, step: int, want_variance: bool) -> Atoms:
        """The current frame (collective) with LAMMPS' energy and forces on a SinglePointCalculator,
        its thermo in ``info`` and, when asked for and the back-end has it, the per-atom variance."""
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
        """Append ``atoms`` to the extxyz file ``name`` (rank 0 of a run that keeps its files)."""
        if self.writer:
            # parallel=False: ASE's default would broadcast over MPI_COMM_WORLD from this one rank,
            # and the other ranks' next collective would receive it
            ase.io.write(self.workdir / name, atoms, format="extxyz", append=True, parallel=False)

    def write_input(self) -> None:
        """``in.lammps``: the commands as run, so a user can rerun them by hand."""
        if self.writer and self.workdir.is_dir():  # (gone: promoted by a rank that saw a one-rank error)
            try:
                (self.workdir / "in.lammps").write_text("\n".join(self.input_lines) + "\n")
            except OSError:
                pass
