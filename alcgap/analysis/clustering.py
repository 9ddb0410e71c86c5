"""Clustering detector: is a frame free of the unphysical atom clusters of a potential that lacks repulsion?

A potential fitted only to MD data has never seen atoms closer than the thermal wall, so in a
melt it can let several atoms collapse into a tight clump (the paper's Fig. 4c,d). Such a clump
shows as pairs far closer than any the reference material has, as atoms with more neighbours
than the chemistry allows, and as RDF weight where the reference has none. The detector looks
for all three, names the atoms involved, and joins them into the groups (clusters) they form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from alcgap.analysis.bonds import Coordination, coordination_numbers
from alcgap.analysis.rdf import (
    FrameNeighbours, PartialRDF, average_rdfs, frame_neighbours, frame_rdf, normalise_pairs, rdf_distance,
    trajectory_neighbours,
)
from alcgap.structures import Pair, pair_name, species_pairs


def _pair_names(values: Mapping[str, float]) -> dict[str, float]:
    """Validate "A-B" keys (chemical symbols) and write them in canonical order ("O-Si" -> "Si-O")."""
    out = {}
    for key, value in values.items():
        parts = key.replace(" ", "").split("-")
        if len(parts) != 2 or any(p not in atomic_numbers or p == "X" for p in parts):
            raise ValueError(f"'{key}' is not a species pair; write it as 'A-B', e.g. 'Si-O'")
        name = pair_name(next(iter(normalise_pairs({key: value}))))
        if name in out:
            raise ValueError(f"the pair {name} is given twice")
        if not value > 0:
            raise ValueError(f"{name}: distances must be positive Angstrom, got {value}")
        out[name] = float(value)
    return out


class ClusteringCriteria(BaseModel):
    """Per-pair and per-species thresholds of the detector (Angstrom; neighbour counts).

    The defaults are for SiO2 (see :meth:`sio2`); :meth:`from_covalent_radii` makes a generic set
    for other species and :meth:`tightened_to` fits the short-pair minima to reference frames.
    """

    model_config = ConfigDict(extra="forbid")

    #: a pair closer than this is unphysical (a "short pair")
    min_distance: dict[str, float]
    #: the first neighbour shell per pair, for coordination counts
    neighbour_cutoff: dict[str, float]
    #: most neighbours (all species, within the shells) an atom of each species may have
    max_coordination: dict[str, int] = Field(default_factory=dict)
    #: most same-species neighbours within the shell an atom of each species may have
    max_like_neighbours: dict[str, int] = Field(default_factory=dict)
    #: a trajectory whose RDF distance to the reference exceeds this is clustered (None: no check)
    max_rdf_distance: float | None = Field(None, gt=0.0)

    @field_validator("min_distance", "neighbour_cutoff")
    @classmethod
    def _pairs(cls, value: dict[str, float]) -> dict[str, float]:
        return _pair_names(value)

    @field_validator("max_coordination", "max_like_neighbours")
    @classmethod
    def _species(cls, value: dict[str, int]) -> dict[str, int]:
        for symbol, limit in value.items():
            if symbol not in atomic_numbers or symbol == "X":
                raise ValueError(f"'{symbol}' is not a chemical element symbol")
            if limit < 0:
                raise ValueError(f"{symbol}: a neighbour limit must be >= 0, got {limit}")
        return value

    @model_validator(mode="after")
    def _like_pairs_have_a_shell(self) -> "ClusteringCriteria":
        missing = [s for s in self.max_like_neighbours if f"{s}-{s}" not in self.neighbour_cutoff]
        if missing:
            shells = [f"{s}-{s}" for s in missing]
            raise ValueError(f"max_like_neighbours for {missing} needs a neighbour_cutoff for {shells}")
        return self

    @classmethod
    def sio2(cls, **changes) -> "ClusteringCriteria":
        """SiO2 thresholds, from the structure of silica (a-SiO2, quartz, cristobalite, stishovite).

        Short pairs, well below the closest approach of each pair in any silica:
        - Si-O 1.3 A: the bond is 1.61 A (1.55 in idealised cristobalite, 1.76-1.81 in stishovite);
          even a 5000 K melt rarely goes below 1.4 A, where the Si-O repulsion already costs eV.
        - O-O 2.0 A: the O-O edge of a SiO4 tetrahedron is 2.61 A, the shortest silica O-O (the
          shared edge of stishovite octahedra) 2.29 A. A rare peroxy bridge (O-O ~1.5 A) is flagged
          too: in a melt-quench it points at the potential, not at chemistry.
        - Si-Si 2.2 A: corner-sharing tetrahedra put Si 3.06-3.1 A apart, edge-sharing ones 2.4-2.6;
          a Si-Si bond (an oxygen vacancy, 2.3-2.5 A; bulk Si 2.35 A) is a real defect of silica,
          so the limit sits below it rather than at 2.4.
        Neighbour shells: Si-O 2.0 A (first minimum of g_SiO), Si-Si 2.6 A (takes in vacancy and
        edge-sharing pairs, stays clear of the 3.1 A corner-sharing shell), O-O 2.2 A (0.4 A below
        the tetrahedral edge). Coordination: Si is 4-fold, 6-fold in stishovite and 5-fold in
        dense melts, so more than 6 is a clump; O is 2-fold, 3-fold as a melt "tricluster", so more
        than 3 is a clump. One like neighbour (a vacancy Si-Si, an O-O pair) is chemistry; two are
        the start of an Si or O cluster.
        """
        values = dict(
            min_distance={"Si-O": 1.3, "O-O": 2.0, "Si-Si": 2.2},
            neighbour_cutoff={"Si-O": 2.0, "O-O": 2.2, "Si-Si": 2.6},
            max_coordination={"Si": 6, "O": 3},
            max_like_neighbours={"Si": 1, "O": 1},
        )
        values.update(changes)
        return cls(**values)

    @classmethod
    def from_covalent_radii(cls, species: Sequence[str], min_fraction: float = 0.7, shell_fraction: float = 1.2,
                            max_coordination: int = 12) -> "ClusteringCriteria":
        """A generic start for any species: short pairs below ``min_fraction`` of the covalent bond
        length r_a + r_b, shells to ``shell_fraction`` of it, and at most close packing (12).

        Covalent radii know nothing of non-bonded pairs (O-O in SiO2 sits at 2.6 A, not 1.3):
        tighten the minima with :meth:`tightened_to` on reference frames.
        """
        pairs = species_pairs(list(species))
        bond = {p: covalent_radii[atomic_numbers[p[0]]] + covalent_radii[atomic_numbers[p[1]]] for p in pairs}
        return cls(min_distance={pair_name(p): round(min_fraction * r, 3) for p, r in bond.items()},
                   neighbour_cutoff={pair_name(p): round(shell_fraction * r, 3) for p, r in bond.items()},
                   max_coordination={s: max_coordination for s in species})

    def tightened_to(self, reference: Iterable[Atoms], fraction: float = 0.8) -> "ClusteringCriteria":
        """A copy whose short-pair minima are ``fraction`` of the closest approach of each pair in
        trusted reference frames (e.g. the DFT-labelled training set)."""
        closest: dict[Pair, float] = {}
        for atoms in reference:
            nl = frame_neighbours(atoms, max(self.search_radius, 4.0))
            for row, pair in enumerate(nl.pairs):
                d = nl.d[nl.pair_type == row]
                if d.size:
                    closest[pair] = min(closest.get(pair, np.inf), float(d.min()))
        minima = dict(self.min_distance)
        minima.update({pair_name(p): round(fraction * d, 3) for p, d in closest.items()})
        return self.model_copy(update={"min_distance": minima})

    @property
    def search_radius(self) -> float:
        """The neighbour-list distance the detector needs (Angstrom)."""
        return max([*self.min_distance.values(), *self.neighbour_cutoff.values()])


def base_criteria(species: Sequence[str]) -> ClusteringCriteria:
    """The detector's shells and limits before the data: SiO2's for Si + O, covalent radii otherwise."""
    return ClusteringCriteria.sio2() if set(species) == {"Si", "O"} else ClusteringCriteria.from_covalent_radii(species)


@dataclass(frozen=True)
class ShortPair:
    i: int
    j: int
    pair: str
    distance: float  # Angstrom


@dataclass(frozen=True)
class CoordinationFlag:
    index: int
    species: str
    kind: str  # "coordination" (all neighbours) or "like" (same-species neighbours)
    count: int
    limit: int


@dataclass
class ClusteringVerdict:
    """The detector's finding for one frame, with the evidence behind it (atom indices from 0)."""

    n_atoms: int
    short_pairs: list[ShortPair] = field(default_factory=list)
    coordination_flags: list[CoordinationFlag] = field(default_factory=list)
    #: connected groups (sorted atom indices) of flagged atoms and the atoms they crowd
    groups: list[list[int]] = field(default_factory=list)
    #: chemical formula of each group, e.g. "Si2O3"
    formulas: list[str] = field(default_factory=list)
    rdf_distance: float | None = None
    max_rdf_distance: float | None = None
    #: mean coordination of each species (all neighbours within the shells)
    mean_coordination: dict[str, float] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.short_pairs and not self.coordination_flags and _rdf_ok(self.rdf_distance, self.max_rdf_distance)

    @property
    def verdict(self) -> str:
        return "clean" if self.clean else "clustered"

    @property
    def flagged_atoms(self) -> list[int]:
        """Atoms in a short pair or with too many neighbours."""
        flagged = {p.i for p in self.short_pairs} | {p.j for p in self.short_pairs}
        return sorted(flagged | {f.index for f in self.coordination_flags})

    def summary(self) -> str:
        if self.clean:
            return f"clean ({self.n_atoms} atoms)"
        formulas = ", ".join(self.formulas[:5]) + (", ..." if len(self.formulas) > 5 else "")
        parts = [f"{len(self.short_pairs)} short pairs", f"{len(self.coordination_flags)} over-coordinated atoms",
                 f"{len(self.groups)} groups ({formulas})"]
        if self.rdf_distance is not None:
            parts.append(f"RDF distance {self.rdf_distance:.3f}")
        return "clustered: " + "; ".join(parts)

    def as_dict(self) -> dict:
        """JSON-ready, with ``verdict`` ("clean" | "clustered") first."""
        return {"verdict": self.verdict, "n_atoms": self.n_atoms, "flagged_atoms": self.flagged_atoms,
                "groups": self.groups, "formulas": self.formulas,
                "short_pairs": [asdict(p) for p in self.short_pairs],
                "coordination_flags": [asdict(f) for f in self.coordination_flags],
                "rdf_distance": self.rdf_distance, "max_rdf_distance": self.max_rdf_distance,
                "mean_coordination": self.mean_coordination}


