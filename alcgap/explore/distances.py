"""One table of per-pair distances for the whole campaign: flag, clustered, collapsed.

Three uses of "too close" must agree, or a run is judged clustered for a contact that was never
flagged, so never labelled, so never learned. Per species pair (Angstrom)::

    flag      = (1 - data_margin) x the shortest distance of the pair in the labelled bootstrap
                frames (or the user's value): closer than anything the model was trained on ->
                the frame is a candidate for labelling
    clustered = (1 - cluster_margin) x flag (margin 0.15, or 0.2 when a classical stand-in made the
                bootstrap of a DFT reference): the clustering verdict (a run with such a pair on
                any monitored frame is not clean); always below the flag, so every clustered
                frame was flagged first
    collapse  = collapse_fraction x clustered: the MD run stops (atoms have fallen onto each other)

The clustered and collapse distances are fixed once, from the bootstrap data: the verdict must not
move between iterations. The flag follows the model: an iteration's monitors flag below
``(1 - data_margin) x`` the shortest pair of *its* training set (:meth:`DistanceTable.flags_for`),
never above the bootstrap flag and never below the clustered distance. A contact the loop has
labelled and trained on is then no longer flagged as new, so flags fall as the model learns.

A pair the bootstrap frames never bring within ``SEARCH_RADIUS`` (a minority species, say) gets
``COVALENT_FRACTION`` x the sum of covalent radii as its flag distance, and says so in ``source``.

SiO2 as a documented example: Vashishta bootstrap data (24 atoms, 65 frames of a melt at 5000 K,
``configs/sio2-fit-quick.yaml``) gives Si-O 1.39, O-O 2.13, Si-Si 2.50 A as the shortest seen; hand-justified silica values (a-SiO2,
quartz, cristobalite, stishovite; see :meth:`~alcgap.analysis.clustering.ClusteringCriteria.sio2`)
are clustered at Si-O 1.3, O-O 2.0, Si-Si 2.2 A. ``SIO2_FLAG_DISTANCES`` with the default
margin puts the clustered distances close to those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from alcgap.analysis.bonds import most_neighbours
from alcgap.analysis.clustering import ClusteringCriteria, base_criteria
from alcgap.analysis.rdf import normalise_pairs
from alcgap.structures import Pair, min_pair_distances, pair_name, species_pairs

#: cluster margins by where the bootstrap geometry comes from. A classical reference drives its
#: own bootstrap: its data's shortest pairs are the reference's, and its own 240- and 2160-atom
#: melts at 4000-6000 K stayed above 0.85 x flag (Vashishta: O-O 1.93-2.09 A against 1.72).
#: A DFT campaign's bootstrap runs a classical stand-in (Vashishta for SiO2), whose shortest
#: pairs need not be the reference's: with 0.15 the xTB demo took four iterations, its 2nd and
#: 3rd models putting O-O at 1.82 and 1.80 A in 2 and 1 of 61 monitored 10x frames (clustered
#: below 1.85 A; xTB labels of such cells were ordinary, -103.8 eV/atom like other carved cells)
OWN_BOOTSTRAP_MARGIN = 0.15
STAND_IN_BOOTSTRAP_MARGIN = 0.2
#: neighbour range (Angstrom) over which the data's shortest pairs are searched
SEARCH_RADIUS = 4.0
#: a pair missing from the data is flagged below this fraction of its covalent bond length
COVALENT_FRACTION = 0.8
#: silica flag distances that give, with the default cluster margin 0.15, clustered distances of
#: Si-O 1.28, O-O 2.0, Si-Si 2.21 A (the justified silica minima)
SIO2_FLAG_DISTANCES = {"Si-O": 1.5, "O-O": 2.35, "Si-Si": 2.6}
#: coordination limits are one more than the larger of the most seen in the labelled data and
#: the detector's chemical default (silica: Si 6, O 3, one like neighbour), so a thin bootstrap
#: cannot make them stricter than chemistry. Measured with the Vashishta reference itself:
#: 24-atom bootstrap frames at 4000 K had at most Si 5 (1 Si), O 3 (1 O) neighbours; 240- and
#: 2160-atom reference melts at 5000-6000 K reached 2 like neighbours (an O with two O within
#: 2.2 A) and were "clustered" under silica's hand limit of 1. With the limits Si 7, O 4 and 2
#: like neighbours they were clean on every monitored frame
COORDINATION_SLACK = 1


def _pairs(values: Mapping) -> dict[Pair, float]:
    return {pair: float(value) for pair, value in normalise_pairs(values).items()}


def shortest_in_frames(frames: Iterable[Atoms], radius: float = SEARCH_RADIUS) -> dict[Pair, float]:
    """Shortest distance of every species pair over ``frames`` (periodic images included)."""
    closest: dict[Pair, float] = {}
    for atoms in frames:
        for pair, r in min_pair_distances(atoms, radius).items():
            closest[pair] = min(closest.get(pair, np.inf), r)
    return closest


@dataclass(frozen=True)
class DistanceTable:
    """Flag, clustered and collapse distances per species pair (see the module docstring)."""

    flag: dict[Pair, float]
    cluster_margin: float = 0.15
    collapse_fraction: float = 0.6
    #: where the flag distances come from, per pair ("config", "data: ...", "covalent radii")
    source: dict[str, str] | None = None
    #: coordination limits of the clustering verdict, per species: the most neighbours (and
    #: same-species neighbours) within the detector's shells seen in the data, plus
    #: ``COORDINATION_SLACK``; None: the detector's defaults
    max_coordination: dict[str, int] | None = None
    max_like_neighbours: dict[str, int] | None = None

    def __post_init__(self):
        if not 0.0 < self.cluster_margin < 1.0:
            raise ValueError(f"cluster_margin={self.cluster_margin}: use 0 < margin < 1")
        if not 0.0 < self.collapse_fraction < 1.0:
            raise ValueError(f"collapse_fraction={self.collapse_fraction}: use 0 < fraction < 1")

    @classmethod
    def from_data(cls, frames: Sequence[Atoms], species: Sequence[str], *, data_margin: float = 0.05,
                  given: Mapping[str, float] | None = None, cluster_margin: float = 0.15,
                  collapse_fraction: float = 0.6, shells: Mapping[str, float] | None = None) -> "DistanceTable":
        """Flag distances from the shortest pairs of labelled frames; ``given`` pairs win.
        With the detector's neighbour ``shells``, coordination limits from the same frames."""
        given = _pairs(given or {})
        seen = shortest_in_frames(frames) if frames else {}
        flag, source = {}, {}
        for pair in species_pairs(list(species)):
            if pair in given:
                flag[pair], source[pair_name(pair)] = given[pair], "config"
            elif pair in seen:
                flag[pair] = round((1.0 - data_margin) * seen[pair], 4)
                source[pair_name(pair)] = (f"data: (1 - {data_margin}) x {seen[pair]:.4f} A, the shortest in "
                                           f"{len(frames)} labelled frames")
            else:
                bond = covalent_radii[atomic_numbers[pair[0]]] + covalent_radii[atomic_numbers[pair[1]]]
                flag[pair] = round(COVALENT_FRACTION * bond, 4)
                source[pair_name(pair)] = (f"covalent radii: {COVALENT_FRACTION} x {bond:.3f} A (no such pair "
                                           f"within {SEARCH_RADIUS} A in the data)")
        coordination = like = None
        if shells and frames:
            coordination, like = most_neighbours(frames, species, shells)
            base = base_criteria(species)
            coordination = {k: max(v, base.max_coordination.get(k, 0)) + COORDINATION_SLACK for k, v in coordination.items()}
            like = {k: max(v, base.max_like_neighbours.get(k, 0)) + COORDINATION_SLACK for k, v in like.items()}
        return cls(flag, cluster_margin, collapse_fraction, source, coordination, like)

    @property
    def clustered(self) -> dict[Pair, float]:
        return {p: round((1.0 - self.cluster_margin) * r, 4) for p, r in self.flag.items()}

    @property
    def collapse(self) -> dict[Pair, float]:
        return {p: round(self.collapse_fraction * r, 4) for p, r in self.clustered.items()}

    def flags_for(self, training: Sequence[Atoms], data_margin: float = 0.05) -> dict[str, float]:
        """Flag distances for the monitors of a model trained on ``training`` (see the module docstring)."""
        seen = shortest_in_frames(training) if training else {}
        clustered = self.clustered
        return {pair_name(p): round(max(clustered[p], min(r, (1.0 - data_margin) * seen.get(p, np.inf))), 4)
                for p, r in self.flag.items()}

    def named(self, which: str = "flag") -> dict[str, float]:
        """One column keyed by "A-B" names: "flag", "clustered" or "collapse"."""
        return {pair_name(p): r for p, r in getattr(self, which).items()}

    def as_dict(self) -> dict:
        return {"flag": self.named("flag"), "clustered": self.named("clustered"), "collapse": self.named("collapse"),
                "cluster_margin": self.cluster_margin, "collapse_fraction": self.collapse_fraction,
                "source": self.source or {}, "max_coordination": self.max_coordination,
                "max_like_neighbours": self.max_like_neighbours}

    @classmethod
    def from_dict(cls, data: Mapping) -> "DistanceTable":
        return cls(_pairs(data["flag"]), data["cluster_margin"], data["collapse_fraction"], dict(data.get("source") or {}),
                   data.get("max_coordination"), data.get("max_like_neighbours"))

    def describe(self) -> str:
        rows = [f"{pair_name(p)}: flag < {r:.3f}, clustered < {self.clustered[p]:.3f}, collapse < {self.collapse[p]:.3f} A"
                for p, r in self.flag.items()]
        return "; ".join(rows)


