"""Error metrics of a potential against labelled structures (eV, Angstrom, GPa)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.stress import full_3x3_to_voigt_6_stress


@dataclass
class ParityData:
    """Reference and predicted energies per atom (eV/atom), force components (eV/A) and, for the
    periodic structures whose labels carry one, stresses (GPa, ASE Voigt order and sign, one row
    of 6 per structure)."""

    ref_energy: np.ndarray
    pred_energy: np.ndarray
    ref_forces: np.ndarray
    pred_forces: np.ndarray
    ref_stress: np.ndarray = field(default_factory=lambda: np.empty((0, 6)))
    pred_stress: np.ndarray = field(default_factory=lambda: np.empty((0, 6)))


@dataclass
class ErrorMetrics:
    energy_mae: float  # meV/atom
    energy_rmse: float  # meV/atom
    force_rmse: float  # eV/A (nan without reference forces)
    force_mae: float  # eV/A
    n_structures: int
    n_atoms: int
    #: over the 6 Voigt components of the periodic structures that carry a reference stress
    #: (nan when none does); pressure = -trace/3 of the same stresses
    stress_rmse: float = float("nan")  # GPa
    pressure_rmse: float = float("nan")  # GPa
    n_stress: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def voigt_stress(stress) -> np.ndarray:
    """A stress as ASE's 6 Voigt components (xx yy zz yz xz xy), from 6 or from a 3x3 tensor."""
    stress = np.asarray(stress, dtype=float)
    return full_3x3_to_voigt_6_stress(stress.reshape(3, 3)) if stress.size == 9 else stress.reshape(6)


def parity_data(calc: Calculator, labelled: Sequence[Atoms]) -> ParityData:
    """Predict every labelled structure with ``calc``; labels are read from their SinglePointCalculator."""
    ref_e, pred_e, ref_f, pred_f, ref_s, pred_s = [], [], [], [], [], []
    for atoms in labelled:
        results = atoms.calc.results
        work = atoms.copy()
        work.calc = calc
        ref_e.append(results["energy"] / len(atoms))
        pred_e.append(work.get_potential_energy() / len(atoms))
        if "forces" in results:
            ref_f.append(np.asarray(results["forces"]).ravel())
            pred_f.append(work.get_forces().ravel())
        if results.get("stress") is not None and all(atoms.pbc):
            ref_s.append(voigt_stress(results["stress"]) / units.GPa)
            pred_s.append(np.asarray(work.get_stress(voigt=True)) / units.GPa)
    cat = lambda xs: np.concatenate(xs) if xs else np.empty(0)  # noqa: E731
    rows = lambda xs: np.array(xs).reshape(-1, 6)  # noqa: E731
    return ParityData(np.array(ref_e), np.array(pred_e), cat(ref_f), cat(pred_f), rows(ref_s), rows(pred_s))


def error_metrics(data: ParityData) -> ErrorMetrics:
    if len(data.ref_energy) == 0:
        raise ValueError("no structures to evaluate: the test set is empty")
    de = (data.pred_energy - data.ref_energy) * 1000.0
    df = data.pred_forces - data.ref_forces
    has_forces = df.size > 0
    ds = data.pred_stress - data.ref_stress
    dp = -(ds[:, :3].sum(axis=1)) / 3.0
    has_stress = len(ds) > 0
    return ErrorMetrics(
        energy_mae=float(np.mean(np.abs(de))),
        energy_rmse=float(np.sqrt(np.mean(de**2))),
        force_rmse=float(np.sqrt(np.mean(df**2))) if has_forces else float("nan"),
        force_mae=float(np.mean(np.abs(df))) if has_forces else float("nan"),
        n_structures=len(data.ref_energy),
        n_atoms=int(df.size // 3),
        stress_rmse=float(np.sqrt(np.mean(ds**2))) if has_stress else float("nan"),
        pressure_rmse=float(np.sqrt(np.mean(dp**2))) if has_stress else float("nan"),
        n_stress=len(ds),
    )
