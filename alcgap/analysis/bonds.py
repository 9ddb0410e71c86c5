"""Bonds of periodic frames: coordination numbers and bond angles (Angstrom, degrees).

Bonds are pairs within per-species-pair cutoffs. Every kernel takes ASE ``Atoms`` or a
:class:`~alcgap.analysis.rdf.FrameNeighbours` reaching the largest cutoff (see
:mod:`alcgap.analysis.rdf`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from alcgap.analysis.rdf import FrameNeighbours, frame_neighbours, neighbours_within, normalise_pairs
from alcgap.structures import Pair

#: Si-O bond cutoff (Angstrom) for SiO2 coordination and bond angles: the first minimum of g_SiO,
#: between the 1.61 A bond and the second Si-O shell beyond 3.5 A.
SIO2_BOND_CUTOFFS: dict[Pair, float] = {("Si", "O"): 2.0}


@dataclass(frozen=True)
class Coordination:
    """Neighbours of every atom within per-pair cutoffs, split by the neighbour's species.

    ``counts[k, s]`` is the number of atoms of species ``species[s]`` bonded to atom ``k``.
    """

    species: tuple[str, ...]
    species_index: np.ndarray
    counts: np.ndarray

    def of(self, centre: str, neighbour: str | None = None) -> np.ndarray:
        """Coordination of every ``centre`` atom (by ``neighbour`` atoms, or by all species)."""
        rows = self.counts[self.species_index == self.species.index(centre)]
        return rows.sum(axis=1) if neighbour is None else rows[:, self.species.index(neighbour)]

    def mean(self, centre: str, neighbour: str | None = None) -> float:
        return float(np.mean(self.of(centre, neighbour)))

    def distribution(self, centre: str, neighbour: str | None = None) -> dict[int, float]:
        """Fraction of ``centre`` atoms with each coordination number."""
        values, counts = np.unique(self.of(centre, neighbour), return_counts=True)
        return {int(v): float(c) / counts.sum() for v, c in zip(values, counts)}


def coordination_numbers(frame: Atoms | FrameNeighbours,
                         cutoffs: Mapping[Pair | str, float] = SIO2_BOND_CUTOFFS) -> Coordination:
    """Coordination of each atom by each species within per-pair cutoffs (Angstrom; e.g. Si-O 2.0)."""
    nl = neighbours_within(frame, max(normalise_pairs(cutoffs).values()))
    bonded = nl.within(cutoffs)
    i, j, s = nl.i[bonded], nl.j[bonded], nl.species_index
    n_s = len(nl.species)
    flat = np.bincount(np.concatenate([i * n_s + s[j], j * n_s + s[i]]), minlength=nl.n_atoms * n_s)
    return Coordination(nl.species, nl.species_index, flat.reshape(nl.n_atoms, n_s))


def bond_angles(frame: Atoms | FrameNeighbours, triplet: tuple[str, str, str],
                cutoffs: Mapping[Pair | str, float] = SIO2_BOND_CUTOFFS) -> np.ndarray:
    """Every angle a-b-c (degrees) at a ``b`` atom between two bonded neighbours, e.g. ("O", "Si", "O").

    Bonds are pairs within the per-pair ``cutoffs`` (Angstrom).
    """
    a, b, c = (atomic_numbers[x] for x in triplet)
    nl = neighbours_within(frame, max(normalise_pairs(cutoffs).values()))
    bonded = nl.within(cutoffs)
    centre = np.concatenate([nl.i[bonded], nl.j[bonded]])
    other = np.concatenate([nl.j[bonded], nl.i[bonded]])
    vec = np.concatenate([nl.vectors[bonded], -nl.vectors[bonded]])
    z = nl.numbers
    keep = (z[centre] == b) & ((z[other] == a) | (z[other] == c))
    order = np.argsort(centre[keep], kind="stable")
    centre, other, vec = centre[keep][order], other[keep][order], vec[keep][order]
    _, start, size = np.unique(centre, return_index=True, return_counts=True)
    angles = [np.empty(0)]
    # centres grouped by their number of bonds: each group is one (m, k) block of bond pairs
    for k in np.unique(size[size >= 2]):
        rows = start[size == k][:, None] + np.arange(k)
        p, q = np.triu_indices(k, 1)
        u, w = vec[rows][:, p], vec[rows][:, q]
        cos = np.einsum("mpx,mpx->mp", u, w) / (np.linalg.norm(u, axis=2) * np.linalg.norm(w, axis=2))
        zp, zq = z[other[rows]][:, p], z[other[rows]][:, q]
        match = ((zp == a) & (zq == c)) | ((zp == c) & (zq == a))
        angles.append(np.degrees(np.arccos(np.clip(cos[match], -1.0, 1.0))))
    return np.concatenate(angles)


def bond_angle_distribution(frames: Iterable[Atoms | FrameNeighbours], triplet: tuple[str, str, str],
                            cutoffs: Mapping[Pair | str, float] = SIO2_BOND_CUTOFFS,
                            bin_width: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres (degrees) and the probability density (1/degree, unit area) of a-b-c angles."""
    angles = np.concatenate([bond_angles(frame, triplet, cutoffs) for frame in frames])
    edges = np.linspace(0.0, 180.0, int(round(180.0 / bin_width)) + 1)  # 180 degrees falls in the last bin
    density, _ = np.histogram(angles, bins=edges, density=bool(len(angles)))
    return 0.5 * (edges[1:] + edges[:-1]), density.astype(float)


def most_neighbours(frames: Sequence[Atoms], species: Sequence[str], shells: Mapping[str, float]):
    """Most neighbours, and most same-species neighbours, of each species within ``shells``."""
    total, like = {s: 0 for s in species}, {s: 0 for s in species}
    reach = max(shells.values())
    for atoms in frames:
        coordination = coordination_numbers(frame_neighbours(atoms, reach), shells)
        for symbol in set(atoms.get_chemical_symbols()):
            total[symbol] = max(total[symbol], int(coordination.of(symbol).max()))
            if f"{symbol}-{symbol}" in shells:
                like[symbol] = max(like[symbol], int(coordination.of(symbol, symbol).max()))
    return total, {s: n for s, n in like.items() if f"{s}-{s}" in shells}
