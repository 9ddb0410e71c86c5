"""Error metrics of a potential against labelled structures (eV, Angstrom)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator


@dataclass
class ParityData:
    """Reference and predicted energies per atom (eV/atom) and force components (eV/A)."""

    ref_energy: np.ndarray
    pred_energy: np.ndarray
    ref_forces: np.ndarray
    pred_forces: np.ndarray


@dataclass
class ErrorMetrics:
    energy_mae: float  # meV/atom
    energy_rmse: float  # meV/atom
    force_rmse: float  # eV/A (nan without reference forces)
    force_mae: float  # eV/A
    n_structures: int
    n_atoms: int

    def as_dict(self) -> dict:
        return asdict(self)


def parity_data(calc: Calculator, labelled: Sequence[Atoms]) -> ParityData:
    """Predict every labelled structure with ``calc``; labels are read from their SinglePointCalculator."""
    ref_e, pred_e, ref_f, pred_f = [], [], [], []
    for atoms in labelled:
        results = atoms.calc.results
        work = atoms.copy()
        work.calc = calc
        ref_e.append(results["energy"] / len(atoms))
        pred_e.append(work.get_potential_energy() / len(atoms))
        if "forces" in results:
            ref_f.append(np.asarray(results["forces"]).ravel())
            pred_f.append(work.get_forces().ravel())
    cat = lambda xs: np.concatenate(xs) if xs else np.empty(0)  # noqa: E731
    return ParityData(np.array(ref_e), np.array(pred_e), cat(ref_f), cat(pred_f))


def error_metrics(data: ParityData) -> ErrorMetrics:
    if len(data.ref_energy) == 0:
        raise ValueError("no structures to evaluate: the test set is empty")
    de = (data.pred_energy - data.ref_energy) * 1000.0
    df = data.pred_forces - data.ref_forces
    has_forces = df.size > 0
    return ErrorMetrics(
        energy_mae=float(np.mean(np.abs(de))),
        energy_rmse=float(np.sqrt(np.mean(de**2))),
        force_rmse=float(np.sqrt(np.mean(df**2))) if has_forces else float("nan"),
        force_mae=float(np.mean(np.abs(df))) if has_forces else float("nan"),
        n_structures=len(data.ref_energy),
        n_atoms=int(df.size // 3),
    )
