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

Boundary rule (no new short pair)
    Across the new faces atoms that were far apart become neighbours through the images. A
    contact of species pair A-B across the boundary must be at least
    ``(1 + boundary_margin) * d_AB``, where ``d_AB`` is the shortest A-B distance in the source
    frame with the flagged pairs left out (all pairs among the centres; in
    :func:`carve_events`, among the centres of every event). With the default margin 0 the
    carved cell has no pair of any species pair shorter than anything the source frame
    had besides the flagged event, so its label adds no second, artificial event. (A positive
    margin keeps new contacts farther; a negative one lets them come closer, and
    :func:`check_carved` then reports them.) Pairs that are not across the boundary are the
    source's own geometry; one shorter than ``d_AB`` can only be another flagged event's and
    it is removed too unless both of its atoms are protected. Conflicts are resolved by removing
    unprotected atoms, greedily: first the partner of a protected atom, then the atom with the
    most conflicts (ties: the removal that leaves the composition closer to the source's, then
    the atom farthest from the centres). A conflict between two protected atoms cannot be
    removed: the cell then grows by ``grow_step`` (its inscribed diameter; the cube side) and
    the carve starts again. At ``2*radius + extent + max_AB(allowed contact)`` no two protected
    atoms can meet across a face, so growth always ends.

Stoichiometry rule (``stoichiometry="closest"``)
    With source counts ``N_s`` (fractions ``x_s = N_s/N``) and carved counts ``n_s`` (total
    ``n``), the carved cell is ``off = sum_s |n_s - n x_s|`` atoms off the source stoichiometry:
    the L1 distance between its composition and the source's scaled to ``n`` atoms. Outermost
    unprotected atoms (farthest from the nearest centre) are removed, the fewest possible, until
    ``off <= max_off``; of the removals of that size the one with the smallest ``off`` is taken.
    For a binary ``A_p B_q`` (gcd 1), ``off = 2 |p n_B - q n_A| / (p + q)``, proportional to
    the formal-charge imbalance of an ionic compound (``z_A : z_B = q : p``), so the rule weighs
    a missing anion and an extra cation by the charge they carry. For SiO2 ``off = 2/3 |n_O -
    2 n_Si|`` and ``max_off = 1`` means exactly ``n_O - 2 n_Si`` in {-1, 0, 1}: one O too many or
    too few is accepted, one Si too many (+4 formal charge, two O vacancies) is not. For AB one
    extra atom of either species is ``off = 1``. An elemental frame is never off. If ``off <=
    max_off`` cannot be reached (too few unprotected atoms), the cell grows as above; at the
    largest cell the closest composition is taken and ``carve_off`` records it (with a warning).
    ``stoichiometry="none"`` skips this step.

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

Boundary relaxation (:func:`relax_boundary`)
    The cut faces leave dangling bonds and wrong-species neighbours across the boundary. Labelled
    as carved, a 48-atom SiO2 cell of a quenched Vashishta frame sat 1.27 eV/atom above its
    source, far outside any training data; xTB needed 130-180 SCF steps for it against 18 for
    the 240-atom frame. :func:`relax_boundary` minimises the energy of the atoms farther than
    ``frozen_radius`` from every centre with a calculator (in the campaign: the model being
    explored), the atoms within it held at the source geometry. The label stays exact for the
    cell it is (the reference labels the relaxed cell); what is kept exactly is the event and
    its surroundings out to ``frozen_radius``. Measured on that 48-atom cell (Vashishta, FIRE to
    0.05 eV/A): frozen 4.0 A -8.33, 3.5 A -8.48, 3.0 A -8.64 eV/atom, against -8.82 for the
    source and -8.96 to -8.46 for the 24-atom training melt; xTB SCF steps of pair cells 162-177
    carved, 27-111 frozen at 3.5 A, 31 at 3.0 A. Hence the campaign's default, the SOAP cutoff
    less 1 A (two of its transition widths): the first and second neighbour shells stay exact.
    Every step of the relaxation is checked: when a pair comes closer than 0.9 x the source's
    shortest of its species pair (the flagged pairs left out), it ends at the step before (the
    model that explored may itself be what pulls atoms together: in the demo's first iteration
    it made Si-Si 1.94 A), and ``carve_relax`` records it and why. Not 1.0: a relaxed boundary makes ordinary bonds
    a little shorter than the one quenched frame happened to hold (Si-Si 2.71 A, edge-sharing
    tetrahedra, in a frame whose shortest was 2.84 A); a collapse towards a cluster is far
    below 0.9 (the clustering limits of SiO2 are 0.7-0.8 x its shortest bonded pairs).

