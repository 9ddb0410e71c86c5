"""One tabulation of the auxiliary: the calculator's tables, the MD driver's pair_style table and
the exported aux.table/aux.lammps agree on one dense grid, energies and forces, down to 0.05 A."""

from pathlib import Path

import numpy as np
from ase import Atoms
from quippy.potential import Potential

from alcgap.auxiliary import AuxTable
from alcgap.calculator import component_labels
from alcgap.reference import LammpsReference
from alcgap.reference.base import isolated
from alcgap.structures import min_pair_distances


def _dense_random_sio2(seed: int) -> Atoms:
    """24 atoms of SiO2 at random in a small box, pairs down to 0.3 A (below the 0.5 A scan)."""
    rng = np.random.default_rng(seed)
    while True:
        atoms = Atoms("Si8O16", positions=rng.uniform(0, 5.0, (24, 3)), cell=[5.0] * 3, pbc=True)
        shortest = min_pair_distances(atoms)
        if 0.3 < min(shortest.values()) < 0.5 and shortest[("O", "O")] < 0.8 and shortest[("Si", "Si")] < 1.6:
            return atoms


def _data_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_calculator_md_and_exported_table_are_one_tabulation(fitted, small_config, tmp_path):
    composite = fitted["models"]["composite"]
    calculator_table = AuxTable.from_xml(composite, component_labels(composite)["aux"])  # what GapCalculator uses
    # the MD driver writes its pair_style table with exactly this call (md/forces.py)
    md_file = tmp_path / "aux.table"
    calculator_table.write_lammps(md_file, ["Si", "O"])
    exported = Path(fitted["aux_table"])
    assert _data_lines(md_file) == _data_lines(exported), "MD and the exported table differ"

    lammps = LammpsReference((exported.parent / "aux.lammps").read_text().splitlines(), ["Si", "O"])
    for pair, r_cut in small_config.aux.pair_cutoffs().items():
        grid = np.round(np.arange(0.0513, r_cut - 0.001, 0.0137), 6)  # not on any table's grid
        e_calc, f_calc = calculator_table.pair(*pair).curve(grid)
        e_lmp, f_lmp = [], []
        for r in grid:
            label = lammps.compute(isolated(pair[0] + pair[1], [[0, 0, 0], [r, 0, 0]]))
            assert label.ok, label.reason
            e_lmp.append(label.energy)
            f_lmp.append(label.forces[1, 0])
        e_lmp, f_lmp = np.array(e_lmp), np.array(f_lmp)
        # LAMMPS interpolates linearly on its own 20000 points uniform in r^2 (1.3e-3 A apart at 0.05 A)
        np.testing.assert_allclose(e_lmp, e_calc, rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(f_lmp, f_calc, rtol=2e-3, atol=1e-3)
        inside = e_lmp > 1e-6
        assert np.all(np.diff(e_lmp[inside]) < 0) and np.all(f_lmp[inside] > 0), f"{pair}: LAMMPS table not repulsive"


def test_table_matches_the_gap_on_a_compressed_cell(fitted, small_config):
    """A cell where every pair is inside its cutoff and one is below the scanned range."""
    exported = Path(fitted["aux_table"])
    table = LammpsReference((exported.parent / "aux.lammps").read_text().splitlines(), ["Si", "O"])
    atoms = _dense_random_sio2(seed=7)
    shortest = min_pair_distances(atoms)
    assert shortest[("Si", "O")] < 1.1 and shortest[("Si", "Si")] < 1.6 and min(shortest.values()) < 0.5
    label = table.compute(atoms)
    atoms.calc = Potential(param_filename=fitted["aux_xml"])
    assert atoms.get_potential_energy() > 100.0
    np.testing.assert_allclose(label.energy, atoms.get_potential_energy(), rtol=1e-3)
    np.testing.assert_allclose(label.forces, atoms.get_forces(), rtol=1e-3, atol=1e-3 * np.abs(label.forces).max())
