"""The GAP's predicted variance as a predicted force error, calibrated on labelled atoms the model
did not train on.

The model. Each force component of atom i is taken to err by a zero-mean Gaussian whose variance
grows with the atom's predicted (local energy) variance ``v_i``::

    s_i^2 = alpha * v_i + beta^2          (s_i: the predicted force error, eV/A per component)

``beta`` is the error floor (what the model gets wrong where it is sure: noise, the descriptor's
reach), ``alpha * v_i`` the part that the GP knows it does not know. Both are fitted by maximum
likelihood on held-out atoms (per-component errors, three per atom); the map is monotone in
``v``, so ranking atoms by variance or by predicted error is the same ranking.

Calibration check. ``s_i`` is the atom's predicted RMS error per component. Force errors are
heavier-tailed than a Gaussian (many small, a few large), so the band that should hold for a share
``level`` of the atoms is not read off a chi-square law but from the atoms the model was
calibrated on: ``|dF_i| <= k(level) s_i``, with ``k(level)`` the ``level`` quantile of
``|dF_i| / s_i`` there (split-conformal calibration; kept for levels 0.5, 0.9 and 0.95).
:func:`coverage` measures the share it holds for on any labelled atoms: where it was fitted, and
on the next labels before they train (out of sample).

One tolerance (``judge.force_tolerance``) then flags an atom when ``s_i`` exceeds it, which is a
variance threshold ``(tolerance^2 - beta^2) / alpha`` (:meth:`ErrorModel.variance_at`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

#: a frame's atoms whose errors count: all, or the core of a carved cell (alcgap.provenance.exact_atoms)
AtomsOf = Callable[[Atoms], Sequence[int] | slice]


def all_atoms(atoms: Atoms) -> slice:
    return slice(None)


def variance_and_errors(calc, labelled: Sequence[Atoms], atoms_of: AtomsOf = all_atoms) -> tuple[np.ndarray, np.ndarray]:
    """(per-atom predicted variance (n,), per-atom force error vectors (n, 3)) of ``calc`` on the
    chosen atoms of the labelled frames that carry reference forces."""
    variance, errors = [], []
    for atoms in labelled:
        error = _force_errors(calc, atoms, atoms_of)
        if not len(error):
            continue
        variance.append(np.asarray(calc.get_variance(atoms.copy()))[atoms_of(atoms)].reshape(-1))
        errors.append(error)
    if not errors:
        return np.empty(0), np.empty((0, 3))
    return np.concatenate(variance), np.concatenate(errors)


#: the levels whose band factor an error model keeps
LEVELS = (0.5, 0.9, 0.95)


@dataclass(frozen=True)
class ErrorModel:
    """``s(v) = sqrt(alpha v + beta^2)``: the predicted force error (eV/A per component) of an atom
    with predicted variance ``v`` (eV^2)."""

    alpha: float  # (eV/A)^2 per eV^2
    beta: float  # eV/A
    n_atoms: int
    #: level -> k: the band |dF| <= k s held for that share of the calibration atoms (keys as text: JSON)
    factors: dict = field(default_factory=dict)

    def band(self, variance, level: float) -> np.ndarray:
        """|force error| (eV/A) that the atoms' errors stay under for a share ``level`` of atoms."""
        key = _level_key(level)
        if key not in self.factors:
            raise ValueError(f"level {level}: this error model keeps the band of {sorted(self.factors)} only")
        return self.factors[key] * self.sigma(variance)

    def sigma(self, variance) -> np.ndarray:
        return np.sqrt(self.alpha * np.maximum(np.asarray(variance, dtype=float), 0.0) + self.beta ** 2)

    def variance_at(self, tolerance: float) -> float:
        """The variance at which the predicted error reaches ``tolerance``; 0.0 when the error
        floor ``beta`` is already over it (every atom is then over the tolerance)."""
        if self.alpha <= 0.0:
            return 0.0 if tolerance <= self.beta else math.inf
        return max((tolerance ** 2 - self.beta ** 2) / self.alpha, 0.0)

    def as_dict(self) -> dict:
        return asdict(self)