Neighbour searches use matscipy's C neighbour list (the atoms inside the new cell are the
neighbours of a ghost atom at ``c``; in a frame much wider than the new cell, ASE's
``wrap_positions`` about ``c`` instead, the same atoms in O(N)); nothing here loops over
minimum images by hand.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.geometry import find_mic, get_distances, wrap_positions
from matscipy.neighbours import neighbour_list

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
_EPS = 1e-9
#: distances of a cell read back from a file: extxyz keeps positions to 1e-8 A, so a pair at the
#: source's shortest distance can come back a few 1e-9 A shorter
_FILE_EPS = 1e-6


@dataclass(frozen=True)
class CarveSettings:
    """How to carve (lengths in Angstrom). The rules are in the module docstring."""

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


# --------------------------------------------------------------------------- small helpers


def perpendicular_widths(cell) -> np.ndarray:
    """Distances between opposite faces of a cell (rows = cell vectors)."""
    cell = np.asarray(cell, dtype=float)
    return 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)


def info_indices(atoms: Atoms, key: str) -> list[int]:
    """An index list from ``atoms.info`` as a list of ints, whether extxyz read it as an array or a scalar."""
    return [int(v) for v in np.atleast_1d(atoms.info[key])]


def _pair_key(za: int, zb: int) -> tuple[int, int]:
    return (int(min(za, zb)), int(max(za, zb)))


