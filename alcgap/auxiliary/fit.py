"""Fitting the auxiliary: one ``distance_2b`` GAP per species pair, conditioned by construction.

Why the recipe is what it is (measured on the Vashishta and xTB dimers, see benchmarks/aux_fit.py):

- gap_fit Cholesky-factorises the sparse covariance K_MM + jitter. For a squared-exponential
  kernel on a uniform grid of sparse points spaced h, the eigenvalues of K_MM are bounded below
  by its Toeplitz symbol at the Nyquist frequency, ~ 2 (theta/h) sqrt(2 pi) exp(-pi^2 theta^2 / 2h^2)
  times delta^2: about 0.036 delta^2 for theta = h and 2e-3 delta^2 for theta = 1.2 h, whatever
  the number of points, but 1e-40 delta^2 for theta = 5 h (the earlier recipe: theta 0.1 A, a
  sparse point every 0.02 A), which factorised or not depending on the BLAS kernel. The sparse
  points therefore sit on a grid of ``aux.sparse_spacing`` (default two scan steps) and theta =
  ``aux.theta_over_spacing`` (default 1.2) x that spacing; the cutoff weights of the sparse points
  in the cosine transition add at most 1/f_c^2. Measured: condition numbers 1e3-1e4 (Vashishta,
  xTB, Lennard-Jones), identical under the Zen, Haswell, Sandybridge, Nehalem and Prescott kernels.
- With two or more data points per sparse point the fit is a least-squares fit, not an
  interpolation through misplaced centres, so it does not ripple between scanned distances.
- The core points below the scan are a model, not data: their sigma is 5% (CORE_RELATIVE_SIGMA),
  so the fit's freedom goes to the scan (seen with 0.5%: 15-18 meV misses in xTB's Si-O cosine tail).
- Per-point sigma is relative to the target (the fit must be right in relative terms at 1e4 eV
  near contact and at 1e-2 eV near the cutoff); delta per pair is that pair's largest target.

The conditioning is computed from the written xml (the K_MM gap_fit factorised, rebuilt from its
sparse points, theta, delta and cutoff weights) and gap_fit's own condition number of its
least-squares matrix, and both go into the fit's record.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from dataclasses import asdict
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from alcgap.auxiliary.checks import AuxNotRepulsive, PairCheck, check_pair
from alcgap.auxiliary.table import AuxTable, distance_2b_terms
from alcgap.auxiliary.target import PairTarget, pair_target
from alcgap.dimers import DimerCurve
from alcgap.fit.gapfit import descriptor, run_gap_fit
from alcgap.reference.base import isolated
from alcgap.structures import Pair, pair_name




#: the core points are a model, not data: held loosely, so the fit spends its freedom on the scan
CORE_RELATIVE_SIGMA = 0.05


@dataclass
class AuxFit:
    xml: Path
    table: AuxTable
    checks: dict[str, PairCheck]
    targets: dict[str, PairTarget]
    conditioning: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The fit's record for summaries: per pair targets, checks and conditioning."""

        return {
            "xml": str(self.xml),
            "conditioning": self.conditioning,
            "pairs": {name: {**asdict(self.checks[name]), "target": self.targets[name].record()} for name in self.checks},
        }


def sparse_grid(target: PairTarget, settings) -> tuple[int, float]:
    """Number of uniform sparse points over the pair's descriptor range, and their spacing (A)."""
    r = target.r[target.r < target.r_cut]
    wanted = settings.sparse_spacing or 2.0 * settings.scan.step
    n = max(int(round((r.max() - r.min()) / wanted)) + 1, 2)
    return n, float((r.max() - r.min()) / (n - 1))


def aux_descriptors(targets: dict[Pair, PairTarget], settings) -> list[str]:
    out = []
    for pair, target in targets.items():
        n_sparse, spacing = sparse_grid(target, settings)
        out.append(descriptor(
            "distance_2b", Z1=atomic_numbers[pair[0]], Z2=atomic_numbers[pair[1]],
            cutoff=target.r_cut, cutoff_transition_width=target.width,
            covariance_type="ard_se", theta_uniform=settings.theta_over_spacing * spacing,
            delta=max(float(target.energy.max()), 1.0), n_sparse=n_sparse, sparse_method="uniform",
            add_species=False,
        ))
    return out