def detect_clustering(frame: Atoms | FrameNeighbours, criteria: ClusteringCriteria | None = None,
                      reference_rdf: PartialRDF | None = None) -> ClusteringVerdict:
    """Judge one frame: short pairs, over-coordinated atoms, their groups, optionally the RDF distance.

    Pass a :class:`FrameNeighbours` reaching ``criteria.search_radius`` (and the reference RDF's
    r_max when one is given) to share one neighbour list with other analyses.
    """
    criteria = criteria or ClusteringCriteria.sio2()
    reach = max(criteria.search_radius, reference_rdf.r_max if reference_rdf is not None else 0.0)
    nl = frame if isinstance(frame, FrameNeighbours) else frame_neighbours(frame, reach)
    symbols = nl.species
    short = nl.within(criteria.min_distance)
    short_pairs = [ShortPair(int(i), int(j), pair_name(nl.pairs[t]), round(float(d), 4))
                   for i, j, t, d in zip(nl.i[short], nl.j[short], nl.pair_type[short], nl.d[short])]
    shell = nl.within(criteria.neighbour_cutoff)
    coordination = coordination_numbers(nl, criteria.neighbour_cutoff)
    flags = _coordination_flags(coordination, criteria)
    flagged = np.zeros(nl.n_atoms, dtype=bool)
    flagged[nl.i[short]] = flagged[nl.j[short]] = True
    flagged[[f.index for f in flags]] = True
    groups = _groups(nl, flagged, short | (shell & (flagged[nl.i] | flagged[nl.j])))
    distance = None
    if reference_rdf is not None and nl.volume is not None:
        distance = rdf_distance(frame_rdf(nl, reference_rdf.r_max, reference_rdf.bin_width), reference_rdf)
    formulas = [_formula([symbols[s] for s in nl.species_index[g]]) for g in groups]
    means = {s: coordination.mean(s) for s in coordination.species}
    return ClusteringVerdict(nl.n_atoms, short_pairs, flags, groups, formulas, distance, criteria.max_rdf_distance,
                             means)


