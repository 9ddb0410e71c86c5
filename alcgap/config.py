"""Validated configuration: one place for defaults, errors that name the field and the fix.

Defaults are the paper's (Milardovich et al., SSE 2022): aux cutoffs Si-Si 1.6, Si-O 1.1,
O-O 0.8 Angstrom; SOAP n_max = l_max = 6, cutoff 4.0 Angstrom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from ase import Atoms
from ase.data import atomic_numbers
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)

from alcgap.md.protocols import Segment, melt_and_quench
from alcgap.reference._cp2k import Cp2kSettings
from alcgap.reference.contacts import default_contact_limits, too_close_pairs
from alcgap.reference._lammps import (VASHISHTA_SIO2_TYPES, charge_settings, has_kspace, lammps_types, net_charge,
                                      vashishta_sio2_commands)
from alcgap.structures import Pair, pair_key, pair_name, species_pairs, unit_cell


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
    """A classical potential in LAMMPS standing in for DFT (default: Vashishta SiO2).

    Which LAMMPS type is which element comes from the element names of a ``pair_coeff * * FILE
    El1 El2 ...`` line, whatever the order of ``species``; pair_coeff lines with per-type-pair
    coefficients (``pair_coeff 1 2 ...``) name none, and then ``types`` is required.
    """

    kind: Literal["lammps"] = "lammps"
    #: pair_style/pair_coeff lines; None means the Vashishta (1990) SiO2 file shipped with LAMMPS
    pair_commands: list[str] | None = None
    #: LAMMPS type order (type 1 = first); None: the element names of the pair_coeff line. A
    #: given order must repeat them (it is refused, not reordered)
    types: list[str] | None = None
    #: fixed charge (e) per element, required by a Coulomb model (a "coul" pair style or a
    #: kspace_style line), e.g. {Si: 2.4, O: -1.2}; every periodic cell labelled must be neutral
    charges: dict[str, float] | None = None
    #: None: "charge" when the pair style has a Coulomb term, else "atomic"
    atom_style: Literal["atomic", "charge"] | None = None

    def commands(self) -> list[str]:
        """The pair commands, with the shipped Vashishta file's line standing for None (no file look-up)."""
        return self.pair_commands or vashishta_sio2_commands("SiO.1990.vashishta")

    def lammps_types(self) -> list[str]:
        """The LAMMPS type order (type 1 first)."""
        return lammps_types(self.commands(), self.types)

    @model_validator(mode="after")
    def _types_and_charges_can_work(self) -> "LammpsReferenceSettings":
        commands = self.commands()
        if has_kspace(commands):
            # LAMMPS refuses Ewald/PPPM with non-periodic boundaries, and the fit labels every
            # isolated atom and dimer of its aux scans with the reference
            raise ValueError(
                "reference.pair_commands: a kspace_style (Ewald, PPPM) needs periodic cells, but the fit labels "
                "isolated atoms and dimers with the reference; use a smooth real-space Coulomb sum, e.g. "
                "'pair_style born/coul/dsf 0.2 5.5 10.0' (Buckingham is Born with sigma = D = 0) or coul/wolf"
            )
        charge_settings(commands, self.lammps_types(), self.charges, self.atom_style)
        return self


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
        return value  # each pair once: _cutoff_table_matches_species

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
    #: regularisation: energy (eV/atom), force (eV/A), virial (eV/atom); gap_fit scales the energy
    #: and virial sigmas of a frame by sqrt(its atoms)
    energy_sigma: float = Field(0.002, gt=0.0)
    force_sigma: float = Field(0.1, gt=0.0)
    #: 0.1 eV/atom is ~1 GPa per atom of silica (~15 A^3/atom), so 0.2 GPa on a 24-atom frame's
    #: stress. Scanned on a 24-atom Vashishta fit: 0.1-0.2 gave the lowest held-out stress RMSE
    #: (1.49-1.50 GPa); 0.02 over-weights (1.87 GPa, energy MAE 12.7 against 11.1 meV/atom); 0.5: 1.55 GPa
    virial_sigma: float = Field(0.1, gt=0.0)
    #: the paper trained on energies only; forces (and virials) when present are the better default
    use_forces: bool = True
    #: None: virials of every periodic frame whose label carries a stress (isolated atoms and
    #: dimers have none); True: the same. Fixed-cell (NVT) data say nothing else about the
    #: pressure: a composite of another material fitted without them ran MD at -157 GPa where
    #: the reference gave -5 to +2 (issue 15). False: never
    use_virials: bool | None = None
    sparse_jitter: float = Field(1e-8, gt=0.0)
    #: frames far from equilibrium are fitted more loosely: a frame whose RMS reference force
    #: exceeds this (eV/A) has its energy, force and virial sigmas scaled by RMS force / this.
    #: 3 eV/A is about the largest RMS force of a 4000 K SiO2 melt frame; frames the loop picks
    #: where a model went wrong reach 5-15 eV/A and 1-2 eV/atom above the melt. None: no scaling
    sigma_force_scale: float | None = Field(3.0, gt=0.0)