def aux_training_frames(targets: dict[Pair, PairTarget], settings) -> list[Atoms]:
    """One two-atom frame per target point with a sigma relative to its energy."""
    frames = []
    for pair, target in targets.items():
        relative = np.where(target.r < target.r_scan.min(), CORE_RELATIVE_SIGMA, settings.relative_sigma)
        for r, energy, rel in zip(target.r, target.energy, relative):
            if abs(r - target.r_cut) < 1e-6:
                # a dimer at the cutoff has a descriptor whose cutoff function is 0 and tells the fit
                # nothing; picked as a sparse point it makes K_MM singular (seen: SiC Si-Si at 1.9 A)
                continue
            atoms = isolated(pair[0] + pair[1], positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
            atoms.info["aux_energy"] = float(energy)
            atoms.info["energy_sigma"] = max(float(rel) * float(energy), settings.sigma_floor)
            atoms.info["config_type"] = f"dimer_{pair_name(pair)}"
            frames.append(atoms)
    return frames


def make_targets(curves: dict[Pair, DimerCurve], cutoffs: dict[Pair, float], settings) -> dict[Pair, PairTarget]:
    """Targets of every pair, checked before any fit (AuxTargetError names the pair and the fix)."""
    missing = [pair_name(p) for p in cutoffs if p not in curves]
    if missing:
        raise ValueError(f"aux.cutoffs: no dimer curve for {missing}")
    targets = {}
    for pair, r_cut in cutoffs.items():
        core_step = (settings.sparse_spacing or 2.0 * settings.scan.step) / 2.0
        # the core is sampled one sparse spacing below the floor: the GAP holds up to its last point
        down_to = settings.core_floor - 2.0 * core_step
        targets[pair] = pair_target(curves[pair], r_cut, settings, core_step=core_step, core_down_to=max(down_to, core_step))
    return targets


def fit_repulsive_aux(
    curves: dict[Pair, DimerCurve],
    cutoffs: dict[Pair, float],
    settings,
    workdir: str | os.PathLike,
    *,
    threads: int | None = None,
) -> AuxFit:
    """Fit, tabulate and check the auxiliary; raise AuxNotRepulsive if a check fails."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    targets = make_targets(curves, cutoffs, settings)
    ase.io.write(workdir / "dimers.xyz", aux_training_frames(targets, settings), format="extxyz")
    species = sorted({s for pair in targets for s in pair})
    xml = run_gap_fit(
        workdir,
        at_file="dimers.xyz",
        gp_file="aux.xml",
        descriptors=aux_descriptors(targets, settings),
        options={
            # the aux carries no one-body term: isolated atoms belong to the main GAP's e0
            "e0": "{" + ":".join(f"{s}:0.0" for s in species) + "}",
            "default_sigma": [settings.sigma_floor, 0.1, 0.1, 0.0],
            "energy_parameter_name": "aux_energy",
            "sparse_jitter": settings.sparse_jitter,
            "sparse_separate_file": False,
            "condition_number_norm": "I",
        },
        threads=threads,
    )
    conditioning = {"K_MM": sparse_conditioning(xml), "gap_fit_log10_cond_A_inf": gap_fit_condition(workdir / "gap_fit.log")}
    table = AuxTable.from_xml(xml)
    checks = {pair_name(p): check_pair(xml, table, targets[p], settings) for p in targets}
    for name, cond in conditioning["K_MM"].items():
        if cond["condition_number"] > settings.max_condition:
            checks[name].problems.append(
                f"sparse covariance condition number {cond['condition_number']:.3g} > aux.max_condition "
                f"{settings.max_condition:.3g}: lower aux.theta_over_spacing")
    problems = [f"{name}: {msg}" for name, chk in checks.items() for msg in chk.problems]
    if problems:
        raise AuxNotRepulsive("the auxiliary fit is not physical: " + "; ".join(problems) + f" (files in {workdir})")
    return AuxFit(xml, table, checks, {pair_name(p): t for p, t in targets.items()}, conditioning)


def sparse_conditioning(xml: str | os.PathLike) -> dict[str, dict]:
    """Per distance_2b term: the 2-norm condition number of K_MM (what gap_fit Cholesky-factorises,
    rebuilt from the xml) and its smallest eigenvalue relative to delta^2."""
    out = {}
    for term in distance_2b_terms(xml):
        x, cut, theta = term["sparse"], term["sparse_cutoff"], term["theta"]
        k = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * theta**2)) * cut[:, None] * cut[None, :]
        eig = np.linalg.eigvalsh(k)
        out[pair_name(term["symbols"])] = {
            "n_sparse": int(len(x)), "theta_A": theta,
            "condition_number": float(eig.max() / eig.min()) if eig.min() > 0 else float("inf"),
            "min_eigenvalue_over_delta2": float(eig.min()),
        }
    return out


def gap_fit_condition(log: Path) -> float | None:
    """gap_fit's log10 condition number of its least-squares matrix (``condition_number_norm``)."""
    hits = re.findall(r"Condition number \(log10\) of matrix A.*?:\s*(\S+)", log.read_text(errors="replace"))
    return float(hits[-1]) if hits else None
