"""The composite GAP: aux + main exactly, conservative forces, repulsion where the plain GAP has none,
and a predicted variance that grows away from the training data."""

import ase.io
import numpy as np
import pytest

from alcgap.calculator import GapCalculator
from alcgap.structures import beta_cristobalite, min_pair_distances, rattled

from conftest import finite_difference_forces


@pytest.fixture(scope="module")
def models(fitted):
    return {name: xml for name, xml in fitted["models"].items()}


def _short_pair_structures(n, seed):
    """SiO2 cells rattled and compressed so that some pairs are inside the aux cutoffs."""
    return [rattled(beta_cristobalite(a=7.16 * 0.7), 0.1, seed=seed + k, strain=0.05) for k in range(n)]


def test_composite_is_aux_plus_main(models):
    composite = GapCalculator(models["composite"])
    main = GapCalculator(models["composite"], component="main")
    aux = GapCalculator(models["composite"], component="aux")
    for atoms in _short_pair_structures(4, seed=10):
        assert min_pair_distances(atoms)[("Si", "O")] < 1.1
        parts = {}
        for name, calc in (("composite", composite), ("main", main), ("aux", aux)):
            work = atoms.copy()
            work.calc = calc
            parts[name] = (work.get_potential_energy(), work.get_forces(), work.get_stress())
        assert parts["aux"][0] > 1.0  # the aux is active on these structures
        # the composite evaluates its aux from exact tables of the QUIP aux (see AuxTable)
        assert parts["composite"][0] == pytest.approx(parts["main"][0] + parts["aux"][0], rel=1e-8)
        for k in (1, 2):
            expected = parts["main"][k] + parts["aux"][k]
            # derivatives of the cubic Hermite tables: ~1e-6 of the largest force (thousands of eV/A
            # at these very short pairs); 1e-5 still catches a missing or doubled aux term
            np.testing.assert_allclose(parts["composite"][k], expected, atol=1e-5 * np.abs(expected).max())


def test_tabulated_aux_equals_quip_aux_even_below_its_scan(models):
    from alcgap.auxiliary import AuxTable
    from alcgap.calculator import component_labels

    aux = AuxTable.from_xml(models["composite"], component_labels(models["composite"])["aux"])
    quip = GapCalculator(models["composite"], component="aux")
    structures = _short_pair_structures(2, seed=50)
    collapsed = structures[0].copy()
    collapsed.positions[1] = collapsed.positions[0] + [0.3, 0.0, 0.0]  # below the scanned 0.5 A
    for atoms in structures + [collapsed]:
        ours = aux.calculate(atoms)
        work = atoms.copy()
        work.calc = quip
        assert ours["energy"] == pytest.approx(work.get_potential_energy(), rel=1e-8)
        np.testing.assert_allclose(ours["forces"], work.get_forces(), atol=1e-6 * np.abs(work.get_forces()).max())
        np.testing.assert_allclose(ours["stress"], work.get_stress(), atol=1e-6 * np.abs(work.get_stress()).max())
    # closer than any GAP can carry (0.005 A): the table's analytic core still repels, harder
    fused = collapsed.copy()
    fused.positions[1] = fused.positions[0] + [0.005, 0.0, 0.0]
    assert aux.calculate(fused)["energy"] > aux.calculate(collapsed)["energy"] > 1e3


def test_forces_are_minus_the_energy_gradient(models):
    atoms = _short_pair_structures(1, seed=20)[0]
    calc = GapCalculator(models["composite"])
    work = atoms.copy()
    work.calc = calc
    forces = work.get_forces()
    # atoms with the largest forces: those in short pairs, where the aux dominates
    pick = list(np.argsort(-np.linalg.norm(forces, axis=1))[:2]) + [5]
    fd = finite_difference_forces(atoms, calc, pick, delta=1e-5)
    np.testing.assert_allclose(forces[pick], fd, rtol=1e-4, atol=1e-4)


