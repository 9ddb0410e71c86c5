"""Structure analysis: RDFs, coordination, bond angles, the clustering detector, VDOS, reports."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import matplotlib
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from alcgap.analysis.clustering import ClusteringCriteria, analyse_trajectory, detect_clustering
from alcgap.analysis.bonds import bond_angle_distribution, bond_angles, coordination_numbers
from alcgap.analysis.rdf import PartialRDF, frame_neighbours, frame_rdf, partial_rdfs, rdf_distance, trajectory_neighbours
from alcgap.analysis.vdos import MEV_PER_ROOT_EIGENVALUE, force_constants, phonon_energies, vdos, vdos_similarity
from alcgap.report.write import main_report, write_report
from alcgap.structures import beta_cristobalite, rattled, supercell_with_atoms

SI_O = 1.55  # Si-O bond of beta_cristobalite(): a * sqrt(3) / 8
A = 7.16


@pytest.fixture(scope="module")
def crystal() -> Atoms:
    """648-atom beta-cristobalite, 21.5 A cube: RDFs to 10 A stay below half the cell."""
    return supercell_with_atoms(beta_cristobalite(), 648)


def ase_histogram_rdf(atoms: Atoms, r_max: float, bin_width: float, a: str, b: str) -> np.ndarray:
    """Independent partial RDF from ASE's own neighbour list (both directions listed)."""
    i, j, d = neighbor_list("ijd", atoms, r_max)
    symbols = np.array(atoms.get_chemical_symbols())
    d = d[(symbols[i] == a) & (symbols[j] == b)]
    edges = np.arange(int(round(r_max / bin_width)) + 1) * bin_width
    counts, _ = np.histogram(d, bins=edges)
    n_a, n_b = (symbols == a).sum(), (symbols == b).sum() - (a == b)
    return counts * atoms.get_volume() / (n_a * n_b * 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3))


# ---------------------------------------------------------------- RDFs


def test_rdf_peaks_sit_at_the_crystal_neighbour_distances(crystal):
    rdf = partial_rdfs([rattled(crystal, 0.03, seed) for seed in range(2)], r_max=8.0, bin_width=0.02)
    first_peak = {pair: rdf.r[np.argmax(np.where(rdf.r < 4.0, g, 0.0))] for pair, g in rdf.g.items()}
    assert first_peak[("Si", "O")] == pytest.approx(SI_O, abs=0.03)
    assert first_peak[("O", "O")] == pytest.approx(SI_O * np.sqrt(8 / 3), abs=0.03)  # tetrahedron edge 2.53
    assert first_peak[("Si", "Si")] == pytest.approx(A * np.sqrt(3) / 4, abs=0.03)  # 3.10
    # nothing is closer than the bond: g vanishes below it
    assert all(np.all(g[rdf.r < 1.3] == 0.0) for g in rdf.g.values())


def test_rdf_normalisation_counts_neighbours_and_tends_to_one(crystal):
    frames = [rattled(crystal, 0.15, seed) for seed in range(3)]
    rdf = partial_rdfs(frames, r_max=10.0, bin_width=0.02)
    volume = crystal.get_volume()
    n = {"Si": 216, "O": 432}
    for (a, b), g in rdf.g.items():
        density = (n[b] - (a == b)) / volume
        running = np.cumsum(4 * np.pi * rdf.r**2 * g * rdf.bin_width) * density
        # the running integral of g is the mean number of b atoms around an a atom ...
        if (a, b) == ("Si", "O"):
            assert running[rdf.r < 3.3][-1] == pytest.approx(4.0, abs=0.05)
        if (a, b) == ("O", "O"):
            assert running[rdf.r < 3.3][-1] == pytest.approx(6.0, abs=0.05)
        # ... and at large r it approaches the ideal-gas count, g -> 1
        ideal = density * 4 / 3 * np.pi * 10.0**3
        assert running[-1] / ideal == pytest.approx(1.0, abs=0.04)


def test_rdf_of_an_ideal_gas_is_one_for_like_and_unlike_pairs():
    """16 Si among 400 O: a like pair normalised by N_Si instead of N_Si - 1 would be 6% low."""
    rng = np.random.default_rng(7)
    frames = [Atoms("Si16O400", positions=rng.uniform(0, 22.0, (416, 3)), cell=[22.0] * 3, pbc=True)
              for _ in range(100)]
    rdf = partial_rdfs(frames, r_max=10.0, bin_width=0.1)
    shell = rdf.r**2  # weights of the pair counts: the mean of g over the volume to 10 A
    for pair, g in rdf.g.items():
        assert np.sum(g * shell) / np.sum(shell) == pytest.approx(1.0, abs=0.025), pair


