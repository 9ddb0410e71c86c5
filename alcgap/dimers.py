"""Dimer curves and isolated-atom energies through any reference, and dimer curves of any calculator.

What the auxiliary makes of the curves lives in :mod:`alcgap.auxiliary`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ase import Atoms

from alcgap.reference.base import Reference, isolated
from alcgap.structures import Pair, pair_name


@dataclass
class DimerCurve:
    """Binding energy E(r) = E_dimer(r) - E_atom(a) - E_atom(b) in eV, r in Angstrom."""

    pair: Pair
    distances: np.ndarray
    energies: np.ndarray
    #: distances whose reference calculation failed, with the reason
    failed: dict[float, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return pair_name(self.pair)

    def energy_at(self, r: float) -> float:
        """Energy at ``r`` by linear interpolation of the scan."""
        return float(np.interp(r, self.distances, self.energies))


def scan_grid(r_min: float, r_cut: float, step: float, beyond_cutoff: float) -> np.ndarray:
    """Dimer distances from r_min to r_cut + beyond_cutoff; r_cut itself is always on the grid."""
    inner = np.arange(r_min, r_cut, step)
    inner = inner[inner < r_cut - 0.5 * step]  # arange may end a rounding error below r_cut
    outer = np.arange(r_cut, r_cut + beyond_cutoff + 0.5 * step, step)
    return np.round(np.concatenate([inner, outer]), 10)


def isolated_atom_energies(reference: Reference, species: list[str]) -> dict[str, float]:
    """Energy (eV) of each species alone in a large box."""
    return {symbol: reference.isolated_atom_energy(symbol) for symbol in species}


def dimer_structure(pair: Pair, r: float) -> Atoms:
    """Two atoms of ``pair`` ``r`` Angstrom apart, alone in a box (as the reference computes them)."""
    return isolated(pair[0] + pair[1], positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])


def dimer_curve(
    reference: Reference, pair: Pair, distances: np.ndarray, atom_energies: dict[str, float]
) -> DimerCurve:
    """Binding curve of a dimer along ``distances`` (Angstrom); failed points are dropped and kept in ``failed``."""
    a, b = pair
    kept_r, kept_e, failed = [], [], {}
    for r in distances:
        label = reference.compute(dimer_structure(pair, r))
        if label.ok:
            kept_r.append(r)
            kept_e.append(label.energy - atom_energies[a] - atom_energies[b])
        else:
            failed[float(r)] = f"{label.status.value}: {label.reason}"
    return DimerCurve(pair, np.array(kept_r), np.array(kept_e), failed)


def pair_curve(calc, pair: Pair, distances: np.ndarray, separation: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """Energy (eV) and radial force -dE/dr (eV/A) of isolated ``pair`` dimers under any ASE calculator.

    All dimers go into one non-periodic Atoms, ``separation`` Angstrom apart (more than the
    model's cutoff), so one calculator call evaluates the whole curve; the dimer energy is the
    sum of its two atoms' local energies.
    """
    distances = np.asarray(distances, dtype=float)
    n = len(distances)
    side = int(np.ceil(n ** (1.0 / 3.0)))
    sites = np.array(np.unravel_index(np.arange(n), (side, side, side))).T * separation
    positions = np.empty((2 * n, 3))
    positions[0::2] = sites
    positions[1::2] = sites + np.outer(distances, [1.0, 0.0, 0.0])
    atoms = Atoms(
        [pair[0], pair[1]] * n,
        positions=positions + separation,
        cell=np.diag(sites.max(axis=0) + 2 * separation + distances.max()),
        pbc=False,
    )
    atoms.calc = calc
    local = atoms.get_potential_energies()
    forces = atoms.get_forces()
    return local[0::2] + local[1::2], forces[1::2, 0]


def short_range_curves(calcs: dict, pairs, r_min: float, r_max: float = 2.5, step: float = 0.02) -> dict[str, dict]:
    """Dimer energy of each calculator (name -> ASE calculator) from ``r_min`` to ``r_max``
    (Angstrom) per pair, relative to its value at the last point (eV)."""
    out = {}
    for pair in pairs:
        r = np.round(np.arange(r_min, r_max, step), 6)
        entry: dict[str, np.ndarray] = {"r": r}
        for name, calc in calcs.items():
            energies, _ = pair_curve(calc, pair, r)
            entry[name] = energies - energies[-1]
        out[pair_name(pair)] = entry
    return out
