"""MD with the composite GAP in LAMMPS: energy conservation, 1 rank = 2 ranks, protocols end to
end, monitors that flag and stop, and the pair_style quip input for builds that have ML-QUIP."""

import json
import re
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units

from alcgap.auxiliary import LAMMPS_TABLE_POINTS
from alcgap.calculator import GapCalculator, component_labels
from alcgap.lammps_module import open_lammps
from alcgap.md.forces import ExternalGapForces, ForceField, QuipPairForces, backend_class, quip_pair_commands, top_potential
from alcgap.md.lammps import run_md
from alcgap.md.lammps_system import create_atoms, setup_commands
from alcgap.md.monitors import Monitor, MonitorSettings
from alcgap.md.protocols import melt_and_quench, nve, nvt, scaled_cell
from alcgap.md.task import MDTask, mpiexec_command
from alcgap.reference import vashishta_sio2_commands
from alcgap.structures import beta_cristobalite, min_pair_distances, rattled, supercell_with_atoms

SPECIES = ["Si", "O"]
#: shortest distances seen in amorphous and crystalline SiO2, a little below (Angstrom)
MINIMA = {"Si-O": 1.4, "O-O": 2.2, "Si-Si": 2.6}


@pytest.fixture(scope="module")
def composite(fitted):
    return fitted["models"]["composite"]


@pytest.fixture(scope="module")
def start(fitted):
    """24 atoms of SiO2 from the fitted data: a frame of the Vashishta quench."""
    return ase.io.read(Path(fitted["run_dir"]) / "train.xyz", index=-1)


def _comm():
    from alcgap.lammps_module import lammps_class

    lammps_class()
    from mpi4py import MPI

    return MPI.COMM_WORLD


# --------------------------------------------------------------------------- physics


@pytest.fixture(scope="module")
def nve_run(composite, start, tmp_path_factory):
    """0.5 fs, 200 steps (0.1 ps) of NVE with the composite, velocities drawn at 2000 K."""
    return run_md(start, ForceField.gap(composite, SPECIES), [nve(200, 2000.0)], timestep=0.5, seed=5,
                  sample_every=10, keep_frames=True, output_dir=tmp_path_factory.mktemp("nve"))


@pytest.mark.integration
def test_nve_with_the_composite_conserves_energy(nve_run, start):
    """About 1300 K once equipartitioned. Measured here: drift -0.02 meV/atom/ps, total-energy
    excursion 0.1 meV/atom (at 1 fs: -0.2 and 0.4). Forces 5% too large give -27 meV/atom/ps
    and 3.6 meV/atom, a wrong sign ~1e7 meV/atom/ps: the bounds below, 2 meV/atom/ps and
    1 meV/atom, catch both with margin."""
    result = nve_run
    assert not result.stopped_early and result.steps_done == 200 and result.force_backend == "fix_external"
    time_ps = np.array([f.info["md_step"] for f in result.frames]) * 0.5e-3
    total = np.array([f.info["total_energy"] for f in result.frames]) / len(start)
    temperature = np.mean([f.info["temperature"] for f in result.frames])
    assert 900 < temperature < 1800
    drift = np.polyfit(time_ps, total, 1)[0]
    assert abs(drift) < 2e-3, f"drift {drift * 1e3:.3f} meV/atom/ps"
    assert np.ptp(total) < 1e-3, f"total energy spread {np.ptp(total) * 1e3:.3f} meV/atom"


@pytest.mark.integration
def test_driver_energy_forces_and_pressure_match_the_calculator(nve_run, composite):
    """What LAMMPS integrates (fix external + aux table) is the composite GapCalculator: energy,
    forces, and the virial (the pressure minus its kinetic part), so NPT sees the right stress."""
    frame = nve_run.frames[-1]
    reference = frame.copy()
    reference.calc = GapCalculator(composite)
    assert frame.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-6)
    n, volume = len(frame), frame.get_volume()
    kinetic_bar = (3 * n - 3) * units.kB * frame.info["temperature"] / (3 * volume) / units.bar
    virial_bar = frame.info["pressure_bar"] - kinetic_bar
    expected_bar = -np.trace(reference.get_stress(voigt=False)) / 3 / units.bar
    assert virial_bar == pytest.approx(expected_bar, rel=1e-5, abs=1.0)