@pytest.mark.parametrize("n_atoms, shear", [(192, 0.0), (192, 2.0), (24, 0.0)])
def test_rdf_matches_an_independent_histogram(n_atoms, shear):
    """The k-d tree path (orthorhombic), the matscipy path (sheared cell) and a cell narrower than
    2 r_max, where atoms meet their own images (with a warning), against ASE's neighbour list."""
    atoms = rattled(supercell_with_atoms(beta_cristobalite(), n_atoms), 0.1, seed=4)
    cell = atoms.cell.array.copy()
    cell[1, 0] += shear
    atoms.set_cell(cell, scale_atoms=True)
    if n_atoms == 24:
        with pytest.warns(UserWarning, match="own periodic images"):
            rdf = frame_rdf(atoms, r_max=5.0, bin_width=0.05)
    else:
        rdf = frame_rdf(atoms, r_max=5.0, bin_width=0.05)
    for a, b in [("Si", "O"), ("O", "O"), ("Si", "Si")]:
        np.testing.assert_allclose(rdf.g[(a, b)], ase_histogram_rdf(atoms, 5.0, 0.05, a, b), atol=1e-10)
    assert rdf.g[("Si", "O")].max() > 1.0


def test_trajectory_neighbours_find_exactly_the_pairs_of_a_fresh_search(crystal):
    frames = [rattled(crystal, 0.05, seed) for seed in range(4)]
    frames[1].positions[7] += crystal.cell[0]  # wrapped across the cell: not a real move
    frames[2] = rattled(crystal, 0.4, seed=9)  # moves past the skin: forces a new search
    frames[3].set_cell(crystal.cell.array * 1.01, scale_atoms=True)  # a new cell: a new search
    for atoms, listed in zip(frames, trajectory_neighbours(frames, 5.0, skin=1.0)):
        fresh = frame_neighbours(atoms, 5.0)
        assert set(zip(listed.i.tolist(), listed.j.tolist())) == set(zip(fresh.i.tolist(), fresh.j.tolist()))
        np.testing.assert_allclose(np.sort(listed.d), np.sort(fresh.d), atol=1e-9)


def test_rdf_distance_is_zero_for_the_same_structure_and_grows_with_disorder(crystal):
    base = partial_rdfs([crystal], 6.0)
    warm = partial_rdfs([rattled(crystal, 0.05, 1)], 6.0)
    hot = partial_rdfs([rattled(crystal, 0.3, 1)], 6.0)
    assert rdf_distance(base, base) == 0.0
    assert 0.0 < rdf_distance(base, warm) < rdf_distance(base, hot)
    restored = PartialRDF.from_dict(json.loads(json.dumps(warm.as_dict())))
    assert rdf_distance(warm, restored) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- coordination and angles


def test_coordination_and_bond_angles_of_beta_cristobalite(crystal):
    coordination = coordination_numbers(crystal, {"Si-O": 2.0})
    assert coordination.distribution("Si", "O") == {4: 1.0}
    assert coordination.distribution("O", "Si") == {2: 1.0}
    assert coordination.mean("O", "O") == 0.0
    o_si_o = bond_angles(crystal, ("O", "Si", "O"))
    assert len(o_si_o) == 6 * 216
    np.testing.assert_allclose(o_si_o, np.degrees(np.arccos(-1 / 3)), atol=1e-6)  # tetrahedral 109.47
    si_o_si = bond_angles(crystal, ("Si", "O", "Si"))
    assert len(si_o_si) == 432
    np.testing.assert_allclose(si_o_si, 180.0, atol=1e-6)  # idealised cristobalite: straight bridges
    centres, density = bond_angle_distribution([rattled(crystal, 0.05, 2)], ("O", "Si", "O"), bin_width=2.0)
    assert centres[np.argmax(density)] == pytest.approx(109.47, abs=3.0)
    assert np.sum(density) * 2.0 == pytest.approx(1.0)


# ---------------------------------------------------------------- clustering detector