class BulkCrystal(Strict):
    """A crystal from ``ase.build.bulk`` (its keywords; Angstrom, degrees): a name ASE knows
    (``{bulk: Cu}``), or any formula with its structure, e.g. ``{bulk: InP, crystalstructure:
    zincblende, a: 5.87}``."""

    bulk: str
    crystalstructure: str | None = None
    a: float | None = Field(None, gt=0.0)
    b: float | None = Field(None, gt=0.0)
    c: float | None = Field(None, gt=0.0)
    alpha: float | None = Field(None, gt=0.0, lt=180.0)
    covera: float | None = Field(None, gt=0.0)
    u: float | None = None
    orthorhombic: bool = False
    cubic: bool = False


class SpacegroupCrystal(Strict):
    """A crystal from ``ase.spacegroup.crystal``: the asymmetric unit (``symbols`` at fractional
    ``basis`` positions), the space group (number or symbol) and ``cellpar`` [a, b, c (Angstrom),
    alpha, beta, gamma (degrees)]."""

    spacegroup: int | str
    symbols: list[str]
    basis: list[tuple[float, float, float]]
    cellpar: tuple[float, float, float, float, float, float]

    @model_validator(mode="after")
    def _one_site_per_symbol(self) -> "SpacegroupCrystal":
        if len(self.symbols) != len(self.basis):
            raise ValueError(f"{len(self.symbols)} symbols for {len(self.basis)} basis positions: give one of each per site")
        return self


def _structure_tag(value) -> str | None:
    if isinstance(value, (str, BulkCrystal, SpacegroupCrystal)):
        return {str: "name", BulkCrystal: "bulk", SpacegroupCrystal: "spacegroup"}[type(value)]
    if isinstance(value, dict):
        return "bulk" if "bulk" in value else "spacegroup" if "spacegroup" in value else None
    return None


#: the starting crystal: "beta-cristobalite", a structure file, {bulk: ...} or {spacegroup: ...}
StructureSpec = Annotated[
    Union[Annotated[str, Tag("name")], Annotated[BulkCrystal, Tag("bulk")], Annotated[SpacegroupCrystal, Tag("spacegroup")]],
    Discriminator(_structure_tag, custom_error_type="structure_spec", custom_error_message=(
        "give 'beta-cristobalite', a structure file, {bulk: NAME, ...} (ase.build.bulk) or "
        "{spacegroup: N, symbols: [...], basis: [...], cellpar: [...]} (ase.spacegroup.crystal)")),
]


class ClassicalBootstrap(Strict):
    """Melt-and-quench of the starting cell with a classical LAMMPS potential, a frame every
    ``sample_every`` steps. The potential: ``pair_commands`` (with ``types`` and ``charges`` as
    for ``reference``); None: the reference's own when it is classical, else the Vashishta (1990)
    SiO2 file shipped with LAMMPS, which knows Si and O only."""

    kind: Literal["classical"] = "classical"
    pair_commands: list[str] | None = None
    #: LAMMPS type order (type 1 first); None: the element names of the pair_coeff line
    types: list[str] | None = None
    #: fixed charge (e) per element, for a Coulomb model
    charges: dict[str, float] | None = None
    protocol: list[Segment] = Field(default_factory=lambda: melt_and_quench(0.05))
    timestep: float = Field(1.0, gt=0.0, le=5.0)
    sample_every: int = Field(100, ge=1)


