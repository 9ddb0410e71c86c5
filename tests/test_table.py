"""The auxiliary as a LAMMPS pair_style table reproduces the GAP."""

import numpy as np
from ase import Atoms
from quippy.potential import Potential

from alcgap.fit.aux import aux_pair_curve
from alcgap.fit.table import table_pair_commands
from alcgap.reference import LammpsReference
from alcgap.reference.base import isolated
from alcgap.structures import min_pair_distances


def _dense_random_sio2(seed: int) -> Atoms:
    """24 atoms of SiO2 at random in a small box, no pair closer than 0.55 A (the table starts at 0.5)."""
    rng = np.random.default_rng(seed)
    while True:
        atoms = Atoms("Si8O16", positions=rng.uniform(0, 5.0, (24, 3)), cell=[5.0] * 3, pbc=True)
        shortest = min_pair_distances(atoms)
        if min(shortest.values()) > 0.55 and shortest[("O", "O")] < 0.8 and shortest[("Si", "Si")] < 1.6:
            return atoms


def test_table_matches_the_gap_on_dimers_and_a_compressed_cell(fitted, small_config):
    cutoffs = small_config.aux.pair_cutoffs()
    table = LammpsReference(table_pair_commands(fitted["aux_table"], cutoffs, ["Si", "O"]), ["Si", "O"])
    # dimers at distances that are not on the table's grid
    for pair, r_cut in cutoffs.items():
        for r in np.linspace(0.5137, r_cut - 0.0123, 7):
            from_table = table.compute(isolated(pair[0] + pair[1], [[0, 0, 0], [r, 0, 0]])).energy
            from_gap = aux_pair_curve(fitted["aux_xml"], pair, np.array([r]))[0][0]
            np.testing.assert_allclose(from_table, from_gap, rtol=1e-3, atol=1e-5)
    # a compressed, rattled cell where all three pairs come inside their cutoffs
    atoms = _dense_random_sio2(seed=7)
    shortest = min_pair_distances(atoms)
    assert shortest[("Si", "O")] < 1.1 and shortest[("Si", "Si")] < 1.6 and min(shortest.values()) > 0.5
    label = table.compute(atoms)
    atoms.calc = Potential(param_filename=fitted["aux_xml"])
    assert atoms.get_potential_energy() > 100.0
    np.testing.assert_allclose(label.energy, atoms.get_potential_energy(), rtol=1e-3)
    np.testing.assert_allclose(label.forces, atoms.get_forces(), rtol=1e-3, atol=1e-3 * np.abs(label.forces).max())
