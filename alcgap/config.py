"""Validated configuration: one place for defaults, errors that name the field and the fix.

Defaults are the paper's (Milardovich et al., SSE 2022): aux cutoffs Si-Si 1.6, Si-O 1.1,
O-O 0.8 Angstrom; SOAP n_max = l_max = 6, cutoff 4.0 Angstrom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from ase.data import atomic_numbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alcgap.md.protocols import Segment, melt_and_quench
from alcgap.reference._cp2k import Cp2kSettings
from alcgap.structures import Pair, pair_key, pair_name, species_pairs


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the field and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_pair(name: str) -> Pair:
    parts = name.replace(" ", "").split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"'{name}' is not a species pair; write it as 'A-B', e.g. 'Si-O'")
    for symbol in parts:
        if symbol not in atomic_numbers or symbol == "X":
            raise ValueError(f"'{symbol}' in '{name}' is not a chemical element symbol")
    return pair_key(*parts)


class LammpsReferenceSettings(Strict):
    """A classical potential in LAMMPS standing in for DFT (default: Vashishta SiO2)."""

    kind: Literal["lammps"] = "lammps"
    #: pair_style/pair_coeff lines; None means the Vashishta (1990) SiO2 file shipped with LAMMPS
    pair_commands: list[str] | None = None
    #: LAMMPS type order (type 1 = first); None means the campaign's species in order
    types: list[str] | None = None


#: the reference, chosen by ``kind``: "lammps" (classical stand-in) or "cp2k" (DFT, or xTB for demos)
ReferenceSettings = Annotated[Union[LammpsReferenceSettings, Cp2kSettings], Field(discriminator="kind")]


class DimerScan(Strict):
    """Distances (Angstrom) of the dimer scans that define the auxiliary potential."""

    r_min: float = Field(0.5, gt=0.0)
    step: float = Field(0.02, gt=0.0, le=0.2)
    #: how far past each pair's cutoff to scan (the fit must learn exactly zero there)
    beyond_cutoff: float = Field(0.3, ge=0.0)


class AuxSettings(Strict):
    """The repulsive-only 2-body auxiliary GAP: per-pair cutoffs and the fitting recipe."""

    cutoffs: dict[str, float] = Field(default_factory=lambda: {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8})
    scan: DimerScan = Field(default_factory=DimerScan)
    #: smooth cutoff: width of the cosine transition as a fraction of each pair's cutoff
    transition_fraction: float = Field(0.15, gt=0.0, le=1.0)
    #: sparse points of each pair sit on a uniform grid this far apart (Angstrom; None = two scan
    #: steps: at least two data points per sparse point, so the fit is least squares, not interpolation)
    sparse_spacing: float | None = Field(None, gt=0.0, le=0.5)
    #: kernel length scale theta in units of the sparse spacing. The sparse covariance stays well
    #: conditioned only while theta is about the spacing or less (see alcgap.auxiliary.fit)
    theta_over_spacing: float = Field(1.2, gt=0.0, le=1.5)
    #: the fitted GAP (the xml) carries the screened Coulomb core down to this distance (Angstrom);
    #: the tabulated auxiliary continues it analytically to r -> 0
    core_floor: float = Field(0.05, gt=0.0, le=0.5)
    #: a dimer curve may rise with r by this fraction of its value (or noise_floor eV) before it is refused
    noise_tolerance: float = Field(0.02, ge=0.0, lt=1.0)
    noise_floor: float = Field(0.02, ge=0.0)
    #: largest condition number of a pair's sparse covariance accepted (double precision gives ~1e16)
    max_condition: float = Field(1e10, gt=1.0)
    #: per-point energy sigma = relative_sigma * target, floored at sigma_floor (eV). 0.5%: with 1%
    #: the GAP's sign was left open in the last mA of a Lennard-Jones cutoff (seen: -2e-6 eV)
    relative_sigma: float = Field(0.005, gt=0.0, lt=1.0)
    sigma_floor: float = Field(1e-3, gt=0.0)
    sparse_jitter: float = Field(1e-6, gt=0.0)
    #: at every scanned distance the fit must reproduce the target to this relative error where
    #: the target exceeds 1 eV, and to ``abs_tolerance`` eV below that
    rel_tolerance: float = Field(0.02, gt=0.0)
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
        return value

    @model_validator(mode="after")
    def _floor_below_scan(self) -> "AuxSettings":
        if self.core_floor >= self.scan.r_min:
            raise ValueError(f"aux.core_floor ({self.core_floor} A) must lie below aux.scan.r_min ({self.scan.r_min} A)")
        return self

    def pair_cutoffs(self) -> dict[Pair, float]:
        return {parse_pair(name): r_cut for name, r_cut in self.cutoffs.items()}


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
    #: regularisation: energy (eV/atom), force (eV/A), virial (eV/atom)
    energy_sigma: float = Field(0.002, gt=0.0)
    force_sigma: float = Field(0.1, gt=0.0)
    virial_sigma: float = Field(0.1, gt=0.0)
    #: the paper trained on energies only; forces (and virials) when present are the better default
    use_forces: bool = True
    use_virials: bool = False
    sparse_jitter: float = Field(1e-8, gt=0.0)
    #: frames far from equilibrium are fitted more loosely: a frame whose RMS reference force
    #: exceeds this (eV/A) has its energy, force and virial sigmas scaled by RMS force / this.
    #: 3 eV/A is about the largest RMS force of a 4000 K SiO2 melt frame; frames the loop picks
    #: where a model went wrong reach 5-15 eV/A and 1-2 eV/atom above the melt. None: no scaling
    sigma_force_scale: float | None = Field(3.0, gt=0.0)


class TrainingData(Strict):
    """Bootstrap data: classical melt-and-quench of a crystal, subsampled and labelled."""

    #: "beta-cristobalite" or a path to any structure file ASE reads
    structure: str = "beta-cristobalite"
    n_atoms: int = Field(24, ge=1)
    protocol: list[Segment] = Field(default_factory=lambda: melt_and_quench(0.05))
    timestep: float = Field(1.0, gt=0.0, le=5.0)
    sample_every: int = Field(100, ge=1)
    #: fraction of frames held out for testing (never used in a fit)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)


class FitConfig(Strict):
    """Everything the composite fit needs: ``alcgap fit CONFIG``."""

    species: list[str] = Field(default_factory=lambda: ["Si", "O"])
    seed: int = 1
    #: OpenMP threads for gap_fit and quippy; None = all cores
    threads: int | None = Field(None, ge=1)
    reference: ReferenceSettings = Field(default_factory=LammpsReferenceSettings)
    aux: AuxSettings = Field(default_factory=AuxSettings)
    main: MainSettings = Field(default_factory=MainSettings)
    data: TrainingData = Field(default_factory=TrainingData)
    #: also fit the same main GAP with no auxiliary, for comparison
    traditional: bool = True

    @field_validator("species")
    @classmethod
    def _species_are_elements(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one species, e.g. ['Si', 'O']")
        for symbol in value:
            if symbol not in atomic_numbers or symbol == "X":
                raise ValueError(f"'{symbol}' is not a chemical element symbol")
        if len(set(value)) != len(value):
            raise ValueError(f"species listed twice: {value}")
        return value

    @model_validator(mode="after")
    def _cutoff_table_matches_species(self) -> "FitConfig":
        pairs = self.aux.pair_cutoffs()
        wanted = species_pairs(self.species)
        for name in self.aux.cutoffs:
            pair = parse_pair(name)
            extra = set(pair) - set(self.species)
            if extra:
                raise ValueError(
                    f"aux.cutoffs: '{name}' names species {sorted(extra)} not in species {self.species}; "
                    "add them to species or remove the entry"
                )
        missing = [pair_name(p) for p in wanted if p not in pairs]
        if missing:
            raise ValueError(
                f"aux.cutoffs: no cutoff for {missing}; every species pair needs one "
                f"(paper: Si-Si 1.6, Si-O 1.1, O-O 0.8 Angstrom)"
            )
        if len(pairs) != len(self.aux.cutoffs):
            raise ValueError("aux.cutoffs: a pair is given twice (e.g. 'Si-O' and 'O-Si')")
        if self.aux.scan.r_min >= min(pairs.values()):
            raise ValueError(
                f"aux.scan.r_min={self.aux.scan.r_min} A must be below every aux cutoff "
                f"(smallest {min(pairs.values())} A)"
            )
        if getattr(self.reference, "types", None) is not None and set(self.reference.types) != set(self.species):
            raise ValueError(f"reference.types {self.reference.types} must list exactly species {self.species}")
        if self.data.structure == "beta-cristobalite":
            if set(self.species) != {"Si", "O"}:
                raise ValueError("data.structure: 'beta-cristobalite' needs species [Si, O]; give a structure file")
            if self.data.n_atoms % 24:
                raise ValueError(f"data.n_atoms={self.data.n_atoms}: beta-cristobalite needs a multiple of 24")
        elif not Path(self.data.structure).exists():
            raise ValueError(f"data.structure: file not found: {self.data.structure}")
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see configs/ for the known keys)"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


def _load(model: type[BaseModel], source: str | Path | dict):
    if isinstance(source, dict):
        data, name = source, "the given dict"
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        data, name = yaml.safe_load(path.read_text()) or {}, str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, name)) from None


def load_fit_config(source: str | Path | dict) -> FitConfig:
    """Read and validate a fit config from a YAML file or a dict; raise ConfigError naming the field."""
    return _load(FitConfig, source)


# ---------------------------------------------------------------------------------------------
# The active-learning campaign: the fit's settings plus exploration, selection, judging, stopping.

def _check_pair_table(field: str, table: dict[str, float], species: list[str]) -> None:
    wanted = {pair_name(p) for p in species_pairs(species)}
    given = {pair_name(parse_pair(name)) for name in table}
    if not given <= wanted:
        raise ValueError(f"{field}: {sorted(given - wanted)} are not pairs of species {species}")


class DistanceSettings(Strict):
    """The one per-pair distance table of flags, clustering verdict and collapse abort
    (see :mod:`alcgap.distances`): flag -> (1 - cluster_margin) clustered -> x collapse_fraction."""

    #: flag distances per pair ("Si-O": 1.5, Angstrom); pairs left out come from the data:
    #: (1 - data_margin) x their shortest distance in the labelled bootstrap frames
    flag: dict[str, float] = Field(default_factory=dict)
    data_margin: float = Field(0.05, ge=0.0, lt=0.5)
    #: a pair closer than (1 - cluster_margin) x its flag distance makes a frame clustered. None:
    #: 0.15 when the bootstrap frames come from the reference's own potential (a classical
    #: reference), 0.2 when they come from a classical stand-in for a DFT reference, whose
    #: shortest pairs are the stand-in's, not the reference's (see alcgap.distances)
    cluster_margin: float | None = Field(None, gt=0.0, lt=1.0)
    #: an MD run stops when pairs come closer than collapse_fraction x their clustered distance
    collapse_fraction: float = Field(0.6, gt=0.0, lt=1.0)


class ExploreSettings(Strict):
    """Exploration MD with the current composite GAP: seeds x temperatures x cell sizes."""

    seeds: list[int] = Field(default_factory=lambda: [1, 2])
    #: multipliers of the training cell; the stop rule judges ``judge.target_size`` (the paper: 10)
    sizes: list[int] = Field(default_factory=lambda: [1, 10])
    #: melt temperature (K) of each task's melt-and-quench; one task per seed, size and temperature
    temperatures: list[float] = Field(default_factory=lambda: [5000.0])
    #: fraction of the paper's melt-and-quench length (150,000 steps at 1 fs)
    protocol_scale: float = Field(0.02, gt=0.0, le=10.0)
    #: shares of each run's steps: heating from 300 K, holding at the melt temperature (the rest
    #: quenches). The paper holds 13%; exploration is about the melt, so it holds longer
    heat_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    hold_fraction: float = Field(0.4, gt=0.0, lt=1.0)
    timestep: float = Field(1.0, gt=0.0, le=5.0)
    #: monitors run every ``monitor_every`` steps
    monitor_every: int = Field(20, ge=1)
    #: per-atom predicted variance (eV^2) above which an atom is flagged; "auto": calibrated on
    #: each model: variance_factor x the variance_quantile of its per-atom variance over the
    #: held-out bootstrap atoms (see alcgap.analysis.uncertainty)
    variance_threshold: float | Literal["auto"] = "auto"
    variance_quantile: float = Field(0.99, gt=0.0, le=1.0)
    variance_factor: float = Field(2.0, ge=1.0)

    @field_validator("sizes")
    @classmethod
    def _sizes_positive(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("give cell multipliers >= 1, e.g. [1, 10]")
        return sorted(set(value))

    @field_validator("variance_threshold")
    @classmethod
    def _positive(cls, value):
        if value != "auto" and not value > 0:
            raise ValueError(f"{value}: give a positive variance in eV^2, or 'auto'")
        return value

    @model_validator(mode="after")
    def _shares(self) -> "ExploreSettings":
        if self.heat_fraction + self.hold_fraction > 1.0:
            raise ValueError(f"explore.heat_fraction + explore.hold_fraction = "
                             f"{self.heat_fraction + self.hold_fraction} > 1: they are shares of one run")
        return self


class SelectSettings(Strict):
    """Which flagged local environments get labelled (see alcgap.select)."""

    #: labels per iteration at most, shared by all exploration runs of the iteration
    budget: int = Field(20, ge=1)
    #: per-atom SOAP distance below which two environments are the same event (None: alcgap.select's measured default)
    min_soap_distance: float | None = Field(None, ge=0.0)


class LabelSettings(Strict):
    """How selected frames become labels."""

    #: frames with more atoms are not labelled whole: a periodic sub-cell is carved around each
    #: flagged region (alcgap.carve). None: the training cell's size
    max_atoms: int | None = Field(None, ge=1)
    #: surroundings kept around the flagged atoms of a carved cell (Angstrom; None: the SOAP cutoff)
    carve_radius: float | None = Field(None, gt=0.0)


class JudgeSettings(Strict):
    """What an iteration must show for the campaign to stop."""

    #: the stop rule judges the runs at this cell size, in multiples of the training cell (the
    #: paper: 10). explore.sizes must include it. A smaller one is allowed, and the summary says so
    target_size: int = Field(10, ge=1)
    max_energy_mae: float = Field(10.0, gt=0.0, description="meV/atom on the held-out set")
    max_force_rmse: float = Field(1.0, gt=0.0, description="eV/A on the held-out set")
    #: clustering detector settings besides the short pairs (neighbour_cutoff, max_coordination,
    #: max_like_neighbours: alcgap.analysis.clustering.ClusteringCriteria fields); None: SiO2's
    #: for Si + O, covalent radii otherwise. Short pairs come from the ``distances`` table
    clustering: dict | None = None

    @field_validator("clustering")
    @classmethod
    def _no_second_table(cls, value):
        if value and "min_distance" in value:
            raise ValueError("judge.clustering.min_distance: short pairs come from the one distance table; "
                             "set distances.flag (and distances.cluster_margin) instead")
        return value


class StopSettings(Strict):
    max_iterations: int = Field(5, ge=1)
    max_labels: int = Field(1000, ge=1)


class CampaignConfig(FitConfig):
    """A whole active-learning campaign: ``alcgap run CONFIG --site SITE``."""

    name: str = "campaign"
    explore: ExploreSettings = Field(default_factory=ExploreSettings)
    select: SelectSettings = Field(default_factory=SelectSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    distances: DistanceSettings = Field(default_factory=DistanceSettings)
    label: LabelSettings = Field(default_factory=LabelSettings)
    stop: StopSettings = Field(default_factory=StopSettings)
    traditional: bool = False

    @model_validator(mode="after")
    def _campaign_consistent(self) -> "CampaignConfig":
        _check_pair_table("distances.flag", self.distances.flag, self.species)
        if self.judge.target_size not in self.explore.sizes:
            raise ValueError(
                f"judge.target_size={self.judge.target_size}: explore.sizes {self.explore.sizes} has no run at that "
                f"size, so the stop rule could never judge it; add {self.judge.target_size} to explore.sizes, or set "
                "judge.target_size to a size you explore (the stop rule is then not the paper's 10x, and the summary says so)"
            )
        return self


def load_campaign_config(source: str | Path | dict) -> CampaignConfig:
    """Read and validate a campaign config (YAML file or dict); raise ConfigError naming the field."""
    return _load(CampaignConfig, source)
