"""Carve small periodic cells around flagged atoms of a large MD frame, for labelling.

Exploration MD runs in cells ~10x the training cell (240 or 2160 atoms of SiO2). An event it
flags -- a short pair, an atom of high predicted variance -- is local, and labelling the whole
frame with DFT costs ~(N_frame / N_cell)^3 as much as labelling a training cell. :func:`carve`
cuts a small periodic cell around the flagged atoms (the *centres*) whose environment out to
``radius`` (at least the SOAP cutoff) is *complete and exact*: every atom within ``radius`` of
a centre is present at the same relative position, and no periodic image comes closer than
``radius``. The descriptor of each centre atom is therefore the source frame's to round-off.

Geometry
    The centres are unwrapped about the first one (minimum image) and their centroid ``c`` is
    the centre of the new cell. ``extent`` = 2 * (largest distance of a centre from ``c``).
    Every atom within ``radius`` of a centre lies within ``radius + extent/2`` of ``c``, so the
    new cell is chosen with an inscribed sphere of that radius: ``shape="cube"`` a cube of side
    ``L = 2*radius + extent``; ``shape="cell"`` the ``template_cell`` (the training cell, say)
    scaled so that its shortest perpendicular width is ``2*radius + extent``. The cell is
    centred on ``c`` and keeps every source atom (the one image of it) whose position relative
    to ``c`` lies inside it, at that relative position; the result is periodic (pbc True).
    Every image of an atom lies outside the cell, and each centre is at least ``radius`` from
    the cell's faces, so images never come within ``radius`` of a centre.

Protected atoms
    The centres, the atoms within ``radius`` of a centre (the *core*) and ``protect`` are never
    removed below.

Rules (details in :mod:`alcgap.explore.carve_rules`)
    No new short pair: a contact across the new faces must be at least ``(1 + boundary_margin)``
    x the source's shortest of its species pair (flagged pairs left out); conflicts are resolved
    by removing unprotected atoms, and where two protected atoms meet, the cell grows by
    ``grow_step`` and the carve starts again. Stoichiometry (``stoichiometry="closest"``): the
    fewest outermost unprotected atoms are removed that bring the cell within ``max_off`` atoms
    of the source's composition (SiO2, ``max_off`` 1: ``n_O - 2 n_Si`` in {-1, 0, 1}).

Provenance (``carved.info``; extxyz round-trips all of it)
    ``carved_from_natoms``, ``carve_centres`` (source indices), ``centre_atoms`` (the same
    atoms' indices in the carved cell, same order), ``carve_radius``, ``carve_shape``,
    ``carve_side`` (cube side, or the shortest perpendicular width for shape "cell"),
    ``carve_grown`` (how much the side grew), ``carve_removed`` (= ``carve_removed_boundary`` +
    ``carve_removed_stoichiometry``), ``carve_off`` and ``carve_events`` (from
    :func:`carve_events`: which events the cell covers). Index lists are int arrays; extxyz
    reads a one-element list back as a scalar, :func:`info_indices` gives a list either way.
    The source's scalar ``info`` (``md_step``, ``task``, ...) is kept except labels of the whole
    frame (keys containing energy, virial or stress); so are its per-atom arrays for the kept
    atoms, except per-atom labels (names containing force, energ, virial or stress). Per-atom
    ``carved_from`` is the source index of each atom. Calculators are dropped.

Boundary relaxation (:func:`relax_boundary`, :mod:`alcgap.explore.carve_relax`)
    The cut faces leave dangling bonds and wrong-species neighbours across the boundary: the
    atoms farther than ``frozen_radius`` from every centre may be relaxed with the model being
    explored, the event and its surroundings held at the source geometry.

Neighbour searches use matscipy's C neighbour list (the atoms inside the new cell are the
neighbours of a ghost atom at ``c``; in a frame much wider than the new cell, ASE's
``wrap_positions`` about ``c`` instead, the same atoms in O(N)); nothing here loops over
minimum images by hand.

The pieces: cell geometry (:mod:`~alcgap.explore.carve_geometry`), the boundary and stoichiometry
rules (:mod:`~alcgap.explore.carve_rules`), the checks (:mod:`~alcgap.explore.carve_check`), the
boundary relaxation (:mod:`~alcgap.explore.carve_relax`) and reading a carved cell's provenance
(:mod:`~alcgap.explore.carve_provenance`). This module is the public API (``__all__``).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

from alcgap.explore.carve_check import check_carved
from alcgap.explore.carve_geometry import (CellTooLarge, atoms_inside, carved_cell, circumradius, near_centroid,
                                           perpendicular_widths, unwrapped_centres)
from alcgap.provenance import exact_atoms, info_indices
from alcgap.explore.carve_relax import relax_boundary
from alcgap.explore.carve_rules import (EPS, boundary_conflicts, element_counts, event_pairs, fix_stoichiometry,
                                        remove_conflicts, source_minima, stoichiometry_off, z_pair)

__all__ = [
    "CarveSettings",
    "carve",
    "carve_events",
    "check_carved",
    "exact_atoms",
    "info_indices",
    "merge_events",
    "perpendicular_widths",
    "relax_boundary",
    "source_minima",
    "stoichiometry_off",
]

#: label-like info keys / per-atom arrays of the whole frame that do not hold for a carved cell
_INFO_LABEL_WORDS = ("energy", "virial", "stress")
_ARRAY_LABEL_WORDS = ("force", "energ", "virial", "stress")


@dataclass(frozen=True)
class CarveSettings:
    """How to carve (lengths in Angstrom). The rules are in the module docstring and, in full,
    in :mod:`alcgap.explore.carve_rules`."""

    #: surroundings kept, complete and exact, around each centre: at least one SOAP cutoff
    radius: float = 4.0
    #: "cube", or "cell": ``template_cell`` (the training cell's shape) scaled to fit
    shape: str = "cube"
    #: "closest": composition within ``max_off`` of the source's; "none": as carved
    stoichiometry: str = "closest"
    #: at most this many atoms off: sum_s |n_s - n x_s| <= max_off (SiO2, 1: n_O - 2 n_Si in {-1, 0, 1})
    max_off: float = 1.0
    #: contacts across the new boundary must be >= (1 + boundary_margin) x the source's shortest
    #: distance of that species pair (flagged pairs left out); 0: no new short pair
    boundary_margin: float = 0.0
    #: growth of the cube side (inscribed diameter) per retry when protected atoms meet across a face
    grow_step: float = 0.25

    def __post_init__(self):
        if not np.isfinite(self.radius) or self.radius <= 0:
            raise ValueError(f"radius must be a positive length (Angstrom), got {self.radius}")
        if self.shape not in ("cube", "cell"):
            raise ValueError(f"shape={self.shape!r}: use 'cube' or 'cell' (the template cell scaled)")
        if self.stoichiometry not in ("closest", "none"):
            raise ValueError(f"stoichiometry={self.stoichiometry!r}: use 'closest' or 'none'")
        if not self.max_off >= 0:
            raise ValueError(f"max_off must be >= 0 atoms, got {self.max_off}")
        if not self.boundary_margin > -1:
            raise ValueError(f"boundary_margin must be > -1, got {self.boundary_margin}")
        if not self.grow_step > 0:
            raise ValueError(f"grow_step must be > 0, got {self.grow_step}")


# --------------------------------------------------------------------------- one carve


def carve(frame: Atoms, centres: Sequence[int], settings: CarveSettings = CarveSettings(), *,
          template_cell=None, protect: Sequence[int] = (),
          flagged: Sequence[Sequence[int]] = ()) -> Atoms:
    """A small periodic cell around the ``centres`` (source indices) of ``frame``; see the module
    docstring for the rules. ``protect``: more source atoms never removed (kept if inside the
    cell). ``flagged``: other flagged groups of the same frame whose pairs, like the centres',
    are left out of the source's shortest distances (:func:`carve_events` passes every event)."""
    _check_frame(frame, settings, template_cell)
    centres = _check_indices(frame, centres, "centres")
    if not centres:
        raise ValueError("centres: give at least one atom index")
    protect = _check_indices(frame, protect, "protect")
    groups = [centres] + [_check_indices(frame, group, "flagged") for group in flagged]
    minima = source_minima(frame, event_pairs(groups))
    allowed = {key: d * (1 + settings.boundary_margin) for key, d in minima.items()}

    unwrapped = unwrapped_centres(frame, centres)
    offset = unwrapped.mean(axis=0)
    centroid = frame.positions[centres[0]] + offset
    centre_vectors = unwrapped - offset
    extent = 2 * float(np.linalg.norm(centre_vectors, axis=1).max())
    start = 2 * settings.radius + extent
    stop = start + max(allowed.values())
    # one neighbour search for the largest cell tried; each attempt only filters it
    near = near_centroid(frame, centroid, circumradius(carved_cell(settings.shape, stop, template_cell)))
    job = _Carving(frame, centres, protect, settings, template_cell, minima, allowed, centre_vectors, near)
    best = _best_attempt(job, start, stop, extent)
    if settings.stoichiometry == "closest" and best.off > settings.max_off + EPS:
        warnings.warn(f"carved cell around {centres} is {best.off:.2f} atoms off the source stoichiometry "
                      f"(max_off {settings.max_off:g}): too few atoms outside the radius to remove", stacklevel=2)
    return _build(frame, best, centres, settings, start)