@pytest.mark.integration
def test_two_mpi_ranks_give_the_forces_of_one(composite, start, tmp_path):
    """The task command under the venv's mpiexec: replicated data split by atom masks."""
    ase.io.write(tmp_path / "start.xyz", start)
    runs = {}
    for n_ranks in (1, 2):
        task = MDTask(structure="start.xyz", force_field=ForceField.gap(composite, SPECIES, backend="external"),
                      protocol=[nvt(10, 1500.0)], timestep=0.5, seed=4, sample_every=5,
                      monitor=MonitorSettings(every=5, min_distance=MINIMA), output_dir=f"ranks-{n_ranks}")
        path = task.write(tmp_path / f"task-{n_ranks}.json")
        done = subprocess.run(mpiexec_command(path.name, n_ranks), cwd=tmp_path, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[n_ranks] = (json.loads((tmp_path / f"ranks-{n_ranks}" / "result.json").read_text()),
                         ase.io.read(tmp_path / f"ranks-{n_ranks}" / "trajectory.xyz", ":"))
    (one, frames_1), (two, frames_2) = runs[1], runs[2]
    assert two["n_ranks"] == 2 and one["n_ranks"] == 1 and two["steps_done"] == 10 and not two["stopped_early"]
    assert len(frames_1) == len(frames_2) == 2
    for a, b in zip(frames_1, frames_2):
        assert a.info["md_step"] == b.info["md_step"]
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=2e-8)  # extxyz keeps 8 decimals
        np.testing.assert_allclose(a.positions, b.positions, atol=2e-8)
        np.testing.assert_allclose(a.arrays["local_gap_variance"], b.arrays["local_gap_variance"], atol=2e-8)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["composite", "vashishta"])
def test_melt_and_quench_runs_end_to_end(kind, composite, tmp_path):
    """The paper's protocol shortened 1000x (30 + 20 + 100 steps) from beta-cristobalite."""
    if kind == "composite":
        force_field = ForceField.gap(composite, SPECIES)
    else:
        force_field = ForceField.classical(vashishta_sio2_commands(), SPECIES)
    settings = MonitorSettings(every=25, min_distance=MINIMA, variance_threshold=1e-8)
    result = run_md(supercell_with_atoms(beta_cristobalite(), 24), force_field, melt_and_quench(scale=0.001),
                    timestep=1.0, seed=11, sample_every=25, monitor=settings, output_dir=tmp_path)
    assert not result.stopped_early, result.stop_reason
    assert result.steps_done == 150 and result.n_frames == 6
    frames = ase.io.read(tmp_path / "trajectory.xyz", ":")
    assert [f.info["md_step"] for f in frames] == [25, 50, 75, 100, 125, 150]
    assert frames[1].info["md_target_temperature"] == pytest.approx(5000.0)
    assert all(np.isfinite(f.get_potential_energy()) and np.isfinite(f.get_forces()).all() for f in frames)
    assert json.loads((tmp_path / "result.json").read_text())["steps_done"] == 150
    script = (tmp_path / "in.lammps").read_text()
    assert "read_data start.data" in script and "fix alcgap_md all nvt temp 300.0 5000.0" in script
    assert len((tmp_path / "monitor.jsonl").read_text().splitlines()) == 7  # steps 0, 25, ..., 150
    if kind == "composite":
        assert all(f.arrays["local_gap_variance"].shape == (24,) for f in frames)
        flagged = ase.io.read(tmp_path / "flagged.xyz", ":")  # variance threshold set to flag all
        assert len(flagged) == 7 and all("variance" in f.info["flag_reasons"] for f in flagged)
        assert all(f.info["max_variance"] > 1e-8 for f in flagged)
    else:
        assert "local_gap_variance" not in frames[0].arrays and result.max_variance is None


# --------------------------------------------------------------------------- monitors


