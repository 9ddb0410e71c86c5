"""The bootstrap's data, as pure functions: frames kept from a file, and the held-out split.

How iteration 0 makes its frames (classical MD, a file, rattled copies) from the settings is the
bootstrap stage's (:mod:`alcgap.workflow.stages.bootstrap`); this module holds what it calls.
"""

from __future__ import annotations

import os

import ase.io
import numpy as np
from ase import Atoms


def subsample_indices(n_frames: int, every: int | None = None, count: int | None = None) -> list[int]:
    """Frames kept of ``n_frames``: every ``every``-th from the first; or ``count`` spread evenly
    from the first to the last, round(i (n - 1) / (count - 1)); or all of them."""
    if count is not None:
        if count > n_frames:
            raise ValueError(f"data.bootstrap.count={count}: the file holds only {n_frames} frames")
        return [int(i) for i in np.round(np.linspace(0, n_frames - 1, count))]
    return list(range(0, n_frames, every or 1))


def read_bootstrap_file(path: str | os.PathLike, species: list[str], *, every: int | None = None,
                        count: int | None = None, format: str | None = None) -> list[Atoms]:
    """The frames of ``path`` (any file ``ase.io`` reads) kept by :func:`subsample_indices`, as bare
    periodic structures (symbols, positions, cell; ``info["source_frame"]``: index in the file)."""
    frames = ase.io.read(path, index=":", format=format)
    kept = []
    for index in subsample_indices(len(frames), every, count):
        frame = frames[index]
        extra = set(frame.get_chemical_symbols()) - set(species)
        if extra:
            raise ValueError(f"data.bootstrap.path: frame {index} of {path} holds {sorted(extra)}, not in species {species}")
        if not all(frame.pbc) or frame.cell.volume <= 0.0:
            raise ValueError(f"data.bootstrap.path: frame {index} of {path} has no periodic cell (pbc {frame.pbc.tolist()})")
        bare = Atoms(frame.get_chemical_symbols(), positions=frame.positions, cell=frame.cell, pbc=True)
        bare.info = {"source_frame": index}
        kept.append(bare)
    return kept


def split(frames: list[Atoms], test_fraction: float, seed: int, block: int | None = None) -> tuple[list[Atoms], list[Atoms]]:
    """Train/test split of a trajectory by contiguous blocks; the test set is never used in a fit.

    Frames of one MD run 100 fs apart are correlated: a per-frame random split puts neighbours on
    both sides, and the test error measures interpolation, not generalisation. Here the frames
    (in trajectory order) are cut into blocks of ``block`` consecutive frames (default: a tenth
    of the trajectory, at least 2); round(test_fraction x blocks) of them, at least one, evenly
    spaced through the run from a seeded offset (so heating, melt and quench are all tested),
    are the test set.
    """
    n = len(frames)
    block = block or max(2, n // 10)
    starts = list(range(0, n, block))
    n_test = max(1, int(round(test_fraction * len(starts))))
    if n_test >= len(starts):
        raise ValueError(f"{n} frames in {len(starts)} blocks of {block} cannot hold {n_test} test blocks and a training set; "
                         "sample more frames (data.sample_every) or lower data.test_fraction")
    stride = len(starts) / n_test
    offset = np.random.default_rng(seed).uniform(0, stride)
    chosen = sorted({int(offset + k * stride) % len(starts) for k in range(n_test)})
    test_index = {i for b in chosen for i in range(starts[b], min(n, starts[b] + block))}
    return [f for i, f in enumerate(frames) if i not in test_index], [f for i, f in enumerate(frames) if i in test_index]
