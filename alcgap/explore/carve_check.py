"""Checking a carved cell against its source: no pair shorter than the source's, no foreign
species, and every centre's environment complete and exact out to the carve radius.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list

from alcgap.provenance import info_indices
from alcgap.explore.carve_rules import both_orders, event_pairs, source_minima, z_pair, z_pair_label

#: distances of a cell read back from a file: extxyz keeps positions to 1e-8 A, so a pair at the
#: source's shortest distance can come back a few 1e-9 A shorter
FILE_EPS = 1e-6


def check_carved(source: Atoms, carved: Atoms, flagged_pairs: Sequence[tuple[int, int]] | None = None) -> list[str]:
    """Problems of a carved cell, as sentences (empty: none found).

    * a pair closer than the source's shortest of its species pair (``flagged_pairs`` -- source
      indices, default every pair among ``info["carve_centres"]`` -- are left out of the source's
      shortest distances and are not reported in the carved cell);
    * a species the source does not have;
    * with the provenance of :func:`~alcgap.explore.carve.carve`: an atom within ``carve_radius`` of a centre in the
      source that is missing from the carved cell, or not at the same relative position, or
      an atom (image) within ``carve_radius`` of a centre that the source does not have there.
    """
    problems = []
    carved_from = carved.arrays.get("carved_from")
    if flagged_pairs is None:
        flagged_pairs = sorted(event_pairs([info_indices(carved, "carve_centres")])) \
            if "carve_centres" in carved.info else []
    flagged_source = {z_pair(a, b) for a, b in flagged_pairs}
    unknown = sorted(set(carved.get_chemical_symbols()) - set(source.get_chemical_symbols()))
    if unknown:
        problems.append(f"species {unknown} are not in the source frame")
    problems += _short_pairs(source, carved, flagged_source, carved_from)
    needed = ("carve_centres", "centre_atoms", "carve_radius")
    if carved_from is not None and all(k in carved.info for k in needed):
        problems += _check_environments(source, carved, carved_from)
    return problems


def _short_pairs(source: Atoms, carved: Atoms, flagged_source: set[tuple[int, int]],
                 carved_from: np.ndarray | None) -> list[str]:
    """Pairs of ``carved`` shorter than the source's shortest of their species pair (each pair
    once, the flagged ones left out), as sentences."""
    problems = []
    minima = source_minima(source, flagged_source)
    cutoff = {key: d for key, d in minima.items() if all(z in set(carved.numbers.tolist()) for z in key)}
    if cutoff:
        i, j, d, shifts = neighbour_list("ijdS", carved, both_orders(cutoff))
        seen = set()
        for a, b, dist, shift in zip(i.tolist(), j.tolist(), d, shifts):
            key = z_pair(carved.numbers[a], carved.numbers[b])
            if dist >= minima[key] - FILE_EPS:
                continue
            if carved_from is not None and z_pair(carved_from[a], carved_from[b]) in flagged_source:
                continue
            tag = (min(a, b), max(a, b), round(float(dist), 6))
            if tag in seen:
                continue
            seen.add(tag)
            where = "across the boundary" if np.any(shift != 0) else "inside the cell"
            problems.append(f"{z_pair_label(key)} pair {tag[0]}-{tag[1]} at {dist:.4f} A ({where}) is shorter than "
                            f"the source's shortest {z_pair_label(key)}, {minima[key]:.4f} A")
    return problems


def _check_environments(source: Atoms, carved: Atoms, carved_from: np.ndarray) -> list[str]:
    problems = []
    # a relaxed boundary keeps the source geometry exactly out to its frozen radius only
    radius = float(carved.info.get("carve_frozen_radius", carved.info["carve_radius"]))
    centres = info_indices(carved, "carve_centres")
    local_centres = info_indices(carved, "centre_atoms")
    for c, lc in zip(centres, local_centres):
        if int(carved_from[lc]) != c:
            problems.append(f"centre_atoms {lc} is source atom {int(carved_from[lc])}, not centre {c}")
            return problems
    in_source = _environment(source, centres, radius)
    in_carved = _environment(carved, local_centres, radius)
    for c, lc in zip(centres, local_centres):
        expected = [(int(j), v) for j, v in in_source[c]]
        found = [(int(carved_from[j]), v) for j, v in in_carved[lc]]
        for j, v in _unmatched(expected, found):
            problems.append(f"source atom {j} at {np.linalg.norm(v):.4f} A of centre {c} is missing from the "
                            f"carved cell or not at the same relative position")
        if "carve_relax_entered" in carved.info:
            continue  # a relaxed atom may come within the frozen radius: recorded, not a defect
        for j, v in _unmatched(found, expected):
            problems.append(f"carved cell has source atom {j} at {np.linalg.norm(v):.4f} A of centre {c}, "
                            f"where the source frame has none")
    return problems


def _environment(atoms: Atoms, centres: list[int], radius: float) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Per centre: (neighbour index, vector) of every neighbour image within ``radius``."""
    i, j, vectors = neighbour_list("ijD", atoms, float(radius))
    out: dict[int, list[tuple[int, np.ndarray]]] = {c: [] for c in centres}
    mask = np.isin(i, centres)
    for a, b, v in zip(i[mask].tolist(), j[mask].tolist(), vectors[mask]):
        out[a].append((b, v))
    return out


def _unmatched(first, second, tol=1e-6):
    """Entries (index, vector) of ``first`` with no entry of the same index and vector in ``second``."""
    left = [(j, v) for j, v in first]
    pool = list(second)
    out = []
    for j, v in left:
        for k, (jj, vv) in enumerate(pool):
            if jj == j and np.linalg.norm(vv - v) < tol:
                del pool[k]
                break
        else:
            out.append((j, v))
    return out