def _planted_oo_pair(n_atoms: int, distance: float):
    atoms = supercell_with_atoms(beta_cristobalite(), n_atoms)
    oxygens = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "O"]
    i, j = oxygens[0], oxygens[1]
    others = [k for k in range(len(atoms)) if k not in (i, j)]
    # a direction that brings j close to i only (not onto i's silicon neighbours)
    for direction in np.random.default_rng(0).normal(size=(200, 3)):
        atoms.positions[j] = atoms.positions[i] + distance * direction / np.linalg.norm(direction)
        if atoms.get_distances(j, others, mic=True).min() > 1.5:
            return atoms
    raise AssertionError("no direction found")


def test_monitor_flags_a_planted_short_pair_without_stopping():
    atoms = _planted_oo_pair(192, 0.6)
    verdict = Monitor(MonitorSettings(min_distance=MINIMA)).check(atoms, step=7)
    assert verdict.min_distances[("O", "O")] == pytest.approx(0.6)
    assert verdict.flag_reasons == ["short pair O-O 0.600 A < 2.200 A"]
    # one pair in 192 atoms is a frame to learn from, not a collapsed run
    assert verdict.stop_reason is None
    info = verdict.annotate(atoms.copy()).info
    assert info["md_step"] == 7 and info["min_distance"] == pytest.approx(0.6) and info["min_distance_pair"] == "O-O"
    # the crystal itself is not flagged
    assert Monitor(MonitorSettings(min_distance=MINIMA)).check(supercell_with_atoms(beta_cristobalite(), 192), 0).flag_reasons == []


@pytest.mark.integration
def test_driver_writes_the_flagged_frame(tmp_path):
    atoms = _planted_oo_pair(192, 0.6)
    # a killed attempt's folder, and outputs of an earlier attempt: neither may mix into this one
    killed = tmp_path / ".attempt-killed"
    killed.mkdir()
    ase.io.write(killed / "trajectory.xyz", atoms)
    ase.io.write(tmp_path / "trajectory.xyz", [atoms] * 5)
    result = run_md(atoms, ForceField.classical(vashishta_sio2_commands(), SPECIES), [nvt(10, 300.0)], timestep=0.1,
                    sample_every=10, monitor=MonitorSettings(every=5, min_distance=MINIMA), output_dir=tmp_path)
    first = ase.io.read(tmp_path / "flagged.xyz", index=0)
    assert first.info["md_step"] == 0 and "short pair O-O 0.600 A" in first.info["flag_reasons"]
    assert first.info["min_distance"] == pytest.approx(0.6, abs=1e-6)
    assert result.n_flagged >= 1 and result.min_distances["O-O"] == pytest.approx(0.6, abs=1e-6)
    # the attempt was promoted whole: its own frame (step 10; 10 steps sampled every 10), nothing older
    assert [a.info["md_step"] for a in ase.io.read(tmp_path / "trajectory.xyz", index=":")] == [10]
    assert not list(tmp_path.glob(".attempt-*")) and (tmp_path / "result.json").exists()
    assert result.output_dir == str(tmp_path.resolve())


@pytest.mark.integration
def test_a_collapsing_run_stops_early_and_says_why(fitted, start, tmp_path):
    """The plain GAP (no aux) on a compressed cell (0.85 x linear, Si-O 1.36 A) at 8000 K: two
    Si atoms fall onto each other (seen: Si-Si 1.17 A at step 100 of 400; run on, they reach
    0.3 A). The composite's repulsive aux is what prevents this."""
    atoms = start.copy()
    atoms.set_cell(atoms.cell * 0.85, scale_atoms=True)
    settings = MonitorSettings(every=10, min_distance=MINIMA)
    assert Monitor(settings).check(atoms, 0).stop_reason is None  # not collapsed at the start
    result = run_md(atoms, ForceField.gap(fitted["models"]["traditional"], SPECIES), [nvt(400, 8000.0)],
                    timestep=1.0, seed=2, sample_every=100, monitor=settings, output_dir=tmp_path)
    assert result.stopped_early and result.steps_done < 400
    assert "collapse" in result.stop_reason and f"step {result.steps_done}" in result.stop_reason
    assert any(result.min_distances[pair] < 0.5 * r for pair, r in MINIMA.items())
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["stopped_early"] and saved["stop_reason"] == result.stop_reason
    last = ase.io.read(tmp_path / "flagged.xyz", index=-1)
    assert "stop: collapse" in last.info["flag_reasons"] and last.info["md_step"] == result.steps_done


