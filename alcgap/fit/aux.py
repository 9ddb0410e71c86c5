"""The repulsive-only auxiliary: a 2-body GAP fitted to the short-range part of dimer curves.

One ``distance_2b`` descriptor per species pair with ``add_species=F`` (otherwise gap_fit
copies every descriptor to every pair and ignores the per-pair cutoffs). The fitted curve is
checked on a dense grid, and a fit that is not positive, monotone and zero beyond its cutoff is
refused: an auxiliary that is not repulsive defeats its purpose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from alcgap.config import AuxSettings
from alcgap.dimers import DimerCurve, pair_curve, repulsive_target
from alcgap.fit.gapfit import descriptor, run_gap_fit
from alcgap.reference.base import isolated
from alcgap.structures import Pair, pair_name


class AuxNotRepulsive(RuntimeError):
    """The fitted auxiliary broke a physical property; the message gives the numbers."""


@dataclass
class PairCheck:
    pair: str
    r_cut: float
    min_below_cut: float
    max_beyond_cut: float
    monotone: bool
    max_rel_error: float
    max_abs_error: float
    problems: list[str] = field(default_factory=list)


@dataclass
class AuxFit:
    xml: Path
    checks: dict[str, PairCheck]
    targets: dict[str, tuple[np.ndarray, np.ndarray]]


def aux_target(curve: DimerCurve, r_cut: float, settings: AuxSettings) -> np.ndarray:
    """The repulsive target with the descriptor's own smooth cutoff."""
    return repulsive_target(curve, r_cut, settings.transition_fraction * r_cut)


