"""What an MD run is watched for every k steps: frames worth labelling, and runs not worth finishing.

Flags (the frame is kept for selection, the run goes on):
- :class:`ShortPairFlag` -- a species pair closer than its flag distance;
- :class:`HighVarianceFlag` -- an atom's predicted variance above a threshold;
- the clustering verdict (:mod:`alcgap.analysis.clustering` with the clustered distances of the
  same table, :mod:`alcgap.explore.distances`): a clustered frame is always flagged, so every contact
  the judge holds against a run was offered for labelling.
Per atom, flagged frames carry ``short_pair_ratio`` (the atom's closest pair over that pair's
flag distance; < 1: flagged) and the variance, so selection scores local environments.

Aborts (the run stops and says why), one short class each as in wfl's ``generate/md/abort.py``:
- :class:`CollapseAbort` -- many pairs closer than a fraction of their minimum distance;
- :class:`NonFiniteAbort` -- NaN or infinite energy or forces.
LAMMPS' own errors ("Lost atoms", "Pair distance < table inner cutoff") stop a run in the driver.

Distances in Angstrom, variances in eV^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alcgap.calculator import VARIANCE
from alcgap.analysis.clustering import ClusteringCriteria, detect_clustering
from alcgap.structures import Pair, pair_key, pair_name


class MonitorSettings(BaseModel):
    """Thresholds of the monitors; ``every`` in MD steps."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(10, ge=1)
    #: per species pair ("Si-O": 1.4): frames with a pair closer than this are flagged
    min_distance: dict[str, float] = Field(default_factory=dict)
    #: the clustering verdict on every monitored frame (ClusteringCriteria fields; its
    #: min_distance are the clustered distances); None: no verdict in the run
    clustering: dict | None = None
    #: frames whose largest per-atom predicted variance exceeds this are flagged (eV^2)
    variance_threshold: float | None = Field(None, gt=0.0)
    #: a pair is collapsed below collapse_fraction x its clustered distance (without a clustering
    #: verdict: x its min_distance; pairs without either: x the sum of covalent radii)
    collapse_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    #: the run stops when more than this many pairs have collapsed ...
    collapse_max_pairs: int = Field(4, ge=0)
    #: ... or more than this fraction of the atoms is in a collapsed pair
    #: (in a 24-atom cell one collapsed pair is enough; in 2160 atoms it takes five pairs)
    collapse_max_atom_fraction: float = Field(0.05, gt=0.0, le=1.0)

    @field_validator("min_distance")
    @classmethod
    def _pairs(cls, value: dict[str, float]) -> dict[str, float]:
        for name, r in value.items():
            parts = name.split("-")
            if len(parts) != 2 or not all(p in atomic_numbers for p in parts):
                raise ValueError(f"min_distance: '{name}' is not a species pair like 'Si-O'")
            if r <= 0:
                raise ValueError(f"min_distance['{name}'] = {r}: give a positive distance in Angstrom")
        return value

    def pair_minima(self) -> dict[Pair, float]:
        return {pair_key(*name.split("-")): r for name, r in self.min_distance.items()}