def planted_cluster(crystal: Atoms, symbols: str = "Si2O3", seed: int = 0) -> tuple[Atoms, list[int]]:
    """Clear a 3.8 A sphere of the crystal and squeeze a few atoms into 1 A around its centre."""
    centre = crystal.cell.array.sum(axis=0) / 2 + 0.3
    keep = np.linalg.norm(crystal.positions - centre, axis=1) > 3.8
    out = crystal[keep]
    rng = np.random.default_rng(seed)
    cluster = Atoms(symbols, positions=centre + rng.uniform(-0.5, 0.5, size=(len(Atoms(symbols)), 3)))
    first = len(out)
    out += cluster
    return out, list(range(first, len(out)))


def test_detector_passes_clean_and_rattled_crystals(crystal):
    for atoms in (crystal, rattled(crystal, 0.04, seed=5)):
        verdict = detect_clustering(atoms)
        assert verdict.verdict == "clean", verdict.summary()
        assert verdict.flagged_atoms == [] and verdict.groups == []
        assert verdict.mean_coordination["Si"] == pytest.approx(4.0)


def test_detector_flags_a_planted_cluster_and_names_exactly_its_atoms(crystal):
    atoms, planted = planted_cluster(crystal)
    verdict = detect_clustering(atoms)
    assert verdict.verdict == "clustered"
    assert verdict.flagged_atoms == planted
    assert verdict.groups == [planted]
    assert verdict.formulas == ["Si2O3"]
    assert {p.pair for p in verdict.short_pairs} <= {"Si-Si", "Si-O", "O-O"}
    assert all(p.distance < 2.2 for p in verdict.short_pairs)
    record = json.loads(json.dumps(verdict.as_dict()))
    assert record["verdict"] == "clustered" and record["groups"] == [planted]


def test_detector_flags_overcoordination_without_short_pairs(crystal):
    """A 7-fold Si (pentagonal bipyramid, Si-O 1.95 A, O-O >= 2.29 A): no short pair, too many O."""
    atoms, _ = planted_cluster(crystal, symbols="Si")
    si = len(atoms) - 1
    angles = 2 * np.pi * np.arange(5) / 5
    directions = np.vstack([np.c_[np.cos(angles), np.sin(angles), np.zeros(5)], [[0, 0, 1], [0, 0, -1]]])
    atoms += Atoms("O7", positions=atoms.positions[si] + 1.95 * directions)
    verdict = detect_clustering(atoms)
    assert verdict.short_pairs == []
    assert [(f.index, f.kind, f.count) for f in verdict.coordination_flags] == [(si, "coordination", 7)]
    assert verdict.groups == [list(range(si, len(atoms)))]
    assert verdict.formulas == ["SiO7"]
    assert detect_clustering(atoms, ClusteringCriteria.sio2(max_coordination={"Si": 7, "O": 3})).clean


def test_rdf_distance_threshold_turns_the_verdict(crystal):
    reference = partial_rdfs([crystal], 6.0)
    frames = [rattled(crystal, 0.04, seed=1)]
    assert analyse_trajectory(frames, reference_rdf=reference).verdict == "clean"
    strict = ClusteringCriteria.sio2(max_rdf_distance=1e-3)
    analysis = analyse_trajectory(frames, strict, reference_rdf=reference)
    assert analysis.rdf_distance > 1e-3 and analysis.verdict == "clustered"
    assert detect_clustering(frames[0], strict, reference).verdict == "clustered"


def test_criteria_validate_pairs_and_serve_other_species():
    with pytest.raises(ValueError, match="Si-Xx"):
        ClusteringCriteria.sio2(min_distance={"Si-Xx": 1.0})
    with pytest.raises(ValueError, match="O-O"):
        ClusteringCriteria(min_distance={"Si-O": 1.3}, neighbour_cutoff={"Si-O": 2.0}, max_like_neighbours={"O": 1})
    assert ClusteringCriteria.sio2(min_distance={"O-Si": 1.2}).min_distance == {"Si-O": 1.2}
    argon = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(4)
    criteria = ClusteringCriteria.from_covalent_radii(["Ar"]).tightened_to([argon])
    assert criteria.min_distance["Ar-Ar"] == pytest.approx(0.8 * 5.26 / np.sqrt(2), abs=1e-3)
    assert detect_clustering(argon, criteria).clean
    squeezed = argon.copy()
    squeezed.positions[1] = squeezed.positions[0] + [1.0, 0.0, 0.0]
    assert detect_clustering(squeezed, criteria).flagged_atoms == [0, 1]


