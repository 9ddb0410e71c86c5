"""Pair structure of periodic frames: neighbour lists and partial RDFs (Angstrom).

Every kernel here and in :mod:`alcgap.analysis.bonds` (coordination numbers, bond angles) takes
either ASE ``Atoms`` or a :class:`FrameNeighbours`, the half neighbour list of one frame. Build
the list once per frame with :func:`frame_neighbours` at the largest distance any analysis needs
(the RDF range) and hand it to all of them: the neighbour search is the only cost that grows
with the frame, everything after it is a few vectorised passes over the pair arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols
from matscipy.neighbours import neighbour_list
from scipy.spatial import cKDTree

from alcgap.structures import Pair, pair_key, pair_name, species_pairs

@dataclass(frozen=True)
class FrameNeighbours:
    """Every atom pair of one frame closer than ``r_max`` (Angstrom), each unordered pair once.

    ``vectors[k]`` points from atom ``i[k]`` to the (image of) atom ``j[k]``; ``d`` is its length;
    ``pair_type[k]`` indexes ``pairs``, the canonical species pairs of the frame.
    ``volume`` is the cell volume (A^3) and ``cell_width`` the shortest distance between opposite
    cell faces (A) of a fully periodic frame, else None.
    """

    numbers: np.ndarray
    species: tuple[str, ...]
    species_index: np.ndarray
    volume: float | None
    r_max: float
    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    vectors: np.ndarray
    pair_type: np.ndarray | None = None
    cell_width: float | None = None
    pairs: list[Pair] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", species_pairs(list(self.species)))
        if self.pair_type is None:
            table = _pair_table(self.species)
            object.__setattr__(self, "pair_type", table[self.species_index[self.i], self.species_index[self.j]])

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def count(self, symbol: str) -> int:
        """Number of atoms of ``symbol`` in the frame."""
        return int(np.count_nonzero(self.species_index == self.species.index(symbol))) if symbol in self.species else 0

    def within(self, cutoffs: Mapping[Pair | str, float]) -> np.ndarray:
        """Mask of the listed pairs closer than their species pair's cutoff; unlisted species pairs: none."""
        table = np.zeros(len(self.pairs))
        for pair, r_cut in normalise_pairs(cutoffs).items():
            if pair in self.pairs:
                if r_cut > self.r_max:
                    raise ValueError(f"cutoff {r_cut} A for {pair_name(pair)} exceeds the list's r_max {self.r_max} A")
                table[self.pairs.index(pair)] = r_cut
        return self.d < table[self.pair_type]


def _pair_table(species: tuple[str, ...]) -> np.ndarray:
    """table[a, b]: index of the canonical pair of species a and b in ``species_pairs(species)``."""
    pairs = species_pairs(list(species))
    return np.array([[pairs.index(pair_key(a, b)) for b in species] for a in species], dtype=np.intp)


def normalise_pairs(values: Mapping[Pair | str, float]) -> dict[Pair, float]:
    """Per-pair values keyed by canonical pairs; keys may be ("O", "Si") tuples or "Si-O" strings."""
    out: dict[Pair, float] = {}
    for key, value in values.items():
        a, b = key.replace(" ", "").split("-") if isinstance(key, str) else key
        out[pair_key(a, b)] = value
    return out


def frame_neighbours(atoms: Atoms, r_max: float) -> FrameNeighbours:
    """The half neighbour list of ``atoms`` up to ``r_max`` (Angstrom).

    Orthorhombic periodic cells wider than ``2 r_max`` (MD boxes) use scipy's periodic k-d tree,
    which finds each pair once; any other cell uses matscipy's linked-cell list, which also
    returns the periodic images of an atom itself when ``r_max`` exceeds the cell width.
    """
    numbers = atoms.get_atomic_numbers()
    species = tuple(sorted((chemical_symbols[z] for z in np.unique(numbers)), key=lambda s: (-atomic_numbers[s], s)))
    lookup = np.zeros(max(numbers) + 1, dtype=np.intp)
    lookup[[atomic_numbers[s] for s in species]] = np.arange(len(species))
    pbc = atoms.pbc
    cell = atoms.cell.array
    lengths = np.diag(cell)
    orthorhombic = np.allclose(cell, np.diag(lengths), atol=1e-10) and np.all(lengths > 0)
    if pbc.all() and orthorhombic and r_max < 0.5 * lengths.min():
        i, j, vectors = _pairs_kdtree(atoms.positions, r_max, lengths)
    elif not pbc.any():
        i, j, vectors = _pairs_kdtree(atoms.positions, r_max, None)
    else:
        i, j, vectors = _pairs_matscipy(atoms, r_max)
    return FrameNeighbours(
        numbers=numbers, species=species, species_index=lookup[numbers],
        volume=float(atoms.get_volume()) if pbc.all() else None, r_max=float(r_max),
        i=i, j=j, d=np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), vectors=vectors,
        cell_width=float(min(cell_widths(atoms))) if pbc.all() else None,
    )