def pair_distances(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j closer than ``cutoff`` (matscipy's linear-scaling neighbour list)."""
    from matscipy.neighbours import neighbour_list  # C neighbour lists: loaded with the first frame

    i, j, d = neighbour_list("ijd", atoms, cutoff)
    keep = i < j
    return i[keep], j[keep], d[keep]


def shortest_pairs(atoms: Atoms, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> dict[Pair, float]:
    """Shortest distance per species pair among the given pairs."""
    symbols = np.array(atoms.get_chemical_symbols())
    out: dict[Pair, float] = {}
    for a, b in {pair_key(x, y) for x, y in zip(symbols[i], symbols[j])}:
        mask = ((symbols[i] == a) & (symbols[j] == b)) | ((symbols[i] == b) & (symbols[j] == a))
        out[(a, b)] = float(d[mask].min())
    return out


@dataclass
class Verdict:
    """One monitored frame: why it is flagged (if at all), why the run must stop (if so)."""

    step: int
    min_distances: dict[Pair, float] = field(default_factory=dict)
    max_variance: float | None = None
    flag_reasons: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    #: the clustering verdict's summary when the frame is clustered
    clustered: str | None = None
    #: per atom: closest pair over its flag distance (inf: no pair in range)
    short_pair_ratio: np.ndarray | None = None
    #: atoms flagged: in a short pair, over the variance threshold, or in a cluster
    n_flagged_atoms: int = 0

    def annotate(self, atoms: Atoms) -> Atoms:
        """Write the verdict into ``atoms.info`` (extxyz-friendly scalars and strings)."""
        atoms.info["md_step"] = self.step
        atoms.info["flag_reasons"] = "; ".join(self.flag_reasons)
        if self.max_variance is not None:
            atoms.info["max_variance"] = self.max_variance
        if self.min_distances:
            pair, r = min(self.min_distances.items(), key=lambda item: item[1])
            atoms.info["min_distance"] = r
            atoms.info["min_distance_pair"] = pair_name(pair)
            for p, r in self.min_distances.items():
                atoms.info[f"min_distance_{p[0]}_{p[1]}"] = r
        if self.clustered:
            atoms.info["clustered"] = self.clustered
        if self.short_pair_ratio is not None:
            atoms.arrays["short_pair_ratio"] = self.short_pair_ratio
        return atoms


class ShortPairFlag:
    def __init__(self, minima: dict[Pair, float]):
        self.minima = minima

    def __call__(self, shortest: dict[Pair, float]) -> list[str]:
        return [f"short pair {pair_name(p)} {shortest[p]:.3f} A < {r:.3f} A"
                for p, r in self.minima.items() if p in shortest and shortest[p] < r]


class HighVarianceFlag:
    def __init__(self, threshold: float):
        self.threshold = threshold

    def __call__(self, variance: np.ndarray | None) -> list[str]:
        if variance is None or variance.max() <= self.threshold:
            return []
        return [f"variance {variance.max():.4g} eV^2 > {self.threshold:.4g} eV^2 "
                f"({int((variance > self.threshold).sum())} atoms)"]


class CollapseAbort:
    """Stop when atoms have fallen onto each other: more than ``max_pairs`` pairs, or more than
    ``max_atom_fraction`` of the atoms, closer than ``fraction`` x the pair's minimum distance."""

    def __init__(self, minima: dict[Pair, float], fraction: float, max_pairs: int, max_atom_fraction: float):
        self.minima, self.fraction = minima, fraction
        self.max_pairs, self.max_atom_fraction = max_pairs, max_atom_fraction

    def collapse_distance(self, pair: Pair) -> float:
        if pair in self.minima:
            return self.fraction * self.minima[pair]
        return self.fraction * (covalent_radii[atomic_numbers[pair[0]]] + covalent_radii[atomic_numbers[pair[1]]])

    def reach(self, species: list[str]) -> float:
        pairs = [pair_key(a, b) for a in species for b in species]
        return max(self.collapse_distance(p) for p in pairs)

    def __call__(self, atoms: Atoms, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> str | None:
        symbols = np.array(atoms.get_chemical_symbols())
        limit = np.array([self.collapse_distance(pair_key(a, b)) for a, b in zip(symbols[i], symbols[j])])
        collapsed = d < limit if len(d) else np.zeros(0, dtype=bool)
        n_pairs = int(collapsed.sum())
        n_atoms = len(np.union1d(i[collapsed], j[collapsed]))
        if n_pairs > self.max_pairs or n_atoms > self.max_atom_fraction * len(atoms):
            worst = int(np.argmin(d / np.where(limit > 0, limit, 1.0)))
            return (f"collapse: {n_pairs} pairs ({n_atoms} atoms) closer than {self.fraction:g} x their "
                    f"minimum distance; shortest {symbols[i[worst]]}-{symbols[j[worst]]} {d[worst]:.3f} A")
        return None


class NonFiniteAbort:
    def __call__(self, atoms: Atoms) -> str | None:
        calc = atoms.calc
        if calc is None:
            return None
        energy = calc.results.get("energy")
        forces = calc.results.get("forces")
        if (energy is not None and not math.isfinite(energy)) or (forces is not None and not np.all(np.isfinite(forces))):
            return f"non-finite energy or forces (energy {energy})"
        return None


class Monitor:
    """All monitors of one run. ``check(atoms, step)`` reads the frame's per-atom variance from
    ``atoms.arrays["local_gap_variance"]`` when present."""

    #: shortest distances are reported for pairs within this range even without thresholds
    report_range = 3.0

    def __init__(self, settings: MonitorSettings):

        self.settings = settings
        minima = self.minima = settings.pair_minima()
        self.flags_pairs = ShortPairFlag(minima)
        self.flags_variance = HighVarianceFlag(settings.variance_threshold) if settings.variance_threshold else None
        self.criteria = ClusteringCriteria(**settings.clustering) if settings.clustering else None
        clustered = {pair_key(*n.split("-")): r for n, r in self.criteria.min_distance.items()} if self.criteria else minima
        self.collapse = CollapseAbort(clustered, settings.collapse_fraction, settings.collapse_max_pairs,
                                      settings.collapse_max_atom_fraction)
        #: an atom the detector flags for its coordination alone ranks as a pair at the clustered distance
        self.clustered_ratio = min([clustered[p] / r for p, r in minima.items() if p in clustered], default=1.0)
        self.non_finite = NonFiniteAbort()
        reach = self.criteria.search_radius if self.criteria else 0.0
        self.cutoff = max([self.report_range, reach, *minima.values()])

    def check(self, atoms: Atoms, step: int) -> Verdict:
        verdict = Verdict(step=step)
        verdict.stop_reason = self.non_finite(atoms)
        if verdict.stop_reason is not None:
            return verdict
        species = sorted(set(atoms.get_chemical_symbols()))
        i, j, d = pair_distances(atoms, max(self.cutoff, self.collapse.reach(species)))
        verdict.min_distances = shortest_pairs(atoms, i, j, d)
        verdict.short_pair_ratio = self.pair_ratios(atoms, i, j, d)
        variance = atoms.arrays.get(VARIANCE)
        if variance is not None:
            verdict.max_variance = float(np.max(variance))
        verdict.flag_reasons = self.flags_pairs(verdict.min_distances)
        if self.flags_variance is not None:
            verdict.flag_reasons += self.flags_variance(variance)
        if self.criteria is not None:

            found = detect_clustering(atoms, self.criteria)
            if not found.clean:
                verdict.clustered = found.summary()
                verdict.flag_reasons.append(verdict.clustered)
                flagged = found.flagged_atoms
                verdict.short_pair_ratio[flagged] = np.minimum(verdict.short_pair_ratio[flagged], self.clustered_ratio)
        flagged_atoms = verdict.short_pair_ratio < 1.0
        if variance is not None and self.settings.variance_threshold:
            flagged_atoms |= np.asarray(variance) > self.settings.variance_threshold
        verdict.n_flagged_atoms = int(flagged_atoms.sum())
        verdict.stop_reason = self.collapse(atoms, i, j, d)
        return verdict

    def pair_ratios(self, atoms: Atoms, i: np.ndarray, j: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Per atom, the smallest distance / flag distance over its pairs (inf: none in range)."""
        ratio = np.full(len(atoms), np.inf)
        if not self.minima or not len(d):
            return ratio
        symbols = np.array(atoms.get_chemical_symbols())
        limit = np.array([self.minima.get(pair_key(a, b), np.nan) for a, b in zip(symbols[i], symbols[j])])
        known = np.isfinite(limit)
        r = d[known] / limit[known]
        np.minimum.at(ratio, i[known], r)
        np.minimum.at(ratio, j[known], r)
        return ratio