def test_detector_needs_a_list_reaching_its_thresholds(crystal):
    with pytest.raises(ValueError, match="r_max"):
        detect_clustering(frame_neighbours(crystal, 2.0))


# ---------------------------------------------------------------- VDOS


class HarmonicSprings(Calculator):
    """E = sum over springs of k/2 (|r_ij| - r0)^2 (eV, A), minimum image across periodic cells."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, springs: list[tuple[int, int]], k: float, r0: float):
        super().__init__()
        self.springs, self.k, self.r0 = np.array(springs), k, r0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j = self.springs.T
        d, length = find_mic(self.atoms.positions[j] - self.atoms.positions[i], self.atoms.cell, self.atoms.pbc)
        stretch = length - self.r0
        pull = (self.k * stretch / length)[:, None] * d  # force on i, towards j when stretched
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, i, pull)
        np.add.at(forces, j, -pull)
        self.results = {"energy": float(0.5 * self.k * np.sum(stretch**2)), "forces": forces}


def test_dimer_mode_is_hbar_sqrt_k_over_mu():
    k, r0 = 12.0, 1.6
    dimer = Atoms("SiO", positions=[[0, 0, 0], [r0, 0, 0]])
    energies = phonon_energies(dimer, HarmonicSprings([(0, 1)], k, r0))
    mu = 1.0 / (1.0 / dimer.get_masses()[0] + 1.0 / dimer.get_masses()[1])
    assert energies[-1] == pytest.approx(MEV_PER_ROOT_EIGENVALUE * np.sqrt(k / mu), rel=1e-6)
    assert np.all(np.abs(energies[:-1]) < 1.0)  # translations and rotations
    assert MEV_PER_ROOT_EIGENVALUE == pytest.approx(64.654, abs=1e-3)


def test_dimer_energy_agrees_with_ase_vibrations(tmp_path):
    from ase.vibrations import Vibrations

    dimer = Atoms("O2", positions=[[0, 0, 0], [1.3, 0, 0]])
    dimer.calc = HarmonicSprings([(0, 1)], 20.0, 1.3)
    vib = Vibrations(dimer, name=str(tmp_path / "vib"), delta=0.01, nfree=2)
    vib.run()
    ase_mode = 1000.0 * np.real(vib.get_energies()).max()
    assert phonon_energies(dimer, dimer.calc).max() == pytest.approx(ase_mode, rel=1e-6)


def test_periodic_chain_modes_follow_the_dispersion():
    """N atoms, spacing a, springs k, ring of period N a: omega_n = 2 sqrt(k/m) |sin(pi n / N)|."""
    n, a, k = 8, 2.5, 5.0
    chain = Atoms(f"Si{n}", positions=[[a * s, 0, 0] for s in range(n)], cell=[n * a, 10, 10], pbc=True)
    calc = HarmonicSprings([(s, (s + 1) % n) for s in range(n)], k, a)
    phi = force_constants(chain, calc)
    np.testing.assert_allclose(phi, phi.T, atol=1e-12)
    energies = phonon_energies(chain, calc)
    longitudinal = np.sort(energies[np.abs(energies) > 1.0])
    m = chain.get_masses()[0]
    analytic = np.sort(2 * np.sqrt(k / m) * np.abs(np.sin(np.pi * np.arange(1, n) / n))) * MEV_PER_ROOT_EIGENVALUE
    np.testing.assert_allclose(longitudinal, analytic, rtol=1e-6)


def test_vdos_similarity_is_one_with_itself_and_drops_when_shifted():
    modes = np.linspace(5.0, 140.0, 60)
    base = vdos(modes, sigma=2.0, e_max=160.0)
    assert np.trapezoid(base.dos, base.energy) == pytest.approx(1.0)
    assert vdos_similarity(base, base) == pytest.approx(1.0, abs=1e-12)
    shifted = [vdos_similarity(base, vdos(modes + shift, sigma=2.0, e_max=160.0)) for shift in (1.0, 3.0, 10.0)]
    assert 1.0 > shifted[0] > shifted[1] > shifted[2]
    stiffer_top = vdos(np.where(modes > 100.0, modes + 10.0, modes), sigma=2.0, e_max=160.0)
    assert vdos_similarity(base, stiffer_top) < 0.95
    assert vdos_similarity(base, stiffer_top, e_max=80.0) == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------- report


def test_report_renders_from_a_synthetic_run(tmp_path, crystal):
    run = tmp_path / "run"
    small = supercell_with_atoms(beta_cristobalite(), 192)
    (run / "iter-000").mkdir(parents=True)
    ase.io.write(run / "iter-000" / "bootstrap.xyz", [rattled(small, 0.05, s) for s in range(3)])
    it1 = run / "iter-001"
    (it1 / "md").mkdir(parents=True)
    ase.io.write(it1 / "md" / "seed-1x.xyz", [rattled(small, 0.04, s) for s in range(3)])
    (it1 / "metrics.json").write_text(json.dumps({
        "iteration": 1, "labels": 120, "new_labels": 40,
        "errors": {"composite": {"energy_mae": 4.7, "energy_rmse": 6.0, "force_rmse": 0.3},
                   "traditional": {"energy_mae_meV_atom": 4.8, "energy_rmse_meV_atom": 6.2}},
        "clustering": {"seed-10x": {"verdict": "clustered"}},
        "vdos": {"modes_meV": {"composite": list(np.linspace(5, 140, 50)), "reference": list(np.linspace(6, 150, 50))},
                 "sigma_meV": 3.0},
    }))
    it2 = run / "iter-002"
    (it2 / "md").mkdir(parents=True)
    clustered, planted = planted_cluster(crystal)
    ase.io.write(it2 / "md" / "seed-1x.xyz", [clustered])
    (it2 / "metrics.json").write_text(json.dumps({"labels": 160, "errors": {"energy_mae": 4.1}}))
    (run / "iter-003").mkdir()
    (run / "iter-003" / "metrics.json").write_text("{not json")
    (run / "plots").mkdir()
    fig = matplotlib.pyplot.figure()
    fig.savefig(run / "plots" / "parity.png")
    (run / "summary.json").write_text(json.dumps({"n_train": 120}))

    page = write_report(run)
    report = json.loads((page.parent / "report.json").read_text())
    images = [p for paths in report["plots"].values() for p in paths]
    assert {p.split("/")[-1] for p in images} >= {"learning_curve.png", "iter-001_rdf.png", "iter-001_vdos.png",
                                                  "iter-002_rdf.png", "parity.png"}
    for image in images:
        assert Path(image).stat().st_size > 1000
    text = page.read_text()
    assert text.count("data:image/png;base64,") == len(images)
    assert "plots/parity.png" in text and "iter-003" in text  # the unreadable file is reported
    by_iteration = {r["iteration"]: r for r in report["iterations"]}
    assert by_iteration[1]["clustering"] == {"seed-10x": "clustered", "seed-1x": "clean"}
    assert by_iteration[1]["errors"]["composite"] == {"energy_mae_meV_atom": 4.7, "energy_rmse_meV_atom": 6.0,
                                                      "force_rmse_eV_A": 0.3}
    assert by_iteration[1]["rdf_distance"]["seed-1x"] > 0.0
    assert by_iteration[1]["judged_by_report"] == ["seed-1x"]
    assert by_iteration[2]["clustering"] == {"seed-1x": "clustered"}  # judged by the report itself
    assert by_iteration[3]["labels"] is None and report["problems"]
    assert report["latest_all_clean"] is None and report["summary"] == {"n_train": 120}
    assert main_report(run) == 0


def test_report_of_an_empty_run_and_of_no_run(tmp_path):
    page = write_report(tmp_path)
    assert "No iteration directories" in page.read_text()
    assert main_report(tmp_path / "missing") == 2


def test_status_reads_in_80_columns_with_every_header_and_decision_whole(tmp_path, capsys):
    """`alcgap status` (and the table `alcgap run` ends with) in an 80-column log: nothing cut."""
    from rich.console import Console

    from alcgap.report.status import COLUMNS, LEGEND, print_status
    from alcgap.workflow.progress import ProgressBoard
    from alcgap.workflow.state import IterationState

    run = tmp_path / "a-campaign-with-a-long-name"
    run.mkdir()
    (run / "campaign.yaml").write_text("name: status\n")
    bootstrap = IterationState(run, 0)
    for stage in ("dimers", "aux", "bootstrap", "split", "distances"):
        bootstrap.finish(stage)
    bootstrap.finish("label", labelled=180, failed=2)
    rules = {1: "continue", 2: "nothing_to_learn", 3: "max_iterations"}
    for k, rule in rules.items():
        state = IterationState(run, k)
        state.finish("fit")
        state.finish("explore_select_label", labelled=12, failed=1)
        state.finish("judge")
        (state.dir / "metrics.json").write_text(json.dumps({
            "errors": {"energy_mae": 4.25, "force_rmse": 0.3125},
            "clustering": {"s1-T4000-x1": "clean", "s1-T4000-x10": "clustered"},
            "decision": {"stop": k > 1, "rule": rule, "why": "..."}}))
    IterationState(run, 4).finish("fit")  # a running iteration: its next stage is shown
    why = ("reached stop.max_iterations=3; 10x runs not clean: ['s1-T4000-x10']; energy MAE 4.25 > "
           "judge.max_energy_mae 4.0 meV/atom")
    (run / "summary.json").write_text(json.dumps({"stopped_by": "max_iterations", "why": why}))

    console = Console(width=80, record=True)
    assert print_status(run, console=console) == 0
    shown = console.export_text()
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 80, shown
    assert "…" not in shown  # nothing cut
    words = " ".join(shown.split())
    for header, _ in COLUMNS:
        for part in header.split("\n"):
            assert part in shown, (part, shown)
    for rule in rules.values():
        assert rule in shown, (rule, shown)
    assert " ".join(LEGEND.split()) in words and why in words and "at explore" in shown
    rows = [line for line in lines if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert [row.split("│")[1].strip() for row in rows] == ["0", "1", "2", "3", "4"]  # a line per iteration
    assert "180/2" in rows[0] and "4.25" in rows[1] and "0.312" in rows[1] and "1/2" in rows[1]
    assert print_status(tmp_path / "missing", console=console) == 2
    assert "holds no campaign" in capsys.readouterr().err

    # the live progress it shows while a driver runs: long names wrapped, never cut
    task = "s123456-T4000-x10-a-long-exploration-task-name"
    lines = ProgressBoard.lines({"stage": "iteration 12: explore_select_label", "elapsed_s": 3700.0,
                                 "stage_elapsed_s": 65.0, "stage_left_s": None, "labels": {},
                                 "md": {task: {"steps": 4500, "step": 300, "state": "running", "rate": 12.5}}})
    assert all(len(line) <= 80 for line in lines) and task in "".join(line.strip() for line in lines)
    assert any("300/4500" in line for line in lines)


# ---------------------------------------------------------------- held-out errors with stress


def test_stress_error_counts_periodic_frames_with_a_stress_in_gpa(vashishta):
    """Vashishta labels (eV/A^3) against a Lennard-Jones prediction: the stress rows are in GPa,
    the dimer in vacuum has none, and the RMSE is over the 6 Voigt components."""
    from ase import units
    from ase.calculators.lj import LennardJones

    from alcgap.analysis.metrics import ParityData, error_metrics, parity_data
    from alcgap.reference import isolated

    frames = [beta_cristobalite(), rattled(beta_cristobalite(), 0.1, seed=4), isolated("SiO", [[0, 0, 0], [0, 0, 1.6]])]
    labelled = [vashishta.compute(f).attach(f) for f in frames]
    lj = LennardJones(sigma=2.5, epsilon=0.02, rc=6.0)
    data = parity_data(lj, labelled)
    assert data.ref_stress.shape == data.pred_stress.shape == (2, 6)
    for row, atoms in enumerate(labelled[:2]):
        assert data.ref_stress[row] == pytest.approx(atoms.get_stress() / units.GPa)
        work = atoms.copy()
        work.calc = lj
        assert data.pred_stress[row] == pytest.approx(work.get_stress() / units.GPa)
    diff = [np.linalg.norm(data.pred_stress[k] - data.ref_stress[k]) ** 2 for k in range(2)]
    metrics = error_metrics(data)
    assert metrics.n_stress == 2 and metrics.n_structures == 3
    assert metrics.stress_rmse == pytest.approx(np.sqrt(sum(diff) / 12))
    assert metrics.stress_rmse > 1.0  # GPa: Lennard-Jones is not Vashishta
    # a 1 GPa error in xx alone: stress RMSE sqrt(1/6), pressure off by 1/3 GPa
    one = ParityData(np.zeros(1), np.zeros(1), np.empty(0), np.empty(0), np.zeros((1, 6)), np.eye(6)[:1])
    assert error_metrics(one).stress_rmse == pytest.approx(np.sqrt(1 / 6))
    assert error_metrics(one).pressure_rmse == pytest.approx(1 / 3)
    assert np.isnan(error_metrics(ParityData(np.zeros(1), np.zeros(1), np.empty(0), np.empty(0))).stress_rmse)
