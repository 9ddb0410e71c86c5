"""The rules of a carve (:mod:`alcgap.explore.carve`): no new short pair, the stoichiometry kept.

Species pairs are keyed by atomic numbers, ascending (:func:`z_pair`). Every distance a rule
holds a carved cell to is :func:`source_minima`: the source frame's shortest of that species
pair with the flagged pairs left out.

Boundary rule (no new short pair)
    Across the new faces atoms that were far apart become neighbours through the images. A
    contact of species pair A-B across the boundary must be at least
    ``(1 + boundary_margin) * d_AB``, where ``d_AB`` is the shortest A-B distance in the source
    frame with the flagged pairs left out (all pairs among the centres; in
    :func:`~alcgap.explore.carve.carve_events`, among the centres of every event). With the
    default margin 0 the carved cell has no pair of any species pair shorter than anything the
    source frame had besides the flagged event, so its label adds no second, artificial event.
    (A positive margin keeps new contacts farther; a negative one lets them come closer, and
    :func:`~alcgap.explore.carve.check_carved` then reports them.) Pairs that are not across the
    boundary are the source's own geometry; one shorter than ``d_AB`` can only be another
    flagged event's and it is removed too unless both of its atoms are protected. Conflicts are
    resolved by removing unprotected atoms, greedily: first the partner of a protected atom,
    then the atom with the most conflicts (ties: the removal that leaves the composition closer
    to the source's, then the atom farthest from the centres). A conflict between two protected
    atoms cannot be removed: the cell then grows by ``grow_step`` (its inscribed diameter; the
    cube side) and the carve starts again. At ``2*radius + extent + max_AB(allowed contact)`` no
    two protected atoms can meet across a face, so growth always ends.

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
"""

from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from matscipy.neighbours import neighbour_list

#: distances closer than this (Angstrom) count as equal; compositions closer than this as equal
EPS = 1e-9


def z_pair(za: int, zb: int) -> tuple[int, int]:
    """A species pair (or an atom pair) as a key: the two numbers, ascending."""
    return (int(min(za, zb)), int(max(za, zb)))


def z_pair_label(key: tuple[int, int]) -> str:
    """"Si-O" for (8, 14)."""
    a, b = sorted(key, reverse=True)  # heavier first, as in "Si-O"
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def event_pairs(groups: Iterable[Sequence[int]]) -> set[tuple[int, int]]:
    """Every pair of atoms within one group (a flagged event), as ascending index pairs."""
    out = set()
    for group in groups:
        for a, b in itertools.combinations(sorted(set(int(i) for i in group)), 2):
            out.add((a, b))
    return out


def both_orders(values: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    """Per-pair cutoffs under (a, b) and (b, a), as matscipy's neighbour list takes them."""
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
    excluded = {z_pair(a, b) for a, b in flagged_pairs}
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


# --------------------------------------------------------------------------- the boundary rule


def boundary_conflicts(numbers, vectors, cell, minima, allowed, flagged_local, protected):
    """Conflict edges (local index pairs; i == j for an atom too close to its own image) and
    whether some conflict joins two protected atoms."""
    positions = vectors + cell.sum(axis=0) / 2
    cutoff = both_orders(allowed)
    i, j, d, shifts = neighbour_list("ijdS", positions=positions, numbers=numbers.astype(np.int32), cell=cell,
                                     pbc=[True] * 3, cutoff=cutoff)
    upper = i <= j
    i, j, d, shifts = i[upper], j[upper], d[upper], shifts[upper]
    across = np.any(shifts != 0, axis=1)
    keys = [z_pair(a, b) for a, b in zip(numbers[i], numbers[j])]
    edges = set()
    blocked = False
    for a, b, dist, cross, key in zip(i.tolist(), j.tolist(), d, across, keys):
        if cross:
            bad = dist < allowed[key] - EPS
        else:  # the source's own geometry: only another flagged event's pair can be this short
            bad = dist < minima[key] - EPS and (a, b) not in flagged_local and not (protected[a] and protected[b])
        if not bad:
            continue
        if protected[a] and protected[b]:
            blocked = True
        edges.add((a, b))
    return edges, blocked


def remove_conflicts(edges, protected, numbers, distance, source_counts, alive):
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
        counts = element_counts(numbers[alive])

        def score(atom):
            after = dict(counts)
            after[int(numbers[atom])] -= 1
            return (-degree[atom], round(stoichiometry_off(after, source_counts), 9), -distance[atom], atom)

        drop(min((atom for atom in degree if not protected[atom]), key=score))
    return removed


# --------------------------------------------------------------------------- the stoichiometry rule


def stoichiometry_off(counts: dict[int, int], source_counts: dict[int, int]) -> float:
    """``sum_s |n_s - n x_s|``: how many atoms the composition ``counts`` is off the source's
    (fractions ``x_s`` of ``source_counts``, scaled to ``n = sum(counts)``). SiO2: 2/3 |n_O - 2 n_Si|."""
    total_source = sum(source_counts.values())
    n = sum(counts.values())
    species = set(source_counts) | set(counts)
    return float(sum(abs(counts.get(s, 0) - n * source_counts.get(s, 0) / total_source) for s in species))


def element_counts(numbers: np.ndarray) -> dict[int, int]:
    """Atoms of each atomic number."""
    values, counts = np.unique(numbers, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def fix_stoichiometry(numbers, protected, distance, alive, source_counts, max_off):
    """Fewest outermost unprotected atoms to remove so that off <= max_off (closest composition
    among those); returns (removed local indices, off, reached)."""
    counts = element_counts(numbers[alive])
    species = sorted(set(source_counts) | set(counts))
    pools = {}
    for s in species:
        candidates = np.flatnonzero(alive & ~protected & (numbers == s))
        pools[s] = candidates[np.argsort(-distance[candidates], kind="stable")]
    off_now = stoichiometry_off(counts, source_counts)
    best = (off_now, 0, {s: 0 for s in species})
    limit = min(sum(len(p) for p in pools.values()), 200)
    reached = off_now <= max_off + EPS
    for total in range(1, limit + 1) if not reached else ():
        found = None
        for split in _splits(total, [len(pools[s]) for s in species]):
            trial = {s: counts.get(s, 0) - k for s, k in zip(species, split)}
            off = stoichiometry_off(trial, source_counts)
            if off < best[0] - EPS:
                best = (off, total, dict(zip(species, split)))
            if off <= max_off + EPS and (found is None or off < found[0] - EPS):
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