@dataclass
class _Attempt:
    indices: np.ndarray       # source indices kept
    vectors: np.ndarray       # their positions relative to the centroid
    cell: np.ndarray
    width: float
    removed_boundary: int
    removed_stoichiometry: int
    off: float


@dataclass(frozen=True)
class _Carving:
    """What every attempt of one carve shares: the source, its centres and protected atoms, the
    distances the rules hold the cell to, and the one neighbour search around the centroid."""

    frame: Atoms
    centres: list[int]
    protect: list[int]
    settings: CarveSettings
    template_cell: object
    #: the source's shortest distance per species pair, the flagged pairs left out
    minima: dict[tuple[int, int], float]
    #: the shortest contact allowed across the new boundary, per species pair
    allowed: dict[tuple[int, int], float]
    #: the centres relative to their centroid (Angstrom)
    centre_vectors: np.ndarray
    #: every source atom image near the centroid (:func:`~alcgap.explore.carve_geometry.near_centroid`)
    near: tuple


def _best_attempt(job: _Carving, start: float, stop: float, extent: float) -> _Attempt:
    """The first width from ``start`` (growing by ``grow_step``, at most ``stop``) whose cell keeps
    the rules; of cells that cannot reach ``max_off``, the closest to the source stoichiometry."""
    settings = job.settings
    widths = list(np.arange(start, stop, settings.grow_step)) + [stop]
    best = None
    for width in widths:
        try:
            result = _attempt(job, float(width))
        except CellTooLarge:
            if best is not None:
                break
            raise ValueError(
                f"a carved cell {width:.2f} A wide around centres {job.centres} (radius {settings.radius:g} A, "
                f"extent {extent:.2f} A) would hold some atom of the {len(job.frame)}-atom frame twice: "
                f"it is not smaller than the frame; label the frame whole instead"
            ) from None
        if result is None:
            continue
        if settings.stoichiometry == "none" or result.off <= settings.max_off + EPS:
            return result
        if best is None or result.off < best.off - EPS:
            best = result
    if best is None:  # unreachable: at `stop` no two protected atoms meet across a face
        raise RuntimeError(f"could not carve around {job.centres}: protected atoms meet across the boundary")
    return best


