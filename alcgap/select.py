"""Selection of exploration frames for labelling: flags, de-duplication in SOAP space, a budget.

A frame is a candidate when the MD monitors flagged it: its largest per-atom predicted variance
is above the threshold, or a species pair came closer than its minimum distance. Candidates are
ranked (short pairs first: they are the structures a potential must learn to repel; then by
variance), and accepted greedily while they are farther than ``min_distance`` in the space of
structure-averaged SOAP vectors from every frame accepted before them and from the frames
already in the training set, until the budget is spent. Near-duplicates (consecutive MD frames
of the same event) would otherwise eat the labelling budget with one configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from sklearn.metrics.pairwise import cosine_distances
from sklearn.preprocessing import normalize


@dataclass
class SelectionSettings:
    """How many frames to label per iteration and what counts as a duplicate."""

    #: labels per iteration at most
    budget: int = 20
    #: cosine distance between normalised structure-averaged SOAP vectors below which two frames
    #: are the same configuration (1 - cosine similarity; 0 = identical). Seen on 24-atom SiO2:
    #: independent 0.15 A rattles of one crystal 7e-5 to 1e-3 apart, 1e-5 A rattles ~1e-12
    min_distance: float = 1e-5
    #: SOAP for the comparison: cheaper than the model's own, shape is what matters here
    soap_n_max: int = 4
    soap_l_max: int = 4
    soap_cutoff: float = 4.0


@dataclass
class Selection:
    """The chosen frames (in priority order) and why the others were not chosen."""

    chosen: list[Atoms]
    n_candidates: int
    n_duplicates: int
    n_over_budget: int
    details: list[dict] = field(default_factory=list)


def soap_vectors(frames: Sequence[Atoms], species: Sequence[str], settings: SelectionSettings) -> np.ndarray:
    """Structure-averaged SOAP vectors, L2-normalised, one row per frame."""
    from quippy.descriptors import Descriptor

    if not frames:
        return np.zeros((0, 1))
    zs = " ".join(str(atomic_numbers[s]) for s in species)
    descriptor = Descriptor(
        f"soap n_max={settings.soap_n_max} l_max={settings.soap_l_max} cutoff={settings.soap_cutoff} "
        f"atom_sigma=0.5 average=T n_species={len(species)} species_Z={{{zs}}}"
    )
    vectors = np.array([descriptor.calc(frame)["data"][0] for frame in frames])
    return normalize(vectors)


def frame_copy(frame: Atoms) -> Atoms:
    """A copy without any calculator, keeping the monitor's info."""
    copy = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    copy.info.update(frame.info)
    return copy


def priority(frame: Atoms) -> tuple:
    """Sort key: frames with a short pair first (shortest first), then by largest variance."""
    short = "short pair" in str(frame.info.get("flag_reasons", ""))
    return (0 if short else 1, float(frame.info.get("min_distance", np.inf)) if short else 0.0,
            -float(frame.info.get("max_variance", 0.0)))


def select_frames(
    candidates: Sequence[Atoms],
    species: Sequence[str],
    settings: SelectionSettings,
    known: Sequence[Atoms] = (),
    rank: Callable[[Atoms], tuple] = priority,
) -> Selection:
    """Greedy, de-duplicated, budgeted choice among flagged frames (see the module docstring)."""
    order = sorted(range(len(candidates)), key=lambda i: rank(candidates[i]))
    vectors = soap_vectors([candidates[i] for i in order], species, settings)
    # running distance of every candidate to its nearest accepted (or already known) frame
    nearest = np.full(len(order), np.inf)
    if known and len(order):
        nearest = cosine_distances(vectors, soap_vectors(list(known), species, settings)).min(axis=1)
    chosen, details = [], []
    n_duplicates = n_over_budget = 0
    for row, index in enumerate(order):
        distance = float(nearest[row])
        if distance < settings.min_distance:
            n_duplicates += 1
            details.append({"candidate": index, "decision": "duplicate", "soap_distance": distance})
            continue
        if len(chosen) >= settings.budget:
            n_over_budget += 1
            details.append({"candidate": index, "decision": "over_budget", "soap_distance": distance})
            continue
        selected = frame_copy(candidates[index])
        selected.info["soap_distance"] = distance if np.isfinite(distance) else -1.0
        chosen.append(selected)
        nearest = np.minimum(nearest, cosine_distances(vectors, vectors[row : row + 1])[:, 0])
        details.append({"candidate": index, "decision": "chosen", "soap_distance": distance})
    return Selection(chosen, len(candidates), n_duplicates, n_over_budget, details)
