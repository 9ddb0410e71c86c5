"""What the auxiliary is fitted to: the repulsive part of each dimer curve, and a core below it.

Per species pair, from a dimer curve E(r) (:mod:`alcgap.dimers`):

- **scan target**: ``max(E(r) - E(r_cut), 0)`` below ``r_cut``, times the descriptor's own cosine
  cutoff. Only the repulsive part is kept: the auxiliary must never add binding, so the main model
  still learns every attraction from the data. The cutoff is part of the target because the
  2-body GAP is itself ``f_cut(r) * g(r)``: a target with a kink at ``r_cut`` cannot be reproduced.
- **clean-up**: failed reference points are dropped and recorded; a curve that rises with r
  (SCF noise) is projected onto the nearest decreasing one (isotonic regression) when the change
  is within ``aux.noise_tolerance``, and refused with the distances otherwise.
- **core below the scan**: a screened Coulomb (Bohr) form ``A exp(-b r) / r`` through the first two
  scanned points (value and chord slope). Nuclear repulsion grows as 1/r at short range, screened
  by the electrons; the form is positive and decreasing on (0, r_0] whenever the scan is
  (b > -1/r_0 follows from a decreasing target). It is sampled down to below ``aux.core_floor``
  so that the fitted GAP itself, and so any ``pair_style quip`` that loads the xml, repels down to
  that distance; the tabulated auxiliary continues it analytically to r -> 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression

from alcgap.dimers import DimerCurve
from alcgap.structures import Pair, pair_name


class AuxTargetError(ValueError):
    """The dimer curve of a pair cannot give a repulsive auxiliary; the message says why and the fix."""


def cosine_cutoff(r: np.ndarray, r_cut: float, width: float) -> np.ndarray:
    """QUIP's smooth cutoff: 1 below r_cut - width, a cosine down to 0 at r_cut, 0 beyond."""
    x = np.clip((np.asarray(r) - (r_cut - width)) / width, 0.0, 1.0)
    return np.where(np.asarray(r) < r_cut, 0.5 * (np.cos(np.pi * x) + 1.0), 0.0)


def repulsive_target(curve: DimerCurve, r_cut: float, width: float = 0.0) -> np.ndarray:
    """``max(E(r) - E(r_cut), 0)`` below r_cut, 0 at and beyond it, times the smooth cutoff of
    ``width`` Angstrom (0 = a hard cutoff)."""
    shifted = curve.energies - curve.energy_at(r_cut)
    hard = np.where(curve.distances < r_cut, np.maximum(shifted, 0.0), 0.0)
    return hard * cosine_cutoff(curve.distances, r_cut, width) if width > 0 else hard


@dataclass(frozen=True)
class ScreenedCore:
    """``E(r) = A exp(-b r) / r`` (eV, Angstrom): a screened Coulomb repulsion."""

    A: float
    b: float

    @classmethod
    def through(cls, r0: float, e0: float, r1: float, e1: float) -> "ScreenedCore":
        """The core through two points (r0 < r1, e0 > e1 > 0)."""
        b = (np.log(e0 * r0) - np.log(e1 * r1)) / (r1 - r0)
        return cls(float(e0 * r0 * np.exp(b * r0)), float(b))

    @classmethod
    def matching(cls, r0: float, e0: float, de0: float) -> "ScreenedCore":
        """The core with value ``e0`` > 0 and slope ``de0`` < 0 (eV/A) at r0."""
        b = -de0 / e0 - 1.0 / r0
        return cls(float(e0 * r0 * np.exp(b * r0)), float(b))

    def energy(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=float)
        return self.A * np.exp(-self.b * r) / r

    def derivative(self, r: np.ndarray) -> np.ndarray:
        """dE/dr (eV/A); negative on (0, -1/b) for b < 0 and everywhere for b >= 0."""
        r = np.asarray(r, dtype=float)
        return -self.energy(r) * (self.b + 1.0 / r)

    def decreasing_up_to(self) -> float:
        """Largest r (Angstrom) up to which the core decreases."""
        return np.inf if self.b >= 0 else -1.0 / self.b


@dataclass
class PairTarget:
    """Everything the fit of one pair uses, and the record of how it was made."""

    pair: Pair
    r_cut: float
    width: float
    #: scanned distances kept (Angstrom) and their target (eV), cutoff included
    r_scan: np.ndarray
    scan: np.ndarray
    #: synthetic core points below the scan
    r_core: np.ndarray
    core_energy: np.ndarray
    core: ScreenedCore
    #: reference points that failed, {distance: reason}
    failed: dict[float, str] = field(default_factory=dict)
    #: change the isotonic clean-up made at each scanned distance (eV)
    corrections: np.ndarray | None = None
    #: largest change the isotonic clean-up made to the scan target (eV), and where
    max_noise_correction: float = 0.0
    noise_at: float | None = None

    @property
    def name(self) -> str:
        return pair_name(self.pair)

    @property
    def r(self) -> np.ndarray:
        return np.concatenate([self.r_core, self.r_scan])

    @property
    def energy(self) -> np.ndarray:
        return np.concatenate([self.core_energy, self.scan])

    def record(self) -> dict:
        """A JSON-able summary for the fit's record."""
        return {
            "r_cut": self.r_cut, "scan_points": int(len(self.r_scan)), "core_points": int(len(self.r_core)),
            "scan_range_A": [float(self.r_scan.min()), float(self.r_scan.max())],
            "core": {"form": "A exp(-b r) / r", "A_eV_A": self.core.A, "b_per_A": self.core.b,
                     "lowest_point_A": float(self.r_core.min()) if len(self.r_core) else None},
            "failed_reference_points": {f"{float(r):.4f}": why for r, why in sorted(self.failed.items(), key=lambda item: float(item[0]))},
            "max_noise_correction_eV": self.max_noise_correction, "noise_at_A": self.noise_at,
        }


