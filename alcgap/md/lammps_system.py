"""The system as LAMMPS holds it: the commands that set it up, and the frame read back.

Units, box, masses, atoms and velocities go in (ASE's frame rotated into LAMMPS'
lower-triangular one); the ensemble and the adaptive timestep are fixes; the configuration comes
back as ASE Atoms. LAMMPS metal units: Angstrom, eV, ps (timesteps given here in fs), K, bar.
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.lammps import Prism
from ase.data import atomic_masses, atomic_numbers

from alcgap.md.protocols import Segment

#: econserve: etotal plus the energy the thermostat/barostat exchanged (its drift is the integration error)
THERMO = "step temp pe ke etotal econserve press vol"


def setup_commands(atoms: Atoms, species: Sequence[str], atom_style: str = "atomic") -> list[str]:
    """Units, atom style ("charge" for a Coulomb model), box (from ASE's Prism: LAMMPS'
    lower-triangular frame) and masses."""
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
    unknown = set(atoms.get_chemical_symbols()) - set(species)
    if unknown:
        raise ValueError(f"atoms contain {sorted(unknown)}, not among the force field's species {list(species)}")
    positions = Prism(atoms.cell.array).vector_to_lammps(atoms.positions, wrap=True)
    types = [list(species).index(s) + 1 for s in atoms.get_chemical_symbols()]
    # explicit ids: passing None segfaults in the 2025.7 wheel
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.flatten().tolist())


def scatter_velocities(lmp, atoms: Atoms) -> None:
    """The atoms' own velocities into LAMMPS (collective: every rank passes all of them)."""
    # ASE velocity units -> A/ps (metal), rotated into LAMMPS' frame like the positions
    v = Prism(atoms.cell.array).vector_to_lammps(atoms.get_velocities()) * (1000.0 * units.fs)
    lmp.scatter_atoms("v", 1, 3, (ctypes.c_double * v.size)(*v.ravel()))


def lammps_cell(lmp) -> tuple[np.ndarray, np.ndarray]:
    """The LAMMPS box as (lower-triangular cell rows, origin), Angstrom."""
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lengths = np.array(boxhi) - np.array(boxlo)
    return np.array([[lengths[0], 0, 0], [xy, lengths[1], 0], [xz, yz, lengths[2]]]), np.array(boxlo)


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
    """The ``fix alcgap_md`` of one protocol segment: NVE, or Nose-Hoover NVT/NPT whose damping
    times are the segment's ``t_damp``/``p_damp`` in timesteps of ``timestep`` fs."""
    t_damp = segment.t_damp * timestep / 1000.0  # ps
    if segment.ensemble == "nve":
        return "fix alcgap_md all nve"
    if segment.ensemble == "nvt":
        return f"fix alcgap_md all nvt temp {segment.t_start} {segment.t_end} {t_damp}"
    p_damp = segment.p_damp * timestep / 1000.0
    return (f"fix alcgap_md all npt temp {segment.t_start} {segment.t_end} {t_damp} "
            f"iso {segment.pressure} {segment.pressure} {p_damp}")


def adaptive_timestep_fix(timestep: float, max_displacement: float, max_energy_change: float | None) -> str:
    """LAMMPS ``fix dt/reset``, checked every step: no atom moves more than ``max_displacement``
    (Angstrom) in one step and, with ``max_energy_change`` (eV), no atom's kinetic energy changes
    by more than that. The step never exceeds ``timestep`` (fs), so a run whose atoms stay slower
    is integrated exactly as without it, and never falls below 1/1000 of it.

    A hot run that reaches a stiff repulsive wall (the aux) is then integrated through it instead
    of exploding. The displacement bound alone lets an atom move 0.1 A into a wall that rises by
    tens of eV over that distance; the energy bound shortens the step there, where the wall's
    curvature, not the atom's speed, limits it.
    """
    ps = timestep / 1000.0
    emax = f" emax {max_energy_change}" if max_energy_change else ""
    return f"fix alcgap_dt all dt/reset 1 {ps / 1000.0} {ps} {max_displacement}{emax} units box"