def clustering_criteria(species: Sequence[str], table: DistanceTable,
                        overrides: Mapping | None = None) -> ClusteringCriteria:
    """The clustering detector of a campaign: its short pairs are the table's clustered distances,
    its coordination limits the table's (from the data) where it has them; ``overrides``
    (``judge.clustering``) on top. The detector's defaults before the data:
    :func:`~alcgap.analysis.clustering.base_criteria`."""
    values = base_criteria(species).model_dump()
    if table.max_coordination:
        values["max_coordination"] = dict(table.max_coordination)
    if table.max_like_neighbours:
        values["max_like_neighbours"] = dict(table.max_like_neighbours)
    values.update(overrides or {})
    values["min_distance"] = table.named("clustered")
    return ClusteringCriteria(**values)


#: an unguarded range wider than this fraction of the data's shortest pair is logged as a warning
UNGUARDED_WARN_FRACTION = 0.1


def unguarded_ranges(cutoffs: dict, frames) -> dict[str, dict]:
    """Per pair: the aux cutoff, the shortest distance of the pair in ``frames`` and the width of
    the range between them, where only the main GAP's extrapolation sets the energy. Measured on
    energies-only SiO2 fits (Vashishta, paper cutoffs): Si-O 1.1 vs 1.33 A; hot runs fell through
    that range into the aux wall, and with cutoffs just below the data's shortest pairs the same
    runs stayed out of it (``benchmarks/survival_sweep.py``, issue 17 note)."""
    seen = shortest_in_frames(frames) if frames else {}
    return {pair_name(pair): {"aux_cutoff_A": float(rc), "data_shortest_A": round(float(seen[pair]), 4),
                              "width_A": round(max(float(seen[pair]) - float(rc), 0.0), 4)}
            for pair, rc in cutoffs.items() if pair in seen}


def unguarded_warnings(unguarded: dict[str, dict]) -> list[str]:
    """A warning per pair whose unguarded range is wider than UNGUARDED_WARN_FRACTION of the data's pair."""
    return [f"{pair}: neither the aux (cutoff {gap['aux_cutoff_A']} A) nor the training data "
            f"(shortest {gap['data_shortest_A']} A) covers {gap['width_A']:.2f} A between them: there the "
            "main GAP extrapolates, and a hot run can fall into a hole before it meets the aux wall. "
            "A campaign flags and labels pairs there (distances.flag); a single fit does not: raise "
            f"aux.cutoffs.{pair} towards {gap['data_shortest_A']} A or add data that reaches it"
            for pair, gap in unguarded.items() if gap["width_A"] > UNGUARDED_WARN_FRACTION * gap["data_shortest_A"]]