@pytest.mark.integration
def test_the_composite_holds_the_same_hot_compressed_cell_with_an_adaptive_step(fitted, start, tmp_path):
    """The run above with the composite, and an adaptive timestep: its pairs are pushed into the
    aux's range (seen: Si-Si 1.54, Si-O 1.09 A), which holds them: no collapse, no lost atoms,
    every pair above half its aux cutoff, all 400 steps. Without the aux (the traditional GAP of
    the test above, same cell, seed and steps) the same run collapses."""
    atoms = start.copy()
    atoms.set_cell(atoms.cell * 0.85, scale_atoms=True)
    settings = MonitorSettings(every=10, min_distance=MINIMA)
    result = run_md(atoms, ForceField.gap(fitted["models"]["composite"], SPECIES), [nvt(400, 8000.0)],
                    timestep=1.0, seed=2, sample_every=100, monitor=settings, output_dir=tmp_path, max_displacement=0.1)
    assert not result.stopped_early and result.steps_done == 400, result.stop_reason
    aux = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}
    assert any(result.min_distances[pair] < r for pair, r in aux.items()), "no pair reached the aux: not the regime"
    assert all(result.min_distances[pair] > 0.5 * r for pair, r in aux.items()), result.min_distances
    assert result.smallest_timestep_fs is not None and 0 < result.smallest_timestep_fs <= 1.0
    print(f"composite, compressed cell at 8000 K: shortest {result.min_distances}, smallest dt {result.smallest_timestep_fs:.3f} fs")


# --------------------------------------------------------------------------- pair_style quip


@pytest.mark.integration
def test_pair_style_quip_input_is_valid(fitted, composite, tmp_path):
    """The wheel has no ML-QUIP: check the quip lines against the documented format
    (pair_coeff * * <xml> "<QUIP init string>" <Z per type>), and run everything else for real
    with the quip sub-style swapped for pair_style zero."""
    from quippy.potential import Potential

    aux_xml = fitted["aux_xml"]
    labels = component_labels(composite)
    lines = QuipPairForces(ForceField.gap(composite, SPECIES, backend="quip"), _comm(), tmp_path).input_lines()
    assert lines[0] == f"pair_style hybrid/overlay quip table linear {LAMMPS_TABLE_POINTS}"
    quip = re.fullmatch(r'pair_coeff \* \* quip (\S+\.xml) "IP GAP label=(\S+)" (\d+) (\d+)', lines[1])
    assert quip and Path(quip[1]).exists() and quip[2] == labels["main"] and quip.groups()[2:] == ("14", "8")
    assert all(re.fullmatch(r"pair_coeff \d \d table \S+ (Si_Si|Si_O|O_O) [\d.]+", line) for line in lines[2:])
    # the whole composite as QUIP's Sum, by the top Potential's label
    label, init_args = top_potential(composite)
    assert init_args.startswith("Sum") and labels["aux"] in init_args
    assert quip_pair_commands(composite, SPECIES) == ["pair_style quip", f'pair_coeff * * {Path(composite).resolve()} "Potential xml_label={label}" 14 8']

    # everything but the quip sub-style, in the wheel: the table lines must give the aux energy
    atoms = rattled(beta_cristobalite(a=7.16 * 0.7), 0.1, seed=10, strain=0.05)
    assert 0.55 < min_pair_distances(atoms)[("Si", "O")] < 1.1
    swapped = [lines[0].replace("quip", "zero 4.0"), "pair_coeff * * zero", *lines[2:]]
    lmp = open_lammps()
    try:
        for line in setup_commands(atoms, SPECIES):
            lmp.command(line)
        create_atoms(lmp, atoms, SPECIES)
        for line in swapped:
            lmp.command(line)
        lmp.command("run 0")
        table_energy = lmp.get_thermo("pe")
        assert not lmp.has_package("ML-QUIP")
        assert backend_class(ForceField.gap(composite, SPECIES), lmp) is ExternalGapForces
        with pytest.raises(RuntimeError, match="ML-QUIP"):
            backend_class(ForceField.gap(composite, SPECIES, backend="quip"), lmp)
    finally:
        lmp.close()
    # the composite's aux is gap_fit's copy of the fitted aux.xml
    atoms.calc = Potential(param_filename=aux_xml)
    aux = atoms.get_potential_energy()
    assert aux > 1.0 and table_energy == pytest.approx(aux, rel=1e-4)


