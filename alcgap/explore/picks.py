"""The pick policy: which flagged local environments an iteration labels, and the cells it sends.

:func:`pick_environments` chooses up to a budget of flagged environments among candidate frames
(:func:`alcgap.explore.select.select_environments`) and turns each choice into what is labelled:
the whole frame up to ``whole_frame_atoms``, else a periodic cell carved around the chosen atoms
(:func:`alcgap.explore.carve.carve`), its boundary optionally relaxed with the model that explored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from ase import Atoms

from alcgap.explore.carve import CarveSettings, carve, relax_boundary
from alcgap.explore.select import SelectionSettings, select_environments

#: the atoms of an event a carved cell is centred on: its chosen atom and, within this distance,
#: its flagged partners (the other atom of its short pair). The event's other atoms lie
#: inside the carving radius around them anyway; centring on all of them made a 4-atom cluster
#: a 93-atom xTB cell (11.8 A) where the pair alone needs about 45 (9-10 A)
CORE_RADIUS = 2.0


@dataclass(frozen=True)
class PickSettings:
    """What a pick depends on (from ``select``, ``label`` and ``main.soap`` of a campaign)."""

    species: tuple[str, ...]
    #: frames up to this many atoms are labelled whole (``label.max_atoms``, default the training cell)
    whole_frame_atoms: int
    #: Angstrom: carved cells hold every atom within this of the chosen ones (default the SOAP cutoff)
    carve_radius: float
    #: Angstrom: inside this the carved cell is frozen when its boundary is relaxed
    frozen_radius: float
    relax_boundary: bool = False
    #: the selection's SOAP distance under which two environments are duplicates (None: its default)
    min_soap_distance: float | None = None


def frozen_radius(carve_radius: float, given: float | None) -> float:
    """``label.carve_frozen_radius``, default the carving radius less 1 A (alcgap.explore.carve)."""
    return given or max(carve_radius - 1.0, 0.5 * carve_radius)


def boundary_relaxer(settings: PickSettings, model_xml: str | None) -> Callable[[Atoms, Atoms], Atoms] | None:
    """``cell, source -> cell`` relaxing a carved cell's boundary with the model that explored,
    or None when ``relax_boundary`` is off or no model is given."""
    if not settings.relax_boundary or model_xml is None:
        return None

    @functools.cache
    def model():  # read once, and only when a frame is carved
        from alcgap.calculator import GapCalculator  # quippy: loaded only when a cell is relaxed

        return GapCalculator(model_xml)

    return lambda cell, source: relax_boundary(source, cell, model(), settings.frozen_radius)


def pick_environments(candidates: list[Atoms], known: list[Atoms], settings: PickSettings, budget: int,
                      variance_threshold: float | None, *, fallback: bool = False,
                      model_xml: str | None = None) -> tuple[list[Atoms], dict]:
    """(what to label, the pick's record): up to ``budget`` flagged environments of ``candidates``
    not already among ``known``; ``fallback``: when no atom is flagged, the most informative ones."""
    choice = SelectionSettings(budget=budget, variance_threshold=variance_threshold,
                               whole_frame_atoms=settings.whole_frame_atoms, fallback=fallback,
                               **({"min_distance": settings.min_soap_distance}
                                  if settings.min_soap_distance is not None else {}))
    selection = select_environments(candidates, list(settings.species), choice, known=known)
    carving = CarveSettings(radius=settings.carve_radius)
    relax = boundary_relaxer(settings, model_xml)
    by_frame: dict[int, list] = {}
    for event in selection.events:
        by_frame.setdefault(event.frame, []).append(event)
    out, events, skipped = [], [], []
    for index in sorted(by_frame):
        frame, chosen = candidates[index], by_frame[index]
        base = {k: frame.info[k] for k in ("task", "md_step", "max_variance", "min_distance", "flag_reasons") if k in frame.info}
        best = min(chosen, key=lambda e: (e.kind != "short_pair", e.score if e.kind == "short_pair" else -e.score))
        if len(frame) <= settings.whole_frame_atoms:
            pieces = [bare(frame)]
            pieces[0].info["centre_atoms"] = np.array([c for e in chosen for c in e.centres], dtype=int)
        else:
            pieces = carve_events(frame, [event_core(frame, e.centres) for e in chosen], carving, skipped, base, relax)
        for piece in pieces:
            piece.info.update(base, selection_kind=best.kind, selection_score=float(best.score))
            out.append(piece)
        events += [{"task": base.get("task"), "md_step": base.get("md_step"), "kind": e.kind, "score": float(e.score),
                    "centres": [int(c) for c in e.centres], "soap_distance": float(e.soap_distance),
                    "n_atoms": len(frame)} for e in chosen]
    return out, {"n_chosen": len(out), "n_candidates": selection.n_candidates, "n_duplicates": selection.n_duplicates,
                 "n_over_budget": selection.n_over_budget, "events": events, "not_carved": skipped}


def draw_test_frames(candidates: list[Atoms], settings: PickSettings, n: int, seed: int, *,
                     exclude: Iterable[tuple] = (), model_xml: str | None = None) -> tuple[list[Atoms], dict]:
    """(cells to label, the draw's record): ``n`` frames of ``candidates`` drawn at random, with no
    regard to flags or variance, each from a distinct (task, MD step), around one random atom
    each: an unbiased sample of where MD with the model goes. ``exclude``: (task, MD step) of
    frames already picked to train on, which a test frame must not be. A frame up to ``whole_frame_atoms``
    is taken whole; a larger one is carved around its drawn atom like any label (the core of
    the cell, :func:`alcgap.provenance.exact_atoms`, is the frame's own geometry)."""
    rng = np.random.default_rng(seed)
    seen, out, events, skipped = {tuple(e) for e in exclude}, [], [], []
    carving, relax = CarveSettings(radius=settings.carve_radius), boundary_relaxer(settings, model_xml)
    for index in rng.permutation(len(candidates)):
        if len(out) >= n:
            break
        frame = candidates[int(index)]
        event = (frame.info.get("task"), frame.info.get("md_step"))
        if event in seen:
            continue
        seen.add(event)
        atom = int(rng.integers(len(frame)))
        base = {k: frame.info[k] for k in ("task", "md_step", "max_variance", "min_distance") if k in frame.info}
        if len(frame) <= settings.whole_frame_atoms:
            pieces = [bare(frame)]
            pieces[0].info["centre_atoms"] = np.array([atom], dtype=int)
        else:
            pieces = carve_events(frame, [[atom]], carving, skipped, base, relax)
        for piece in pieces[:1]:
            piece.info.update(base, selection_kind="test", selection_score=0.0)
            out.append(piece)
            events.append({"task": base.get("task"), "md_step": base.get("md_step"), "kind": "test", "centres": [atom],
                           "n_atoms": len(frame)})
    return out, {"n_chosen": len(out), "n_candidates": len(candidates), "events": events, "not_carved": skipped}


def carve_events(frame: Atoms, cores: list[list[int]], settings: CarveSettings, skipped: list, base: dict,
                 relax=None) -> list[Atoms]:
    """One carved cell per event of a frame. Events are never carved together: the selection
    keeps them at least ``merge_radius`` apart, and one cell around two of them is several
    times one around each (seen: 93 atoms for two xTB events against 42 each; DFT cost ~N^3).
    A frame too small to hold a cell of the carving radius (a 2x cell, say) costs no more whole
    than carved: it is labelled whole, once, and the reason recorded."""
    pieces = []
    for core in cores:
        try:
            cell = carve(frame, core, settings)
            pieces.append(relax(cell, frame) if relax is not None else cell)
        except ValueError as err:
            skipped.append({"task": base.get("task"), "md_step": base.get("md_step"), "why": str(err)[:300]})
    if pieces or not skipped:
        return pieces
    whole = bare(frame)
    whole.info["centre_atoms"] = np.array([c for core in cores for c in core], dtype=int)
    whole.info["carve_failed"] = skipped[-1]["why"][:200]
    return [whole]


def event_core(frame: Atoms, centres: list[int]) -> list[int]:
    """The atoms a carved cell is centred on: the event's first centre and its partners within CORE_RADIUS."""
    first = centres[0]
    if len(centres) == 1:
        return [first]
    d = frame.get_distances(first, centres[1:], mic=True)
    return [first] + [c for c, r in zip(centres[1:], d) if r <= CORE_RADIUS]


def bare(frame: Atoms) -> Atoms:
    """A copy with the frame's info and its per-atom flags, without its calculator."""
    copy = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    copy.info.update(frame.info)
    for name in ("local_gap_variance", "short_pair_ratio"):
        if name in frame.arrays:
            copy.arrays[name] = frame.arrays[name].copy()
    return copy
