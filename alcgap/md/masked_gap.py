"""The main GAP evaluated for one rank's share of the atoms, summed over ranks.

Rank r evaluates the local energies of its own contiguous block of atom ids (a QUIP atom mask:
energy of the masked atoms, gradient on all atoms), so the shares have equal atom counts whatever
the geometry; one ``MPI_Allreduce`` sums energy, virial, forces and, when asked for, the per-atom
variance. The sum over disjoint masks equals the unmasked call to ~1e-13 eV.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes

from alcgap.calculator import VARIANCE

#: the per-atom array that holds a rank's QUIP atom mask
MASK = "alcgap_mask"


@dataclass
class GapEvaluation:
    """Summed over ranks: energy (eV), forces (eV/A, by atom id), virial (eV, LAMMPS order
    xx yy zz xy xz yz), per-atom variance (eV^2) or None."""

    energy: float
    forces: np.ndarray
    virial: np.ndarray
    variance: np.ndarray | None


class MaskedGap:
    """A GAP evaluated for this rank's share of the atoms (QUIP atom mask), summed over ranks."""

    def __init__(self, xml, label: str | None, comm):
        from quippy.potential import Potential  # here: quippy is slow to import and only GAP runs need it

        self.comm = comm
        self.potential = Potential(
            param_filename=str(xml),
            calc_args=f"atom_mask_name={MASK}",
            add_arrays=MASK,
            **({"args_str": f"IP GAP label={label}"} if label else {}),
        )
        self.potential.calculation_always_required = True  # the caller caches
        self.timings: dict[str, float] = defaultdict(float)

    def share(self, n_atoms: int) -> np.ndarray:
        """This rank's atoms: a contiguous block of ids, equal counts on all ranks (+-1)."""
        bounds = np.linspace(0, n_atoms, self.comm.size + 1).round().astype(int)
        mask = np.zeros(n_atoms, dtype=bool)
        mask[bounds[self.comm.rank] : bounds[self.comm.rank + 1]] = True
        return mask

    def evaluate(self, atoms: Atoms, variance: bool = False) -> GapEvaluation:
        from mpi4py import MPI  # here: mpi4py only after lammps_class() loaded LAMMPS' MPI library

        n = len(atoms)
        if MASK not in atoms.arrays or len(atoms.arrays[MASK]) != n:
            atoms.arrays[MASK] = self.share(n)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.potential.calculate(atoms, ["energy", "forces", "stress"], all_changes,
                                 calc_args=VARIANCE if variance else None)
        results = self.potential.results
        stress = np.asarray(results["stress"]) * atoms.get_volume()  # -virial (ASE Voigt order)
        buffer = np.concatenate([
            [results["energy"]],
            -stress[[0, 1, 2, 5, 4, 3]],
            np.asarray(results["forces"]).ravel(),
            np.asarray(self.potential.extra_results["atoms"][VARIANCE]) if variance else [],
        ])
        middle, middle_cpu = time.perf_counter(), time.process_time()
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        if not self.timings["calls"]:
            self.timings["first_call_s"] = middle - start  # includes QUIP's one-off set-up
            self.timings["first_call_cpu_s"] = middle_cpu - start_cpu
        self.timings["quip_s"] += middle - start
        # CPU time too: on a shared machine wall time measures the neighbours' load as well
        self.timings["quip_cpu_s"] += middle_cpu - start_cpu
        self.timings["allreduce_s"] += time.perf_counter() - middle
        self.timings["calls"] += 1
        return GapEvaluation(
            energy=float(buffer[0]),
            virial=buffer[1:7].copy(),
            forces=buffer[7 : 7 + 3 * n].reshape(n, 3),
            variance=buffer[7 + 3 * n :].copy() if variance else None,
        )


def bare_atoms(atoms: Atoms) -> Atoms:
    """Positions, numbers and cell only (quippy converts every array it is given)."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
