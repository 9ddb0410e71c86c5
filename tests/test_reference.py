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


# --------------------------------------------------------------------------- type order (issue 15)

def _frames():
    """A dimer, a trimer and a bulk cell, with Si and O in both orders of appearance."""
    return [isolated("SiO", [[0, 0, 0], [1.6, 0, 0]]), isolated("OSiO", [[-1.6, 0, 0], [0, 0, 0], [1.2, 1.1, 0]]),
            rattled(beta_cristobalite(), 0.05, seed=4)]


@pytest.mark.parametrize("element_order", ["Si O", "O Si"])
@pytest.mark.parametrize("species", [["Si", "O"], ["O", "Si"]])
def test_type_order_comes_from_the_pair_coeff_names(vashishta, element_order, species):
    from alcgap.config import LammpsReferenceSettings
    from alcgap.lammps_module import potentials_dir
    from alcgap.reference import make_reference

    commands = ["pair_style vashishta", f"pair_coeff * * {potentials_dir() / 'SiO.1990.vashishta'} {element_order}"]
    reference = make_reference(LammpsReferenceSettings(pair_commands=commands), species)
    assert reference.species == element_order.split()
    for frame in _frames():
        label, expected = reference.compute(frame), vashishta.compute(frame)
        assert label.ok, label.reason
        assert label.energy == pytest.approx(expected.energy, abs=1e-9)
        np.testing.assert_allclose(label.forces, expected.forces, atol=1e-9)
    # the physics, not only agreement: Si-O binds at 1.6 A, the crystal near -9 eV/atom (with Si and O
    # swapped, as a species-ordered mapping did with 'O Si', the trimer gave -14.7 eV and the crystal +19 eV/atom)
    dimer, trimer, bulk = (reference.compute(frame).energy for frame in _frames())
    assert -12.0 < dimer < -9.0 and -20.0 < trimer < -17.0 and -10.0 < bulk / 24 < -8.0


def test_a_contradictory_type_order_is_refused(tmp_path):
    from alcgap.config import ConfigError, load_fit_config
    from alcgap.md.classical import run_classical_md
    from alcgap.md.protocols import nvt
    from alcgap.reference import vashishta_sio2_commands

    with pytest.raises(ConfigError, match=r"reference.types \['O', 'Si'\] contradicts .* give \['Si', 'O'\]"):
        load_fit_config({"species": ["O", "Si"], "reference": {"kind": "lammps", "types": ["O", "Si"]}})
    with pytest.raises(ValueError, match="contradicts"):
        LammpsReference(vashishta_sio2_commands(), ["O", "Si"])
    with pytest.raises(ValueError, match="contradicts"):
        run_classical_md(beta_cristobalite(), vashishta_sio2_commands(), ["O", "Si"], [nvt(10, 300.0)])
    # per-type-pair coefficients name no elements: the order must be given
    lj = ["pair_style lj/cut 5.0", "pair_coeff 1 1 0.01 2.0", "pair_coeff 2 2 0.02 2.5", "pair_coeff 1 2 0.015 2.2"]
    with pytest.raises(ConfigError, match="reference.types: the pair_coeff lines name no elements"):
        load_fit_config({"reference": {"kind": "lammps", "pair_commands": lj}})
    assert load_fit_config({"species": ["O", "Si"], "reference": {"kind": "lammps", "pair_commands": lj,
                                                                  "types": ["Si", "O"]}}).reference.lammps_types() == ["Si", "O"]


def test_the_default_reference_refuses_other_species():
    from alcgap.config import ConfigError, load_fit_config

    with pytest.raises(ConfigError, match="reference.pair_commands: not given, so the reference is the shipped Vashishta"):
        load_fit_config({"species": ["Si", "C"], "aux": {"cutoffs": {"Si-Si": 1.6, "Si-C": 1.1, "C-C": 0.8}},
                         "data": {"structure": "/etc/hostname"}})


# --------------------------------------------------------------------------- a charged model (BKS SiO2)

#: van Beest, Kramer, van Santen (1990): Buckingham A (eV), rho (A), C (eV A^6) per pair, types Si=1, O=2
BKS_COEFFS = ["pair_coeff 1 1 0.0 1.0 0.0", "pair_coeff 1 2 18003.7572 0.205205 133.5381",
              "pair_coeff 2 2 1388.7730 0.362319 175.0"]
