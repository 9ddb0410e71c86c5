"""Relaxing the boundary of a carved cell, its event and surroundings held at the source geometry.

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
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.geometry import find_mic
from ase.optimize import FIRE
from matscipy.neighbours import neighbour_list

from alcgap.provenance import distance_to_centres, info_indices
from alcgap.explore.carve_rules import both_orders, event_pairs, source_minima, z_pair, z_pair_label


def relax_boundary(source: Atoms, carved: Atoms, calculator, frozen_radius: float, *, fmax: float = 0.05,
                   steps: int = 300, shortest_fraction: float = 0.9) -> Atoms:
    """``carved`` (a cell of :func:`~alcgap.explore.carve.carve` from ``source``) with its atoms farther than
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
    if not np.isfinite(frozen_radius) or frozen_radius <= 0:
        raise ValueError(f"frozen_radius must be a positive length (Angstrom), got {frozen_radius}")
    centres = info_indices(carved, "centre_atoms")
    distance = distance_to_centres(carved, centres)
    frozen = np.flatnonzero(distance <= frozen_radius)
    out = carved.copy()
    out.calc = None
    out.info.update(carve_frozen_radius=float(min(frozen_radius, float(carved.info["carve_radius"]))),
                    carve_frozen_atoms=frozen.astype(int), carve_relax="nothing to relax", carve_relax_steps=0,
                    carve_relax_shift=0.0)
    if len(frozen) == len(carved):
        return out
    clean, done, problem = _checked_fire(source, out, frozen, calculator, fmax, steps, shortest_fraction)
    if done == 0:
        if problem:
            out.info["carve_relax"] = f"rejected: {problem}"[:300]
        return out
    shift, _ = find_mic(clean - carved.positions, carved.cell, True)
    relaxed = out.copy()
    relaxed.positions = clean
    moved = distance_to_centres(relaxed, centres)
    relaxed.info.update(carve_relax=f"stopped: {problem}"[:300] if problem else "relaxed", carve_relax_steps=done,
                        carve_relax_shift=float(np.linalg.norm(shift, axis=1).max()),
                        # relaxed atoms that came within the frozen radius of a centre
                        carve_relax_entered=int(((moved <= frozen_radius) & (distance > frozen_radius)).sum()))
    return relaxed


def _checked_fire(source: Atoms, cell: Atoms, frozen: np.ndarray, calculator, fmax: float, steps: int,
                  shortest_fraction: float) -> tuple[np.ndarray, int, str | None]:
    """FIRE on ``cell`` with the ``frozen`` atoms held, every step checked for a pair closing in:
    the positions of the last clean step, how many steps that was, and the pair that ended it (or None)."""
    work = cell.copy()
    work.set_constraint(FixAtoms(frozen))
    work.calc = calculator
    optimiser = FIRE(work, logfile=None)
    probe, clean, done, problem = cell.copy(), work.positions.copy(), 0, None
    for _ in optimiser.irun(fmax=fmax, steps=steps):  # each step checked: a pair closing in ends it
        probe.positions = work.positions
        problem = short_after_relaxation(source, probe, shortest_fraction)
        if problem:
            break
        clean, done = work.positions.copy(), int(optimiser.nsteps)
    return clean, done, problem


def short_after_relaxation(source: Atoms, relaxed: Atoms, fraction: float) -> str | None:
    """The first pair of ``relaxed`` closer than ``fraction`` x the source's shortest of its
    species pair (the flagged pairs left out, and not reported), or None."""
    flagged = event_pairs([info_indices(relaxed, "carve_centres")])
    minima = source_minima(source, flagged)
    limits = {key: fraction * d for key, d in minima.items()}
    if not limits:
        return None
    carved_from = relaxed.arrays["carved_from"]
    i, j, d = neighbour_list("ijd", relaxed, both_orders(limits))
    for a, b, dist in zip(i.tolist(), j.tolist(), d):
        key = z_pair(relaxed.numbers[a], relaxed.numbers[b])
        if dist < limits[key] and z_pair(carved_from[a], carved_from[b]) not in flagged:
            return (f"{z_pair_label(key)} pair {min(a, b)}-{max(a, b)} at {dist:.4f} A is shorter than {fraction} x "
                    f"the source's shortest {z_pair_label(key)}, {minima[key]:.4f} A")
    return None