def pair_target(curve: DimerCurve, r_cut: float, settings, *, core_step: float, core_down_to: float) -> PairTarget:
    """The target of one pair (see the module docstring); ``settings`` is an ``AuxSettings``.

    Raises AuxTargetError naming the pair, the distances and the fix when the curve cannot give a
    repulsive auxiliary: too few points, a gap of failed points, no repulsion, or noise beyond
    ``settings.noise_tolerance``.
    """
    name, step = pair_name(curve.pair), settings.scan.step
    r, energy = np.asarray(curve.distances, float), np.asarray(curve.energies, float)
    inside = r < r_cut
    if inside.sum() < 3 or not np.any(r >= r_cut - 1e-9):
        raise AuxTargetError(
            f"aux, pair {name}: {int(inside.sum())} reference points below r_cut = {r_cut} A and "
            f"{int(np.sum(r >= r_cut - 1e-9))} at or beyond it (failed: {_failed_text(curve)}); the fit needs "
            f"at least 3 below and one at r_cut: fix the reference at those distances or change aux.scan")
    if r.min() > settings.scan.r_min + 2.5 * step:
        raise AuxTargetError(
            f"aux, pair {name}: the shortest reference point is {r.min():.3f} A, the scan starts at "
            f"{settings.scan.r_min} A (failed: {_failed_text(curve)}); the short end defines the repulsion: "
            f"fix the reference there or raise aux.scan.r_min")
    gaps = np.diff(r[r <= r_cut + 1e-9])
    if gaps.size and gaps.max() > 2.5 * step:
        at = r[:-1][np.argmax(np.diff(r))]
        raise AuxTargetError(
            f"aux, pair {name}: no reference points between {at:.3f} and {at + gaps.max():.3f} A "
            f"(failed: {_failed_text(curve)}); fix the reference at those distances or use a coarser aux.scan.step")

    shifted = energy[inside] - curve.energy_at(r_cut)
    cleaned = IsotonicRegression(increasing=False).fit_transform(r[inside], shifted)
    correction = np.abs(cleaned - shifted)
    allowed = np.maximum(settings.noise_tolerance * np.abs(shifted), settings.noise_floor)
    if np.any(correction > allowed):
        worst = int(np.argmax(correction - allowed))
        raise AuxTargetError(
            f"aux, pair {name}: the dimer curve rises with r near {r[inside][worst]:.3f} A by "
            f"{correction[worst]:.3g} eV (tolerated: {allowed[worst]:.3g} eV, aux.noise_tolerance/noise_floor); "
            f"a repulsive auxiliary cannot follow it: converge the reference tighter there (e.g. EPS_SCF) "
            f"or lower the pair's cutoff in aux.cutoffs")
    width = settings.transition_fraction * r_cut
    hard = np.zeros_like(r)
    hard[inside] = np.maximum(cleaned, 0.0)
    target = hard * cosine_cutoff(r, r_cut, width)
    if not (target[0] > target[1] > 0.0):
        raise AuxTargetError(
            f"aux, pair {name}: the repulsive target at the shortest distances ({r[0]:.3f}, {r[1]:.3f} A) is "
            f"{target[0]:.3g}, {target[1]:.3g} eV: not positive and decreasing, so the curve does not repel there; "
            f"scan shorter distances (aux.scan.r_min) or lower the pair's cutoff in aux.cutoffs")
    core = ScreenedCore.through(r[0], target[0], r[1], target[1])
    n_core = int(np.floor((r[0] - core_down_to) / core_step + 1e-6))
    r_core = np.round(r[0] - core_step * np.arange(n_core, 0, -1), 10)
    worst_noise = int(np.argmax(correction))
    return PairTarget(
        pair=curve.pair, r_cut=r_cut, width=width, r_scan=r, scan=target, r_core=r_core,
        core_energy=core.energy(r_core), core=core, failed=dict(curve.failed),
        corrections=np.concatenate([correction, np.zeros(int((~inside).sum()))]),
        max_noise_correction=float(correction.max()),
        noise_at=float(r[inside][worst_noise]) if correction.max() > 0 else None,
    )


def _failed_text(curve: DimerCurve) -> str:
    if not curve.failed:
        return "none"
    return ", ".join(f"{r:.3f} A ({why.split(':')[0]})" for r, why in sorted(curve.failed.items()))