# --------------------------------------------------------------------------- protocols


def test_protocols_and_cells():
    cell = supercell_with_atoms(beta_cristobalite(), 216)
    big = scaled_cell(cell, 10)
    assert len(big) == 2160 and big.get_volume() == pytest.approx(10 * cell.get_volume())
    lengths = big.cell.lengths()
    assert lengths.max() / lengths.min() < 1.2  # not a 5 x 2 x 1 slab
    assert min(min_pair_distances(big, cutoff=2.0).values()) == pytest.approx(min(min_pair_distances(cell, cutoff=2.0).values()))
    assert len(scaled_cell(cell, 2, shape="repeat")) == 432
    segment = nve(100, 1500.0)
    assert segment.ensemble == "nve" and segment.t_end == 1500.0
    with pytest.raises(ValueError):
        ForceField(species=SPECIES)  # neither pair_commands nor xml


def _checkpointed_task(folder: Path, start: Path) -> Path:
    task = MDTask(structure=str(start), size_factor=2,
                  force_field=ForceField.classical(vashishta_sio2_commands(), SPECIES),
                  protocol=[nvt(1500, 300.0, 2500.0), nvt(1500, 2500.0)], timestep=1.0, seed=11, sample_every=50,
                  monitor=MonitorSettings(every=25, min_distance={"Si-O": 1.6, "O-O": 2.4, "Si-Si": 2.9}),
                  output_dir=str(folder), checkpoint_every=250)
    folder.mkdir(parents=True)
    return task.write(folder / "task.json")


def _frames(folder: Path) -> list:
    return ase.io.read(folder / "trajectory.xyz", index=":")


def _kill_after_checkpoint(command: list[str], folder: Path, step: int) -> int:
    """Run ``command``; SIGKILL it once its checkpoint has passed ``step``; the checkpoint's step."""
    import time

    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    latest = folder / "checkpoint" / "latest.json"
    try:
        while child.poll() is None:
            if latest.exists() and json.loads(latest.read_text())["step"] >= step:
                break
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    assert not (folder / "result.json").exists(), f"the run ended before the kill: {child.stderr.read().decode()[-800:]}"
    return json.loads(latest.read_text())["step"]


@pytest.mark.integration
def test_an_md_task_killed_mid_run_continues_from_its_checkpoint(tmp_path):
    """A task SIGKILLed between checkpoints, run again: it continues from its last checkpoint
    (not step 0), and its trajectory and monitors equal, frame by frame, those of a run that was
    never killed; continued on two ranks instead of one, it is continuous (no frame twice or missing)."""
    import sys

    start = tmp_path / "start.xyz"
    ase.io.write(start, beta_cristobalite())
    # folder names with spaces: every path LAMMPS reads or writes is quoted
    whole, killed, other = (_checkpointed_task(tmp_path / name, start) for name in ("whole run", "killed run", "two ranks"))
    one_rank = lambda task: [sys.executable, "-m", "alcgap.md.task", str(task)]  # noqa: E731
    subprocess.run(one_rank(whole), check=True, capture_output=True)
    reference = _frames(whole.parent)
    assert not (whole.parent / "checkpoint").exists()  # a finished run keeps no checkpoint

    at = _kill_after_checkpoint(one_rank(killed), killed.parent, 1250)  # in the first segment or the second
    assert not (killed.parent / "trajectory.xyz").exists()  # the killed attempt's files never showed
    subprocess.run(one_rank(killed), check=True, capture_output=True)
    result = json.loads((killed.parent / "result.json").read_text())
    assert result["resumed_from_step"] == at and 0 < at < 3000 and result["steps_done"] == 3000
    frames = _frames(killed.parent)
    assert [a.info["md_step"] for a in frames] == [a.info["md_step"] for a in reference] == list(range(50, 3001, 50))
    shift = max(np.abs(a.positions - b.positions).max() for a, b in zip(frames, reference))
    print(f"largest position difference, continued vs uninterrupted: {shift:.2e} A (killed at step {at})")
    assert shift < 1e-6, f"the continued run left the uninterrupted one by {shift:.2e} A"
    monitored = [json.loads(line)["step"] for line in (killed.parent / "monitor.jsonl").read_text().splitlines()]
    assert monitored == list(range(0, 3001, 25))
    whole_result = json.loads((whole.parent / "result.json").read_text())
    for key in ("n_flagged", "n_monitored", "n_frames", "first_clustered_step"):
        assert result[key] == whole_result[key], key
    assert result["min_distances"] == pytest.approx(whole_result["min_distances"], rel=1e-9)  # round-off: re-sorted

    at = _kill_after_checkpoint(one_rank(other), other.parent, 1250)
    subprocess.run(mpiexec_command(other, 2), check=True, capture_output=True)
    result = json.loads((other.parent / "result.json").read_text())
    assert result["n_ranks"] == 2 and result["resumed_from_step"] == at
    assert [a.info["md_step"] for a in _frames(other.parent)] == list(range(50, 3001, 50))