def _attempt(job: _Carving, width: float) -> _Attempt | None:
    """The cell ``width`` wide with the boundary and stoichiometry rules applied; None when two
    protected atoms meet across its faces. Raises CellTooLarge when it would hold an atom twice."""
    frame, centres, settings = job.frame, job.centres, job.settings
    cell = carved_cell(settings.shape, width, job.template_cell)
    indices, vectors = atoms_inside(job.near, cell)
    local = {int(s): k for k, s in enumerate(indices)}
    missing = [c for c in centres if c not in local]
    if missing:  # cannot happen with the inscribed sphere chosen as above; guard anyway
        raise RuntimeError(f"centres {missing} fell outside the carved cell")
    numbers = frame.numbers[indices]
    distance = np.min(np.linalg.norm(vectors[:, None, :] - job.centre_vectors[None, :, :], axis=2), axis=1)
    protected = distance <= settings.radius
    for atom in list(centres) + list(job.protect):
        if int(atom) in local:
            protected[local[int(atom)]] = True
    # only the centres' own pairs may stay short; another event's short pair in this cell is removed
    flagged_local = {z_pair(local[a], local[b]) for a, b in event_pairs([centres])}
    edges, blocked = boundary_conflicts(numbers, vectors, cell, job.minima, job.allowed, flagged_local, protected)
    if blocked:
        return None
    alive = np.ones(len(indices), dtype=bool)
    source_counts = element_counts(frame.numbers)
    boundary = remove_conflicts(edges, protected, numbers, distance, source_counts, alive)
    stoich, off = [], stoichiometry_off(element_counts(numbers[alive]), source_counts)
    if settings.stoichiometry == "closest":
        stoich, off, _ = fix_stoichiometry(numbers, protected, distance, alive, source_counts, settings.max_off)
    return _Attempt(indices[alive], vectors[alive], cell, width, len(boundary), len(stoich), off)