def _rdf_ok(distance: float | None, limit: float | None) -> bool:
    return distance is None or limit is None or distance <= limit


def _coordination_flags(coordination: Coordination, criteria: ClusteringCriteria) -> list[CoordinationFlag]:
    flags = []
    total = coordination.counts.sum(axis=1)
    like = coordination.counts[np.arange(len(total)), coordination.species_index]
    for s, symbol in enumerate(coordination.species):
        mine = coordination.species_index == s
        for kind, counts, limit in (("coordination", total, criteria.max_coordination.get(symbol)),
                                    ("like", like, criteria.max_like_neighbours.get(symbol))):
            if limit is not None:
                for index in np.flatnonzero(mine & (counts > limit)):
                    flags.append(CoordinationFlag(int(index), symbol, kind, int(counts[index]), limit))
    return sorted(flags, key=lambda f: (f.index, f.kind))


def _groups(nl: FrameNeighbours, flagged: np.ndarray, edges: np.ndarray) -> list[list[int]]:
    """Connected components (through short pairs and shell contacts of flagged atoms) holding a flagged atom."""
    if not flagged.any():
        return []
    i, j = nl.i[edges], nl.j[edges]
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(nl.n_atoms, nl.n_atoms))
    _, label = connected_components(graph, directed=False)
    return [np.flatnonzero(label == c).tolist() for c in np.unique(label[flagged])]