class StructuresBootstrap(Strict):
    """Frames from a file you give: extxyz, an ASE trajectory, a LAMMPS dump, any file ``ase.io``
    reads (all its frames, in order), subsampled: every ``every``-th frame from the first, or
    ``count`` frames evenly spread from the first to the last (frame round(i (n - 1) / (count - 1))).
    Neither: every frame. Only symbols, positions and cells are kept: the reference labels them."""

    kind: Literal["structures"]
    path: str
    #: ``ase.io`` format, when the file's name does not tell it
    format: str | None = None
    every: int | None = Field(None, ge=1)
    count: int | None = Field(None, ge=1)

    @field_validator("path")
    @classmethod
    def _file_exists(cls, value: str) -> str:
        if not Path(value).exists():
            raise ValueError(f"file not found: {value}")
        return str(Path(value).resolve())  # the bootstrap app may run in another folder

    @model_validator(mode="after")
    def _one_rule(self) -> "StructuresBootstrap":
        if self.every is not None and self.count is not None:
            raise ValueError("give every (keep every k-th frame) or count (frames spread evenly), not both")
        return self


class RattleBootstrap(Strict):
    """Strained and rattled copies of the starting cell, for a material with no classical potential.

    ``copies`` frames per temperature, each with a random symmetric strain (components uniform
    in +-``max_strain``) and then Gaussian displacements of sigma = sqrt(kB T / spring) per
    Cartesian component: the thermal spread of a classical Einstein oscillator at T. Seeded:
    ``seed`` (None: the config's seed) gives the same frames every time.
    """

    kind: Literal["rattle"]
    temperatures: list[float] = Field(default_factory=lambda: [300.0, 1000.0, 2000.0], min_length=1)
    #: Einstein spring constant (eV/A^2). Seen with Vashishta potentials, one atom moved in its
    #: crystal: InP 10.5 (In) and 11.0 (P), beta-cristobalite 84 (Si) and 54 (O). A softer spring
    #: than the material's rattles further than its thermal motion. 10 eV/A^2 gives sigma =
    #: 0.051, 0.093, 0.131 A at 300, 1000, 2000 K
    spring: float = Field(10.0, gt=0.0)
    copies: int = Field(8, ge=1)
    max_strain: float = Field(0.03, ge=0.0, lt=0.5)
    seed: int | None = None

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if min(value) <= 0:
            raise ValueError(f"{value}: temperatures are in K and positive")
        return value


def _bootstrap_tag(value) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "classical")  # the kind whose fields stood under data before data.bootstrap
    return getattr(value, "kind", None)


#: how the bootstrap frames are made, chosen by ``kind``: classical (the default), structures or rattle
BootstrapSettings = Annotated[
    Union[Annotated[ClassicalBootstrap, Tag("classical")], Annotated[StructuresBootstrap, Tag("structures")],
          Annotated[RattleBootstrap, Tag("rattle")]],
    Discriminator(_bootstrap_tag, custom_error_type="bootstrap_kind",
                  custom_error_message="kind must be one of classical, structures, rattle"),
]

#: keys of the classical bootstrap that may stand directly under ``data`` (the spelling from
#: before data.bootstrap; configs written that way keep working)
_CLASSICAL_SHORTHAND = ("protocol", "timestep", "sample_every")