def test_a_lammps_error_on_one_of_two_ranks_mid_run_is_a_recorded_failure(tmp_path):
    """A real LAMMPS error that one rank alone sees ("Pair distance < table inner cutoff", as an
    aux table reached from below does), mid-run on two ranks: the task ends, not hangs; the rank
    that saw it records why; the attempt is promoted whole, with what was flagged before the
    failure; the exploration summary says "failed" (re-run on resume) and whose failure it is."""
    import sys

    from alcgap.workflow.stages.explore_plan import ExploreTask, md_summary

    start = tmp_path / "start.xyz"
    ase.io.write(start, beta_cristobalite())
    # a zero table over O-O from 2.2 A: O-O pairs sit at 2.6 A in the crystal; heated, one comes closer
    rows = "\n".join(f"{i + 1} {2.2 + 0.01 * i:.2f} 0.0 0.0" for i in range(100))
    (tmp_path / "wall.table").write_text(f"OO\nN 100 R 2.2 3.19\n\n{rows}\n")
    commands = vashishta_sio2_commands()
    pair = ["pair_style hybrid/overlay vashishta table linear 100",
            commands[1].replace("pair_coeff * *", "pair_coeff * * vashishta"),
            f"pair_coeff 2 2 table {tmp_path / 'wall.table'} OO 3.19"]
    task = MDTask(structure=str(start), force_field=ForceField.classical(pair, SPECIES),
                  protocol=[nvt(2000, 300.0, 4000.0), nvt(1000, 4000.0)], timestep=1.0, seed=3, sample_every=20,
                  monitor=MonitorSettings(every=10, min_distance={"Si-O": 1.5, "O-O": 2.35, "Si-Si": 2.9}),
                  output_dir=str(tmp_path / "md"))
    path = task.write(tmp_path / "task.json")
    done = subprocess.run(mpiexec_command(path, 2), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, "the table's inner cutoff was never reached"
    folder = tmp_path / "md"
    result = json.loads((folder / "result.json").read_text())
    assert result["n_ranks"] == 2 and result["stopped_early"], result
    assert "Pair distance < table inner cutoff" in result["stop_reason"]
    assert 0 < result["steps_done"] < 3000
    assert not list(folder.glob(".attempt-*"))  # promoted, not left half-written
    flagged = ase.io.read(folder / "flagged.xyz", ":")
    assert flagged and max(a.info["md_step"] for a in flagged) <= result["steps_done"] + 10
    summary = md_summary(folder, ExploreTask(1, 3, 4000.0, 1), error=f"exit {done.returncode}")
    assert (summary["verdict"], summary["failure"], summary["failure_of"]) == ("failed", "pair_inside_aux_table", "potential")
    assert "table inner cutoff" in summary["why"] and summary["first_bad_step"] <= result["steps_done"] + 10
    print(f"one rank's LAMMPS error at step {result['steps_done']}; exit {done.returncode}; {len(flagged)} flagged frames kept",
          file=sys.stderr)
