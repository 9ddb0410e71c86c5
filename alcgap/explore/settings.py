"""Settings of exploration, selection and labelling: the one per-pair distance table, the
exploration MD tasks, the label budget, and how selected frames are carved and filtered."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from alcgap.settings import Strict, check_pair_distances

#: Angstrom: a flag distance this long would flag every bonded pair of any material
SEARCH_LIMIT = 4.0


class DistanceSettings(Strict):
    """The one per-pair distance table of flags, clustering verdict and collapse abort
    (see :mod:`alcgap.explore.distances`): flag -> (1 - cluster_margin) clustered -> x collapse_fraction."""

    flag: dict[str, float] = Field(default_factory=dict, description=(
        "flag distances per pair (\"Si-O\": 1.5, Angstrom); pairs left out come from the data: "
        "(1 - data_margin) x their shortest distance in the labelled bootstrap frames"))
    data_margin: float = Field(0.05, ge=0.0, lt=0.5)
    cluster_margin: float | None = Field(None, gt=0.0, lt=1.0, description=(
        "a pair closer than (1 - cluster_margin) x its flag distance makes a frame clustered. None: "
        "0.2 when a classical potential other than the reference made the bootstrap geometry (a "
        "stand-in for a DFT reference), whose shortest pairs are the stand-in's, not the "
        "reference's; else 0.15: the reference's own potential, given structures or a rattled "
        "crystal (see alcgap.explore.distances)"))
    collapse_fraction: float = Field(0.6, gt=0.0, lt=1.0, description=(
        "an MD run stops when pairs come closer than collapse_fraction x their clustered distance"))

    @field_validator("flag")
    @classmethod
    def _one_positive_distance_per_pair(cls, value: dict[str, float]) -> dict[str, float]:
        return check_pair_distances(value, upper=SEARCH_LIMIT)


class ExploreSettings(Strict):
    """Exploration MD with the current composite GAP: seeds x temperatures x cell sizes."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2])
    sizes: list[int] = Field(default_factory=lambda: [1, 10], description=(
        "multipliers of the training cell; the stop rule judges ``judge.target_size`` (the paper: 10)"))
    temperatures: list[float] = Field(default_factory=lambda: [5000.0], description=(
        "melt temperature (K) of each task's melt-and-quench; one task per seed, size and temperature"))
    protocol_scale: float = Field(0.02, gt=0.0, le=10.0, description=(
        "fraction of the paper's melt-and-quench length (150,000 steps at 1 fs)"))
    heat_fraction: float = Field(0.2, gt=0.0, lt=1.0, description=(
        "shares of each run's steps: heating from 300 K, holding at the melt temperature (the rest "
        "quenches). The paper holds 13%; exploration is about the melt, so it holds longer"))
    hold_fraction: float = Field(0.4, gt=0.0, lt=1.0, description=(
        "share of each run's steps holding at the melt temperature (see heat_fraction)"))
    timestep: float = Field(1.0, gt=0.0, le=5.0)
    monitor_every: int = Field(20, ge=1, description="monitors run every ``monitor_every`` steps")
    checkpoint_every: int | None = Field(1000, ge=1, description=(
        "each run writes a checkpoint every this many steps (LAMMPS write_restart and its files so "
        "far); a run killed by a walltime or a lost node continues from its last one on resume"))
    max_displacement: float | None = Field(0.1, gt=0.0, description=(
        "an adaptive timestep (Angstrom per step at most, LAMMPS fix dt/reset; never above "
        "``timestep``): a hot run that reaches the aux wall is integrated through it, not exploded. "
        "0.1 A is 100 A/ps at 1 fs, 3-4 x the thermal speed of O at 9000 K. None: a fixed timestep"))
    max_energy_change: float | None = Field(0.5, gt=0.0, description=(
        "with ``max_displacement``: no atom's kinetic energy changes by more than this (eV) in one "
        "step (fix dt/reset emax). The displacement bound alone lets an atom step 0.1 A into an aux "
        "wall that rises by tens of eV over that distance (measured: the thermostat's conserved "
        "energy then drifts by ~1 eV/atom/ps); 0.5 eV leaves Vashishta SiO2 at 3000 K on the nominal "
        "1 fs step. None: the displacement bound alone"))
    variance_threshold: float | Literal["tolerance", "percentile"] = Field("tolerance", description=(
        "per-atom predicted variance (eV^2) above which an atom is flagged. \"tolerance\": where the "
        "model's calibrated predicted force error reaches judge.force_tolerance (calibrated per model "
        "on labels it did not train on: alcgap.analysis.calibration). \"percentile\": "
        "variance_factor x the variance_quantile of its per-atom variance over the held-out "
        "bootstrap atoms (alcgap.analysis.uncertainty), which follows the model, not an error"))
    variance_quantile: float = Field(0.99, gt=0.0, le=1.0, description="with variance_threshold \"percentile\"")
    variance_factor: float = Field(2.0, ge=1.0, description="with variance_threshold \"percentile\"")

    @field_validator("sizes")
    @classmethod
    def _sizes_positive(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("give cell multipliers >= 1, e.g. [1, 10]")
        return sorted(set(value))

    @field_validator("variance_threshold", mode="before")
    @classmethod
    def _named(cls, value):
        if value == "auto":
            raise ValueError("'auto' is now 'tolerance' (the default: flag where the calibrated predicted force error "
                             "reaches judge.force_tolerance) or 'percentile' (the former 'auto')")
        return value

    @field_validator("variance_threshold")
    @classmethod
    def _positive(cls, value):
        if not isinstance(value, str) and not value > 0:
            raise ValueError(f"{value}: give a positive variance in eV^2, 'tolerance' or 'percentile'")
        return value

    @model_validator(mode="after")
    def _shares(self) -> "ExploreSettings":
        if self.heat_fraction + self.hold_fraction > 1.0:
            raise ValueError(f"explore.heat_fraction + explore.hold_fraction = "
                             f"{self.heat_fraction + self.hold_fraction} > 1: they are shares of one run")
        return self


class SelectSettings(Strict):
    """Which flagged local environments get labelled (see alcgap.explore.select)."""

    budget: int = Field(20, ge=1, description=(
        "labels per iteration at most, shared by all exploration runs of the iteration"))
    min_soap_distance: float | None = Field(None, ge=0.0, description=(
        "per-atom SOAP distance below which two environments are the same event "
        "(None: alcgap.explore.select's measured default)"))


class LabelSettings(Strict):
    """How selected frames become labels."""

    max_atoms: int | None = Field(None, ge=1, description=(
        "frames with more atoms are not labelled whole: a periodic sub-cell is carved around each "
        "flagged region (alcgap.explore.carve). None: the training cell's size"))
    carve_radius: float | None = Field(None, gt=0.0, description=(
        "surroundings kept around the flagged atoms of a carved cell (Angstrom; None: the SOAP cutoff)"))
    relax_boundary: bool = Field(True, description=(
        "relax the atoms of a carved cell beyond ``carve_frozen_radius`` of its flagged atoms with "
        "the model that explored, before labelling: the cut boundary otherwise puts the cell "
        "~1 eV/atom above anything trained on and costs the SCF 5-10x the steps (alcgap.explore.carve)"))
    carve_frozen_radius: float | None = Field(None, gt=0.0, description=(
        "atoms within this distance of the flagged atoms keep the source geometry exactly "
        "(Angstrom; None: the carving radius less 1 A, the first two neighbour shells of SiO2)"))
    contact_fraction: float = Field(0.5, gt=0.0, le=1.0, description=(
        "a selected structure with a pair closer than this fraction of the pair's summed covalent "
        "radii (0.5: Si-Si 1.11, Si-O 0.885, O-O 0.66 A) is recorded as too_close and never sent "
        "to the reference: frozen-core pseudopotentials and molecular basis sets do not hold there, "
        "and the aux, fitted to the dimer scans (exempt), owns that range (alcgap.reference.contacts)"))

    @model_validator(mode="after")
    def _frozen_inside_the_carving(self):
        if self.carve_frozen_radius is not None and self.carve_radius is not None \
                and self.carve_frozen_radius > self.carve_radius:
            raise ValueError(f"label.carve_frozen_radius ({self.carve_frozen_radius} A) is larger than "
                             f"label.carve_radius ({self.carve_radius} A): atoms beyond the carving radius are "
                             f"not the source's anyway; set it at most the carving radius")
        return self
