"""Settings of iteration 0's data (the ``data`` section): the starting crystal, how the bootstrap
frames are made from it (classical melt-and-quench, given structures, or rattled copies), and the
held-out share.

Whether the crystal can be made and labelled, and whether a classical bootstrap's potential can
run, the config checks (:class:`alcgap.config.FitConfig`): after the species and the reference,
so that the first error reported is the one at the root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from ase import Atoms
from pydantic import (BaseModel, Discriminator, Field, Tag, ValidationInfo, field_validator,
                      model_validator)

from alcgap.md.protocols import Segment, melt_and_quench
from alcgap.settings import Strict
from alcgap.structures import unit_cell


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


def structure_name(structure: str | BulkCrystal | SpacegroupCrystal) -> str:
    """How messages name a starting crystal: its name or file, ``bulk InP``, ``space group 14``."""
    if isinstance(structure, str):
        return structure
    return f"bulk {structure.bulk}" if isinstance(structure, BulkCrystal) else f"space group {structure.spacegroup}"


def make_crystal(structure: str | BulkCrystal | SpacegroupCrystal) -> Atoms:
    """The crystal a structure spec describes, in its own cell (ASE Atoms)."""
    return unit_cell(structure if isinstance(structure, str) else structure.model_dump(exclude_none=True))


class ClassicalBootstrap(Strict):
    """Melt-and-quench of the starting cell with a classical LAMMPS potential, a frame every
    ``sample_every`` steps. The potential: ``pair_commands`` (with ``types`` and ``charges`` as
    for ``reference``); None: the reference's own when it is classical, else the Vashishta (1990)
    SiO2 file shipped with LAMMPS, which knows Si and O only."""

    kind: Literal["classical"] = "classical"
    pair_commands: list[str] | None = None
    types: list[str] | None = Field(None, description=(
        "LAMMPS type order (type 1 first); None: the element names of the pair_coeff line"))
    charges: dict[str, float] | None = Field(None, description="fixed charge (e) per element, for a Coulomb model")
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
    format: str | None = Field(None, description="``ase.io`` format, when the file's name does not tell it")
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
    spring: float = Field(10.0, gt=0.0, description=(
        "Einstein spring constant (eV/A^2). Seen with Vashishta potentials, one atom moved in its "
        "crystal: InP 10.5 (In) and 11.0 (P), beta-cristobalite 84 (Si) and 54 (O). A softer spring "
        "than the material's rattles further than its thermal motion. 10 eV/A^2 gives sigma = "
        "0.051, 0.093, 0.131 A at 300, 1000, 2000 K"))
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

    structure: StructureSpec = Field("beta-cristobalite", description=(
        "\"beta-cristobalite\", a path to any structure file ASE reads (its last frame), "
        "{bulk: ...} (ase.build.bulk) or {spacegroup: ...} (ase.spacegroup.crystal)"))
    n_atoms: int | None = Field(None, ge=1, validate_default=True, description=(
        "atoms of the bootstrap cell: a multiple of the structure's own; None: the structure as it "
        "is (24 for beta-cristobalite), resolved when the config is loaded"))
    bootstrap: BootstrapSettings = Field(default_factory=ClassicalBootstrap)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description=(
        "fraction of frames held out for testing (never used in a fit)"))

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

    @field_validator("n_atoms")
    @classmethod
    def _n_atoms_defaults_to_the_structure(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None or "structure" not in info.data:
            return value
        try:
            return len(make_crystal(info.data["structure"]))
        except Exception:  # noqa: BLE001 - ASE raises many kinds for a file or a crystal it cannot make
            # left unresolved: the config refuses such a structure naming data.structure, once its
            # species and reference are known to be right (FitConfig._ase_makes_the_structure)
            return None

    def crystal(self) -> Atoms:
        """The starting crystal's own cell (before it is repeated to ``n_atoms``), ASE Atoms."""
        return make_crystal(self.structure)
