"""Per-atom SOAP environments and the distance between two of them.

SOAP distance: 1 - cosine similarity of L2-normalised per-atom SOAP vectors (quippy ``soap
average=F``; the SOAP settings are those of a :class:`~alcgap.explore.select.SelectionSettings`);
0 is identical. Only environments of one species are compared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from sklearn.preprocessing import normalize

if TYPE_CHECKING:  # for the annotation only: select builds on this module
    from alcgap.explore.select import SelectionSettings


def per_atom_soap(frames: Sequence[Atoms], species: Sequence[str], settings: SelectionSettings,
                  atoms_of: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """L2-normalised per-atom SOAP rows (quippy ``soap ... average=F``): every atom of every
    frame in order, or only ``atoms_of[k]`` of frame k (rows in the order given)."""
    from quippy.descriptors import Descriptor  # here: quippy is slow to import

    zs = " ".join(str(atomic_numbers[s]) for s in species)
    descriptor = Descriptor(
        f"soap n_max={settings.soap_n_max} l_max={settings.soap_l_max} cutoff={settings.soap_cutoff} "
        f"atom_sigma={settings.soap_atom_sigma} average=F n_species={len(species)} species_Z={{{zs}}}"
    )
    rows = []
    for k, frame in enumerate(frames):
        wanted = None if atoms_of is None else np.asarray(atoms_of[k], dtype=int)
        if wanted is not None and not len(wanted):
            continue
        if wanted is None:
            out = descriptor.calc(frame)
        else:
            masked = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
            mask = np.zeros(len(frame), dtype=bool)
            mask[wanted] = True
            masked.arrays["alcgap_select_mask"] = mask
            out = descriptor.calc(masked, args_str="atom_mask_name=alcgap_select_mask")
        data, centres = out["data"], np.asarray(out["ci"]) - 1  # quippy's centre indices are 1-based
        row_of = {int(c): r for r, c in enumerate(centres)}
        order = range(len(frame)) if wanted is None else wanted
        rows.append(data[[row_of[int(i)] for i in order]])
    if not rows:
        return np.zeros((0, 1))
    return normalize(np.concatenate(rows))


def nearest_distances(vectors: np.ndarray, z: np.ndarray, others: np.ndarray, z_others: np.ndarray) -> np.ndarray:
    """Per row of ``vectors``: the smallest SOAP distance to a row of ``others`` of the same species."""
    nearest = np.full(len(vectors), np.inf)
    for species in np.unique(z):
        rows, pool = np.flatnonzero(z == species), others[z_others == species]
        if not len(pool):
            continue
        step = max(1, 4_000_000 // len(pool))  # bounded memory on big cells and training sets
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            nearest[chunk] = np.maximum(0.0, 1.0 - (vectors[chunk] @ pool.T).max(axis=1))
    return nearest
