"""Settings of the main SOAP GAP, fitted on the residual (reference minus auxiliary).

Defaults are the paper's (Milardovich et al., SSE 2022): SOAP n_max = l_max = 6, cutoff 4.0 Angstrom.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alcgap.settings import Strict


class SoapSettings(Strict):
    """The main GAP's SOAP descriptor (gap_fit names)."""

    n_max: int = Field(6, ge=1, le=16)
    l_max: int = Field(6, ge=0, le=16)
    cutoff: float = Field(4.0, gt=0.0)
    cutoff_transition_width: float = Field(0.5, gt=0.0)
    atom_sigma: float = Field(0.5, gt=0.0)
    zeta: float = Field(4.0, gt=0.0)
    delta: float = Field(1.0, gt=0.0)
    n_sparse: int = Field(400, ge=1)
    sparse_method: Literal["cur_points", "uniform", "random"] = "cur_points"


class MainSettings(Strict):
    """The main SOAP GAP, fitted on the residual (reference minus auxiliary)."""

    soap: SoapSettings = Field(default_factory=SoapSettings)
    energy_sigma: float = Field(0.002, gt=0.0, description=(
        "regularisation: energy (eV/atom), force (eV/A), virial (eV/atom); gap_fit scales the energy "
        "and virial sigmas of a frame by sqrt(its atoms)"))
    force_sigma: float = Field(0.1, gt=0.0, description="regularisation of forces (eV/A)")
    virial_sigma: float = Field(0.1, gt=0.0, description=(
        "0.1 eV/atom is ~1 GPa per atom of silica (~15 A^3/atom), "
        "so 0.2 GPa on a 24-atom frame's stress. Scanned on a 24-atom Vashishta fit: 0.1-0.2 gave the "
        "lowest held-out stress RMSE (1.49-1.50 GPa); 0.02 over-weights (1.87 GPa, energy MAE 12.7 "
        "against 11.1 meV/atom); 0.5: 1.55 GPa"))
    use_forces: bool = Field(True, description=(
        "the paper trained on energies only; forces (and virials) when present are the better default"))
    use_virials: bool | None = Field(None, description=(
        "None: virials of every periodic frame whose label carries a stress (isolated atoms and "
        "dimers have none); True: the same. Fixed-cell (NVT) data say nothing else about the "
        "pressure: a composite of another material fitted without them ran MD at -157 GPa where "
        "the reference gave -5 to +2 (issue 15). False: never"))
    sparse_jitter: float = Field(1e-8, gt=0.0)
    sigma_force_scale: float | None = Field(3.0, gt=0.0, description=(
        "frames far from equilibrium are fitted more loosely: a frame whose RMS reference force "
        "exceeds this (eV/A) has its energy, force and virial sigmas scaled by RMS force / this. "
        "3 eV/A is about the largest RMS force of a 4000 K SiO2 melt frame; frames the loop picks "
        "where a model went wrong reach 5-15 eV/A and 1-2 eV/atom above the melt. None: no scaling"))
