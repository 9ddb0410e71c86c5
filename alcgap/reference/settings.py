"""Settings of the reference that labels structures, chosen by ``kind``: a classical LAMMPS
potential standing in for DFT (:class:`LammpsReferenceSettings`) or CP2K (:class:`Cp2kSettings`)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from alcgap.reference import Cp2kSettings
from alcgap.reference._lammps import VASHISHTA_SIO2_TYPES, charge_settings, has_kspace, lammps_types, vashishta_sio2_commands
from alcgap.settings import Strict


class LammpsReferenceSettings(Strict):
    """A classical potential in LAMMPS standing in for DFT (default: Vashishta SiO2).

    Which LAMMPS type is which element comes from the element names of a ``pair_coeff * * FILE
    El1 El2 ...`` line, whatever the order of ``species``; pair_coeff lines with per-type-pair
    coefficients (``pair_coeff 1 2 ...``) name none, and then ``types`` is required.
    """

    kind: Literal["lammps"] = "lammps"
    pair_commands: list[str] | None = Field(None, description=(
        "pair_style/pair_coeff lines; None means the Vashishta (1990) SiO2 file shipped with LAMMPS"))
    types: list[str] | None = Field(None, description=(
        "LAMMPS type order (type 1 = first); None: the element names of the pair_coeff line. A "
        "given order must repeat them (it is refused, not reordered)"))
    charges: dict[str, float] | None = Field(None, description=(
        "fixed charge (e) per element, required by a Coulomb model (a \"coul\" pair style or a "
        "kspace_style line), e.g. {Si: 2.4, O: -1.2}; every periodic cell labelled must be neutral"))
    atom_style: Literal["atomic", "charge"] | None = Field(None, description=(
        "None: \"charge\" when the pair style has a Coulomb term, else \"atomic\""))

    def commands(self) -> list[str]:
        """The pair commands, with the shipped Vashishta file's line standing for None (no file look-up)."""
        return self.pair_commands or vashishta_sio2_commands("SiO.1990.vashishta")

    def lammps_types(self) -> list[str]:
        """The LAMMPS type order (type 1 first)."""
        return lammps_types(self.commands(), self.types)

    def check_species(self, species: list[str] | tuple[str, ...]) -> None:
        """Refuse species the potential has no LAMMPS type for; the messages name the field."""
        if self.pair_commands is None and not set(species) <= set(VASHISHTA_SIO2_TYPES):
            raise ValueError(
                f"reference.pair_commands: not given, so the reference is the shipped Vashishta SiO2, which knows only "
                f"{VASHISHTA_SIO2_TYPES}; species {list(species)} need pair_style/pair_coeff lines of their own"
            )
        types = self.lammps_types()
        if not set(species) <= set(types):
            field = "reference.types" if self.types is not None else "reference.pair_commands"
            raise ValueError(
                f"{field}: species {sorted(set(species) - set(types))} have no LAMMPS type (the types are "
                f"{types}); every species needs one"
            )

    @model_validator(mode="after")
    def _no_kspace(self) -> "LammpsReferenceSettings":
        if has_kspace(self.commands()):
            # LAMMPS refuses Ewald/PPPM with non-periodic boundaries, and the fit labels every
            # isolated atom and dimer of its aux scans with the reference
            raise ValueError(
                "reference.pair_commands: a kspace_style (Ewald, PPPM) needs periodic cells, but the fit labels "
                "isolated atoms and dimers with the reference; use a smooth real-space Coulomb sum, e.g. "
                "'pair_style born/coul/dsf 0.2 5.5 10.0' (Buckingham is Born with sigma = D = 0) or coul/wolf"
            )
        return self

    @model_validator(mode="after")
    def _types_and_charges_can_work(self) -> "LammpsReferenceSettings":
        charge_settings(self.commands(), self.lammps_types(), self.charges, self.atom_style)
        return self


#: the reference, chosen by ``kind``: "lammps" (classical stand-in) or "cp2k" (DFT, or xTB for demos)
ReferenceSettings = Annotated[Union[LammpsReferenceSettings, Cp2kSettings], Field(discriminator="kind")]
