"""Crystals, supercells and perturbed structures (ASE Atoms throughout; Angstrom)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ase.io
from ase import Atoms, units
from ase.build import bulk
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

#: beta-cristobalite lattice constant (Angstrom); Si-O 1.55 A, density 2.2 g/cm^3
BETA_CRISTOBALITE_A = 7.16


def beta_cristobalite(a: float = BETA_CRISTOBALITE_A) -> Atoms:
    """Idealised beta-cristobalite SiO2 (Fd-3m): 24 atoms in the cubic cell."""
    return crystal(
        ["Si", "O"],
        basis=[(0.0, 0.0, 0.0), (0.125, 0.125, 0.125)],
        spacegroup=227,
        cellpar=[a, a, a, 90, 90, 90],
    )


def most_cubic_repeat(n_cells: int) -> tuple[int, int, int]:
    """Integer repetitions (n1, n2, n3) with product n_cells, as close to a cube as possible."""
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    best = None
    for n1 in range(1, n_cells + 1):
        if n_cells % n1:
            continue
        for n2 in range(n1, n_cells // n1 + 1):
            if (n_cells // n1) % n2:
                continue
            n3 = n_cells // (n1 * n2)
            if n3 < n2:
                continue
            spread = n3 / n1
            if best is None or spread < best[0]:
                best = (spread, (n3, n2, n1))
    return best[1]


def supercell_with_atoms(unit: Atoms, n_atoms: int) -> Atoms:
    """The most cubic supercell of ``unit`` holding exactly ``n_atoms`` atoms."""
    if n_atoms % len(unit):
        raise ValueError(
            f"n_atoms={n_atoms} is not a multiple of the {len(unit)}-atom unit cell; "
            f"use a multiple such as {len(unit) * max(1, round(n_atoms / len(unit)))}"
        )
    return unit.repeat(most_cubic_repeat(n_atoms // len(unit)))


def rattled(atoms: Atoms, stdev: float, seed: int, strain: float = 0.0) -> Atoms:
    """A copy with Gaussian displacements (stdev, Angstrom) and an optional random strain."""
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    if strain:
        deformation = np.eye(3) + strain * rng.uniform(-1.0, 1.0, size=(3, 3))
        out.set_cell(out.cell.array @ deformation, scale_atoms=True)
    out.positions += rng.normal(0.0, stdev, size=out.positions.shape)
    return out


def unit_cell(spec: str | Mapping[str, Any]) -> Atoms:
    """The crystal a campaign starts from, before it is repeated to the training size.

    ``spec``: "beta-cristobalite"; a path to any file ``ase.io`` reads (its last frame);
    ``{"bulk": name, ...}``, the keywords of ``ase.build.bulk`` (``{"bulk": "Si"}`` for a name ASE
    knows, ``{"bulk": "InP", "crystalstructure": "zincblende", "a": 5.87}``); or
    ``{"spacegroup": 14, "symbols": [...], "basis": [...], "cellpar": [a, b, c, alpha, beta, gamma]}``,
    the asymmetric unit for ``ase.spacegroup.crystal`` (Angstrom, degrees, fractional coordinates).
    """
    if isinstance(spec, str):
        if spec == "beta-cristobalite":
            return beta_cristobalite()

        return ase.io.read(spec)
    spec = dict(spec)
    if "bulk" in spec:

        return bulk(spec.pop("bulk"), **spec)
    if "spacegroup" in spec:
        return crystal(spec["symbols"], basis=spec["basis"], spacegroup=spec["spacegroup"], cellpar=spec["cellpar"])
    raise ValueError(f"{spec}: give 'beta-cristobalite', a structure file, {{bulk: ...}} or {{spacegroup: ...}}")


def einstein_sigma(temperature: float, spring: float) -> float:
    """RMS displacement (Angstrom) per Cartesian component of a classical harmonic (Einstein)
    oscillator of spring constant ``spring`` (eV/A^2) at ``temperature`` (K): sqrt(kB T / k)."""
    return float(np.sqrt(units.kB * temperature / spring))


def rattled_copies(crystal_cell: Atoms, temperatures: Sequence[float], spring: float, copies: int,
                   max_strain: float, seed: int) -> list[Atoms]:
    """``copies`` strained and rattled copies of ``crystal_cell`` per temperature (K).

    Each copy: a symmetric strain with independent components uniform in [-max_strain, max_strain]
    (cell -> cell (1 + strain), atoms follow), then Gaussian displacements of
    :func:`einstein_sigma` (temperature, spring) per Cartesian component. One random stream from
    ``seed``, temperature by temperature: the same arguments give the same frames. Frames carry
    ``info["rattle_temperature"]`` (K), ``info["rattle_sigma"]`` (A) and ``info["strain"]``
    (largest |component|).
    """
    rng = np.random.default_rng(seed)
    frames = []
    for temperature in temperatures:
        sigma = einstein_sigma(temperature, spring)
        for _ in range(copies):
            upper = np.triu(rng.uniform(-max_strain, max_strain, size=(3, 3)))
            strain = upper + np.triu(upper, 1).T
            out = Atoms(crystal_cell.get_chemical_symbols(), positions=crystal_cell.positions,
                        cell=crystal_cell.cell, pbc=True)
            out.set_cell(out.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            out.positions += rng.normal(0.0, sigma, size=out.positions.shape)
            out.info = {"rattle_temperature": float(temperature), "rattle_sigma": sigma,
                        "strain": float(np.abs(strain).max())}
            frames.append(out)
    return frames


Pair = tuple[str, str]


def pair_key(a: str, b: str) -> Pair:
    """Canonical order of a species pair: heavier element first, as in "Si-O"."""
    return tuple(sorted((a, b), key=lambda s: (-atomic_numbers[s], s)))  # type: ignore[return-value]


def species_pairs(species: list[str] | tuple[str, ...]) -> list[Pair]:
    """Every unordered species pair, self-pairs included, in canonical order."""
    ordered = sorted(set(species), key=lambda s: -atomic_numbers[s])
    return [pair_key(a, b) for a, b in itertools.combinations_with_replacement(ordered, 2)]


def pair_name(pair: Pair) -> str:
    return f"{pair[0]}-{pair[1]}"


def min_pair_distances(atoms: Atoms, cutoff: float = 4.0) -> dict[Pair, float]:
    """Shortest distance (Angstrom) for every species pair present within ``cutoff``."""

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    symbols = np.array(atoms.get_chemical_symbols())
    out: dict[Pair, float] = {}
    for a, b in species_pairs(sorted(set(atoms.get_chemical_symbols()))):
        mask = ((symbols[i] == a) & (symbols[j] == b)) | ((symbols[i] == b) & (symbols[j] == a))
        if mask.any():
            out[(a, b)] = float(d[mask].min())
    return out


def lammps_path(path) -> str:
    """A file name for a LAMMPS command: quoted when it holds white space (LAMMPS splits words
    at spaces; a quoted word is one argument), as it is otherwise."""
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text