def _build(frame: Atoms, result: _Attempt, centres: list[int], settings: CarveSettings, start: float) -> Atoms:
    """The carved cell as Atoms, with the source's labels dropped and the provenance added
    (module docstring)."""
    indices = result.indices
    positions = result.vectors + result.cell.sum(axis=0) / 2
    carved = Atoms(numbers=frame.numbers[indices], positions=positions, cell=result.cell, pbc=True)
    for name, values in frame.arrays.items():
        if name in ("numbers", "positions") or any(word in name.lower() for word in _ARRAY_LABEL_WORDS):
            continue
        carved.arrays[name] = np.array(values[indices])
    carved.arrays["carved_from"] = np.array(indices, dtype=int)
    for key, value in frame.info.items():
        if any(word in key.lower() for word in _INFO_LABEL_WORDS):
            continue
        if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            carved.info[key] = value
    local = {int(s): k for k, s in enumerate(indices)}
    carved.info.update(
        carved_from_natoms=len(frame),
        carve_centres=np.array(centres, dtype=int),
        centre_atoms=np.array([local[c] for c in centres], dtype=int),
        carve_radius=float(settings.radius),
        carve_shape=settings.shape,
        carve_side=float(result.width),
        carve_grown=float(result.width - start),
        carve_removed=int(result.removed_boundary + result.removed_stoichiometry),
        carve_removed_boundary=int(result.removed_boundary),
        carve_removed_stoichiometry=int(result.removed_stoichiometry),
        carve_off=float(round(result.off, 12)),
    )
    return carved


# --------------------------------------------------------------------------- events


def merge_events(frame: Atoms, events: Sequence[Sequence[int]], radius: float) -> list[list[int]]:
    """Groups of event numbers (in order of first event) whose centres are linked by chains of
    centre-centre distances (minimum image) of at most ``radius``."""
    parent = list(range(len(events)))

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b in itertools.combinations(range(len(events)), 2):
        _, d = get_distances(frame.positions[list(events[a])], frame.positions[list(events[b])],
                             cell=frame.cell, pbc=frame.pbc)
        if d.min() <= radius:
            parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for k in range(len(events)):
        groups.setdefault(root(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def carve_events(frame: Atoms, events: Sequence[Sequence[int]], settings: CarveSettings = CarveSettings(), *,
                 template_cell=None, protect: Sequence[int] = ()) -> list[Atoms]:
    """One carved cell per flagged region of ``frame``. ``events``: groups of source indices (a
    short pair, one high-variance atom, ...). Events whose centres come within ``settings.radius``
    of each other (chains included) share one cell, centred on all their centres; the pairs of
    every event are left out of the source's shortest distances. ``info["carve_events"]`` lists
    the event numbers a cell covers."""
    _check_frame(frame, settings, template_cell)
    if len(events) == 0:
        raise ValueError("events: give at least one group of atom indices")
    checked = []
    for k, event in enumerate(events):
        group = _check_indices(frame, event, f"events[{k}]")
        if not group:
            raise ValueError(f"events[{k}] is empty")
        checked.append(group)
    out = []
    for group in merge_events(frame, checked, settings.radius):
        centres = []
        for k in group:
            centres += [i for i in checked[k] if i not in centres]
        others = [checked[k] for k in range(len(checked)) if k not in group]
        carved = carve(frame, centres, settings, template_cell=template_cell, protect=protect, flagged=others)
        carved.info["carve_events"] = np.array(group, dtype=int)
        out.append(carved)
    return out


# --------------------------------------------------------------------------- input checks


def _check_frame(frame: Atoms, settings: CarveSettings, template_cell):
    """A periodic 3D frame more than twice the radius wide, and a template cell where the shape needs one."""
    if not isinstance(frame, Atoms) or len(frame) == 0:
        raise ValueError("frame: give a non-empty ase.Atoms")
    if not all(frame.pbc):
        raise ValueError("frame: carving needs a frame periodic in all three directions (pbc True)")
    if frame.cell.rank < 3:
        raise ValueError("frame: the cell must have three non-degenerate vectors")
    half = perpendicular_widths(frame.cell.array).min() / 2
    if settings.radius > half:
        raise ValueError(
            f"radius {settings.radius:g} A is larger than half the frame's shortest perpendicular width "
            f"({half:.3f} A): a carved cell would not be smaller than the {len(frame)}-atom frame; "
            f"label the frame whole instead"
        )
    if settings.shape == "cell":
        if template_cell is None:
            raise ValueError("shape='cell' needs template_cell (the training cell, 3x3)")
        template = np.asarray(template_cell, dtype=float)
        if template.shape != (3, 3) or abs(np.linalg.det(template)) < 1e-9:
            raise ValueError("template_cell must be a non-degenerate 3x3 cell")


def _check_indices(frame: Atoms, indices, what: str) -> list[int]:
    """Atom indices of ``frame``, each once, in the order given."""
    out = []
    for value in indices:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{what}: atom indices must be integers, got {value!r}")
        if not 0 <= int(value) < len(frame):
            raise ValueError(f"{what}: index {int(value)} is out of range for a {len(frame)}-atom frame")
        if int(value) not in out:
            out.append(int(value))
    return out