class TrainingData(Strict):
    """Bootstrap data: frames of the starting crystal (or given), labelled by the reference."""

    #: "beta-cristobalite", a path to any structure file ASE reads (its last frame),
    #: {bulk: ...} (ase.build.bulk) or {spacegroup: ...} (ase.spacegroup.crystal)
    structure: StructureSpec = "beta-cristobalite"
    #: atoms of the bootstrap cell: a multiple of the structure's own; None: the structure as it
    #: is (24 for beta-cristobalite)
    n_atoms: int | None = Field(None, ge=1)
    bootstrap: BootstrapSettings = Field(default_factory=ClassicalBootstrap)
    #: fraction of frames held out for testing (never used in a fit)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _classical_shorthand(cls, data):
        """``data.protocol``, ``data.timestep``, ``data.sample_every`` are the classical bootstrap's."""
        if not isinstance(data, dict) or not any(key in data for key in _CLASSICAL_SHORTHAND):
            return data
        moved = {key: data[key] for key in _CLASSICAL_SHORTHAND if key in data}
        bootstrap = data.get("bootstrap", {})
        if isinstance(bootstrap, BaseModel):
            bootstrap = {"kind": bootstrap.kind, **bootstrap.model_dump(exclude_unset=True)}
        kind = bootstrap.get("kind", "classical") if isinstance(bootstrap, dict) else None
        if kind != "classical":
            raise ValueError(f"data.{next(iter(moved))}: belongs to a classical bootstrap, and data.bootstrap.kind is "
                             f"{kind!r}; remove it")
        twice = sorted(set(moved) & set(bootstrap))
        if twice:
            raise ValueError(f"data.{twice[0]}: given twice, under data and under data.bootstrap; keep data.bootstrap.{twice[0]}")
        rest = {key: value for key, value in data.items() if key not in moved}
        return {**rest, "bootstrap": {**bootstrap, "kind": "classical", **moved}}

    def crystal(self) -> Atoms:
        """The starting crystal's own cell (before it is repeated to ``n_atoms``), ASE Atoms."""
        spec = self.structure if isinstance(self.structure, str) else self.structure.model_dump(exclude_none=True)
        return unit_cell(spec)


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
        if "cutoffs" not in self.aux.model_fields_set and set(self.species) != {"Si", "O"}:
            raise ValueError(
                f"aux.cutoffs: the default cutoffs are SiO2's (the paper's Si-Si 1.6, Si-O 1.1, O-O 0.8 A); species "
                f"{self.species} need their own, one per pair: {[pair_name(p) for p in species_pairs(self.species)]}. "
                "Each must lie below the shortest distance at which the pair is ever bonded; the paper's are about "
                "0.7 x the ground-state dimer bond lengths (Si2 2.25, SiO 1.51, O2 1.21 A)"
            )
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
        reference = self.reference
        if reference.kind == "lammps":
            if reference.pair_commands is None and not set(self.species) <= set(VASHISHTA_SIO2_TYPES):
                raise ValueError(
                    f"reference.pair_commands: not given, so the reference is the shipped Vashishta SiO2, which knows only "
                    f"{VASHISHTA_SIO2_TYPES}; species {self.species} need pair_style/pair_coeff lines of their own"
                )
            types = reference.lammps_types()
            if not set(self.species) <= set(types):
                field = "reference.types" if reference.types is not None else "reference.pair_commands"
                raise ValueError(
                    f"{field}: species {sorted(set(self.species) - set(types))} have no LAMMPS type (the types are "
                    f"{types}); every species needs one"
                )
        if reference.kind == "cp2k":
            reference.check_species(self.species)
        structure = self.data.structure
        named = structure if isinstance(structure, str) else (
            f"bulk {structure.bulk}" if isinstance(structure, BulkCrystal) else f"space group {structure.spacegroup}")
        if structure == "beta-cristobalite" and set(self.species) != {"Si", "O"}:
            raise ValueError("data.structure: 'beta-cristobalite' needs species [Si, O]; give a structure file, "
                             "{bulk: ...} or {spacegroup: ...}")
        if isinstance(structure, str) and structure != "beta-cristobalite" and not Path(structure).exists():
            raise ValueError(f"data.structure: file not found: {structure}")
        try:
            unit = self.data.crystal()
        except Exception as err:  # ASE raises many kinds for a file or a crystal it cannot make
            raise ValueError(f"data.structure: ASE cannot make {named}: {err}") from None
        extra = set(unit.get_chemical_symbols()) - set(self.species)
        if extra:
            raise ValueError(f"data.structure: {named} holds {sorted(extra)}, not in species {self.species}")
        if not all(unit.pbc) or unit.cell.volume <= 0.0:
            raise ValueError(f"data.structure: {named} has no periodic cell (pbc {unit.pbc.tolist()}); give a crystal")
        contacts = too_close_pairs(unit, default_contact_limits(sorted(set(unit.get_chemical_symbols()))))
        if contacts:
            first = contacts[0]
            raise ValueError(
                f"data.structure: {named} has {len(contacts)} pair(s) of atoms far too close, the closest atoms "
                f"{first.i} and {first.j} ({'-'.join(first.pair)}) {first.distance:.3f} A apart, below "
                f"{first.limit:.3f} A (half the sum of their covalent radii); MD from it loses atoms and no reference "
                "labels it. Fix the structure (a duplicated atom, a wrong cell or wrong units)")
        if self.data.n_atoms is not None and self.data.n_atoms % len(unit):
            raise ValueError(
                f"data.n_atoms={self.data.n_atoms}: {named} has {len(unit)} atoms, so the cell can "
                f"only hold a multiple of {len(unit)}; leave data.n_atoms out to use the structure as it is"
            )
        if self.data.n_atoms is None:
            self.data.n_atoms = len(unit)
        charges = getattr(reference, "charges", None)
        if charges and abs(net_charge(unit, charges)) > 1e-6:
            raise ValueError(
                f"reference.charges {charges}: data.structure ({self.data.structure}) carries a net charge of "
                f"{net_charge(unit, charges):+.6g} e, and a periodic cell must be neutral"
            )
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

    @model_validator(mode="after")
    def _bootstrap_can_run(self) -> "FitConfig":
        bootstrap = self.data.bootstrap
        if bootstrap.kind != "classical":
            return self
        if bootstrap.pair_commands is None:
            if bootstrap.types or bootstrap.charges:
                raise ValueError("data.bootstrap: types and charges go with pair_commands; without pair_commands the "
                                 "bootstrap runs the reference's potential (or the shipped Vashishta SiO2)")
            if self.reference.kind != "lammps" and set(self.species) != set(VASHISHTA_SIO2_TYPES):
                raise ValueError(
                    f"data.bootstrap: no classical potential is known for species {self.species} (the shipped one, "
                    f"Vashishta SiO2, is for Si and O together, and a {self.reference.kind} reference has none); choose one of "
                    "kind: classical (pair_commands: a LAMMPS potential for these species), "
                    "kind: structures (path: frames you have, any file ASE reads), "
                    "kind: rattle (strained, rattled copies of data.structure)"
                )
            return self  # the reference's own potential, checked as the reference
        commands = bootstrap.pair_commands
        try:
            types = lammps_types(commands, bootstrap.types)
            charge_settings(commands, types, bootstrap.charges, None)
        except ValueError as err:  # the LAMMPS rules name the reference's fields; here they are data.bootstrap's
            raise ValueError(str(err).replace("reference.", "data.bootstrap.")) from None
        if not set(self.species) <= set(types):
            raise ValueError(f"data.bootstrap: species {sorted(set(self.species) - set(types))} have no LAMMPS type "
                             f"in the bootstrap potential (its types are {types})")
        for line in commands:
            for word in line.split()[1:] if line.split()[:1] == ["pair_coeff"] else []:
                if "/" in word and not Path(word).exists():
                    raise ValueError(f"data.bootstrap.pair_commands: potential file not found: {word}")
        if bootstrap.charges and abs(net_charge(self.data.crystal(), bootstrap.charges)) > 1e-6:
            raise ValueError(f"data.bootstrap.charges {bootstrap.charges}: the starting cell carries a net charge of "
                             f"{net_charge(self.data.crystal(), bootstrap.charges):+.6g} e; a periodic cell must be neutral")
        return self