def aux_training_frames(curves: dict[Pair, DimerCurve], cutoffs: dict[Pair, float], settings: AuxSettings) -> list[Atoms]:
    """One two-atom frame per scanned distance with its repulsive target and a relative sigma."""
    frames = []
    for pair, curve in curves.items():
        target = aux_target(curve, cutoffs[pair], settings)
        for r, energy in zip(curve.distances, target):
            atoms = isolated(pair[0] + pair[1], positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
            atoms.info["aux_energy"] = float(energy)
            # per-point sigma relative to the target: the fit must be right in relative terms both
            # at 1e3 eV near contact and at 1e-2 eV near the cutoff
            atoms.info["energy_sigma"] = max(settings.relative_sigma * float(energy), settings.sigma_floor)
            atoms.info["config_type"] = f"dimer_{pair_name(pair)}"
            frames.append(atoms)
    return frames


def aux_descriptors(curves: dict[Pair, DimerCurve], cutoffs: dict[Pair, float], settings: AuxSettings) -> list[str]:
    out = []
    for pair, curve in curves.items():
        r_cut = cutoffs[pair]
        target = aux_target(curve, r_cut, settings)
        inside = int(np.sum(curve.distances < r_cut))
        out.append(
            descriptor(
                "distance_2b",
                Z1=atomic_numbers[pair[0]],
                Z2=atomic_numbers[pair[1]],
                cutoff=r_cut,
                cutoff_transition_width=settings.transition_fraction * r_cut,
                covariance_type="ard_se",
                theta_uniform=settings.theta,
                # the prior energy scale of each pair is its own largest target
                delta=max(float(target.max()), 1.0),
                n_sparse=max(inside, 2),
                sparse_method="uniform",
                add_species=False,
            )
        )
    return out


def fit_repulsive_aux(
    curves: dict[Pair, DimerCurve],
    cutoffs: dict[Pair, float],
    settings: AuxSettings,
    workdir: str | os.PathLike,
    *,
    threads: int | None = None,
) -> AuxFit:
    """Fit and check the auxiliary; raise AuxNotRepulsive if the check fails."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ase.io.write(workdir / "dimers.xyz", aux_training_frames(curves, cutoffs, settings), format="extxyz")
    species = sorted({s for pair in curves for s in pair})
    xml = run_gap_fit(
        workdir,
        at_file="dimers.xyz",
        gp_file="aux.xml",
        descriptors=aux_descriptors(curves, cutoffs, settings),
        options={
            # the aux carries no one-body term: isolated atoms belong to the main GAP's e0
            "e0": "{" + ":".join(f"{s}:0.0" for s in species) + "}",
            "default_sigma": [settings.sigma_floor, 0.1, 0.1, 0.0],
            "energy_parameter_name": "aux_energy",
            "sparse_jitter": settings.sparse_jitter,
            "sparse_separate_file": False,
        },
        threads=threads,
    )
    checks = {pair_name(p): check_pair(xml, p, curves[p], cutoffs[p], settings) for p in curves}
    targets = {pair_name(p): (curves[p].distances, aux_target(curves[p], cutoffs[p], settings)) for p in curves}
    problems = [f"{name}: {msg}" for name, chk in checks.items() for msg in chk.problems]
    if problems:
        raise AuxNotRepulsive("the auxiliary fit is not physical: " + "; ".join(problems) + f" (files in {workdir})")
    return AuxFit(xml, checks, targets)


def aux_pair_curve(xml: str | os.PathLike, pair: Pair, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy (eV) and radial force -dE/dr (eV/A) of the auxiliary for an isolated pair."""
    from quippy.potential import Potential

    return pair_curve(Potential(param_filename=str(xml)), pair, distances)


def check_pair(xml: Path, pair: Pair, curve: DimerCurve, r_cut: float, settings: AuxSettings, step: float = 0.01) -> PairCheck:
    """Positive and strictly decreasing below r_cut and exactly zero beyond, on a grid of ``step``
    (Angstrom) from the shortest scanned distance; close to the target at every scanned distance
    (between them the reference is unknown, so accuracy is judged where it was computed)."""
    r_lo = float(curve.distances.min())
    grid = np.arange(r_lo, r_cut + settings.scan.beyond_cutoff + step / 2, step)
    energy, _ = aux_pair_curve(xml, pair, grid)
    below, beyond = grid < r_cut - 1e-9, grid >= r_cut
    # the smooth cutoff makes the last few points tiny; below 1e-6 eV they are numerically zero
    decreasing = np.diff(energy[below]) < 0
    meaningful = energy[below][1:] > 1e-6
    monotone = bool(np.all(decreasing | ~meaningful))
    target = aux_target(curve, r_cut, settings)
    fitted, _ = aux_pair_curve(xml, pair, curve.distances)
    error = np.abs(fitted - target)
    strong = target > 1.0
    check = PairCheck(
        pair=pair_name(pair),
        r_cut=r_cut,
        min_below_cut=float(energy[below].min()),
        max_beyond_cut=float(np.abs(energy[beyond]).max()) if beyond.any() else 0.0,
        monotone=monotone,
        max_rel_error=float((error[strong] / target[strong]).max()) if strong.any() else 0.0,
        max_abs_error=float(error[~strong].max()) if (~strong).any() else 0.0,
    )
    inner = below & (grid < r_cut - settings.transition_fraction * r_cut)
    if np.any(energy[below] < 0.0) or np.any(energy[inner] <= 0.0):
        check.problems.append(f"not positive below the cutoff (min {check.min_below_cut:.3g} eV)")
    if not monotone:
        bad = grid[below][1:][~(decreasing | ~meaningful)]
        check.problems.append(f"not monotonically decreasing near r = {np.round(bad[:5], 3).tolist()} A")
    if check.max_beyond_cut != 0.0:
        check.problems.append(f"not zero beyond r_cut ({check.max_beyond_cut:.3g} eV)")
    if check.max_rel_error > settings.rel_tolerance:
        worst = curve.distances[strong][np.argmax(error[strong] / target[strong])]
        check.problems.append(f"relative error {check.max_rel_error:.2%} > {settings.rel_tolerance:.0%} at r = {worst:.3f} A")
    if check.max_abs_error > settings.abs_tolerance:
        worst = curve.distances[~strong][np.argmax(error[~strong])]
        check.problems.append(f"error {check.max_abs_error:.3g} eV > {settings.abs_tolerance} eV at r = {worst:.3f} A (target < 1 eV)")
    return check