def _formula(symbols: list[str]) -> str:
    counts = {s: symbols.count(s) for s in sorted(set(symbols), key=lambda s: -atomic_numbers[s])}
    return "".join(f"{s}{n if n > 1 else ''}" for s, n in counts.items())


# ---------------------------------------------------------------- a whole trajectory, one list per frame


@dataclass
class TrajectoryAnalysis:
    """Structure of a trajectory: frame-averaged RDFs and a verdict (with coordination) per frame."""

    rdf: PartialRDF
    verdicts: list[ClusteringVerdict]
    #: distance of the frame-averaged RDF to the reference (None without a reference)
    rdf_distance: float | None = None
    max_rdf_distance: float | None = None

    @property
    def clean(self) -> bool:
        return _rdf_ok(self.rdf_distance, self.max_rdf_distance) and all(v.clean for v in self.verdicts)

    @property
    def verdict(self) -> str:
        """"clustered" if any frame is, or the averaged RDF is too far from the reference."""
        return "clean" if self.clean else "clustered"

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "n_frames": len(self.verdicts),
                "clustered_frames": [k for k, v in enumerate(self.verdicts) if not v.clean],
                "rdf_distance": self.rdf_distance, "max_rdf_distance": self.max_rdf_distance,
                "mean_coordination": [v.mean_coordination for v in self.verdicts], "rdf": self.rdf.as_dict()}


def analyse_trajectory(frames: Iterable[Atoms], criteria: ClusteringCriteria | None = None,
                       r_max: float = 6.0, bin_width: float = 0.02,
                       reference_rdf: PartialRDF | None = None, skin: float = 1.5) -> TrajectoryAnalysis:
    """RDFs (to ``r_max`` A, averaged over frames), coordination and a clustering verdict for every
    frame, from one neighbour list per frame; frames are streamed, so a generator keeps memory flat.

    With ``reference_rdf`` (on the same r grid), the averaged RDF is compared with it once: a
    trajectory average is a far steadier figure than one frame's RDF. ``skin`` (Angstrom) is the
    Verlet skin of :func:`~alcgap.analysis.rdf.trajectory_neighbours` (0: search every frame anew).
    """
    criteria = criteria or ClusteringCriteria.sio2()
    rdfs, verdicts = [], []
    for nl in trajectory_neighbours(frames, max(r_max, criteria.search_radius), skin):
        rdfs.append(frame_rdf(nl, r_max, bin_width))
        verdicts.append(detect_clustering(nl, criteria))
    rdf = average_rdfs(rdfs)
    distance = rdf_distance(rdf, reference_rdf) if reference_rdf is not None else None
    return TrajectoryAnalysis(rdf, verdicts, distance, criteria.max_rdf_distance)