def _pairs_kdtree(positions: np.ndarray, r_max: float, box: np.ndarray | None):
    if box is not None:
        positions = positions - box * np.floor(positions / box)
        positions = np.where(positions >= box, positions - box, positions)  # floor can round up to L
    pairs = cKDTree(positions, boxsize=box).query_pairs(r_max, output_type="ndarray")
    i, j = pairs[:, 0].astype(np.intp), pairs[:, 1].astype(np.intp)
    vectors = positions[j] - positions[i]
    if box is not None:
        vectors -= box * np.round(vectors / box)  # the one image within r_max < L/2
    return i, j, vectors


def _pairs_matscipy(atoms: Atoms, r_max: float):
    i, j, shift, vectors = neighbour_list("ijSD", atoms, float(r_max))
    # matscipy lists i->j and j->i; an atom's own image appears as S and -S: keep one of each
    s0, s1, s2 = shift.T
    forward = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    keep = (i < j) | ((i == j) & forward)
    return i[keep].astype(np.intp), j[keep].astype(np.intp), vectors[keep]


def trajectory_neighbours(frames: Iterable[Atoms], r_max: float, skin: float = 1.5) -> Iterator[FrameNeighbours]:
    """:func:`frame_neighbours` of every frame, the same pairs, found faster in a trajectory.

    A Verlet list: the pairs within ``r_max + skin`` of one frame are the only candidates for the
    following frames while the two largest atom displacements since (Angstrom, minimum image) add
    up to less than ``skin``, since no pair can then have closed in by ``skin``. The default
    1.5 A covers the thermal motion of a 300 K glass (O about 0.1 A rms per axis). A frame with
    other atoms or another cell, or atoms past the limit, trigger a new search; when a list serves only one frame
    (a hot melt sampled sparsely), the next ``10`` frames are searched exactly before the skin
    is tried again, so the skin never costs more than a few percent.
    """
    verlet: _VerletList | None = None
    exact_left = 0
    for atoms in frames:
        nl = verlet.frame(atoms) if verlet is not None else None
        if nl is None:
            if verlet is not None and verlet.served == 1:
                exact_left = 10
            verlet = None
            if exact_left > 0 or skin <= 0:
                exact_left -= 1
                nl = frame_neighbours(atoms, r_max)
            else:
                verlet = _VerletList(atoms, r_max, skin)
                nl = verlet.frame(atoms)
        yield nl