def read_yaml(path: Path, error: type[Exception]):
    """The YAML document in ``path``; a syntax error raises ``error`` naming the line, the column
    and what the parser expected, never a parser traceback."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        what = "; ".join(part for part in (err.context, err.problem) if part)
        raise error(f"{path}: not valid YAML at {where}: {what} (check the indentation and the ':' after each key "
                    "there; a value holding ':' or '#' needs quotes)") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None


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
        data, name = read_yaml(path, ConfigError) or {}, str(path)
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

#: Angstrom: a flag distance this long would flag every bonded pair of any material
SEARCH_LIMIT = 4.0


def check_pair_distances(table: dict[str, float], upper: float) -> dict[str, float]:
    """A per-pair distance table (``{"Si-O": 1.5}``): every key a pair, every pair once (``Si-O``
    and ``O-Si`` are one pair), every distance in (0, ``upper``] Angstrom."""
    seen: dict[Pair, str] = {}
    for name, distance in table.items():
        pair = parse_pair(name)
        if pair in seen:
            raise ValueError(f"'{seen[pair]}' and '{name}' are the same pair, given twice; give it once")
        seen[pair] = name
        if not 0.0 < distance <= upper:
            raise ValueError(f"'{name}': {distance} A; give a distance in Angstrom, 0 < d <= {upper:g}")
    return table


def _check_pair_table(field: str, table: dict[str, float], species: list[str]) -> None:
    wanted = {pair_name(p) for p in species_pairs(species)}
    given = {pair_name(parse_pair(name)) for name in table}
    if not given <= wanted:
        raise ValueError(f"{field}: {sorted(given - wanted)} are not pairs of species {species}")


class DistanceSettings(Strict):
    """The one per-pair distance table of flags, clustering verdict and collapse abort
    (see :mod:`alcgap.explore.distances`): flag -> (1 - cluster_margin) clustered -> x collapse_fraction."""

    #: flag distances per pair ("Si-O": 1.5, Angstrom); pairs left out come from the data:
    #: (1 - data_margin) x their shortest distance in the labelled bootstrap frames
    flag: dict[str, float] = Field(default_factory=dict)
    data_margin: float = Field(0.05, ge=0.0, lt=0.5)
    #: a pair closer than (1 - cluster_margin) x its flag distance makes a frame clustered. None:
    #: 0.2 when a classical potential other than the reference made the bootstrap geometry (a
    #: stand-in for a DFT reference), whose shortest pairs are the stand-in's, not the
    #: reference's; else 0.15: the reference's own potential, given structures or a rattled
    #: crystal (see alcgap.explore.distances)
    cluster_margin: float | None = Field(None, gt=0.0, lt=1.0)
    #: an MD run stops when pairs come closer than collapse_fraction x their clustered distance
    collapse_fraction: float = Field(0.6, gt=0.0, lt=1.0)

    @field_validator("flag")
    @classmethod
    def _one_positive_distance_per_pair(cls, value: dict[str, float]) -> dict[str, float]:
        return check_pair_distances(value, upper=SEARCH_LIMIT)


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
    #: each run writes a checkpoint every this many steps (LAMMPS write_restart and its files so
    #: far); a run killed by a walltime or a lost node continues from its last one on resume
    checkpoint_every: int | None = Field(1000, ge=1)
    #: an adaptive timestep (Angstrom per step at most, LAMMPS fix dt/reset; never above
    #: ``timestep``): a hot run that reaches the aux wall is integrated through it, not exploded.
    #: 0.1 A is 100 A/ps at 1 fs, 3-4 x the thermal speed of O at 9000 K. None: a fixed timestep
    max_displacement: float | None = Field(0.1, gt=0.0)
    #: with ``max_displacement``: no atom's kinetic energy changes by more than this (eV) in one
    #: step (fix dt/reset emax). The displacement bound alone lets an atom step 0.1 A into an aux
    #: wall that rises by tens of eV over that distance (measured: the thermostat's conserved
    #: energy then drifts by ~1 eV/atom/ps); 0.5 eV leaves Vashishta SiO2 at 3000 K on the nominal
    #: 1 fs step. None: the displacement bound alone
    max_energy_change: float | None = Field(0.5, gt=0.0)
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
    """Which flagged local environments get labelled (see alcgap.explore.select)."""

    #: labels per iteration at most, shared by all exploration runs of the iteration
    budget: int = Field(20, ge=1)
    #: per-atom SOAP distance below which two environments are the same event (None: alcgap.explore.select's measured default)
    min_soap_distance: float | None = Field(None, ge=0.0)


class LabelSettings(Strict):
    """How selected frames become labels."""

    #: frames with more atoms are not labelled whole: a periodic sub-cell is carved around each
    #: flagged region (alcgap.explore.carve). None: the training cell's size
    max_atoms: int | None = Field(None, ge=1)
    #: surroundings kept around the flagged atoms of a carved cell (Angstrom; None: the SOAP cutoff)
    carve_radius: float | None = Field(None, gt=0.0)
    #: relax the atoms of a carved cell beyond ``carve_frozen_radius`` of its flagged atoms with
    #: the model that explored, before labelling: the cut boundary otherwise puts the cell
    #: ~1 eV/atom above anything trained on and costs the SCF 5-10x the steps (alcgap.explore.carve)
    relax_boundary: bool = True
    #: atoms within this distance of the flagged atoms keep the source geometry exactly
    #: (Angstrom; None: the carving radius less 1 A, the first two neighbour shells of SiO2)
    carve_frozen_radius: float | None = Field(None, gt=0.0)
    #: a selected structure with a pair closer than this fraction of the pair's summed covalent
    #: radii (0.5: Si-Si 1.11, Si-O 0.885, O-O 0.66 A) is recorded as too_close and never sent
    #: to the reference: frozen-core pseudopotentials and molecular basis sets do not hold there,
    #: and the aux, fitted to the dimer scans (exempt), owns that range (alcgap.reference.contacts)
    contact_fraction: float = Field(0.5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _frozen_inside_the_carving(self):
        if self.carve_frozen_radius is not None and self.carve_radius is not None \
                and self.carve_frozen_radius > self.carve_radius:
            raise ValueError(f"label.carve_frozen_radius ({self.carve_frozen_radius} A) is larger than "
                             f"label.carve_radius ({self.carve_radius} A): atoms beyond the carving radius are "
                             f"not the source's anyway; set it at most the carving radius")
        return self


class SurvivalJudgeSettings(Strict):
    """The survival test of an iteration that passed every other gate (alcgap.survival,
    project issue 17): hot NVT runs of the iteration's deployed model from the training cell
    (1x, at its density), one per temperature and seed, at ``explore.timestep`` with the explore
    section's adaptive step (``max_displacement``, ``max_energy_change``). The iteration converges
    only when enough of them hold."""

    #: NVT temperatures (K), one run per temperature and seed: hotter than exploration, to push
    #: the model towards the short range where a GAP without its aux has a hole
    temperatures: list[float] = Field(default_factory=lambda: [6000.0])
    #: velocity seeds (one run per seed and temperature; the same for every iteration's model)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3])
    #: MD steps per run (each at most ``explore.timestep`` fs; shorter where the adaptive step cuts it)
    steps: int = Field(2000, ge=10)
    #: fraction of the runs that must hold for the iteration to converge (1: every run), in (0, 1]
    min_held: float = Field(1.0, gt=0.0, le=1.0)
    #: a run holds when it survived (no collapse, lost atoms or non-finite energy) and no pair
    #: came closer than this fraction of its aux cutoff (``aux.cutoffs``; the run's
    #: ``cutoff_fractions``). 0.9: the aux may be touched, not crossed far; above 1 asks every
    #: pair to stay outside the aux range altogether (Si-O bonds sit at ~1.45 x its 1.1 A)
    held_fraction: float = Field(0.9, gt=0.0, le=2.0)

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if not value or min(value) <= 0.0:
            raise ValueError(f"{value}: give one or more temperatures in K, each > 0, e.g. [6000]")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"{value}: give one or more distinct seeds, e.g. [1, 2, 3] (a repeated seed repeats a run)")
        return value


class JudgeSettings(Strict):
    """What an iteration must show for the campaign to stop."""

    #: the stop rule judges the runs at this cell size, in multiples of the training cell (the
    #: paper: 10). explore.sizes must include it. A smaller one is allowed, and the summary says so
    target_size: int = Field(10, ge=1)
    max_energy_mae: float = Field(10.0, gt=0.0, description="meV/atom on the held-out set")
    max_force_rmse: float = Field(1.0, gt=0.0, description="eV/A on the held-out set")
    #: GPa, over the stress components of the held-out periodic frames; None: no stress gate
    max_stress_rmse: float | None = Field(None, gt=0.0, description="GPa on the held-out set")
    #: clustering detector settings besides the short pairs (neighbour_cutoff, max_coordination,
    #: max_like_neighbours: alcgap.analysis.clustering.ClusteringCriteria fields); None: SiO2's
    #: for Si + O, covalent radii otherwise. Short pairs come from the ``distances`` table
    clustering: dict | None = None
    #: the survival test, run once the other gates pass; the iteration converges only
    #: when ``min_held`` of its runs hold (see SurvivalJudgeSettings). None: no survival test
    survival: SurvivalJudgeSettings | None = None

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
    #: "composite": the package's method, a repulsive aux plus the main GAP on the residual.
    #: "plain": the main GAP alone on the total reference energies, with no aux (no dimer scans,
    #: no aux table in MD): the loop must learn the short range from its labels. The control of
    #: benchmarks/campaign_aux.py; frozen with the run.
    potential: Literal["composite", "plain"] = "composite"

    @model_validator(mode="after")
    def _campaign_consistent(self) -> "CampaignConfig":
        _check_pair_table("distances.flag", self.distances.flag, self.species)
        if self.potential == "plain" and self.traditional:
            raise ValueError("traditional: a plain campaign's model is itself the traditional GAP (no aux); "
                             "drop traditional, or set potential: composite")
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
