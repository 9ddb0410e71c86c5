"""Settings of the repulsive-only 2-body auxiliary: per-pair cutoffs, dimer scans, fitting recipe.

Defaults are the paper's (Milardovich et al., SSE 2022): cutoffs Si-Si 1.6, Si-O 1.1, O-O 0.8
Angstrom. Which pairs the table must hold depends on the species, and is checked by the config.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from alcgap.settings import Strict, parse_pair
from alcgap.structures import Pair


class DimerScan(Strict):
    """Distances (Angstrom) of the dimer scans that define the auxiliary potential."""

    r_min: float = Field(0.5, gt=0.0)
    step: float = Field(0.02, gt=0.0, le=0.2)
    beyond_cutoff: float = Field(0.3, ge=0.0, description=(
        "how far past each pair's cutoff to scan (the fit must learn exactly zero there)"))


class AuxSettings(Strict):
    """The repulsive-only 2-body auxiliary GAP: per-pair cutoffs and the fitting recipe."""

    cutoffs: dict[str, float] = Field(default_factory=lambda: {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8})
    scan: DimerScan = Field(default_factory=DimerScan)
    transition_fraction: float = Field(0.15, gt=0.0, le=1.0, description=(
        "smooth cutoff: width of the cosine transition as a fraction of each pair's cutoff"))
    sparse_spacing: float | None = Field(None, gt=0.0, le=0.5, description=(
        "sparse points of each pair sit on a uniform grid this far apart (Angstrom; None = two scan "
        "steps: at least two data points per sparse point, so the fit is least squares, not interpolation)"))
    theta_over_spacing: float = Field(1.2, gt=0.0, le=1.5, description=(
        "kernel length scale theta in units of the sparse spacing. The sparse covariance stays well "
        "conditioned only while theta is about the spacing or less (see alcgap.auxiliary.fit)"))
    core_floor: float = Field(0.05, gt=0.0, le=0.5, description=(
        "the fitted GAP (the xml) carries the screened Coulomb core down to this distance (Angstrom); "
        "the tabulated auxiliary continues it analytically to r -> 0"))
    noise_tolerance: float = Field(0.02, ge=0.0, lt=1.0, description=(
        "a dimer curve may rise with r by this fraction of its value (or noise_floor eV) before it is refused"))
    noise_floor: float = Field(0.02, ge=0.0)
    max_condition: float = Field(1e10, gt=1.0, description=(
        "largest condition number of a pair's sparse covariance accepted (double precision gives ~1e16)"))
    relative_sigma: float = Field(0.005, gt=0.0, lt=1.0, description=(
        "per-point energy sigma = relative_sigma * target, floored at sigma_floor (eV). 0.5%: with 1% "
        "the GAP's sign was left open in the last mA of a Lennard-Jones cutoff (seen: -2e-6 eV)"))
    sigma_floor: float = Field(1e-3, gt=0.0)
    sparse_jitter: float = Field(1e-6, gt=0.0)
    rel_tolerance: float = Field(0.02, gt=0.0, description=(
        "at every scanned distance the fit must reproduce the target to this relative error where "
        "the target exceeds 1 eV, and to ``abs_tolerance`` eV below that"))
    abs_tolerance: float = Field(0.01, gt=0.0)

    @field_validator("cutoffs")
    @classmethod
    def _cutoffs_are_pairs(cls, value: dict[str, float]) -> dict[str, float]:
        for name, r_cut in value.items():
            parse_pair(name)
            if not 0.0 < r_cut <= 3.0:
                raise ValueError(
                    f"cutoff of '{name}' is {r_cut} A; the auxiliary is short-ranged: use 0 < r_cut <= 3 A"
                )
        return value  # each pair once, and one per pair of species: alcgap.config.FitConfig

    @model_validator(mode="after")
    def _floor_below_scan(self) -> "AuxSettings":
        if self.core_floor >= self.scan.r_min:
            raise ValueError(f"aux.core_floor ({self.core_floor} A) must lie below aux.scan.r_min ({self.scan.r_min} A)")
        return self

    def pair_cutoffs(self) -> dict[Pair, float]:
        return {parse_pair(name): r_cut for name, r_cut in self.cutoffs.items()}
