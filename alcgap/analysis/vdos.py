"""Vibrational density of states by finite differences at Gamma, as in the paper (Fig. 5a).

Each atom is displaced by +-``delta`` (0.01 A in the paper) along x, y and z; the central
difference of all forces gives one column of the force-constant matrix (eV/A^2). Mass-weighted,
symmetrised and diagonalised, it gives the normal modes of the cell at Gamma and their phonon
energies hbar*omega (meV). Works with any ASE calculator (composite GAP, DFT, classical).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

#: hbar * sqrt(1 eV / (1 A^2 * 1 amu)) in meV: an eigenvalue of the mass-weighted force constants
#: (eV/A^2/amu) is omega^2, and hbar*omega = MEV_PER_ROOT_EIGENVALUE * sqrt(eigenvalue); ~64.65 meV
MEV_PER_ROOT_EIGENVALUE = 1000.0 * units._hbar * np.sqrt(units._e / (units._amu * 1e-20)) / units._e


def force_constants(atoms: Atoms, calc: Calculator, delta: float = 0.01) -> np.ndarray:
    """The (3N, 3N) force-constant matrix d2E/dx_a dx_b (eV/A^2) by central differences of forces.

    Row 3i+k is -(F(x_ik + delta) - F(x_ik - delta)) / (2 delta), ``delta`` in Angstrom, exact
    to O(delta^2); the result is symmetrised, as a Hessian must be, which averages away the
    asymmetry that difference and fitting noise leave. 6N force calls.
    """
    if delta <= 0:
        raise ValueError(f"delta must be a positive displacement in Angstrom, got {delta}")
    work = atoms.copy()
    work.calc = calc
    reference = atoms.positions.copy()
    n = len(atoms)
    phi = np.empty((3 * n, 3 * n))
    for i in range(n):
        for k in range(3):
            forces = []
            for sign in (1.0, -1.0):
                positions = reference.copy()
                positions[i, k] += sign * delta
                work.positions = positions
                forces.append(np.array(work.get_forces()).ravel())
            phi[3 * i + k] = -(forces[0] - forces[1]) / (2.0 * delta)
    return 0.5 * (phi + phi.T)


def dynamical_matrix(phi: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Mass-weighted force constants D = Phi / sqrt(m_a m_b) (eV/A^2/amu; masses in amu)."""
    inv_sqrt = np.repeat(1.0 / np.sqrt(np.asarray(masses, dtype=float)), 3)
    return phi * np.outer(inv_sqrt, inv_sqrt)


def mode_energies(dynmat: np.ndarray) -> np.ndarray:
    """Phonon energies hbar*omega (meV), ascending; an unstable mode (omega^2 < 0) comes out negative."""
    eigenvalues = np.linalg.eigvalsh(0.5 * (dynmat + dynmat.T))
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * MEV_PER_ROOT_EIGENVALUE


def phonon_energies(atoms: Atoms, calc: Calculator, delta: float = 0.01) -> np.ndarray:
    """All 3N Gamma-point phonon energies (meV) of ``atoms`` with ``calc``; relax ``atoms`` first."""
    return mode_energies(dynamical_matrix(force_constants(atoms, calc, delta), atoms.get_masses()))


@dataclass
class VDOS:
    """A broadened density of states on an energy grid: ``energy`` (meV), ``dos`` (1/meV, unit area)."""

    energy: np.ndarray
    dos: np.ndarray
    n_modes: int
    sigma: float  # Gaussian width, meV

    def as_dict(self) -> dict:
        return {"energy_meV": self.energy.tolist(), "dos_per_meV": self.dos.tolist(),
                "n_modes": self.n_modes, "sigma_meV": self.sigma}


def vdos(energies: np.ndarray, sigma: float = 2.0, e_max: float | None = None, n_points: int = 1000,
         drop_below: float = 1.0) -> VDOS:
    """Gaussian-broadened VDOS of phonon energies (meV) on [0, e_max] with width ``sigma`` (meV).

    Modes below ``drop_below`` meV in magnitude are left out: at Gamma the three rigid
    translations (and for a molecule the rotations) are zero modes that say nothing of the
    bonds, and finite differences leave them at a few tenths of a meV. Unstable (negative)
    modes fall off the grid. The curve is normalised to unit area over the grid.
    """
    energies = np.asarray(energies, dtype=float)
    modes = energies[np.abs(energies) >= drop_below]
    top = e_max if e_max is not None else (float(modes.max()) if modes.size else 0.0) + 4.0 * sigma
    grid = np.linspace(0.0, top, n_points)
    dos = np.exp(-0.5 * ((grid[:, None] - modes[None, :]) / sigma) ** 2).sum(axis=1)
    area = np.trapezoid(dos, grid)
    return VDOS(grid, dos / area if area > 0 else dos, int(modes.size), float(sigma))


def vdos_similarity(a: VDOS, b: VDOS, e_max: float | None = None) -> float:
    """Overlap of two VDOS curves, between 0 (no common energy range) and 1 (the same shape).

    S = integral(a b dE) / sqrt(integral(a^2 dE) integral(b^2 dE)) over [0, e_max] (meV; default:
    the range both grids cover), ``b`` interpolated onto ``a``'s grid. It is the cosine of the
    angle between the curves as vectors, blind to normalisation; the paper finds the low-energy
    part the better one, so ``e_max`` restricts the comparison to it.
    """
    top = min(a.energy[-1], b.energy[-1]) if e_max is None else e_max
    mask = a.energy <= top
    x, fa = a.energy[mask], a.dos[mask]
    fb = np.interp(x, b.energy, b.dos, left=0.0, right=0.0)
    norm = np.sqrt(np.trapezoid(fa * fa, x) * np.trapezoid(fb * fb, x))
    return float(np.trapezoid(fa * fb, x) / norm) if norm > 0 else 0.0
