"""Selection of flagged local environments (atoms, not frames) for labelling.

The MD monitors flag atoms, not frames: ``arrays["short_pair_ratio"]`` (the atom's closest pair
over that species pair's own flag distance; < 1 is flagged) and ``arrays["local_gap_variance"]``
(eV^2; above ``variance_threshold`` is flagged). Every flagged atom is a candidate environment:

1. ranked: short pairs first, by ratio ascending (a Si-Si pair at 0.8 of its minimum beats a
   Si-O pair at 0.9 of its own, although the Si-O distance is shorter), then high variance by
   variance / threshold descending; an atom flagged both ways is a short pair; equal scores in
   (frame index, atom index) order, so the same inputs always give the same choice;
2. taken greedily in that order, each candidate is
   - *merged* into an event already chosen in its own frame when it lies within
     ``merge_radius`` (minimum image) of that event's chosen atom, or anywhere in a frame of at
     most ``whole_frame_atoms`` atoms (labelled whole: one event per frame); merged atoms are
     appended to the event's centres and cost no budget (so is a flagged atom turned away below
     before an event was chosen next to it);
   - a *duplicate* of the same event seen again when an event was chosen in another frame of
     the same MD run (``info["task"]``) at most ``same_event_steps`` steps away (``info["md_step"]``)
     and the candidate lies within ``merge_radius`` of that event's chosen atom in its own frame
     (atom indices are the run's atom ids, so the chosen atom is followed through time; frames
     without a task id count as one run, frames without ``md_step`` skip this rule);
   - a *duplicate* when its per-atom SOAP distance to an environment already chosen (any centre
     of any event) or to any environment of ``known`` (every atom of the training frames) of the
     same species is below ``min_distance``;
   - *over budget* once ``budget`` events are chosen;
   - otherwise a new :class:`Event`.

With no flagged atom at all and ``fallback`` on, every atom is a candidate of kind
"informative", ranked by variance descending when every frame has it, else by farthest-point
sampling from the known (and then the chosen) environments; the same rules apply, except that
atoms near a chosen centre are skipped instead of merged (they were not flagged).

SOAP distance: 1 - cosine similarity of L2-normalised per-atom SOAP vectors (quippy ``soap
average=F``, n_max = l_max = 4, cutoff 4 A, atom_sigma 0.5 by default); 0 is identical
(:mod:`alcgap.explore.soap`).

Why two duplicate rules, and why 2e-3 (measured by ``benchmarks/select_threshold.py``: Vashishta
SiO2 in LAMMPS through :func:`alcgap.md.lammps.run_md`, 240 atoms = 24-atom beta-cristobalite
x 10, NVT, 1 fs steps, a frame every 10 fs, 1 ps dropped then 2 ps kept; 5th percentile / median /
95th percentile of the distance, and the fraction below 2e-3):

============================  ============================  ============================
pair of environments          Si 4000 K                     O 4000 K
============================  ============================  ============================
same atom, 10 fs later        9.2e-4 / 3.7e-3 / 1.6e-2  24%  2.5e-3 / 9.6e-3 / 3.4e-2   3%
same atom, 20 fs              1.9e-3 / 8.0e-3 / 3.3e-2   5%  5.7e-3 / 2.1e-2 / 7.3e-2   0%
same atom, 50 fs              2.8e-3 / 1.3e-2 / 5.5e-2   2%  8.7e-3 / 3.1e-2 / 1.1e-1   0%
same atom, 100 fs             3.2e-3 / 1.5e-2 / 7.0e-2   1%  1.0e-2 / 3.5e-2 / 1.2e-1   0%
same atom, 500 fs             3.4e-3 / 1.6e-2 / 7.0e-2   1%  1.0e-2 / 3.6e-2 / 1.2e-1   0%
different atoms, one frame    3.4e-3 / 1.6e-2 / 6.8e-2   1%  1.0e-2 / 3.6e-2 / 1.2e-1   0%
flagged atom, 10 fs later     1.6e-3 / 5.4e-3 / 2.0e-2  15%  5.0e-3 / 1.4e-2 / 4.6e-2   0%
nearest of 10 frames' atoms   6.4e-4 / 1.3e-3 / 4.2e-3  76%  1.8e-3 / 3.5e-3 / 8.0e-3   8%
same, flagged atoms only      1.0e-3 / 2.6e-3 / 6.6e-3  31%  3.4e-3 / 5.6e-3 / 1.1e-2   0%
same atom 10 fs, 1500 K       2.8e-4 / 1.2e-3 / 6.8e-3  68%  9.2e-4 / 3.9e-3 / 1.6e-2  22%
different atoms, 1500 K       1.3e-3 / 8.3e-3 / 5.5e-2  12%  5.2e-3 / 2.1e-2 / 7.5e-2   0%
============================  ============================  ============================

("flagged": a pair under Si-O 1.4, O-O 2.2, Si-Si 2.6 A, 1.85 atoms per frame at 4000 K; "10
frames": the 800 Si / 1600 O environments of 10 frames 0.5-1 ps later, as a training set of
that run would offer them.) In the 4000 K melt an atom's environment is as far from itself
50-100 fs earlier as from any other atom: no SOAP threshold separates "the same event 10-20 fs
later" from distinct environments there -- the median 10 fs repeat (3.7e-3 Si) sits at the 5th
percentile of distinct pairs. Hence the time rule for repeats within one run (on 1 ps of the
4000 K run with every flagged atom a candidate: 94 events of which 13 repeat an event 10-20 fs
earlier without it, 76 and none with it). ``min_distance`` = 2e-3 is the 1st percentile of
distinct Si-Si pairs at 4000 K (O: none below): it seldom calls two different environments the
same, and catches what the time rule cannot -- slow repeats in a cooler run (1500 K: 68% of the
Si, 22% of the O repeats 10 fs later), re-flagged environments of other runs, and environments
the training set already has (closer to one than the same atom is to itself 10 fs later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from alcgap.explore.soap import nearest_distances, per_atom_soap

#: per-atom SOAP distance (1 - cosine) below which two environments are the same (module docstring)
MIN_DISTANCE = 2e-3
SHORT_PAIR, VARIANCE, INFORMATIVE = "short_pair", "variance", "informative"


@dataclass
class SelectionSettings:
    """How many events to label and what counts as the same event (see the module docstring)."""

    #: events (labels) to choose at most
    budget: int = 20
    #: per-atom SOAP distance (1 - cosine similarity of normalised vectors) below which two
    #: environments of one species are the same: 2e-3, the 1st percentile of distinct Si
    #: environments in 4000 K Vashishta SiO2 (benchmarks/select_threshold.py), measured with the
    #: default SOAP below: other SOAP settings change the scale (re-run the benchmark). None: that default
    min_distance: float | None = MIN_DISTANCE
    #: per-atom predicted variance (eV^2) above which an atom is flagged; None: variance flags nothing
    variance_threshold: float | None = None
    #: flagged atoms of one frame within this distance (A, minimum image) of an event's chosen
    #: atom belong to that event
    merge_radius: float = 4.0
    #: frames with at most this many atoms are labelled whole: their events merge into one
    whole_frame_atoms: int = 0
    #: an event seen again in the same MD run within this many steps (and within merge_radius
    #: of its chosen atom) is a duplicate: 20 fs at the 1 fs exploration timestep, the repeats
    #: SOAP cannot tell from new environments in a hot melt
    same_event_steps: int = 20
    soap_n_max: int = 4
    soap_l_max: int = 4
    soap_cutoff: float = 4.0
    soap_atom_sigma: float = 0.5
    #: with no flagged atom: choose the most informative atoms (highest variance, else farthest
    #: from the known environments)
    fallback: bool = True

    def __post_init__(self):
        if self.min_distance is None:
            self.min_distance = MIN_DISTANCE


@dataclass
class Event:
    """One chosen local environment."""

    frame: int  # index into the candidate frames
    centres: list[int]  # atom indices: the chosen atom first, merged atoms appended
    kind: str  # "short_pair" | "variance" | "informative"
    score: float  # the ranking score (ratio, variance / threshold, variance or FPS distance)
    soap_distance: float  # to the nearest known or previously chosen environment (inf: none)


@dataclass
class Selection:
    """The chosen events in priority order, and what became of every other candidate."""

    events: list[Event]
    n_candidates: int  # flagged atoms (0 when the fallback chose)
    n_duplicates: int
    n_over_budget: int
    details: list[dict] = field(default_factory=list)
    n_merged: int = 0
    fallback: bool = False

    def frames(self, candidates: Sequence[Atoms]) -> list[Atoms]:
        """One copy per chosen frame (first event's order; no calculator; info and arrays kept)
        with ``info["centre_atoms"]`` (all its events' centres; read back with
        :func:`centre_atoms`), ``info["selection_kind"]``, ``info["selection_score"]`` and
        ``info["soap_distance"]`` of its first event, and ``info["n_events"]``."""
        chosen: dict[int, list[Event]] = {}
        for event in self.events:
            chosen.setdefault(event.frame, []).append(event)
        out = []
        for index, events in chosen.items():
            copy = candidates[index].copy()
            copy.calc = None
            first = events[0]
            copy.info["centre_atoms"] = np.array([c for e in events for c in e.centres], dtype=int)
            copy.info["selection_kind"] = first.kind
            copy.info["selection_score"] = float(first.score)
            copy.info["soap_distance"] = float(first.soap_distance) if np.isfinite(first.soap_distance) else -1.0
            copy.info["n_events"] = len(events)
            out.append(copy)
        return out


def _flagged(frame: Atoms, threshold: float | None) -> list[tuple[int, str, float]]:
    """(atom, kind, score) of a frame's flagged atoms."""
    n = len(frame)
    ratio = np.asarray(frame.arrays.get("short_pair_ratio", np.full(n, np.inf)), dtype=float)
    variance = frame.arrays.get("local_gap_variance")
    short = ratio < 1.0
    high = np.zeros(n, dtype=bool) if variance is None or threshold is None else (np.asarray(variance) > threshold) & ~short
    return ([(int(a), SHORT_PAIR, float(ratio[a])) for a in np.flatnonzero(short)]
            + [(int(a), VARIANCE, float(variance[a]) / threshold) for a in np.flatnonzero(high)])


def select_environments(candidates: Sequence[Atoms], species: Sequence[str], settings: SelectionSettings,
                        known: Sequence[Atoms] = ()) -> Selection:
    """Greedy, de-duplicated, budgeted choice of flagged local environments (module docstring)."""
    flagged = [(f, a, kind, score) for f, frame in enumerate(candidates)
               for a, kind, score in _flagged(frame, settings.variance_threshold)]
    fallback = not flagged and settings.fallback
    farthest_first = False
    if fallback:
        flagged, farthest_first = _informative(candidates)
    if not flagged:
        return Selection([], 0, 0, 0)
    flagged.sort(key=_rank)
    z, vectors, nearest = _environments(flagged, candidates, species, settings, known)
    greedy = _Greedy(candidates, flagged, z, vectors, nearest, settings, fallback, farthest_first)
    greedy.run()
    if not fallback:
        greedy.merge_turned_away()
    counts = greedy.counts
    return Selection(greedy.events, 0 if fallback else len(flagged), counts["duplicate"] + counts["same_event"],
                     counts["over_budget"], greedy.details, counts["merged"], fallback)


def _informative(candidates: Sequence[Atoms]) -> tuple[list[tuple[int, int, str, float]], bool]:
    """With no flagged atom: every atom a candidate, scored by its variance when every frame has
    one; else unscored, and chosen farthest first (the second value)."""
    variances = [frame.arrays.get("local_gap_variance") for frame in candidates]
    use_variance = bool(candidates) and all(v is not None for v in variances)
    flagged = [(f, a, INFORMATIVE, float(variances[f][a]) if use_variance else 0.0)
               for f, frame in enumerate(candidates) for a in range(len(frame))]
    return flagged, not use_variance


_KIND_ORDER = {SHORT_PAIR: 0, VARIANCE: 1, INFORMATIVE: 1}


def _rank(candidate: tuple[int, int, str, float]) -> tuple:
    """Short pairs first by ratio ascending, then by score descending; ties in (frame, atom) order."""
    f, a, kind, score = candidate
    return (_KIND_ORDER[kind], score if kind == SHORT_PAIR else -score, f, a)


def _environments(flagged: list[tuple[int, int, str, float]], candidates: Sequence[Atoms], species: Sequence[str],
                  settings: SelectionSettings, known: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate, in rank order: its atomic number, its SOAP row, and its SOAP distance to
    the nearest environment of ``known`` of its species (inf: none)."""
    frame_of = np.array([c[0] for c in flagged])
    atom_of = np.array([c[1] for c in flagged])
    z = np.array([candidates[f].numbers[a] for f, a in zip(frame_of, atom_of)])
    atoms_of = [atom_of[frame_of == f] for f in range(len(candidates))]
    vectors = per_atom_soap(candidates, species, settings, atoms_of)
    # rows of per_atom_soap are grouped by frame; put them back in rank order
    by_frame = np.argsort(frame_of, kind="stable")
    vectors = vectors[np.argsort(by_frame, kind="stable")]
    nearest = np.full(len(flagged), np.inf)
    if known:
        known_vectors = per_atom_soap(known, species, settings)
        nearest = nearest_distances(vectors, z, known_vectors, np.concatenate([k.numbers for k in known]))
    return z, vectors, nearest


class _Greedy:
    """The greedy pass over the ranked candidates (module docstring, step 2): the events chosen,
    what became of each candidate, and the SOAP distance of every candidate to the nearest known
    or chosen environment, which shrinks as centres are chosen."""

    def __init__(self, candidates: Sequence[Atoms], flagged: list[tuple[int, int, str, float]], z: np.ndarray,
                 vectors: np.ndarray, nearest: np.ndarray, settings: SelectionSettings, fallback: bool,
                 farthest_first: bool):
        self.candidates, self.flagged, self.settings = candidates, flagged, settings
        self.z, self.vectors, self.nearest = z, vectors, nearest
        self.fallback, self.farthest_first = fallback, farthest_first
        self.events: list[Event] = []
        self.details: list[dict] = []
        self.counts = {"duplicate": 0, "same_event": 0, "over_budget": 0, "merged": 0}
        self.remaining = np.ones(len(flagged), dtype=bool)

    def run(self) -> None:
        while self.remaining.any():
            row = self._next_row()
            if row is None:
                break
            self._take(row)

    def _next_row(self) -> int | None:
        """The next candidate: in rank order, or farthest first in a fallback without variance;
        None when the rest is over budget or duplicate (counted as such)."""
        if self.fallback and len(self.events) >= self.settings.budget:
            # nothing was flagged, so nothing merges: the rest is over budget
            self.counts["over_budget"] += int(self.remaining.sum())
            return None
        if self.fallback and self.farthest_first:
            # farthest point: the remaining atom farthest from everything known or chosen
            pool = np.flatnonzero(self.remaining)
            row = int(pool[np.argmax(self.nearest[pool])])  # argmax takes the first: rank order breaks ties
            if self.nearest[row] < self.settings.min_distance:  # the farthest is a duplicate: so are all the rest
                self.counts["duplicate"] += len(pool)
                return None
            return row
        return int(np.argmax(self.remaining))

    def _take(self, row: int) -> None:
        """Decide on candidate ``row``: a new event, merged into one, or turned away."""
        self.remaining[row] = False
        f, a, kind, score = self.flagged[row]
        frame, distance = self.candidates[f], float(self.nearest[row])
        if self.fallback and self.farthest_first:
            score = distance
        decision, event_index = _decide(f, a, frame, self.candidates, self.events, distance, self.settings)
        if decision == "merged" and self.fallback:
            decision = "near_event"  # not flagged: it is labelled with the event, not a centre of it
        if decision == "new":
            event_index = len(self.events)
            self.events.append(Event(f, [a], kind, score, distance))
            self._add_centre(row)
            decision = "chosen"
        elif decision == "merged":
            self.events[event_index].centres.append(a)
            self._add_centre(row)
        if decision in self.counts:
            self.counts[decision] += 1
        self.details.append({"frame": f, "atom": a, "kind": kind, "score": score, "decision": decision,
                             "soap_distance": distance, "event": event_index})

    def _add_centre(self, row: int) -> None:
        """Candidate ``row`` is now a chosen environment: the others' nearest distances take it in."""
        same = self.z == self.z[row]
        to_row = np.maximum(0.0, 1.0 - self.vectors[same] @ self.vectors[row])
        self.nearest[same] = np.minimum(self.nearest[same], to_row)

    def merge_turned_away(self) -> None:
        """A flagged atom turned away before an event was chosen next to it in its frame is part of that event."""
        for entry in self.details:
            if entry["decision"] in ("duplicate", "same_event", "over_budget"):
                event_index = _merge_into(entry["frame"], entry["atom"], self.candidates[entry["frame"]], self.events,
                                          self.settings)
                if event_index is not None:
                    self.events[event_index].centres.append(entry["atom"])
                    self.counts[entry["decision"]] -= 1
                    self.counts["merged"] += 1
                    entry.update(decision="merged", event=event_index)


def _merge_into(f: int, a: int, frame: Atoms, events: list[Event], settings: SelectionSettings) -> int | None:
    """The event of frame ``f`` that atom ``a`` belongs to: the frame's first in a whole-labelled
    frame, else the one whose chosen atom is nearest within ``merge_radius``; None: none."""
    here = [k for k, e in enumerate(events) if e.frame == f]
    if not here:
        return None
    if len(frame) <= settings.whole_frame_atoms:
        return here[0]
    gaps = frame.get_distances(a, [events[k].centres[0] for k in here], mic=True)
    return here[int(np.argmin(gaps))] if gaps.min() <= settings.merge_radius else None


def _decide(f: int, a: int, frame: Atoms, candidates: Sequence[Atoms], events: list[Event], distance: float,
            settings: SelectionSettings) -> tuple[str, int | None]:
    """What becomes of candidate atom ``a`` of frame ``f``: merged into an event of its frame, a
    repeat of an event of a nearby step of its run, a SOAP duplicate, over budget, or new."""
    whole = len(frame) <= settings.whole_frame_atoms
    here = _merge_into(f, a, frame, events, settings)
    if here is not None:
        return "merged", here
    step, task = frame.info.get("md_step"), frame.info.get("task")
    if step is not None:
        for k, event in enumerate(events):
            other = candidates[event.frame]
            if (event.frame == f or other.info.get("task") != task or other.info.get("md_step") is None
                    or abs(int(other.info["md_step"]) - int(step)) > settings.same_event_steps or len(other) != len(frame)):
                continue
            if whole or frame.get_distance(a, event.centres[0], mic=True) <= settings.merge_radius:
                return "same_event", k
    if distance < settings.min_distance:
        return "duplicate", None
    if len(events) >= settings.budget:
        return "over_budget", None
    return "new", None
