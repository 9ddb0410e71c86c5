"""A classical potential in LAMMPS as a reference: a cheap stand-in for DFT in tests and benchmarks.

Which LAMMPS type is which element (the same rule for the reference, the classical MD and the
bootstrap, see :func:`lammps_types`): a many-body line ``pair_coeff * * FILE El1 El2 ...``
names type i by its i-th element word, and that order is used whatever the campaign's species
order; a given type order must agree with it. Lines with per-type-pair coefficients
(``pair_coeff 1 2 ...``) name nothing, so there the type order must be given.

Charges (see :func:`charge_settings`): a pair style with a Coulomb term (a ``coul`` style, or a
``kspace_style`` line) runs with ``atom_style charge`` and a fixed charge per element (e); other
styles run with ``atom_style atomic`` unless ``atom_style`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from alcgap.lammps_module import lammps_class, potentials_dir
from alcgap.reference.base import Label, LabelStatus, Reference

#: element order of the shipped Vashishta file's pair_coeff line (type 1 = Si)
VASHISHTA_SIO2_TYPES = ["Si", "O"]

#: a structure whose charges sum to less than this (e) is neutral
NEUTRAL = 1e-6


def vashishta_sio2_commands(path=None) -> list[str]:
    """The Vashishta (1990) SiO2 potential shipped inside the LAMMPS wheel, types Si=1, O=2
    (``path``: another copy of its file)."""
    path = path or potentials_dir() / "SiO.1990.vashishta"
    return ["pair_style vashishta", f"pair_coeff * * {path} {' '.join(VASHISHTA_SIO2_TYPES)}"]


def _is_element(word: str) -> bool:
    return word in atomic_numbers and word != "X"


def pair_coeff_elements(pair_commands: Sequence[str]) -> list[str | None] | None:
    """The type order named by the element words that end ``pair_coeff * * ...`` lines (type i
    = i-th word; None where every line says NULL), or None when no line names elements."""
    named: list[str | None] | None = None
    for line in pair_commands:
        words = line.split()
        if words[:3] != ["pair_coeff", "*", "*"]:
            continue
        tail: list[str] = []
        for word in reversed(words[3:]):
            if not (_is_element(word) or word == "NULL"):
                break
            tail.insert(0, word)
        if not any(_is_element(word) for word in tail):
            continue
        if named is None:
            named = [None] * len(tail)
        if len(tail) != len(named):
            raise ValueError(f"pair_commands: '{line}' names {len(tail)} types, an earlier pair_coeff line {len(named)}")
        for i, word in enumerate(tail):
            if word == "NULL":
                continue
            if named[i] not in (None, word):
                raise ValueError(f"pair_commands: '{line}' makes type {i + 1} {word}, an earlier pair_coeff line {named[i]}")
            named[i] = word
    return named


def lammps_types(pair_commands: Sequence[str], types: Sequence[str] | None = None) -> list[str]:
    """The LAMMPS type order (type 1 first) for ``pair_commands``: the elements its ``pair_coeff
    * * FILE El1 El2 ...`` lines name, which a given ``types`` must repeat in the same order; with
    no names (``pair_coeff 1 2 ...``), ``types`` itself, which is then required."""
    named = pair_coeff_elements(pair_commands)
    if named is None:
        if not types:
            raise ValueError(
                "reference.types: the pair_coeff lines name no elements (no 'pair_coeff * * FILE El1 El2 ...'), "
                "so the type order must be given: list the element of type 1, type 2, ... as reference.types"
            )
        result = list(types)
    elif types is not None and None not in named and list(types) != named:
        raise ValueError(
            f"reference.types {list(types)} contradicts the pair_coeff line, which makes the types {named} "
            f"(type 1 = {named[0]}); remove reference.types (the pair_coeff line sets the order) or give {named}"
        )
    elif None in named:
        if types is None:
            raise ValueError(
                f"reference.types: the pair_coeff lines leave types {[i + 1 for i, s in enumerate(named) if s is None]} "
                f"unnamed (NULL in {named}); give the whole type order as reference.types"
            )
        if len(types) != len(named) or any(s is not None and s != t for s, t in zip(named, types)):
            raise ValueError(f"reference.types {list(types)} contradicts the pair_coeff lines' types {named}")
        result = list(types)
    else:
        result = named
    for symbol in result:
        if not _is_element(symbol):
            raise ValueError(f"reference.types: '{symbol}' is not a chemical element symbol")
    if len(set(result)) != len(result):
        raise ValueError(f"reference.types {result}: an element names two types; alcgap maps each element to one type")
    return result


def has_coulomb(pair_commands: Sequence[str]) -> bool:
    """True when the commands have a Coulomb term: a ``coul`` pair style or a ``kspace_style``."""
    for line in pair_commands:
        words = line.split()
        if words[:1] == ["kspace_style"] or (words[:1] == ["pair_style"] and any("coul" in w for w in words[1:])):
            return True
    return False


def has_kspace(pair_commands: Sequence[str]) -> bool:
    return any(line.split()[:1] == ["kspace_style"] for line in pair_commands)


def charge_settings(pair_commands: Sequence[str], types: Sequence[str], charges: dict[str, float] | None,
                    atom_style: str | None) -> str:
    """The ``atom_style`` for these commands ("charge" with a Coulomb term, else "atomic", unless
    ``atom_style`` is given); raise ValueError when the charges (e per element) cannot work."""
    coulomb = has_coulomb(pair_commands)
    style = atom_style or ("charge" if coulomb else "atomic")
    if coulomb and style == "atomic":
        raise ValueError("reference.atom_style: the pair style has a Coulomb term, which needs atom_style charge")
    if coulomb and not charges:
        raise ValueError(
            f"reference.charges: the pair style has a Coulomb term; give the charge (e) of each of {list(types)}, "
            "e.g. {Si: 2.4, O: -1.2}"
        )
    if charges and style == "atomic":
        raise ValueError(
            "reference.charges: the pair style has no Coulomb term (no 'coul' style, no kspace_style), so the "
            "charges would change nothing; remove them, or set reference.atom_style: charge if the style reads charges"
        )
    if charges:
        if set(charges) != set(types):
            raise ValueError(f"reference.charges: give one charge for each LAMMPS type {list(types)}, not {sorted(charges)}")
        values = np.array(list(charges.values()), dtype=float)
        if np.any(values != 0.0) and not (values.min() < 0.0 < values.max()):
            raise ValueError(f"reference.charges {charges}: all of one sign, so no structure of them is neutral")
    return style


def net_charge(atoms: Atoms, charges: dict[str, float]) -> float:
    """Sum of the fixed charges (e) of the atoms."""
    return float(sum(charges[symbol] for symbol in atoms.get_chemical_symbols()))


class LammpsReference(Reference):
    """Label with any LAMMPS ``pair_style``/``pair_coeff`` lines through the LAMMPS Python module.

    ``types`` is the LAMMPS type order (type 1 = types[0], ...); None takes it from the element
    names of a ``pair_coeff * * FILE El1 El2 ...`` line, and a given order must agree with them
    (see :func:`lammps_types`). ``charges``: a fixed charge (e) per element, for a Coulomb model
    such as ``buck/coul/long`` (see :func:`charge_settings`).
    """

    name = "lammps"

    def __init__(self, pair_commands: Sequence[str], types: Sequence[str] | None = None, *,
                 charges: dict[str, float] | None = None, atom_style: str | None = None):
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
        #: the LAMMPS type order (type 1 first)
        self.species = lammps_types(self.pair_commands, types)
        self.atom_style = charge_settings(self.pair_commands, self.species, charges, atom_style)
        self.charges = {symbol: float(charges[symbol]) for symbol in self.species} if charges else None
        self._calc = None

    def __getstate__(self):
        # a LAMMPS instance does not travel (to a Parsl worker, say): the copy makes its own
        return {**self.__dict__, "_calc": None}

    @classmethod
    def vashishta_sio2(cls) -> "LammpsReference":
        return cls(vashishta_sio2_commands())

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"pair_commands": self.pair_commands, "species": self.species}
        if self.atom_style != "atomic":
            settings.update(atom_style=self.atom_style, charges=self.charges)
        return settings

    def calculator(self):
        """A new ASE calculator of this potential (its own LAMMPS instance): to relax or run MD
        with the reference, as the stand-in for a model (a carved boundary, say)."""
        lammps_class()  # libmpi must be loaded before ASE imports lammps
        from ase.calculators.lammpslib import LAMMPSlib  # inline: only once libmpi is loaded

        charges = self.charges or {}
        return LAMMPSlib(
            lmpcmds=self.pair_commands,
            atom_types={symbol: i + 1 for i, symbol in enumerate(self.species)},
            lammps_header=["units metal", f"atom_style {self.atom_style}", "atom_modify map array sort 0 0"],
            # before every calculation: LAMMPSlib re-creates atoms when their number changes
            amendments=[f"set type {i + 1} charge {charges[s]}" for i, s in enumerate(self.species) if s in charges],
            keep_alive=True,
            log_file=None,
        )

    def _calculator(self):
        if self._calc is None:
            self._calc = self.calculator()
        return self._calc

    def compute(self, atoms: Atoms) -> Label:
        unknown = set(atoms.get_chemical_symbols()) - set(self.species)
        if unknown:
            return Label(LabelStatus.PROGRAM_ERROR, reason=f"species {sorted(unknown)} not in {self.species}")
        if self.charges and any(atoms.pbc):
            net = net_charge(atoms, self.charges)
            if abs(net) > NEUTRAL:
                # a periodic sum of a charged cell is not the cell's energy (Ewald adds a
                # neutralising background, a cut sum depends on the cutoff)
                return Label(LabelStatus.PROGRAM_ERROR, reason=(
                    f"net charge {net:+.6g} e under reference.charges {self.charges}: a periodic cell must be neutral"))
        if has_kspace(self.pair_commands) and not all(atoms.pbc):
            return Label(LabelStatus.PROGRAM_ERROR, reason=(
                "kspace_style needs a periodic cell; an isolated structure (atom, dimer) needs a real-space "
                "Coulomb sum such as born/coul/dsf"))
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
