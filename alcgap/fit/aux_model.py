"""A fitted repulsive auxiliary evaluated from an exact table of itself.

QUIP parses its argument string on every ``calc`` call: about 11 ms here whatever the potential
or the cell (seen with a Lennard-Jones potential on 8 atoms; the time goes to ``lower_case`` in
``param_read_line``). For the main SOAP GAP that is noise; for the 2-body auxiliary it is the
whole cost, and evaluated through QUIP the composite costs +10% over the main GAP on a 216-atom
cell. A pair potential needs no such machinery: each pair's curve is tabulated once from QUIP
itself (energy and derivative on a 0.001 A grid) and interpolated with cubic Hermite splines,
which reproduce QUIP to about 1e-9 relative (tests check it). Pairs closer than the fitted range
fall back to QUIP for that structure, so nothing outside the fit is ever invented here.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from scipy.interpolate import CubicHermiteSpline

from alcgap.dimers import pair_curve

TABLE_STEP = 0.001  # Angstrom


@dataclass
class AuxPair:
    """One distance_2b term: species (atomic numbers), fitted range and cutoff (Angstrom)."""

    z1: int
    z2: int
    r_lo: float
    cutoff: float


def aux_pairs(xml: str | os.PathLike, label: str | None = None) -> list[AuxPair]:
    """The distance_2b terms of a GAP xml (of the GAP ``label``, or of all of them)."""
    pairs = []
    for params in ET.parse(xml).getroot().iter("GAP_params"):
        if label is not None and params.attrib["label"] != label:
            continue
        for coords in params.iter("gpCoordinates"):
            text = coords.find("descriptor").text.strip()
            if not text.startswith("distance_2b"):
                continue
            value = lambda key: re.search(rf"\b{key}=(\S+)", text).group(1)  # noqa: E731
            sparse = [float(s.text) for s in coords.findall("sparseX")]
            pairs.append(AuxPair(int(value("Z1")), int(value("Z2")), min(sparse), float(value("cutoff"))))
    return pairs


class TabulatedAux:
    """Energy, forces, per-atom energies and stress of a 2-body auxiliary GAP, from exact tables."""

    def __init__(self, xml: str | os.PathLike, label: str | None = None):
        from quippy.potential import Potential

        self._quip = Potential(param_filename=str(xml), args_str=f"IP GAP label={label}" if label else None)
        self.pairs = aux_pairs(xml, label)
        if not self.pairs:
            raise ValueError(f"{xml}: no distance_2b terms (label={label})")
        self._splines = {}
        for pair in self.pairs:
            grid = np.linspace(pair.r_lo, pair.cutoff, int(round((pair.cutoff - pair.r_lo) / TABLE_STEP)) + 1)
            energy, force = pair_curve(self._quip, (chemical_symbols[pair.z1], chemical_symbols[pair.z2]), grid)
            spline = CubicHermiteSpline(grid, energy, -force, extrapolate=False)
            self._splines[(pair.z1, pair.z2)] = self._splines[(pair.z2, pair.z1)] = (pair, spline)

    def calculate(self, atoms: Atoms) -> dict:
        from matscipy.neighbours import neighbour_list

        present = set(atoms.numbers.tolist())
        cutoffs = {key: p.cutoff for key, (p, _) in self._splines.items() if key[0] in present and key[1] in present}
        n = len(atoms)
        energies, forces, virial = np.zeros(n), np.zeros((n, 3)), np.zeros((3, 3))
        if cutoffs:
            i, j, d, vec = neighbour_list("ijdD", atoms, cutoffs)
            zi, zj = atoms.numbers[i], atoms.numbers[j]
            for (z1, z2), (pair, spline) in self._splines.items():
                if z1 > z2 or (z1, z2) not in cutoffs:
                    continue
                mask = (((zi == z1) & (zj == z2)) | ((zi == z2) & (zj == z1))) & (d < pair.cutoff)
                if not mask.any():
                    continue
                r = d[mask]
                if r.min() < pair.r_lo:
                    return self._from_quip(atoms)  # closer than the fitted range: QUIP decides
                # each pair appears as i->j and j->i: half of it on each
                e, de = 0.5 * spline(r), 0.5 * spline(r, 1)
                np.add.at(energies, i[mask], e)
                half_force = (de / r)[:, None] * vec[mask]
                np.add.at(forces, i[mask], half_force)
                np.add.at(forces, j[mask], -half_force)
                virial -= vec[mask].T @ half_force
        results = {"energy": float(energies.sum()), "energies": energies, "forces": forces}
        if all(atoms.pbc):
            results["stress"] = (-virial / atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
        return results

    def _from_quip(self, atoms: Atoms) -> dict:
        wanted = ["energy", "forces", "energies"] + (["stress"] if all(atoms.pbc) else [])
        self._quip.reset()
        self._quip.calculate(atoms, wanted)
        return {key: np.array(self._quip.results[key]) if key != "energy" else float(self._quip.results[key]) for key in wanted}
