"""References that label structures with energies, forces and stresses."""

from __future__ import annotations

from pathlib import Path

from alcgap.reference._cp2k import Cp2kReference
from alcgap.reference._cp2k_input import default_multiplicity
from alcgap.reference._cp2k_output import classify_failure, parse_cp2k_output
from alcgap.reference._cp2k_settings import Cp2kLaunch, Cp2kMethod, Cp2kSettings
from alcgap.reference._lammps import LammpsReference, vashishta_sio2_commands
from alcgap.reference.base import Label, LabelStatus, Reference, isolated


def make_reference(settings, species: list[str], workdir: str | Path | None = None) -> Reference:
    """The reference a validated config asks for (``workdir``: where CP2K runs keep their files)."""
    if settings.kind == "lammps":
        # the type order comes from the pair_coeff element names (or reference.types), never
        # from the order of the campaign's species
        commands = settings.pair_commands or vashishta_sio2_commands()
        return LammpsReference(commands, settings.types, charges=settings.charges, atom_style=settings.atom_style)
    if settings.kind == "cp2k":
        return Cp2kReference(settings, list(species), workdir=workdir)
    raise ValueError(f"reference.kind: unknown reference {settings.kind!r}")


__all__ = [
    "Cp2kLaunch",
    "Cp2kMethod",
    "Cp2kReference",
    "Cp2kSettings",
    "Label",
    "LabelStatus",
    "LammpsReference",
    "Reference",
    "classify_failure",
    "default_multiplicity",
    "isolated",
    "make_reference",
    "parse_cp2k_output",
    "vashishta_sio2_commands",
]