def test_stress_is_the_strain_derivative(models):
    atoms = rattled(beta_cristobalite(), 0.1, seed=4)
    calc = GapCalculator(models["composite"])
    work = atoms.copy()
    work.calc = calc
    stress = work.get_stress()
    eps, energies = 1e-5, []
    for sign in (1, -1):
        strained = atoms.copy()
        strain = np.eye(3)
        strain[2, 2] += sign * eps
        strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        strained.calc = calc
        energies.append(strained.get_potential_energy())
    assert stress[2] == pytest.approx((energies[0] - energies[1]) / (2 * eps) / atoms.get_volume(), rel=1e-3, abs=1e-5)


def test_compressed_cell_repels_with_composite_not_with_traditional(models):
    """The paper's point on the small scale: MD data has no short pairs, so a plain GAP does not
    know they are expensive; the composite does."""
    crystal = beta_cristobalite()
    compressed = beta_cristobalite(a=7.16 * 0.62)  # Si-O 0.96 A, inside the aux cutoff (1.1 A)
    rise = {}
    for name, xml in models.items():
        calc = GapCalculator(xml)
        energies = []
        for atoms in (crystal, compressed):
            work = atoms.copy()
            work.calc = calc
            energies.append(work.get_potential_energy() / len(work))
        rise[name] = energies[1] - energies[0]
    print("energy rise on compression (eV/atom):", rise)
    assert rise["composite"] > 10.0  # eV/atom: strongly repulsive
    assert rise["traditional"] < 0.2 * rise["composite"]


def test_compressed_dimers_repel_with_composite(fitted):
    short = fitted["short_range_eV"]
    for pair, values in short.items():
        assert values["composite"] > 1.0, pair
    assert short["Si-O"]["composite"] > 10 * abs(short["Si-O"]["traditional"])


def test_variance_grows_away_from_the_training_data(fitted, models):
    calc = GapCalculator(models["composite"], variance=True)
    test_frames = ase.io.read(fitted["run_dir"] + "/test.xyz", ":")

    def mean_variance(structures):
        values = []
        for atoms in structures:
            work = atoms.copy()
            work.calc = calc
            values.append(calc.get_variance(work).mean())
        return float(np.mean(values))

    like = mean_variance(test_frames)
    unlike = mean_variance(_short_pair_structures(3, seed=30))
    assert np.isfinite(like) and like >= 0.0
    assert unlike > 5.0 * like


def test_variance_on_short_pairs_and_unchanged_energies(models):
    """Inside the aux cutoffs (where QUIP's Sum potential would abort on the aux's variance) the
    composite still gives the main GAP's variance, and the same energy and forces as without."""
    atoms = _short_pair_structures(1, seed=40)[0]
    with_variance = GapCalculator(models["composite"], variance=True)
    plain = GapCalculator(models["composite"])
    main = GapCalculator(models["composite"], component="main", variance=True)
    results = []
    for calc in (with_variance, plain, main):
        work = atoms.copy()
        work.calc = calc
        results.append((work.get_potential_energy(), work.get_forces()))
    variance = with_variance.get_variance(atoms)
    assert variance.shape == (len(atoms),) and np.all(variance > 0.0)
    np.testing.assert_allclose(variance, main.get_variance(atoms), rtol=1e-12)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=1e-9)
    # and QUIP's own Sum potential (what gap_fit wrote) agrees with ours
    from quippy.potential import Potential

    work = atoms.copy()
    work.calc = Potential(param_filename=models["composite"])
    assert work.get_potential_energy() == pytest.approx(results[1][0], rel=1e-8)


def test_unknown_component_is_rejected(models):
    with pytest.raises(ValueError, match="aux"):
        GapCalculator(models["traditional"], component="aux")


def test_public_calculator_is_the_class(models):
    import alcgap

    calc = alcgap.GapCalculator(models["composite"])
    assert isinstance(calc, alcgap.GapCalculator) and "variance" in (alcgap.GapCalculator.__doc__ or "")