class _VerletList:
    """Candidate pairs within r_max + skin of a reference frame, and their periodic image offsets."""

    def __init__(self, atoms: Atoms, r_max: float, skin: float):
        self.r_max, self.skin, self.served = r_max, skin, 0
        self.candidates = frame_neighbours(atoms, r_max + skin)
        self.reference = atoms.positions.copy()
        self.cell, self.pbc = atoms.cell.array.copy(), atoms.pbc.copy()
        c = self.candidates
        # image offset of each candidate pair: constant while the cell is
        self.offsets = c.vectors - (self.reference[c.j] - self.reference[c.i])

    def frame(self, atoms: Atoms) -> FrameNeighbours | None:
        """The pairs of ``atoms`` within r_max, or None if this list cannot vouch for them."""
        c = self.candidates
        if (len(atoms) != c.n_atoms or not np.array_equal(atoms.numbers, c.numbers)
                or not np.array_equal(atoms.pbc, self.pbc) or not np.allclose(atoms.cell.array, self.cell, atol=1e-9)):
            return None
        moved = atoms.positions - self.reference
        if self.pbc.any():  # an atom wrapped back into the cell has not moved a cell length
            frac = np.linalg.solve(self.cell.T, moved.T).T
            frac[:, self.pbc] -= np.round(frac[:, self.pbc])
            moved = frac @ self.cell
        squared = np.einsum("ij,ij->i", moved, moved)
        largest = np.partition(squared, -2)[-2:] if len(squared) > 1 else squared
        if np.sqrt(largest).sum() >= self.skin:  # the two atoms that moved most
            return None
        unwrapped = self.reference + moved
        # np.take: several times faster than fancy indexing for row gathers
        vectors = np.take(unwrapped, c.j, axis=0)
        vectors -= np.take(unwrapped, c.i, axis=0)
        vectors += self.offsets
        d = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        keep = np.flatnonzero(d < self.r_max)
        self.served += 1
        return FrameNeighbours(numbers=c.numbers, species=c.species, species_index=c.species_index,
                               volume=c.volume, r_max=float(self.r_max), i=np.take(c.i, keep), j=np.take(c.j, keep),
                               d=np.take(d, keep), vectors=np.take(vectors, keep, axis=0),
                               pair_type=np.take(c.pair_type, keep), cell_width=c.cell_width)


def neighbours_within(frame: Atoms | FrameNeighbours, r_max: float) -> FrameNeighbours:
    """``frame`` itself when it is a neighbour list reaching ``r_max`` (Angstrom), else its list."""
    if isinstance(frame, FrameNeighbours):
        if frame.r_max < r_max:
            raise ValueError(f"the neighbour list reaches {frame.r_max} A but {r_max} A is needed")
        return frame
    return frame_neighbours(frame, r_max)


# ---------------------------------------------------------------- partial radial distribution functions


