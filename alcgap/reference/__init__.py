"""References that label structures with energies, forces and stresses."""

from __future__ import annotations

from alcgap.reference._lammps import LammpsReference, vashishta_sio2_commands
from alcgap.reference.base import Label, LabelStatus, Reference, isolated


def make_reference(settings, species: list[str]) -> Reference:
    """The reference a validated config asks for."""
    if settings.kind == "lammps":
        commands = settings.pair_commands or vashishta_sio2_commands()
        types = settings.types or list(species)
        if settings.pair_commands is None and types != ["Si", "O"]:
            types = ["Si", "O"]  # the shipped Vashishta file orders its elements Si, O
        return LammpsReference(commands, types)
    raise ValueError(f"reference.kind: unknown reference {settings.kind!r}")


__all__ = ["Label", "LabelStatus", "LammpsReference", "Reference", "isolated", "make_reference", "vashishta_sio2_commands"]