def _pair_label(key: tuple[int, int]) -> str:
    a, b = sorted(key, reverse=True)  # heavier first, as in "Si-O"
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def _flagged_pair_set(groups: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    out = set()
    for group in groups:
        for a, b in itertools.combinations(sorted(set(int(i) for i in group)), 2):
            out.add((a, b))
    return out


def _pair_cutoff_dict(values: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    out = {}
    for (a, b), d in values.items():
        out[(a, b)] = float(d)
        out[(b, a)] = float(d)
    return out


def source_minima(frame: Atoms, flagged_pairs: Iterable[tuple[int, int]] = (), cutoff: float = 5.0
                  ) -> dict[tuple[int, int], float]:
    """Shortest distance of each species pair (atomic numbers, ascending) in ``frame``, leaving
    out the pairs of atoms in ``flagged_pairs`` (all their images). A species pair with no pair
    within ``cutoff`` gets ``cutoff`` (the source has none closer)."""
    excluded = {_pair_key(a, b) for a, b in flagged_pairs}
    i, j, d = neighbour_list("ijd", frame, float(cutoff))
    numbers = frame.numbers
    if excluded:
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        codes = lo.astype(np.int64) * len(frame) + hi
        drop = np.array([a * len(frame) + b for a, b in excluded], dtype=np.int64)
        keep = ~np.isin(codes, drop)
        i, j, d = i[keep], j[keep], d[keep]
    species = sorted(set(int(z) for z in numbers))
    out = {}
    za, zb = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
    for a, b in itertools.combinations_with_replacement(species, 2):
        mask = (za == a) & (zb == b)
        out[(a, b)] = float(d[mask].min()) if mask.any() else float(cutoff)
    return out


def stoichiometry_off(counts: dict[int, int], source_counts: dict[int, int]) -> float:
    """``sum_s |n_s - n x_s|``: how many atoms the composition ``counts`` is off the source's
    (fractions ``x_s`` of ``source_counts``, scaled to ``n = sum(counts)``). SiO2: 2/3 |n_O - 2 n_Si|."""
    total_source = sum(source_counts.values())
    n = sum(counts.values())
    species = set(source_counts) | set(counts)
    return float(sum(abs(counts.get(s, 0) - n * source_counts.get(s, 0) / total_source) for s in species))


def _counts(numbers: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(numbers, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


# --------------------------------------------------------------------------- geometry


def _unwrapped_centres(frame: Atoms, centres: list[int]) -> np.ndarray:
    """Centre positions relative to the first centre, each at its minimum image."""
    positions = frame.positions[centres] - frame.positions[centres[0]]
    vectors, _ = find_mic(positions, frame.cell, frame.pbc)
    return vectors


def _carved_cell(settings: CarveSettings, width: float, template_cell) -> np.ndarray:
    """The new cell (rows) whose shortest perpendicular width is ``width``."""
    if settings.shape == "cube":
        return np.eye(3) * width
    template = np.asarray(template_cell, dtype=float)
    return template * (width / perpendicular_widths(template).min())


class _TooLarge(Exception):
    pass


def _circumradius(cell: np.ndarray) -> float:
    corners = np.array(list(itertools.product((-0.5, 0.5), repeat=3))) @ cell
    return float(np.linalg.norm(corners, axis=1).max())


def _near_centroid(frame: Atoms, centroid: np.ndarray, reach: float, exhaustive: bool = False):
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
                                   pbc=frame.pbc, cutoff=_pair_cutoff_dict(cutoff))
    mask = (i == ghost) & (j != ghost)
    return j[mask], vectors[mask]


def _atoms_inside(near, cell: np.ndarray):
    """Source indices and positions relative to the centroid of the atoms inside ``cell`` centred
    there, from :func:`_near_centroid` with a reach of at least the cell's circumradius."""
    j, vectors = near
    fractional = vectors @ np.linalg.inv(cell)
    inside = np.all((fractional >= -0.5) & (fractional < 0.5), axis=1)
    j, vectors = j[inside], vectors[inside]
    if len(np.unique(j)) != len(j):
        raise _TooLarge()
    order = np.argsort(j, kind="stable")
    return j[order], vectors[order]


# --------------------------------------------------------------------------- one attempt


@dataclass
class _Attempt:
    indices: np.ndarray       # source indices kept
    vectors: np.ndarray       # their positions relative to the centroid
    cell: np.ndarray
    width: float
    removed_boundary: int
    removed_stoichiometry: int
    off: float


def _conflicts(numbers, vectors, cell, minima, allowed, flagged_local, protected):
    """Conflict edges (local index pairs; i == j for an atom too close to its own image) and
    whether some conflict joins two protected atoms."""
    positions = vectors + cell.sum(axis=0) / 2
    cutoff = _pair_cutoff_dict(allowed)
    i, j, d, shifts = neighbour_list("ijdS", positions=positions, numbers=numbers.astype(np.int32), cell=cell,
                                     pbc=[True] * 3, cutoff=cutoff)
    upper = i <= j
    i, j, d, shifts = i[upper], j[upper], d[upper], shifts[upper]
    across = np.any(shifts != 0, axis=1)
    keys = [_pair_key(a, b) for a, b in zip(numbers[i], numbers[j])]
    edges = set()
    blocked = False
    for a, b, dist, cross, key in zip(i.tolist(), j.tolist(), d, across, keys):
        if cross:
            bad = dist < allowed[key] - _EPS
        else:  # the source's own geometry: only another flagged event's pair can be this short
            bad = dist < minima[key] - _EPS and (a, b) not in flagged_local and not (protected[a] and protected[b])
        if not bad:
            continue
        if protected[a] and protected[b]:
            blocked = True
        edges.add((a, b))
    return edges, blocked


def _remove_conflicts(edges, protected, numbers, distance, source_counts, alive):
    """Greedy vertex cover of the conflict graph with unprotected atoms; returns removed local indices."""
    removed = []
    edges = set(edges)

    def drop(atom):
        alive[atom] = False
        removed.append(atom)
        for edge in [e for e in edges if atom in e]:
            edges.discard(edge)

    for a, b in sorted(edges):
        if (a, b) not in edges:
            continue
        if protected[a] and not protected[b]:
            drop(b)
        elif protected[b] and not protected[a]:
            drop(a)
    while edges:
        degree: dict[int, int] = {}
        for a, b in edges:
            degree[a] = degree.get(a, 0) + 1
            if b != a:
                degree[b] = degree.get(b, 0) + 1
        counts = _counts(numbers[alive])

        def score(atom):
            after = dict(counts)
            after[int(numbers[atom])] -= 1
            return (-degree[atom], round(stoichiometry_off(after, source_counts), 9), -distance[atom], atom)

        drop(min((atom for atom in degree if not protected[atom]), key=score))
    return removed


def _fix_stoichiometry(numbers, protected, distance, alive, source_counts, max_off):
    """Fewest outermost unprotected atoms to remove so that off <= max_off (closest composition
    among those); returns (removed local indices, off, reached)."""
    counts = _counts(numbers[alive])
    species = sorted(set(source_counts) | set(counts))
    pools = {}
    for s in species:
        candidates = np.flatnonzero(alive & ~protected & (numbers == s))
        pools[s] = candidates[np.argsort(-distance[candidates], kind="stable")]
    off_now = stoichiometry_off(counts, source_counts)
    best = (off_now, 0, {s: 0 for s in species})
    limit = min(sum(len(p) for p in pools.values()), 200)
    reached = off_now <= max_off + _EPS
    for total in range(1, limit + 1) if not reached else ():
        found = None
        for split in _splits(total, [len(pools[s]) for s in species]):
            trial = {s: counts.get(s, 0) - k for s, k in zip(species, split)}
            off = stoichiometry_off(trial, source_counts)
            if off < best[0] - _EPS:
                best = (off, total, dict(zip(species, split)))
            if off <= max_off + _EPS and (found is None or off < found[0] - _EPS):
                found = (off, total, dict(zip(species, split)))
        if found is not None:
            best, reached = found, True
            break
    removed = [int(a) for s, k in best[2].items() for a in pools[s][:k]]
    for atom in removed:
        alive[atom] = False
    return removed, best[0], reached


def _splits(total: int, limits: list[int]):
    """All ways to write ``total`` as a sum of len(limits) non-negative ints, each <= its limit."""
    if len(limits) == 1:
        if total <= limits[0]:
            yield (total,)
        return
    for first in range(min(total, limits[0]), -1, -1):
        for rest in _splits(total - first, limits[1:]):
            yield (first, *rest)


def _attempt(frame, near, centre_vectors, centres, protect, width, settings, template_cell,
             minima, allowed):
    cell = _carved_cell(settings, width, template_cell)
    indices, vectors = _atoms_inside(near, cell)
    local = {int(s): k for k, s in enumerate(indices)}
    missing = [c for c in centres if c not in local]
    if missing:  # cannot happen with the inscribed sphere chosen as above; guard anyway
        raise RuntimeError(f"centres {missing} fell outside the carved cell")
    numbers = frame.numbers[indices]
    distance = np.min(np.linalg.norm(vectors[:, None, :] - centre_vectors[None, :, :], axis=2), axis=1)
    protected = distance <= settings.radius
    for atom in list(centres) + list(protect):
        if int(atom) in local:
            protected[local[int(atom)]] = True
    # only the centres' own pairs may stay short; another event's short pair in this cell is removed
    flagged_local = {_pair_key(local[a], local[b]) for a, b in _flagged_pair_set([centres])}
    edges, blocked = _conflicts(numbers, vectors, cell, minima, allowed, flagged_local, protected)
    if blocked:
        return None
    alive = np.ones(len(indices), dtype=bool)
    source_counts = _counts(frame.numbers)
    boundary = _remove_conflicts(edges, protected, numbers, distance, source_counts, alive)
    stoich, off = [], stoichiometry_off(_counts(numbers[alive]), source_counts)
    if settings.stoichiometry == "closest":
        stoich, off, _ = _fix_stoichiometry(numbers, protected, distance, alive, source_counts, settings.max_off)
    return _Attempt(indices[alive], vectors[alive], cell, width, len(boundary), len(stoich), off)


# --------------------------------------------------------------------------- public API


def _check_frame(frame: Atoms, settings: CarveSettings, template_cell):
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
    out = []
    for value in indices:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{what}: atom indices must be integers, got {value!r}")
        if not 0 <= int(value) < len(frame):
            raise ValueError(f"{what}: index {int(value)} is out of range for a {len(frame)}-atom frame")
        if int(value) not in out:
            out.append(int(value))
    return out


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
    flagged_source = _flagged_pair_set(groups)
    minima = source_minima(frame, flagged_source)
    allowed = {key: d * (1 + settings.boundary_margin) for key, d in minima.items()}

    unwrapped = _unwrapped_centres(frame, centres)
    offset = unwrapped.mean(axis=0)
    centroid = frame.positions[centres[0]] + offset
    centre_vectors = unwrapped - offset
    extent = 2 * float(np.linalg.norm(centre_vectors, axis=1).max())
    start = 2 * settings.radius + extent
    stop = start + max(allowed.values())
    widths = list(np.arange(start, stop, settings.grow_step)) + [stop]

    # one neighbour search for the largest cell tried; each attempt only filters it
    near = _near_centroid(frame, centroid, _circumradius(_carved_cell(settings, stop, template_cell)))
    best = None
    for width in widths:
        try:
            result = _attempt(frame, near, centre_vectors, centres, protect, float(width), settings,
                              template_cell, minima, allowed)
        except _TooLarge:
            if best is not None:
                break
            raise ValueError(
                f"a carved cell {width:.2f} A wide around centres {centres} (radius {settings.radius:g} A, "
                f"extent {extent:.2f} A) would hold some atom of the {len(frame)}-atom frame twice: "
                f"it is not smaller than the frame; label the frame whole instead"
            ) from None
        if result is None:
            continue
        if settings.stoichiometry == "none" or result.off <= settings.max_off + _EPS:
            best = result
            break
        if best is None or result.off < best.off - _EPS:
            best = result
    if best is None:  # unreachable: at `stop` no two protected atoms meet across a face
        raise RuntimeError(f"could not carve around {centres}: protected atoms meet across the boundary")
    if settings.stoichiometry == "closest" and best.off > settings.max_off + _EPS:
        warnings.warn(f"carved cell around {centres} is {best.off:.2f} atoms off the source stoichiometry "
                      f"(max_off {settings.max_off:g}): too few atoms outside the radius to remove", stacklevel=2)
    return _build(frame, best, centres, settings, start)


def _build(frame: Atoms, result: _Attempt, centres: list[int], settings: CarveSettings, start: float) -> Atoms:
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


def check_carved(source: Atoms, carved: Atoms, flagged_pairs: Sequence[tuple[int, int]] | None = None) -> list[str]:
    """Problems of a carved cell, as sentences (empty: none found).

    * a pair closer than the source's shortest of its species pair (``flagged_pairs`` -- source
      indices, default every pair among ``info["carve_centres"]`` -- are left out of the source's
      shortest distances and are not reported in the carved cell);
    * a species the source does not have;
    * with the provenance of :func:`carve`: an atom within ``carve_radius`` of a centre in the
      source that is missing from the carved cell, or not at the same relative position, or
      an atom (image) within ``carve_radius`` of a centre that the source does not have there.
    """
    problems = []
    carved_from = carved.arrays.get("carved_from")
    if flagged_pairs is None:
        flagged_pairs = sorted(_flagged_pair_set([info_indices(carved, "carve_centres")])) \
            if "carve_centres" in carved.info else []
    flagged_source = {_pair_key(a, b) for a, b in flagged_pairs}
    unknown = sorted(set(carved.get_chemical_symbols()) - set(source.get_chemical_symbols()))
    if unknown:
        problems.append(f"species {unknown} are not in the source frame")
    minima = source_minima(source, flagged_source)
    cutoff = {key: d for key, d in minima.items() if all(z in set(carved.numbers.tolist()) for z in key)}
    if cutoff:
        i, j, d, shifts = neighbour_list("ijdS", carved, _pair_cutoff_dict(cutoff))
        seen = set()
        for a, b, dist, shift in zip(i.tolist(), j.tolist(), d, shifts):
            key = _pair_key(carved.numbers[a], carved.numbers[b])
            if dist >= minima[key] - _FILE_EPS:
                continue
            if carved_from is not None and _pair_key(carved_from[a], carved_from[b]) in flagged_source:
                continue
            tag = (min(a, b), max(a, b), round(float(dist), 6))
            if tag in seen:
                continue
            seen.add(tag)
            where = "across the boundary" if np.any(shift != 0) else "inside the cell"
            problems.append(f"{_pair_label(key)} pair {tag[0]}-{tag[1]} at {dist:.4f} A ({where}) is shorter than "
                            f"the source's shortest {_pair_label(key)}, {minima[key]:.4f} A")
    needed = ("carve_centres", "centre_atoms", "carve_radius")
    if carved_from is not None and all(k in carved.info for k in needed):
        problems += _check_environments(source, carved, carved_from)
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


def relax_boundary(source: Atoms, carved: Atoms, calculator, frozen_radius: float, *, fmax: float = 0.05,
                   steps: int = 300, shortest_fraction: float = 0.9) -> Atoms:
    """``carved`` (a cell of :func:`carve` from ``source``) with its atoms farther than
    ``frozen_radius`` from every centre relaxed by ``calculator`` (FIRE to ``fmax`` eV/A, at most
    ``steps``); the rest keep the source geometry. See "Boundary relaxation" in the module
    docstring. Returns a new cell, with ``carve_frozen_radius``, ``carve_frozen_atoms`` (the atoms
    held), ``carve_relax`` ("relaxed",
    "stopped: ...", "rejected: ..." or "nothing to relax"), ``carve_relax_steps``, ``carve_relax_shift`` (the
    largest displacement, A) and ``carve_relax_entered`` (relaxed atoms that came within the
    frozen radius of a centre: the source's atoms there are all kept, in place, but the
    relaxation may add a neighbour) in ``info``. Every step is checked: when a pair comes closer
    than ``shortest_fraction`` x the source's shortest of its species pair, the relaxation ends
    at the step before ("stopped: <the pair>"); at the first step, the cell is returned as
    carved ("rejected: <the pair>")."""
    from ase.constraints import FixAtoms
    from ase.optimize import FIRE

    if not np.isfinite(frozen_radius) or frozen_radius <= 0:
        raise ValueError(f"frozen_radius must be a positive length (Angstrom), got {frozen_radius}")
    centres = info_indices(carved, "centre_atoms")
    distance = _distance_to_centres(carved, centres)
    frozen = np.flatnonzero(distance <= frozen_radius)
    out = carved.copy()
    out.calc = None
    out.info.update(carve_frozen_radius=float(min(frozen_radius, float(carved.info["carve_radius"]))),
                    carve_frozen_atoms=frozen.astype(int), carve_relax="nothing to relax", carve_relax_steps=0,
                    carve_relax_shift=0.0)
    if len(frozen) == len(carved):
        return out
    work = out.copy()
    work.set_constraint(FixAtoms(frozen))
    work.calc = calculator
    optimiser = FIRE(work, logfile=None)
    probe, clean, done, problem = out.copy(), work.positions.copy(), 0, None
    for _ in optimiser.irun(fmax=fmax, steps=steps):  # each step checked: a pair closing in ends it
        probe.positions = work.positions
        problem = _short_after_relaxation(source, probe, shortest_fraction)
        if problem:
            break
        clean, done = work.positions.copy(), int(optimiser.nsteps)
    if done == 0:
        if problem:
            out.info["carve_relax"] = f"rejected: {problem}"[:300]
        return out
    shift, _ = find_mic(clean - carved.positions, carved.cell, True)
    relaxed = out.copy()
    relaxed.positions = clean
    moved = _distance_to_centres(relaxed, centres)
    relaxed.info.update(carve_relax=f"stopped: {problem}"[:300] if problem else "relaxed", carve_relax_steps=done,
                        carve_relax_shift=float(np.linalg.norm(shift, axis=1).max()),
                        # relaxed atoms that came within the frozen radius of a centre
                        carve_relax_entered=int(((moved <= frozen_radius) & (distance > frozen_radius)).sum()))
    return relaxed


def exact_atoms(atoms: Atoms) -> list[int]:
    """The atoms of a labelled frame that sit where the explored frame had them: a relaxed cell's
    ``carve_frozen_atoms``, the atoms within ``carve_radius`` of the centres of a carved cell that
    was not relaxed, every atom of a whole frame. The error of a model on these atoms is the
    error on what exploration found, free of the boundary the carve added (and of a relaxation
    by the same model, which puts the rest of the cell at that model's own minimum)."""
    if "carve_frozen_atoms" in atoms.info:
        return info_indices(atoms, "carve_frozen_atoms")
    centres = info_indices(atoms, "centre_atoms")
    if "carve_radius" not in atoms.info or not centres:
        return list(range(len(atoms)))
    return np.flatnonzero(_distance_to_centres(atoms, centres) <= float(atoms.info["carve_radius"])).tolist()


def _distance_to_centres(atoms: Atoms, centres: list[int]) -> np.ndarray:
    """Per atom, the minimum-image distance to the nearest of ``centres``."""
    return np.min([atoms.get_distances(c, range(len(atoms)), mic=True) for c in centres], axis=0)


def _short_after_relaxation(source: Atoms, relaxed: Atoms, fraction: float) -> str | None:
    """The first pair of ``relaxed`` closer than ``fraction`` x the source's shortest of its
    species pair (the flagged pairs left out, and not reported), or None."""
    flagged = _flagged_pair_set([info_indices(relaxed, "carve_centres")])
    minima = source_minima(source, flagged)
    limits = {key: fraction * d for key, d in minima.items()}
    if not limits:
        return None
    carved_from = relaxed.arrays["carved_from"]
    i, j, d = neighbour_list("ijd", relaxed, _pair_cutoff_dict(limits))
    for a, b, dist in zip(i.tolist(), j.tolist(), d):
        key = _pair_key(relaxed.numbers[a], relaxed.numbers[b])
        if dist < limits[key] and _pair_key(carved_from[a], carved_from[b]) not in flagged:
            return (f"{_pair_label(key)} pair {min(a, b)}-{max(a, b)} at {dist:.4f} A is shorter than {fraction} x "
                    f"the source's shortest {_pair_label(key)}, {minima[key]:.4f} A")
    return None


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
