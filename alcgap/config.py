"""Validated configuration: one place for defaults, errors that name the field and the fix.

The fit config (``alcgap fit``) and the campaign config (``alcgap run``), composed from each
part's own settings: the reference (:mod:`alcgap.reference.settings`), the auxiliary
(:mod:`alcgap.auxiliary.settings`), the main GAP (:mod:`alcgap.fit.settings`), the bootstrap data
(:mod:`alcgap.bootstrap_settings`), exploration, selection and labelling
(:mod:`alcgap.explore.settings`), the survival test (:mod:`alcgap.survival_settings`). Here live
the checks that tie the parts together (the species every part must know, the starting crystal
the reference must label) in the order they are reported, and the campaign's judging and
stopping. Defaults are the paper's (Milardovich et al., SSE 2022); the strict base model and the
YAML loading are :mod:`alcgap.settings`'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ase.data import atomic_numbers
from pydantic import Field, field_validator, model_validator

from alcgap.auxiliary.settings import AuxSettings, DimerScan
from alcgap.bootstrap_settings import (BootstrapSettings, BulkCrystal, ClassicalBootstrap, RattleBootstrap,
                                       SpacegroupCrystal, StructureSpec, StructuresBootstrap, TrainingData,
                                       structure_name)
from alcgap.explore.settings import SEARCH_LIMIT, DistanceSettings, ExploreSettings, LabelSettings, SelectSettings
from alcgap.fit.settings import MainSettings, SoapSettings
from alcgap.judge_settings import JudgeSettings, parse_tolerance
from alcgap.reference._lammps import (VASHISHTA_SIO2_TYPES, charge_settings, lammps_types, net_charge,
                                      vashishta_sio2_commands)
from alcgap.reference.contacts import default_contact_limits, too_close_pairs
from alcgap.reference.settings import LammpsReferenceSettings, ReferenceSettings
from alcgap.settings import (ConfigError, Strict, check_pair_distances, check_pairs_of_species, load_model, parse_pair,
                             read_yaml)
from alcgap.structures import pair_name, species_pairs
from alcgap.survival_settings import SurvivalJudgeSettings


__all__ = [
    # the configs and their loading
    "CampaignConfig", "ConfigError", "FitConfig", "JudgeSettings", "StopSettings", "SurvivalJudgeSettings", "parse_tolerance",
    "load_campaign_config", "load_fit_config", "read_yaml",
    # each part's settings, re-exported from its own module
    "AuxSettings", "BootstrapSettings", "BulkCrystal", "ClassicalBootstrap", "DimerScan", "DistanceSettings",
    "ExploreSettings", "LabelSettings", "LammpsReferenceSettings", "MainSettings", "RattleBootstrap",
    "ReferenceSettings", "SEARCH_LIMIT", "SelectSettings", "SoapSettings", "SpacegroupCrystal", "StructureSpec",
    "StructuresBootstrap", "TrainingData",
    # the shared ground (alcgap.settings)
    "Strict", "check_pair_distances", "parse_pair",
]


class FitConfig(Strict):
    """Everything the composite fit needs: ``alcgap fit CONFIG``."""

    species: list[str] = Field(default_factory=lambda: ["Si", "O"])
    seed: int = 1
    threads: int | None = Field(None, ge=1, description="OpenMP threads for gap_fit and quippy; None = all cores")
    reference: ReferenceSettings = Field(default_factory=LammpsReferenceSettings)
    aux: AuxSettings = Field(default_factory=AuxSettings)
    main: MainSettings = Field(default_factory=MainSettings)
    data: TrainingData = Field(default_factory=TrainingData)
    traditional: bool = Field(True, description="also fit the same main GAP with no auxiliary, for comparison")

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

    # -- the aux cutoff table holds exactly the species' pairs

    @model_validator(mode="after")
    def _aux_cutoffs_are_not_silently_sio2s(self) -> "FitConfig":
        if "cutoffs" not in self.aux.model_fields_set and set(self.species) != {"Si", "O"}:
            raise ValueError(
                f"aux.cutoffs: the default cutoffs are SiO2's (the paper's Si-Si 1.6, Si-O 1.1, O-O 0.8 A); species "
                f"{self.species} need their own, one per pair: {[pair_name(p) for p in species_pairs(self.species)]}. "
                "Each must lie below the shortest distance at which the pair is ever bonded; the paper's are about "
                "0.7 x the ground-state dimer bond lengths (Si2 2.25, SiO 1.51, O2 1.21 A)"
            )
        return self

    @model_validator(mode="after")
    def _aux_cutoffs_name_only_species(self) -> "FitConfig":
        for name in self.aux.cutoffs:
            extra = set(parse_pair(name)) - set(self.species)
            if extra:
                raise ValueError(
                    f"aux.cutoffs: '{name}' names species {sorted(extra)} not in species {self.species}; "
                    "add them to species or remove the entry"
                )
        return self

    @model_validator(mode="after")
    def _aux_cutoffs_cover_species(self) -> "FitConfig":
        pairs = self.aux.pair_cutoffs()
        missing = [pair_name(p) for p in species_pairs(self.species) if p not in pairs]
        if missing:
            raise ValueError(
                f"aux.cutoffs: no cutoff for {missing}; every species pair needs one "
                f"(paper: Si-Si 1.6, Si-O 1.1, O-O 0.8 Angstrom)"
            )
        return self

    @model_validator(mode="after")
    def _aux_cutoffs_each_pair_once(self) -> "FitConfig":
        if len(self.aux.pair_cutoffs()) != len(self.aux.cutoffs):
            raise ValueError("aux.cutoffs: a pair is given twice (e.g. 'Si-O' and 'O-Si')")
        return self

    @model_validator(mode="after")
    def _aux_scan_starts_below_every_cutoff(self) -> "FitConfig":
        # after the table is known to be the species' own: below SiO2's default cutoffs, a scan
        # start would be refused for the wrong reason
        smallest = min(self.aux.cutoffs.values())
        if self.aux.scan.r_min >= smallest:
            raise ValueError(f"aux.scan.r_min={self.aux.scan.r_min} A must be below every aux cutoff (smallest {smallest} A)")
        return self

    # -- the reference labels every species

    @model_validator(mode="after")
    def _reference_knows_species(self) -> "FitConfig":
        self.reference.check_species(self.species)
        return self

    # -- the starting crystal: made of the species, periodic, atoms apart, filling data.n_atoms

    @model_validator(mode="after")
    def _beta_cristobalite_is_sio2(self) -> "FitConfig":
        if self.data.structure == "beta-cristobalite" and set(self.species) != {"Si", "O"}:
            raise ValueError("data.structure: 'beta-cristobalite' needs species [Si, O]; give a structure file, "
                             "{bulk: ...} or {spacegroup: ...}")
        return self

    @model_validator(mode="after")
    def _structure_file_exists(self) -> "FitConfig":
        structure = self.data.structure
        if isinstance(structure, str) and structure != "beta-cristobalite" and not Path(structure).exists():
            raise ValueError(f"data.structure: file not found: {structure}")
        return self

    @model_validator(mode="after")
    def _ase_makes_the_structure(self) -> "FitConfig":
        try:
            self.data.crystal()
        except Exception as err:  # ASE raises many kinds for a file or a crystal it cannot make
            raise ValueError(f"data.structure: ASE cannot make {structure_name(self.data.structure)}: {err}") from None
        return self

    @model_validator(mode="after")
    def _structure_has_only_species(self) -> "FitConfig":
        extra = set(self.data.crystal().get_chemical_symbols()) - set(self.species)
        if extra:
            raise ValueError(f"data.structure: {structure_name(self.data.structure)} holds {sorted(extra)}, "
                             f"not in species {self.species}")
        return self

    @model_validator(mode="after")
    def _structure_is_periodic(self) -> "FitConfig":
        unit = self.data.crystal()
        if not all(unit.pbc) or unit.cell.volume <= 0.0:
            raise ValueError(f"data.structure: {structure_name(self.data.structure)} has no periodic cell "
                             f"(pbc {unit.pbc.tolist()}); give a crystal")
        return self

    @model_validator(mode="after")
    def _structure_atoms_apart(self) -> "FitConfig":
        unit = self.data.crystal()
        contacts = too_close_pairs(unit, default_contact_limits(sorted(set(unit.get_chemical_symbols()))))
        if contacts:
            first = contacts[0]
            raise ValueError(
                f"data.structure: {structure_name(self.data.structure)} has {len(contacts)} pair(s) of atoms far too "
                f"close, the closest atoms {first.i} and {first.j} ({'-'.join(first.pair)}) {first.distance:.3f} A "
                f"apart, below {first.limit:.3f} A (half the sum of their covalent radii); MD from it loses atoms and "
                "no reference labels it. Fix the structure (a duplicated atom, a wrong cell or wrong units)")
        return self

    @model_validator(mode="after")
    def _n_atoms_fills_whole_cells(self) -> "FitConfig":
        unit = len(self.data.crystal())
        if self.data.n_atoms % unit:
            raise ValueError(
                f"data.n_atoms={self.data.n_atoms}: {structure_name(self.data.structure)} has {unit} atoms, so the "
                f"cell can only hold a multiple of {unit}; leave data.n_atoms out to use the structure as it is"
            )
        return self

    @model_validator(mode="after")
    def _structure_is_neutral(self) -> "FitConfig":
        charges = getattr(self.reference, "charges", None)
        charge = net_charge(self.data.crystal(), charges) if charges else 0.0
        if abs(charge) > 1e-6:
            raise ValueError(
                f"reference.charges {charges}: data.structure ({self.data.structure}) carries a net charge of "
                f"{charge:+.6g} e, and a periodic cell must be neutral"
            )
        return self

    # -- a classical bootstrap has a potential that runs, for every species

    def _own_bootstrap_commands(self) -> list[str] | None:
        """The pair commands data.bootstrap gives itself (None: not classical, or none given)."""
        return self.data.bootstrap.pair_commands if self.data.bootstrap.kind == "classical" else None

    @model_validator(mode="after")
    def _bootstrap_types_go_with_pair_commands(self) -> "FitConfig":
        bootstrap = self.data.bootstrap
        if bootstrap.kind == "classical" and bootstrap.pair_commands is None and (bootstrap.types or bootstrap.charges):
            raise ValueError("data.bootstrap: types and charges go with pair_commands; without pair_commands the "
                             "bootstrap runs the reference's potential (or the shipped Vashishta SiO2)")
        return self

    @model_validator(mode="after")
    def _bootstrap_potential_is_known(self) -> "FitConfig":
        bootstrap = self.data.bootstrap
        if bootstrap.kind != "classical" or bootstrap.pair_commands is not None:
            return self  # none to run, or its own
        if self.reference.kind != "lammps" and set(self.species) != set(VASHISHTA_SIO2_TYPES):
            raise ValueError(
                f"data.bootstrap: no classical potential is known for species {self.species} (the shipped one, "
                f"Vashishta SiO2, is for Si and O together, and a {self.reference.kind} reference has none); choose one of "
                "kind: classical (pair_commands: a LAMMPS potential for these species), "
                "kind: structures (path: frames you have, any file ASE reads), "
                "kind: rattle (strained, rattled copies of data.structure)"
            )
        return self  # the reference's own potential, checked as the reference

    @model_validator(mode="after")
    def _bootstrap_types_and_charges_can_work(self) -> "FitConfig":
        commands = self._own_bootstrap_commands()
        if commands is None:
            return self
        try:
            types = lammps_types(commands, self.data.bootstrap.types)
            charge_settings(commands, types, self.data.bootstrap.charges, None)
        except ValueError as err:  # the LAMMPS rules name the reference's fields; here they are data.bootstrap's
            raise ValueError(str(err).replace("reference.", "data.bootstrap.")) from None
        return self

    @model_validator(mode="after")
    def _bootstrap_types_cover_species(self) -> "FitConfig":
        commands = self._own_bootstrap_commands()
        if commands is None:
            return self
        types = lammps_types(commands, self.data.bootstrap.types)
        if not set(self.species) <= set(types):
            raise ValueError(f"data.bootstrap: species {sorted(set(self.species) - set(types))} have no LAMMPS type "
                             f"in the bootstrap potential (its types are {types})")
        return self

    @model_validator(mode="after")
    def _bootstrap_potential_files_exist(self) -> "FitConfig":
        for line in self._own_bootstrap_commands() or []:
            for word in line.split()[1:] if line.split()[:1] == ["pair_coeff"] else []:
                if "/" in word and not Path(word).exists():
                    raise ValueError(f"data.bootstrap.pair_commands: potential file not found: {word}")
        return self

    @model_validator(mode="after")
    def _bootstrap_cell_is_neutral(self) -> "FitConfig":
        charges = self.data.bootstrap.charges if self._own_bootstrap_commands() is not None else None
        charge = net_charge(self.data.crystal(), charges) if charges else 0.0
        if abs(charge) > 1e-6:
            raise ValueError(f"data.bootstrap.charges {charges}: the starting cell carries a net charge of "
                             f"{charge:+.6g} e; a periodic cell must be neutral")
        return self

    def bootstrap_potential(self) -> tuple[list[str], list[str], dict[str, float] | None] | None:
        """(pair_commands, LAMMPS type order, charges) of the classical bootstrap: data.bootstrap's
        own, else the reference's when it is classical, else the shipped Vashishta SiO2 for species
        Si and O; None when there is none (or data.bootstrap is not classical)."""
        bootstrap = self.data.bootstrap
        if bootstrap.kind != "classical":
            return None
        if bootstrap.pair_commands is not None:
            return bootstrap.pair_commands, lammps_types(bootstrap.pair_commands, bootstrap.types), bootstrap.charges
        if self.reference.kind == "lammps" and self.reference.pair_commands is not None:
            return self.reference.pair_commands, self.reference.lammps_types(), self.reference.charges
        if set(self.species) == set(VASHISHTA_SIO2_TYPES):  # also a lammps reference without pair_commands
            return vashishta_sio2_commands(), list(VASHISHTA_SIO2_TYPES), None
        return None


def load_fit_config(source: str | Path | dict) -> FitConfig:
    """Read and validate a fit config from a YAML file or a dict; raise ConfigError naming the field."""
    return load_model(FitConfig, source)


# ---------------------------------------------------------------------------------------------
# The active-learning campaign: the fit's settings plus exploration, selection, judging, stopping.

class StopSettings(Strict):
    max_iterations: int = Field(5, ge=1)
    max_labels: int = Field(1000, ge=1)
    max_minutes: float | None = Field(None, gt=0.0, description=(
        "a time budget for one `alcgap run` or `resume` (a batch allocation, a demo): after each "
        "iteration, the campaign stops as \"time_limit\" when the next iteration, as long as the "
        "last one, would end past it, saying which gates are not met; `alcgap resume` goes on. "
        "None: no time limit"))


class CampaignConfig(FitConfig):
    """A whole active-learning campaign: ``alcgap run CONFIG --site SITE``."""

    name: str = "campaign"
    explore: ExploreSettings = Field(default_factory=ExploreSettings)
    select: SelectSettings = Field(default_factory=SelectSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    distances: DistanceSettings = Field(default_factory=DistanceSettings)
    label: LabelSettings = Field(default_factory=LabelSettings)
    stop: StopSettings = Field(default_factory=StopSettings)
    traditional: bool = Field(False, description="also fit the same main GAP with no auxiliary, for comparison")
    potential: Literal["composite", "plain"] = Field("composite", description=(
        "\"composite\": the package's method, a repulsive aux plus the main GAP on the residual. "
        "\"plain\": the main GAP alone on the total reference energies, with no aux (no dimer scans, "
        "no aux table in MD): the loop must learn the short range from its labels. The control of "
        "benchmarks/campaign_aux.py; frozen with the run."))

    @model_validator(mode="after")
    def _flag_pairs_are_species_pairs(self) -> "CampaignConfig":
        check_pairs_of_species("distances.flag", self.distances.flag, self.species)
        return self

    @model_validator(mode="after")
    def _plain_has_no_traditional(self) -> "CampaignConfig":
        if self.potential == "plain" and self.traditional:
            raise ValueError("traditional: a plain campaign's model is itself the traditional GAP (no aux); "
                             "drop traditional, or set potential: composite")
        return self

    @model_validator(mode="after")
    def _target_size_is_explored(self) -> "CampaignConfig":
        if self.judge.target_size not in self.explore.sizes:
            raise ValueError(
                f"judge.target_size={self.judge.target_size}: explore.sizes {self.explore.sizes} has no run at that "
                f"size, so the stop rule could never judge it; add {self.judge.target_size} to explore.sizes, or set "
                "judge.target_size to a size you explore (the stop rule is then not the paper's 10x, and the summary says so)"
            )
        return self


def load_campaign_config(source: str | Path | dict) -> CampaignConfig:
    """Read and validate a campaign config (YAML file or dict); raise ConfigError naming the field."""
    return load_model(CampaignConfig, source)
