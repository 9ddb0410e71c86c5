"""The one tabulation of the auxiliary, used by the calculator, by MD and by the exported table.

Each distance_2b term of an aux GAP is tabulated once from QUIP itself (energy and derivative
every ``TABLE_STEP``) from ``r_join`` to its cutoff; ``r_join`` is one sparse spacing above the
GAP's lowest sparse point, the shortest distance where the GP is held by data. Below it the
table continues as the screened Coulomb core ``A exp(-b r) / r`` matched to the GP's value and
slope at ``r_join`` (C1), down to ``R_TABLE_MIN`` in the table and analytically to r -> 0 in
:meth:`PairTable.evaluate`. Cubic Hermite splines of the table reproduce QUIP to ~1e-9 relative.

Consumers:
- :class:`~alcgap.calculator.GapCalculator` evaluates a composite as main GAP + :meth:`AuxTable.calculate`;
- the MD driver and ``aux.table`` exports write :meth:`AuxTable.write_lammps` (``pair_style table``);
  LAMMPS stops with "Pair distance < table inner cutoff" below ``R_TABLE_MIN`` (0.01 A), where a
  pair costs more than 1e6 eV: such a run has exploded anyway.

Why not QUIP for the whole aux: QUIP parses its argument string on every call (~11 ms whatever
the potential): for the 2-body aux that is the whole cost, +10% over the main GAP at 216 atoms.
Why a table at all for ``pair_style quip`` users: a GAP decays to zero beyond its sparse points,
so the xml alone carries the core only down to ``aux.core_floor`` (0.05 A by default).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alcgap.structures import lammps_path
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from scipy.interpolate import CubicHermiteSpline

from alcgap.auxiliary.target import ScreenedCore
from alcgap.dimers import pair_curve

TABLE_STEP = 0.001  # Angstrom
R_TABLE_MIN = 0.01  # Angstrom: the inner end of every table
#: points of LAMMPS' internal table (uniform in r^2): 1.3e-3 A apart at 0.05 A for a 1.6 A cutoff
LAMMPS_TABLE_POINTS = 20000


@dataclass
class PairTable:
    """One pair's tabulated auxiliary: grid (A), energy (eV), dE/dr (eV/A), its core and cutoff."""

    symbols: tuple[str, str]
    r: np.ndarray
    energy: np.ndarray
    derivative: np.ndarray
    cutoff: float
    r_join: float
    core: ScreenedCore

    def __post_init__(self):
        self._spline = CubicHermiteSpline(self.r, self.energy, self.derivative, extrapolate=False)

    @property
    def keyword(self) -> str:
        return f"{self.symbols[0]}_{self.symbols[1]}"

    def evaluate(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy (eV) and dE/dr (eV/A) at distances r: table, core below it, 0 beyond the cutoff."""
        r = np.asarray(r, dtype=float)
        energy, slope = np.zeros_like(r), np.zeros_like(r)
        table = (r >= self.r[0]) & (r < self.cutoff)
        energy[table], slope[table] = self._spline(r[table]), self._spline(r[table], 1)
        core = r < self.r[0]
        energy[core], slope[core] = self.core.energy(r[core]), self.core.derivative(r[core])
        return energy, slope

    def curve(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy (eV) and radial force -dE/dr (eV/A), as :func:`alcgap.dimers.pair_curve` gives them."""
        energy, slope = self.evaluate(r)
        return energy, -slope


def distance_2b_terms(xml: str | os.PathLike, label: str | None = None) -> list[dict]:
    """The distance_2b terms of a GAP xml (of the GAP ``label``, or all): species, cutoff, theta,
    sparse points (sorted) and their cutoff weights."""
    terms = []
    for params in ET.parse(xml).getroot().iter("GAP_params"):
        if label is not None and params.attrib["label"] != label:
            continue
        for coords in params.iter("gpCoordinates"):
            text = coords.find("descriptor").text.strip()
            if not text.startswith("distance_2b"):
                continue
            value = lambda key: re.search(rf"\b{key}=(\S+)", text).group(1)  # noqa: E731
            points = coords.findall("sparseX")
            order = np.argsort([float(p.text) for p in points])
            terms.append({
                "symbols": (chemical_symbols[int(value("Z1"))], chemical_symbols[int(value("Z2"))]),
                "cutoff": float(value("cutoff")), "theta": float(coords.find("theta").text.split()[0]),
                "sparse": np.array([float(p.text) for p in points])[order],
                "sparse_cutoff": np.array([float(p.attrib["sparseCutoff"]) for p in points])[order],
            })
    return terms


class AuxTable:
    """Energies, forces, per-atom energies and stress of a 2-body auxiliary, from its tables."""

    def __init__(self, pairs: list[PairTable]):
        if not pairs:
            raise ValueError("an auxiliary needs at least one pair")
        self.pairs = {}
        for table in pairs:
            z = tuple(atomic_numbers[s] for s in table.symbols)
            self.pairs[z] = self.pairs[z[::-1]] = table

    @classmethod
    def from_xml(cls, xml: str | os.PathLike, label: str | None = None) -> "AuxTable":
        """Tabulate the distance_2b terms of ``xml`` (of its GAP ``label``, e.g. a composite's aux)."""
        from quippy.potential import Potential  # quippy: slow to import

        terms = distance_2b_terms(xml, label)
        if not terms:
            raise ValueError(f"{xml}: no distance_2b terms (label={label})")
        quip = Potential(param_filename=str(xml), args_str=f"IP GAP label={label}" if label else None)
        tables = []
        for term in terms:
            sparse = term["sparse"]
            r_join = float(sparse[0] + (sparse[1] - sparse[0] if len(sparse) > 1 else 0.0))
            r_join = max(r_join, R_TABLE_MIN)
            n = int(round((term["cutoff"] - r_join) / TABLE_STEP)) + 1
            grid = np.linspace(r_join, term["cutoff"], n)
            # in batches: QUIP's cell list for one box of thousands of dimers costs 4x more
            parts = [pair_curve(quip, term["symbols"], part) for part in np.array_split(grid, -(-n // 500))]
            energy, force = (np.concatenate(p) for p in zip(*parts))
            if not (energy[0] > 0 and force[0] > 0):
                raise ValueError(
                    f"{xml}: the auxiliary {term['symbols']} is not repulsive at r_join = {r_join:.3f} A "
                    f"({energy[0]:.3g} eV, force {force[0]:.3g} eV/A): refit it with alcgap")
            core = ScreenedCore.matching(r_join, energy[0], -force[0])
            below = np.arange(r_join - TABLE_STEP, R_TABLE_MIN - 1e-12, -TABLE_STEP)[::-1]
            r = np.concatenate([below, grid])
            tables.append(PairTable(
                symbols=term["symbols"], r=r, cutoff=term["cutoff"], r_join=r_join, core=core,
                energy=np.concatenate([core.energy(below), energy]),
                derivative=np.concatenate([core.derivative(below), -force]),
            ))
        return cls(tables)

    def unique(self) -> list[PairTable]:
        seen, out = set(), []
        for table in self.pairs.values():
            if id(table) not in seen:
                seen.add(id(table))
                out.append(table)
        return out

    def pair(self, a: str, b: str) -> PairTable:
        return self.pairs[(atomic_numbers[a], atomic_numbers[b])]

    def calculate(self, atoms: Atoms) -> dict:
        """energy, energies, forces (and stress when periodic in 3D) of the auxiliary on ``atoms``."""
        from matscipy.neighbours import neighbour_list  # C neighbour lists: only when frames are evaluated

        present = set(atoms.numbers.tolist())
        cutoffs = {key: t.cutoff for key, t in self.pairs.items() if key[0] in present and key[1] in present}
        n = len(atoms)
        energies, forces, virial = np.zeros(n), np.zeros((n, 3)), np.zeros((3, 3))
        if cutoffs:
            i, j, d, vec = neighbour_list("ijdD", atoms, cutoffs)
            zi, zj = atoms.numbers[i], atoms.numbers[j]
            for (z1, z2), table in self.pairs.items():
                if z1 > z2 or (z1, z2) not in cutoffs:
                    continue
                mask = (((zi == z1) & (zj == z2)) | ((zi == z2) & (zj == z1))) & (d < table.cutoff)
                if not mask.any():
                    continue
                e, de = table.evaluate(d[mask])
                # each pair appears as i->j and j->i: half of it on each
                e, de = 0.5 * e, 0.5 * de
                np.add.at(energies, i[mask], e)
                half_force = (de / d[mask])[:, None] * vec[mask]
                np.add.at(forces, i[mask], half_force)
                np.add.at(forces, j[mask], -half_force)
                virial -= vec[mask].T @ half_force
        results = {"energy": float(energies.sum()), "energies": energies, "forces": forces}
        if all(atoms.pbc):
            results["stress"] = (-virial / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
        return results

    def write_lammps(self, path: str | os.PathLike, species: list[str] | None = None, header: str = "") -> dict:
        """Write every pair (of ``species``, when given) as a ``pair_style table`` file.

        Returns {(type_i, type_j): (keyword, r_inner, cutoff)} with LAMMPS types in ``species`` order.
        """
        lines = [f"# repulsive auxiliary (metal units: A, eV, eV/A), written by alcgap. {header}".rstrip(),
                 f"# below r_join the screened Coulomb core A exp(-b r)/r; below {R_TABLE_MIN} A LAMMPS stops", ""]
        entries = {}
        for table in self.unique():
            a, b = table.symbols
            if species is not None and (a not in species or b not in species):
                continue
            lines += [f"# {a}-{b}: cutoff {table.cutoff} A, r_join {table.r_join:.4f} A, core A={table.core.A:.6g} eV A, b={table.core.b:.6g} /A",
                      table.keyword, f"N {len(table.r)} R {table.r[0]:.12g} {table.r[-1]:.12g}", ""]
            lines += [f"{k + 1} {r:.12f} {e:.14e} {-de:.14e}"
                      for k, (r, e, de) in enumerate(zip(table.r, table.energy, table.derivative))]
            lines.append("")
            if species is not None:
                types = tuple(sorted((species.index(a) + 1, species.index(b) + 1)))
                entries[types] = (table.keyword, float(table.r[0]), table.cutoff)
        Path(path).write_text("\n".join(lines))
        return entries


def table_coeff_lines(table_file: str | os.PathLike, entries: dict, substyle: str = "table") -> list[str]:
    """``pair_coeff`` lines of a written table (``substyle`` "table" inside ``hybrid/overlay``, "" alone)."""
    style = f" {substyle}" if substyle else ""
    return [f"pair_coeff {i} {j}{style} {lammps_path(Path(table_file).resolve())} {key} {cut:.12g}"
            for (i, j), (key, _, cut) in sorted(entries.items())]


def table_pair_commands(table_file: str | os.PathLike, entries: dict) -> list[str]:
    """``pair_style``/``pair_coeff`` lines for the table alone (combine with ``hybrid/overlay``)."""
    return [f"pair_style table linear {LAMMPS_TABLE_POINTS}", *table_coeff_lines(table_file, entries, substyle="")]