def fit_error_model(variance: np.ndarray, errors: np.ndarray, levels: Sequence[float] = ()) -> ErrorModel:
    """``alpha`` and ``beta`` by maximum likelihood from per-atom variances and force-error vectors
    (the mean squared error per component is matched: ``s`` is the predicted RMS error whatever
    the errors' law), and the band factor of each level of :data:`LEVELS` and ``levels``."""
    from scipy.optimize import minimize  # scipy.optimize: slow to import, needed only here

    v = np.maximum(np.asarray(variance, dtype=float), 0.0)
    e2 = np.sum(np.asarray(errors, dtype=float) ** 2, axis=1)  # |dF_i|^2, three components
    if v.size < 3:
        raise ValueError(f"{v.size} labelled atoms with forces: too few to calibrate the variance on")
    floor = max(float(np.mean(e2)) / 3.0, 1e-12)

    def nll(p: np.ndarray) -> float:
        s2 = np.exp(p[0]) * v + np.exp(p[1])
        return float(np.sum(1.5 * np.log(s2) + e2 / (2.0 * s2)))

    scale = max(float(np.mean(v)), 1e-12)
    starts = [np.log([floor / scale * f, floor * g]) for f in (0.1, 1.0, 10.0) for g in (0.1, 0.5)]
    best = min((minimize(nll, p0, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
                for p0 in starts), key=lambda r: r.fun)
    alpha, beta = float(np.exp(best.x[0])), float(np.sqrt(np.exp(best.x[1])))
    # beyond the calibration atoms' variances the data say nothing: there the error is taken to
    # grow as the GP's own standard deviation, from at least the floor at their 99th percentile
    # (without this, atoms of one narrow variance range fit alpha ~ 0: a model that never flags)
    alpha = max(alpha, beta ** 2 / max(float(np.quantile(v, 0.99)), 1e-12))
    scores = np.sqrt(e2) / np.sqrt(alpha * v + beta ** 2)
    return ErrorModel(alpha=alpha, beta=beta, n_atoms=int(v.size),
                      factors={_level_key(q): _conformal_quantile(scores, q) for q in (*LEVELS, *levels)})


def _level_key(level: float) -> str:
    return f"{float(level):.4g}"


def _conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``level`` quantile of the calibration scores with the split-conformal finite-sample step."""
    n = len(scores)
    rank = min(n, int(math.ceil((n + 1) * level)))
    return float(np.sort(scores)[rank - 1])


def coverage(model: ErrorModel, variance: np.ndarray, errors: np.ndarray, level: float) -> dict:
    """The share of atoms whose |force error| falls inside the model's ``level`` band, against
    ``level``; with the atoms' mean predicted error and their actual per-component RMS error."""
    if len(variance) == 0:
        return {"level": level, "inside": None, "n_atoms": 0, "predicted_rmse": None, "actual_rmse": None}
    sigma = model.sigma(variance)
    norm = np.linalg.norm(errors, axis=1)
    return {"level": level, "inside": float(np.mean(norm <= model.band(variance, level))), "n_atoms": int(len(norm)),
            "predicted_rmse": float(np.sqrt(np.mean(sigma ** 2))), "actual_rmse": float(np.sqrt(np.mean(errors ** 2)))}


def calibration_plot(model: ErrorModel, sets: dict[str, tuple[np.ndarray, np.ndarray]], level: float,
                     tolerance: float | None, path, title: str = ""):
    """|force error| per atom against predicted variance for each labelled set, with the model's
    predicted error and its ``level`` band, and the tolerance."""
    from alcgap.analysis.plots import _save, plt  # matplotlib: only when a plot is drawn

    fig, ax = plt.subplots(figsize=(5.8, 4.4))
    shown = [np.maximum(v, 1e-12) for v, _ in sets.values() if len(v)]
    for (name, (v, e)), colour in zip(sets.items(), ("tab:blue", "tab:orange", "tab:green")):
        if len(v):
            inside = coverage(model, v, e, level)["inside"]
            ax.scatter(np.maximum(v, 1e-12), np.maximum(np.linalg.norm(e, axis=1), 1e-6), s=6, alpha=0.45,
                       color=colour, label=f"{name}: {len(v)} atoms, {inside:.0%} inside the band")
    if shown:
        grid = np.geomspace(min(x.min() for x in shown), max(x.max() for x in shown), 200)
        sigma = model.sigma(grid)
        ax.plot(grid, sigma * math.sqrt(3.0), color="k", lw=1.2, label="predicted |error| (RMS)")
        ax.plot(grid, model.band(grid, level), color="k", lw=1, ls="--", label=f"{level:.0%} band")
    if tolerance is not None:
        ax.axhline(tolerance * math.sqrt(3.0), color="tab:red", lw=1, ls=":",
                   label=f"tolerance {tolerance:g} eV/A per component")
    ax.set(xscale="log", yscale="log", xlabel="predicted variance (eV$^2$)", ylabel="|force error| per atom (eV/A)",
           title=title or "variance as a predicted force error")
    ax.legend(fontsize=7)
    return _save(fig, path)


def force_rmse_with_error(calc, labelled: Sequence[Atoms], atoms_of: AtomsOf = all_atoms, resamples: int = 500,
                          seed: int = 0) -> dict:
    """The force RMSE (eV/A per component) of ``calc`` on the chosen atoms of ``labelled`` and its
    standard error, by the bootstrap over frames (atoms of one frame are not independent): a
    figure from 6 frames is not read as exact. None figures without a labelled force."""
    sums, counts = [], []
    for atoms in labelled:
        errors = _force_errors(calc, atoms, atoms_of)
        if len(errors):
            sums.append(float(np.sum(errors ** 2)))
            counts.append(3 * len(errors))
    if not sums:
        return {"rmse": None, "se": None, "n_frames": 0, "n_atoms": 0}
    sums, counts = np.asarray(sums), np.asarray(counts)
    rmse = float(np.sqrt(sums.sum() / counts.sum()))
    if len(sums) < 2:
        se = rmse  # one frame: no spread to measure; as uncertain as the figure itself
    else:
        pick = np.random.default_rng(seed).integers(len(sums), size=(resamples, len(sums)))
        se = float(np.std(np.sqrt(sums[pick].sum(axis=1) / counts[pick].sum(axis=1)), ddof=1))
    return {"rmse": rmse, "se": se, "n_frames": int(len(sums)), "n_atoms": int(counts.sum() // 3)}


def _force_errors(calc, atoms: Atoms, atoms_of: AtomsOf) -> np.ndarray:
    if atoms.calc is None or "forces" not in atoms.calc.results:
        return np.empty((0, 3))
    work = atoms.copy()
    work.calc = calc
    return (work.get_forces() - np.asarray(atoms.calc.results["forces"]))[atoms_of(atoms)].reshape(-1, 3)
