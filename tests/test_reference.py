"""The classical LAMMPS reference behind the labelling interface."""

import numpy as np
import pytest
from ase import Atoms

from alcgap.reference import LabelStatus, LammpsReference
from alcgap.reference.base import isolated
from alcgap.structures import beta_cristobalite, rattled

from conftest import finite_difference_forces


def test_vashishta_crystal_energy_forces_stress(vashishta):
    atoms = rattled(beta_cristobalite(), 0.05, seed=1)
    label = vashishta.compute(atoms)
    assert label.ok
    # Vashishta SiO2 binds at about -9 eV per atom near the crystal
    assert -10.0 < label.energy / len(atoms) < -8.0
    assert label.forces.shape == (24, 3) and label.stress.shape == (6,)


def test_forces_are_minus_the_energy_gradient(vashishta):
    from ase.calculators.calculator import Calculator

    atoms = rattled(beta_cristobalite(), 0.08, seed=2)
    label = vashishta.compute(atoms)

    class ViaReference(Calculator):
        implemented_properties = ["energy"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": vashishta.compute(self.atoms).energy}

    fd = finite_difference_forces(atoms, ViaReference(), [0, 9])
    np.testing.assert_allclose(label.forces[[0, 9]], fd, atol=1e-4)


def test_stress_is_the_strain_derivative(vashishta):
    atoms = rattled(beta_cristobalite(), 0.05, seed=3)
    label = vashishta.compute(atoms)
    eps = 1e-5
    energies = []
    for sign in (1, -1):
        strained = atoms.copy()
        strain = np.eye(3)
        strain[0, 0] += sign * eps
        strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        energies.append(vashishta.compute(strained).energy)
    sigma_xx = (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume()
    assert label.stress[0] == pytest.approx(sigma_xx, rel=1e-3, abs=1e-5)


def test_isolated_atoms_and_dimers(vashishta):
    assert vashishta.isolated_atom_energy("Si") == 0.0
    close = vashishta.compute(isolated("SiO", [[0, 0, 0], [0.8, 0, 0]]))
    assert close.ok and close.stress is None and close.energy > 100.0


def test_failure_is_a_status_not_an_exception(vashishta):
    label = vashishta.compute(Atoms("SiN", positions=[[0, 0, 0], [2, 0, 0]], cell=[10] * 3, pbc=True))
    assert label.status is LabelStatus.PROGRAM_ERROR and "N" in label.reason
    with pytest.raises(ValueError, match="failed label"):
        label.attach(Atoms("Si"))


def test_missing_potential_file_is_rejected_at_construction():
    with pytest.raises(FileNotFoundError, match="/no/such.vashishta"):
        LammpsReference(["pair_style vashishta", "pair_coeff * * /no/such.vashishta Si O"], ["Si", "O"])
    with pytest.raises(ValueError, match="pair_style"):
        LammpsReference(["pair_coeff * * x Si O"], ["Si", "O"])


def test_settings_hash_identifies_the_settings(vashishta):
    other = LammpsReference(["pair_style lj/cut 5.0", "pair_coeff * * 0.01 2.0"], ["Si", "O"])
    assert vashishta.settings_hash() != other.settings_hash()
    assert vashishta.settings_hash() == LammpsReference.vashishta_sio2().settings_hash()
