"""Shared fixtures: one real composite fit (real LAMMPS reference, real gap_fit), built once."""

from __future__ import annotations

import numpy as np
import pytest

from alcgap.config import load_fit_config
from alcgap.reference import LammpsReference

# A real but small fit: 24-atom SiO2, a short Vashishta melt-and-quench, SOAP with the paper's
# n_max, l_max and cutoff; fewer sparse points than the demo so the suite stays fast.
SMALL_FIT = {
    "species": ["Si", "O"],
    "seed": 3,
    "aux": {"cutoffs": {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}},
    "main": {"soap": {"n_sparse": 150}},
    "data": {
        "n_atoms": 24,
        "sample_every": 100,
        "protocol": [
            {"steps": 1000, "t_start": 300, "t_end": 4000},
            {"steps": 1000, "t_start": 4000, "t_end": 4000},
            {"steps": 2000, "t_start": 4000, "t_end": 300},
        ],
    },
}


@pytest.fixture(scope="session")
def small_config():
    return load_fit_config(SMALL_FIT)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory, small_config):
    """The summary of a whole `run_fit` (dimers -> aux -> MD data -> composite + traditional)."""
    from alcgap.workflow.fitjob import run_fit

    run_dir = tmp_path_factory.mktemp("fit")
    return run_fit(small_config, run_dir)


@pytest.fixture(scope="session")
def vashishta():
    return LammpsReference.vashishta_sio2()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def finite_difference_forces(atoms, calc, indices, delta=1e-4):
    """-dE/dx by central differences for the given atoms (all three directions)."""
    forces = np.zeros((len(indices), 3))
    for row, i in enumerate(indices):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                work = atoms.copy()
                work.positions[i, k] += sign * delta
                work.calc = calc
                energies.append(work.get_potential_energy())
            forces[row, k] = -(energies[0] - energies[1]) / (2 * delta)
    return forces


#: a judgement's figures that pass the confidence and accuracy gates (tolerance 1 eV/A): for unit
#: tests of the stop rule that vary the other figures
GATES_PASS = dict(tolerance=1.0, confident_fraction=1.0, n_target_frames=40, clean_frames=1.0,
                  explored_force_rmse=0.3, explored_force_se=0.05, n_explored=4)
