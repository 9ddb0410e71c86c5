"""Atoms too close for a DFT label: a check to run before a structure is sent to CP2K.

Why a limit at all. Below about half a covalent bond length, a pseudopotential DFT label is not
worth its cost and often not even obtained:

- GTH pseudopotentials freeze the core electrons (Si keeps its 1s2s2p shells in the core): once
  two cores overlap, the frozen-core picture the pseudopotential was built for no longer holds,
  and the energy is that of an approximation outside its range.
- The MOLOPT Gaussian basis sets were optimised for molecular geometries: basis functions on two
  nearly coincident centres become almost linearly dependent, the overlap matrix ill-conditioned,
  and CP2K's SCF fails ("Cholesky decomposition failed") or wanders.
- The structure cannot happen in the MD the potential is for: Vashishta's Si-O already costs
  54 eV at 1.0 A (FIELD-NOTES). Its repulsion is the auxiliary 2-body potential's job, fitted to
  dimer scans, which go to such distances on purpose and are therefore exempt: the check belongs
  to the campaign's selection step, never to ``Cp2kReference.compute``.

The default limit of a species pair is :data:`DEFAULT_FRACTION` (0.5) of the sum of the two
covalent radii (``ase.data.covalent_radii``, Cordero 2008): Si-Si 1.11 A, Si-O 0.885 A,
O-O 0.66 A, against bonds of 2.35 A (Si-Si), 1.61 A (Si-O) and 1.21 A (O2).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import NamedTuple

from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.neighborlist import neighbor_list

from alcgap.structures import Pair, pair_key

#: fraction of the summed covalent radii below which a pair is too close for a DFT label
DEFAULT_FRACTION = 0.5


class Contact(NamedTuple):
    """Two atoms closer than their pair's limit (indices into the Atoms, Angstrom)."""

    i: int
    j: int
    pair: Pair
    distance: float
    limit: float


def default_contact_limits(species: list[str] | tuple[str, ...], fraction: float = DEFAULT_FRACTION) -> dict[Pair, float]:
    """``fraction`` x (covalent radius a + covalent radius b), Angstrom, for every pair of ``species``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: {fraction} must be in (0, 1]")
    radius = {s: float(covalent_radii[atomic_numbers[s]]) for s in species}
    return {pair_key(a, b): fraction * (radius[a] + radius[b]) for a, b in itertools.combinations_with_replacement(sorted(set(species)), 2)}


def too_close_pairs(atoms: Atoms, limits: Mapping[Pair, float]) -> list[Contact]:
    """Every pair of atoms closer than its species pair's limit (Angstrom), shortest first.

    Periodic images count (the minimum-image distance and beyond: a cell so small that an atom
    meets its own image is reported as ``i == j``). Each contact appears once, ``i <= j``.
    ``limits`` keys are species pairs in either order; a pair present in ``atoms`` without a limit
    is an error, not silently unchecked.
    """
    wanted = {pair_key(*pair): float(limit) for pair, limit in limits.items()}
    symbols = atoms.get_chemical_symbols()
    present = {pair_key(a, b) for a, b in itertools.combinations_with_replacement(sorted(set(symbols)), 2)}
    missing = sorted(present - set(wanted))
    if missing:
        raise ValueError(f"limits: no limit for {', '.join('-'.join(p) for p in missing)}; give one (default_contact_limits)")
    if len(atoms) == 0 or not wanted or max(wanted.values()) <= 0.0:
        return []
    i, j, d, shifts = neighbor_list("ijdS", atoms, max(wanted.values()))
    contacts = []
    for a, b, distance, shift in zip(i, j, d, shifts):
        # neighbor_list gives each pair twice (i->j, j->i; an image of itself at +S and -S)
        if a > b or (a == b and tuple(shift) < (0, 0, 0)):
            continue
        pair = pair_key(symbols[a], symbols[b])
        if distance < wanted[pair]:
            contacts.append(Contact(int(a), int(b), pair, float(distance), wanted[pair]))
    return sorted(contacts, key=lambda c: (c.distance, c.i, c.j))

