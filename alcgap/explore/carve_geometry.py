"""Geometry of a carved cell: its shape and size, and which source atoms fall inside it.

The centres are unwrapped about the first one (minimum image); their centroid is the centre of
the new cell (see "Geometry" in :mod:`alcgap.explore.carve`). One neighbour search around the
centroid, for the largest cell a carve may try, serves every attempt: each only filters it.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.geometry import find_mic, wrap_positions
from matscipy.neighbours import neighbour_list

from alcgap.explore.carve_rules import both_orders


class CellTooLarge(Exception):
    """A carved cell would hold some source atom twice: it is not smaller than the frame."""


def perpendicular_widths(cell) -> np.ndarray:
    """Distances between opposite faces of a cell (rows = cell vectors)."""
    cell = np.asarray(cell, dtype=float)
    return 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)


def unwrapped_centres(frame: Atoms, centres: list[int]) -> np.ndarray:
    """Centre positions relative to the first centre, each at its minimum image."""
    positions = frame.positions[centres] - frame.positions[centres[0]]
    vectors, _ = find_mic(positions, frame.cell, frame.pbc)
    return vectors


def carved_cell(shape: str, width: float, template_cell) -> np.ndarray:
    """The new cell (rows) whose shortest perpendicular width is ``width``: a cube, or (shape
    "cell") ``template_cell`` scaled."""
    if shape == "cube":
        return np.eye(3) * width
    template = np.asarray(template_cell, dtype=float)
    return template * (width / perpendicular_widths(template).min())


def circumradius(cell: np.ndarray) -> float:
    """Distance from the centre of ``cell`` to its farthest corner."""
    corners = np.array(list(itertools.product((-0.5, 0.5), repeat=3))) @ cell
    return float(np.linalg.norm(corners, axis=1).max())


def near_centroid(frame: Atoms, centroid: np.ndarray, reach: float, exhaustive: bool = False):
    """Every image of every source atom within ``reach`` of ``centroid``: (source index, vector
    from the centroid), as the neighbours of a ghost atom (Z=0) there in matscipy's list (which
    also lists a neighbour at distance 0, such as a single centre at its own centroid).

    When the sphere of radius ``reach`` fits inside the frame (``reach`` <= half its shortest
    perpendicular width) each atom has at most one image in it, the one that ASE's
    ``wrap_positions`` puts in the frame's cell re-centred on the centroid; that is O(N),
    where matscipy's list, binned by the large ``reach``, compares all pairs (``exhaustive``
    forces the list)."""
    if not exhaustive and reach * (1 + 1e-9) + 1e-6 < perpendicular_widths(frame.cell.array).min() / 2:
        centre = np.linalg.solve(frame.cell.array.T, centroid)
        wrapped = wrap_positions(frame.positions, frame.cell, pbc=True, center=centre, eps=0.0)
        return np.arange(len(frame)), wrapped - centroid
    ghost = len(frame)
    positions = np.vstack([frame.positions, centroid])
    numbers = np.append(frame.numbers, 0).astype(np.int32)
    cutoff = {(0, int(z)): reach * (1 + 1e-9) + 1e-6 for z in set(frame.numbers.tolist())}
    i, j, vectors = neighbour_list("ijD", positions=positions, numbers=numbers, cell=frame.cell.array,
                                   pbc=frame.pbc, cutoff=both_orders(cutoff))
    mask = (i == ghost) & (j != ghost)
    return j[mask], vectors[mask]


def atoms_inside(near, cell: np.ndarray):
    """Source indices and positions relative to the centroid of the atoms inside ``cell`` centred
    there, from :func:`near_centroid` with a reach of at least the cell's circumradius."""
    j, vectors = near
    fractional = vectors @ np.linalg.inv(cell)
    inside = np.all((fractional >= -0.5) & (fractional < 0.5), axis=1)
    j, vectors = j[inside], vectors[inside]
    if len(np.unique(j)) != len(j):
        raise CellTooLarge()
    order = np.argsort(j, kind="stable")
    return j[order], vectors[order]