@dataclass
class PartialRDF:
    """Partial radial distribution functions g_ab(r) (dimensionless) on bins of ``bin_width`` A.

    ``r`` holds the bin centres (Angstrom); ``g`` one curve per canonical species pair, averaged
    over ``n_frames`` frames.
    """

    r: np.ndarray
    bin_width: float
    g: dict[Pair, np.ndarray]
    n_frames: int = 1

    @property
    def r_max(self) -> float:
        return float(self.r[-1] + 0.5 * self.bin_width)

    def as_dict(self) -> dict:
        return {"r": self.r.tolist(), "bin_width": self.bin_width, "n_frames": self.n_frames,
                "g": {pair_name(p): g.tolist() for p, g in self.g.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "PartialRDF":
        g = {p: np.asarray(v, dtype=float) for p, v in normalise_pairs(data["g"]).items()}
        return cls(np.asarray(data["r"], dtype=float), float(data["bin_width"]), g, int(data.get("n_frames", 1)))


def frame_rdf(frame: Atoms | FrameNeighbours, r_max: float = 6.0, bin_width: float = 0.02) -> PartialRDF:
    """Partial RDFs of one fully periodic frame up to ``r_max`` (Angstrom).

    Ideal-gas normalisation: the number of b atoms in the shell [r, r + dr] around an a atom,
    divided by what a uniform gas of the *other* b atoms would put there,
    g_ab(r) = V n_ab(r) / (N_a (N_b - delta_ab) 4/3 pi (r_out^3 - r_in^3)),
    with n_ab the ordered (a, b) pair count in the shell, so g_ab -> 1 at large r and g_ab = g_ba.
    Beyond half the cell width an atom's own periodic images count as neighbours: keep r_max below
    it for an RDF free of the finite cell.
    """
    nl = neighbours_within(frame, r_max)
    if nl.volume is None:
        raise ValueError("an RDF needs a fully periodic frame (a volume for the ideal-gas normalisation)")
    if nl.cell_width is not None and r_max > 0.5 * nl.cell_width:
        warnings.warn(f"RDF to {r_max} A in a cell only {nl.cell_width:.2f} A wide: beyond half "
                      "the width an atom's own periodic images count as its neighbours", stacklevel=2)
    n_bins = int(round(r_max / bin_width))
    if n_bins < 1:
        raise ValueError(f"bin_width {bin_width} A is larger than r_max {r_max} A")
    edges = np.arange(n_bins + 1) * bin_width
    inside = nl.d < edges[-1]
    index = nl.pair_type[inside] * n_bins + (nl.d[inside] / bin_width).astype(np.intp)
    counts = np.bincount(index, minlength=len(nl.pairs) * n_bins).reshape(len(nl.pairs), n_bins).astype(float)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g: dict[Pair, np.ndarray] = {}
    for row, (a, b) in enumerate(nl.pairs):
        n_a, n_b = nl.count(a), nl.count(b)
        # a half list holds each a-a pair once but each a atom sees it: twice the ordered count
        ordered, partners = (2.0 * counts[row], n_b - 1) if a == b else (counts[row], n_b)
        g[(a, b)] = ordered * nl.volume / (n_a * partners * shell) if partners > 0 else np.zeros(n_bins)
    return PartialRDF(0.5 * (edges[1:] + edges[:-1]), float(bin_width), g, 1)


def cell_widths(atoms: Atoms) -> np.ndarray:
    """Distances between opposite faces of the cell (Angstrom): twice the largest r a periodic
    frame can resolve without an atom meeting its own image."""
    return atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)


def average_rdfs(rdfs: Sequence[PartialRDF]) -> PartialRDF:
    """Frame-weighted mean of RDFs on the same grid and pairs."""
    if not rdfs:
        raise ValueError("no RDFs to average")
    first = rdfs[0]
    for other in rdfs[1:]:
        if other.g.keys() != first.g.keys() or len(other.r) != len(first.r) or other.bin_width != first.bin_width:
            raise ValueError("RDFs to average need the same species pairs, r_max and bin_width")
    total = sum(x.n_frames for x in rdfs)
    g = {p: sum(x.g[p] * x.n_frames for x in rdfs) / total for p in first.g}
    return PartialRDF(first.r.copy(), first.bin_width, g, total)


def partial_rdfs(frames: Iterable[Atoms], r_max: float = 6.0, bin_width: float = 0.02) -> PartialRDF:
    """Partial RDFs averaged over frames (streamed: one neighbour list in memory at a time)."""
    return average_rdfs([frame_rdf(nl, r_max, bin_width) for nl in trajectory_neighbours(frames, r_max)])


def rdf_distances(a: PartialRDF, b: PartialRDF, r_range: tuple[float, float] | None = None) -> dict[Pair, float]:
    """Per species pair, the RMS difference of g over an r range (dimensionless).

    D_ab = sqrt( 1/(r_hi - r_lo) * integral_{r_lo}^{r_hi} (g_a(r) - g_b(r))^2 dr ),
    the root-mean-square gap between the curves: 0 for identical structure, about the height of a
    peak where one curve has a peak the other lacks (a cluster puts g_SiSi weight below 2.5 A
    where a healthy melt has none). ``b`` is interpolated onto ``a``'s bin centres; the default
    range is the r range both cover. Pairs present in only one of them are skipped.
    """
    lo, hi = r_range if r_range is not None else (0.0, min(a.r_max, b.r_max))
    if hi <= lo:
        raise ValueError(f"empty r range ({lo}, {hi})")
    mask = (a.r >= lo) & (a.r <= hi) & (a.r <= b.r_max)
    out = {}
    for pair in a.g.keys() & b.g.keys():
        diff = a.g[pair][mask] - np.interp(a.r[mask], b.r, b.g[pair])
        out[pair] = float(np.sqrt(np.sum(diff**2) * a.bin_width / (hi - lo)))
    return out


def rdf_distance(a: PartialRDF, b: PartialRDF, r_range: tuple[float, float] | None = None) -> float:
    """The mean over shared species pairs of :func:`rdf_distances`: one number per structure pair."""
    per_pair = rdf_distances(a, b, r_range)
    if not per_pair:
        raise ValueError("the two RDFs share no species pair")
    return float(np.mean(list(per_pair.values())))
