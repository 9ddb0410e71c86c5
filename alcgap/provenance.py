"""What identifies a labelled structure, and why it was labelled.

A structure's :func:`fingerprint` plus the reference settings hash identify a label in the
:class:`~alcgap.store.LabelStore`; its :class:`Provenance` says where it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

#: grid (Angstrom) on which cell and positions are compared when fingerprinting
FINGERPRINT_TOLERANCE = 1e-6
#: prefix of stored hashes: ASE refuses, and its queries convert, text that reads as a number,
#: which a hex digest made only of digits would be
HASH_PREFIX = "sha256:"


def fingerprint(atoms: Atoms, tolerance: float = FINGERPRINT_TOLERANCE) -> str:
    """Identity of a structure: sha256 of atomic numbers, pbc, cell and positions.

    Positions are wrapped into the cell along periodic directions, then cell and positions are
    put on a grid of ``tolerance`` (Angstrom): a frame shifted by a lattice vector, or perturbed
    far below the tolerance, keeps its fingerprint (unless a coordinate sits right at a grid
    boundary, which costs one repeated label, never a wrong one). Atom order counts.
    """
    positions = atoms.get_positions(wrap=True) if atoms.pbc.any() else atoms.positions
    digest = hashlib.sha256()
    for part in (atoms.numbers, atoms.pbc, _on_grid(atoms.cell.array, tolerance), _on_grid(positions, tolerance)):
        digest.update(np.asarray(part, dtype="<i8").tobytes())
    return HASH_PREFIX + digest.hexdigest()


def _on_grid(values: np.ndarray, tolerance: float) -> np.ndarray:
    # integers, not rounded floats: -0.0 and 0.0 must hash alike
    return np.rint(np.asarray(values, dtype=float) / tolerance).astype(np.int64)


@dataclass(frozen=True)
class Provenance:
    """Why a structure was labelled.

    ``origin`` says where it came from: "isolated", "dimer", "bootstrap", "explore:<task id>";
    the part before ":" becomes gap_fit's ``config_type`` on export. ``variance`` is the
    predicted variance that flagged it (eV^2, as the selector reports it), ``min_distance`` its
    shortest interatomic distance (Angstrom), ``reason`` free text.
    """

    iteration: int
    origin: str
    variance: float | None = None
    min_distance: float | None = None
    reason: str = ""
    #: JSON-ready details kept with the row and returned in ``atoms.info``: the selected atoms
    #: (``centre_atoms``), and for a carved cell its source frame and carving parameters
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.iteration, bool) or not isinstance(self.iteration, (int, np.integer)) or self.iteration < 0:
            raise ValueError(f"iteration: a non-negative integer, got {self.iteration!r}")
        if not isinstance(self.origin, str) or not self.origin or _reads_as_number(self.origin):
            raise ValueError(f"origin: a name such as 'dimer' or 'explore:3', got {self.origin!r}")

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "Provenance":
        """The provenance in ``atoms.info`` of a structure from :meth:`LabelStore.labelled`."""
        return cls(
            iteration=int(info["iteration"]),
            origin=info["origin"],
            variance=info.get("variance"),
            min_distance=info.get("min_distance"),
            reason=info.get("selection_reason", ""),
        )


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("True", "False")
    return True


# -- which atoms of a labelled structure sit where exploration found them (carved cells) ----------
# See "Provenance" in :mod:`alcgap.explore.carve` for the keys a carve writes into ``info``.

def centre_atoms(atoms: Atoms) -> list[int]:
    """``info["centre_atoms"]`` as a list, also after an extxyz round trip (which reads one index back as an int)."""
    value = atoms.info.get("centre_atoms", [])
    if isinstance(value, str):
        value = value.split()
    return [int(i) for i in np.atleast_1d(value)]


def info_indices(atoms: Atoms, key: str) -> list[int]:
    """An index list from ``atoms.info`` as a list of ints, whether extxyz read it as an array or a scalar."""
    return [int(v) for v in np.atleast_1d(atoms.info[key])]


def distance_to_centres(atoms: Atoms, centres: list[int]) -> np.ndarray:
    """Per atom, the minimum-image distance to the nearest of ``centres``."""
    return np.min([atoms.get_distances(c, range(len(atoms)), mic=True) for c in centres], axis=0)


def exact_atoms(atoms: Atoms) -> list[int]:
    """The atoms of a labelled frame that sit where the explored frame had them: a relaxed cell's
    ``carve_frozen_atoms``, the atoms within ``carve_radius`` of the centres of a carved cell that
    was not relaxed, every atom of a whole frame. The error of a model on these atoms is the
    error on what exploration found, free of the boundary the carve added (and of a relaxation
    by the same model, which puts the rest of the cell at that model's own minimum)."""
    if "carve_frozen_atoms" in atoms.info:
        return info_indices(atoms, "carve_frozen_atoms")
    centres = info_indices(atoms, "centre_atoms")
    if "carve_radius" not in atoms.info or not centres:
        return list(range(len(atoms)))
    return np.flatnonzero(distance_to_centres(atoms, centres) <= float(atoms.info["carve_radius"])).tolist()