BKS_CHARGES = {"Si": 2.4, "O": -1.2}
#: TRAP: coul/long tabulates erfc by default (pair_modify table 12); its forces then differ from
#: the energy's gradient by 0.014 eV/A in a 24-atom cell (seen here), 6e-6 with table 0
BKS_EWALD = ["pair_style buck/coul/long 5.5 8.0", *BKS_COEFFS, "pair_modify table 0", "kspace_style ewald 1.0e-8"]
#: real-space Coulomb, exact for isolated atoms and dimers within 10 A (in a periodic cell a plain
#: cut sum jumps by eV whenever an ion crosses the cutoff)
BKS_CUT = ["pair_style buck/coul/cut 5.5 10.0", *BKS_COEFFS]
#: damped shifted-force Coulomb (Buckingham written as Born with sigma = D = 0): smooth, labels both
#: cells (-19.05 eV/atom against Ewald's -19.04 for the crystal) and isolated atoms and dimers
BKS_DSF = ["pair_style born/coul/dsf 0.2 5.5 10.0", "pair_coeff 1 1 0.0 1.0 0.0 0.0 0.0",
           "pair_coeff 1 2 18003.7572 0.205205 0.0 133.5381 0.0", "pair_coeff 2 2 1388.7730 0.362319 0.0 175.0 0.0"]


def _bks_pair(a: str, b: str, r):
    """The BKS pair energy (eV), r in Angstrom; 14.399645 eV A/e^2 is LAMMPS' metal-unit Coulomb constant."""
    A, rho, C = {("Si", "O"): (18003.7572, 0.205205, 133.5381), ("O", "O"): (1388.7730, 0.362319, 175.0)}[(a, b)]
    return A * np.exp(-r / rho) - C / r**6 + 14.399645 * BKS_CHARGES[a] * BKS_CHARGES[b] / r


