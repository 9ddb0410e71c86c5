"""A classical potential in LAMMPS as a reference: a cheap stand-in for DFT in tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from alcgap.lammps_module import lammps_class, potentials_dir
from alcgap.reference.base import Label, LabelStatus, Reference


def vashishta_sio2_commands() -> list[str]:
    """The Vashishta (1990) SiO2 potential shipped inside the LAMMPS wheel, types Si=1, O=2."""
    path = potentials_dir() / "SiO.1990.vashishta"
    return ["pair_style vashishta", f"pair_coeff * * {path} Si O"]


class LammpsReference(Reference):
    """Label with any LAMMPS ``pair_style``/``pair_coeff`` lines through the LAMMPS Python module.

    ``species`` gives the LAMMPS atom types in order (type 1 = species[0], ...), which must match
    the element order of the ``pair_coeff`` lines.
    """

    name = "lammps"

    def __init__(self, pair_commands: Sequence[str], species: Sequence[str]):
        if not pair_commands:
            raise ValueError("pair_commands: give at least a 'pair_style ...' line")
        if not any(line.split()[0] == "pair_style" for line in pair_commands if line.split()):
            raise ValueError("pair_commands: a 'pair_style ...' line is missing")
        for line in pair_commands:
            words = line.split()
            if words[:1] == ["pair_coeff"]:
                for word in words[1:]:
                    if "/" in word and not Path(word).exists():
                        raise FileNotFoundError(f"pair_commands: potential file not found: {word}")
        self.pair_commands = list(pair_commands)
        self.species = list(species)
        self._calc = None

    def __getstate__(self):
        # a LAMMPS instance does not travel (to a Parsl worker, say): the copy makes its own
        return {**self.__dict__, "_calc": None}

    @classmethod
    def vashishta_sio2(cls) -> "LammpsReference":
        return cls(vashishta_sio2_commands(), ["Si", "O"])

    def settings(self) -> dict[str, Any]:
        return {"pair_commands": self.pair_commands, "species": self.species}

    def _calculator(self):
        if self._calc is None:
            lammps_class()  # libmpi must be loaded before ASE imports lammps
            from ase.calculators.lammpslib import LAMMPSlib

            self._calc = LAMMPSlib(
                lmpcmds=self.pair_commands,
                atom_types={symbol: i + 1 for i, symbol in enumerate(self.species)},
                keep_alive=True,
                log_file=None,
            )
        return self._calc

    def compute(self, atoms: Atoms) -> Label:
        unknown = set(atoms.get_chemical_symbols()) - set(self.species)
        if unknown:
            return Label(LabelStatus.PROGRAM_ERROR, reason=f"species {sorted(unknown)} not in {self.species}")
        work = atoms.copy()
        work.calc = self._calculator()
        try:
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces())
            stress = np.array(work.get_stress()) if all(work.pbc) else None
        except Exception as err:  # LAMMPS raises plain Exceptions with its own message
            self._calc = None  # a LAMMPS instance that failed is not trusted again
            return Label(LabelStatus.PROGRAM_ERROR, reason=str(err))
        if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
            return Label(LabelStatus.PROGRAM_ERROR, reason="non-finite energy or forces")
        return Label(LabelStatus.OK, energy=energy, forces=forces, stress=stress)