def test_bks_cell_energy_and_forces():
    from ase.calculators.calculator import Calculator

    bks = LammpsReference(BKS_EWALD, ["Si", "O"], charges=BKS_CHARGES)
    assert bks.atom_style == "charge"
    atoms = rattled(beta_cristobalite(), 0.05, seed=1)
    label = bks.compute(atoms)
    assert label.ok, label.reason
    # fixed-charge SiO2 binds at about -19 eV per atom (Madelung energy included)
    assert np.isfinite(label.energy) and -20.0 < label.energy / len(atoms) < -18.0

    class ViaReference(Calculator):
        implemented_properties = ["energy"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": bks.compute(self.atoms).energy}

    fd = finite_difference_forces(atoms, ViaReference(), [0, 9])
    np.testing.assert_allclose(label.forces[[0, 9]], fd, atol=1e-4)
    # the same model with the types the other way round gives the same label
    swapped = LammpsReference(["pair_style buck/coul/long 5.5 8.0", "pair_coeff 2 2 0.0 1.0 0.0",
                               "pair_coeff 1 2 18003.7572 0.205205 133.5381", "pair_coeff 1 1 1388.7730 0.362319 175.0",
                               "pair_modify table 0", "kspace_style ewald 1.0e-8"], ["O", "Si"], charges=BKS_CHARGES)
    other = swapped.compute(atoms)
    assert other.energy == pytest.approx(label.energy, abs=1e-8)
    np.testing.assert_allclose(other.forces, label.forces, atol=1e-8)
    # a charged periodic cell is refused, not labelled
    charged = atoms.copy()
    del charged[0]
    refused = bks.compute(charged)
    assert refused.status is LabelStatus.PROGRAM_ERROR and "net charge -2.4 e" in refused.reason
    # Ewald cannot sum an isolated structure: a clear status, not LAMMPS' error later
    assert "periodic" in bks.compute(isolated("Si")).reason


def test_bks_dimers_are_the_analytic_pair_and_repel_at_short_range():
    bks = LammpsReference(BKS_CUT, ["Si", "O"], charges=BKS_CHARGES)
    assert bks.isolated_atom_energy("Si") == 0.0  # a lone ion: net charge is fine off a periodic cell
    for a, b, r in [("Si", "O", np.arange(1.15, 3.0, 0.05)), ("O", "O", np.arange(1.5, 3.0, 0.05))]:
        labels = [bks.compute(isolated(a + b, [[0, 0, 0], [x, 0, 0]])) for x in r]
        assert all(label.ok for label in labels)
        np.testing.assert_allclose([label.energy for label in labels], _bks_pair(a, b, r), rtol=1e-10)
    # O-O pushes apart from 1.5 A on; Si-O pushes apart below its 1.4 A pair minimum and pulls at
    # 1.6 A. (Below about 1.15 A the -C/r^6 term wins and BKS collapses: no test there.)
    push = lambda a, b, x: bks.compute(isolated(a + b, [[0, 0, 0], [x, 0, 0]])).forces[1, 0]  # noqa: E731
    assert all(push("O", "O", x) > 0 for x in (1.5, 2.0, 2.5))
    assert push("Si", "O", 1.25) > 1.0 and push("Si", "O", 1.6) < -1.0


def test_bks_classical_md_uses_the_same_types_and_charges():
    from alcgap.md.classical import run_classical_md
    from alcgap.md.forces import ForceField
    from alcgap.md.lammps import run_md
    from alcgap.md.protocols import nvt
    from alcgap.structures import min_pair_distances

    bks = LammpsReference(BKS_EWALD, ["Si", "O"], charges=BKS_CHARGES)
    start = rattled(beta_cristobalite(), 0.02, seed=5)
    frames = run_classical_md(start, BKS_EWALD, bks.species, [nvt(100, 300.0)], timestep=1.0, sample_every=25,
                              charges=BKS_CHARGES)
    assert len(frames) == 4
    for frame in frames:
        assert frame.get_chemical_formula() == start.get_chemical_formula()
        assert min_pair_distances(frame)[("Si", "O")] > 1.4  # held near 1.6 A, not collapsed
    # the driver's potential energy is the reference's label of the same frame: same mapping, same charges
    result = run_md(start, ForceField.classical(BKS_EWALD, bks.species), [nvt(50, 300.0)], sample_every=25,
                    keep_frames=True, charges=BKS_CHARGES)
    assert not result.stopped_early, result.stop_reason
    for frame in result.frames:
        assert bks.compute(frame).energy == pytest.approx(frame.get_potential_energy(), abs=1e-5)
    with pytest.raises(ValueError, match="net charge"):
        run_classical_md(start[1:], BKS_EWALD, bks.species, [nvt(10, 300.0)], charges=BKS_CHARGES)


def test_charge_settings_are_checked_at_load():
    from alcgap.config import ConfigError, load_fit_config

    def refused(reference, *words):
        with pytest.raises(ConfigError) as err:
            load_fit_config({"reference": {"kind": "lammps", "types": ["Si", "O"], **reference}})
        for word in words:
            assert word in str(err.value)

    refused({"pair_commands": BKS_CUT}, "reference.charges", "Coulomb")
    refused({"pair_commands": BKS_CUT, "charges": {"Si": 2.4}}, "reference.charges", "one charge for each")
    refused({"pair_commands": BKS_CUT, "charges": {"Si": 2.4, "O": 1.2}}, "reference.charges", "one sign")
    refused({"pair_commands": BKS_CUT, "charges": {"Si": 2.4, "O": -1.0}}, "reference.charges", "net charge of +3.2 e")
    refused({"pair_commands": BKS_CUT, "charges": BKS_CHARGES, "atom_style": "atomic"}, "reference.atom_style")
    refused({"pair_commands": BKS_EWALD, "charges": BKS_CHARGES}, "reference.pair_commands", "kspace_style", "born/coul/dsf")
    refused({"pair_commands": None, "types": None, "charges": BKS_CHARGES}, "reference.charges", "no Coulomb term")
    config = load_fit_config({"reference": {"kind": "lammps", "pair_commands": BKS_CUT, "types": ["Si", "O"],
                                            "charges": BKS_CHARGES}})
    assert config.reference.atom_style is None


# --------------------------------------------------------------------------- data.n_atoms

def test_n_atoms_defaults_to_the_structure(tmp_path):
    import ase.io

    from alcgap.config import ConfigError, load_fit_config
    from alcgap.workflow.stages.bootstrap import starting_structure

    assert load_fit_config({}).data.n_atoms == 24
    from ase.spacegroup import crystal

    # a 9-atom SiO2 cell in alpha-quartz's space group (random positions would put atoms on top of
    # each other, which the config refuses): the size is what counts
    quartz = tmp_path / "sio2-9.xyz"
    cell = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191)], spacegroup=154,
                   cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    assert len(cell) == 9
    ase.io.write(quartz, cell)
    config = load_fit_config({"data": {"structure": str(quartz)}})
    assert config.data.n_atoms == 9 and len(starting_structure(config.data)) == 9
    assert len(starting_structure(load_fit_config({"data": {"structure": str(quartz), "n_atoms": 18}}).data)) == 18
    with pytest.raises(ConfigError, match=r"data.n_atoms=24: .* has 9 atoms, so the cell can only hold a multiple of 9"):
        load_fit_config({"data": {"structure": str(quartz), "n_atoms": 24}})


def test_bootstrap_runs_a_charged_reference_with_its_charges():
    from alcgap.config import load_fit_config
    from alcgap.reference import make_reference
    from alcgap.structures import min_pair_distances
    from alcgap.workflow.stages.bootstrap import frames_of

    config = load_fit_config({"species": ["O", "Si"],
                              "reference": {"kind": "lammps", "pair_commands": BKS_DSF, "types": ["Si", "O"],
                                            "charges": BKS_CHARGES},
                              "data": {"protocol": [{"steps": 100, "t_start": 300, "t_end": 300}], "sample_every": 50}})
    reference = make_reference(config.reference, config.species)
    frames = frames_of(config)
    assert len(frames) == 2
    crystal = reference.compute(beta_cristobalite()).energy / 24
    assert -19.5 < crystal < -18.5  # the charges reached the reference
    for frame in frames:
        label = reference.compute(frame)
        assert label.ok, label.reason
        # 100 fs at 300 K from the crystal: still the crystal, not a collapse
        assert abs(label.energy / len(frame) - crystal) < 0.3 and min_pair_distances(frame)[("Si", "O")] > 1.4
