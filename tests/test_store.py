"""The labelled-data store: real Vashishta labels through LAMMPS, a real SQLite file, real processes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest

from alcgap.fit.main import ENERGY_KEY, FORCES_KEY, VIRIAL_KEY, EmptyTrainingSet
from alcgap.reference import Label, LabelStatus, Reference
from alcgap.reference.base import isolated
from alcgap.store import LabelStore, Provenance, fingerprint
from alcgap.structures import beta_cristobalite, min_pair_distances, rattled


class Counting(Reference):
    """The real reference, counting its calls; ``extra`` settings give it another settings hash."""

    def __init__(self, inner: Reference, extra: dict | None = None, fail_first: Label | None = None):
        self.inner, self.extra, self.fail_first = inner, extra or {}, fail_first
        self.name = inner.name
        self.calls = 0

    def settings(self):
        return {**self.inner.settings(), **self.extra}

    def compute(self, atoms):
        self.calls += 1
        if self.fail_first is not None and self.calls == 1:
            return self.fail_first
        return self.inner.compute(atoms)


@pytest.fixture
def store(tmp_path):
    return LabelStore(tmp_path / "data.db")


@pytest.fixture
def frames():
    return [rattled(beta_cristobalite(), 0.05, seed=i) for i in range(6)]


def shortest(atoms):
    return min(min_pair_distances(atoms).values())


def test_round_trip_of_structures_labels_and_provenance(store, vashishta, frames):
    dimer = isolated("SiO", positions=[(0, 0, 0), (0, 0, 1.6)])
    structures = frames[:3] + [dimer]
    provenances = [
        Provenance(2, f"explore:{i}", variance=0.01 * (i + 1), min_distance=shortest(a), reason=f"variance {i}")
        for i, a in enumerate(frames[:3])
    ] + [Provenance(0, "dimer")]
    before = time.time()
    results = store.label_with(vashishta, structures, provenances)
    after = time.time()
    assert [r.reused for r in results] == [False] * 4 and all(r.label.ok for r in results)

    back = store.labelled()
    assert [a.info["row_id"] for a in back] == [r.row_id for r in results]
    for atoms, original, result, provenance in zip(back, structures, results, provenances):
        assert (atoms.numbers == original.numbers).all() and (atoms.pbc == original.pbc).all()
        np.testing.assert_array_equal(atoms.positions, original.positions)
        np.testing.assert_array_equal(atoms.cell.array, original.cell.array)
        assert atoms.get_potential_energy() == result.label.energy
        np.testing.assert_array_equal(atoms.get_forces(), result.label.forces)
        assert Provenance.from_info(atoms.info) == provenance
        assert atoms.info["status"] == "ok" and atoms.info["reference"] == "lammps"
        assert atoms.info["settings_hash"] == vashishta.settings_hash()
        assert atoms.info["fingerprint"] == fingerprint(original)
        assert before <= atoms.info["started"] <= atoms.info["finished"] <= atoms.info["created"] <= after
    for atoms, result in zip(back[:3], results):
        np.testing.assert_array_equal(atoms.get_stress(), result.label.stress)
    assert "stress" not in back[3].calc.results  # a dimer in vacuum has no stress
    assert store.reference_settings(vashishta.settings_hash()) == {"reference": "lammps", "settings": vashishta.settings()}
    summary = store.summary()
    assert (summary.total, summary.by_status, summary.by_iteration) == (4, {"ok": 4}, {2: 3, 0: 1})
    assert summary.by_origin == {"explore:0": 1, "explore:1": 1, "explore:2": 1, "dimer": 1}


def test_selection_by_iteration_origin_and_settings(store, vashishta, frames):
    store.label_with(vashishta, frames[:2], Provenance(0, "bootstrap"))
    store.label_with(vashishta, frames[2:4], Provenance(1, "explore:7"))
    store.label_with(vashishta, frames[4:], Provenance(2, "explore:8"))
    ids = lambda atoms_list: [a.info["fingerprint"] for a in atoms_list]  # noqa: E731
    assert ids(store.labelled(iteration=1)) == [fingerprint(a) for a in frames[2:4]]
    assert ids(store.labelled(up_to_iteration=1)) == [fingerprint(a) for a in frames[:4]]
    assert ids(store.labelled(origin="explore*")) == [fingerprint(a) for a in frames[2:]]
    assert ids(store.labelled(origin="explore:8")) == [fingerprint(a) for a in frames[4:]]
    assert len(store.labelled(settings_hash=vashishta.settings_hash())) == 6
    assert store.labelled(settings_hash="0" * 16) == []


def test_labelled_structures_are_never_computed_again(store, vashishta, frames):
    counting = Counting(vashishta)
    first = store.label_with(counting, frames, Provenance(1, "explore:1"))
    assert counting.calls == len(frames)
    second = store.label_with(counting, frames, Provenance(3, "explore:9"))
    assert counting.calls == len(frames), "a labelled structure was computed again"
    assert [r.reused for r in second] == [True] * len(frames)
    assert [r.row_id for r in second] == [r.row_id for r in first]
    for old, new in zip(first, second):
        assert new.label.energy == old.label.energy
        np.testing.assert_array_equal(new.label.forces, old.label.forces)
    assert len(store) == len(frames)
    # shifted by a lattice vector: the same structure
    shifted = frames[0].copy()
    shifted.positions += shifted.cell[0]
    assert store.has_label(shifted, vashishta.settings_hash())
    # the same structure twice in one call: computed once
    twins = [rattled(frames[0], 0.02, seed=99)] * 2
    results = store.label_with(counting, twins, Provenance(3, "explore:9"))
    assert counting.calls == len(frames) + 1 and [r.reused for r in results] == [False, True]


def test_rattled_copy_and_other_settings_are_new_labels(store, vashishta, frames):
    counting = Counting(vashishta)
    store.label_with(counting, frames[:2], Provenance(1, "explore:1"))
    copy = rattled(frames[0], 0.01, seed=7)
    assert not store.has_label(copy, vashishta.settings_hash())
    assert store.label_with(counting, [copy], Provenance(1, "explore:1"))[0].reused is False
    assert counting.calls == 3

    other = Counting(vashishta, extra={"cutoff_note": "other settings"})
    assert other.settings_hash() != vashishta.settings_hash()
    results = store.label_with(other, frames[:2], Provenance(2, "explore:2"))
    assert other.calls == 2 and not any(r.reused for r in results)
    assert len(store.labelled(settings_hash=other.settings_hash())) == 2
    assert len(store) == 5


def test_failed_labels_are_kept_with_reason_but_never_training_data(store, vashishta, frames, tmp_path):
    counting = Counting(vashishta)
    foreign = frames[0].copy()
    foreign[0].symbol = "Ge"  # not a Vashishta SiO2 species: the reference reports a program error
    results = store.label_with(counting, [foreign] + frames[1:3], Provenance(1, "explore:1"))
    assert results[0].label.status is LabelStatus.PROGRAM_ERROR
    assert len(store) == 3 and store.summary().by_status == {"ok": 2, "program_error": 1}

    failed = store.labelled(status="program_error")
    assert len(failed) == 1 and failed[0].calc is None
    assert "Ge" in failed[0].info["label_reason"]
    assert not store.has_label(foreign, vashishta.settings_hash())

    assert len(store.labelled()) == 2
    assert fingerprint(foreign) not in {a.info["fingerprint"] for a in store.labelled()}
    exported = ase.io.read(store.export_extxyz(tmp_path / "train.xyz"), ":")
    assert len(exported) == 2 and all("Ge" not in a.get_chemical_symbols() for a in exported)

    # not retried with the same settings, unless asked
    again = store.label_with(counting, [foreign], Provenance(2, "explore:2"))
    assert counting.calls == 3 and again[0].reused and again[0].label.status is LabelStatus.PROGRAM_ERROR
    store.label_with(counting, [foreign], Provenance(2, "explore:2"), retry_failed=True)
    assert counting.calls == 4 and len(store) == 4


def test_a_timed_out_label_is_retried_then_kept(store, vashishta, frames):
    timing_out = Counting(vashishta, fail_first=Label(LabelStatus.TIMED_OUT, reason="walltime exceeded"))
    first = store.label_with(timing_out, frames[:1], Provenance(1, "explore:1"))
    assert first[0].label.status is LabelStatus.TIMED_OUT
    second = store.label_with(timing_out, frames[:1], Provenance(1, "explore:1"))
    assert timing_out.calls == 2 and second[0].label.ok and not second[0].reused
    store.label_with(timing_out, frames[:1], Provenance(1, "explore:1"))
    assert timing_out.calls == 2
    assert store.summary().by_status == {"timed_out": 1, "ok": 1}


def test_export_carries_the_keys_gap_fit_reads(store, vashishta, frames, tmp_path):
    from alcgap.fit.gapfit import descriptor, run_gap_fit

    store.label_with(vashishta, frames[:3], Provenance(1, "explore:4"))
    store.label_with(vashishta, [isolated("SiO", positions=[(0, 0, 0), (0, 0, 1.7)])], Provenance(0, "dimer"))
    path = store.export_extxyz(tmp_path / "fit" / "train.xyz")
    back = ase.io.read(path, ":")
    stored = store.labelled()
    assert len(back) == 4
    for frame, atoms in zip(back, stored):
        assert frame.info[ENERGY_KEY] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(frame.arrays[FORCES_KEY], atoms.get_forces(), atol=1e-7)
        assert frame.info["config_type"] == atoms.info["origin"].split(":")[0]
    for frame, atoms in zip(back[:3], stored):
        virial = np.array(frame.info[VIRIAL_KEY], dtype=float).reshape(3, 3)
        voigt = -virial[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / atoms.get_volume()
        np.testing.assert_allclose(voigt, atoms.get_stress(), atol=1e-9)
    assert VIRIAL_KEY not in back[3].info  # no virial for a dimer in vacuum
    with pytest.raises(EmptyTrainingSet):
        store.export_extxyz(tmp_path / "none.xyz", iteration=5)

    run_gap_fit(
        tmp_path / "fit",
        at_file="train.xyz",
        gp_file="check.xml",
        descriptors=[descriptor("distance_2b", cutoff=4.0, covariance_type="ard_se", delta=1.0, theta_uniform=1.0, n_sparse=5, sparse_method="random")],
        options={"default_sigma": [0.01, 0.1, 0.1, 0.0], "e0": "{Si:0.0:O:0.0}", "energy_parameter_name": ENERGY_KEY,
                 "force_parameter_name": FORCES_KEY, "virial_parameter_name": VIRIAL_KEY, "sparse_separate_file": False},
    )
    log = (tmp_path / "fit" / "gap_fit.log").read_text()
    assert f"Number of target energies (property name: {ENERGY_KEY}) found: 4" in log
    assert f"Number of target forces (property name: {FORCES_KEY}) found: {3 * (3 * 24 + 2)}" in log
    assert f"Number of target virials (property name: {VIRIAL_KEY}) found: {3 * 6}" in log


def test_provenance_is_checked():
    with pytest.raises(ValueError, match="origin"):
        Provenance(1, "3")
    with pytest.raises(ValueError, match="iteration"):
        Provenance(-1, "dimer")


def test_settings_are_recorded_once(store, vashishta, frames):
    store.label_with(vashishta, frames[:1], Provenance(0, "bootstrap"))
    again = LabelStore(store.address)
    again.label_with(vashishta, frames[1:2], Provenance(0, "bootstrap"))
    other = Counting(vashishta, extra={"variant": 2})
    again.label_with(other, frames[:1], Provenance(0, "bootstrap"))
    known = ase.db.connect(store.address).metadata["reference_settings"]
    assert set(known) == {vashishta.settings_hash(), other.settings_hash()}
    assert again.reference_settings(other.settings_hash())["settings"]["variant"] == 2
    with sqlite3.connect(store.address) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# A child process that labels rattled crystals one by one: it says "writing" before each write
# and prints the row id once the write has committed.
WRITER = """
import os, sys, time
from alcgap.reference import LammpsReference
from alcgap.store import LabelStore, Provenance
from alcgap.structures import beta_cristobalite, rattled
path, first_seed, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store, reference = LabelStore(path), LammpsReference.vashishta_sio2()
settings_hash, crystal = reference.settings_hash(), beta_cristobalite()
print("ready", flush=True)
while go and not os.path.exists(go):
    time.sleep(0.01)
for seed in range(first_seed, first_seed + count):
    atoms, started = rattled(crystal, 0.05, seed=seed), time.time()
    label = reference.compute(atoms)
    print("writing", flush=True)
    row_id = store.add(atoms, label, reference.name, settings_hash, Provenance(1, "explore:" + str(first_seed)),
                       settings=reference.settings(), started=started, finished=time.time())
    print(row_id, flush=True)
"""


def start_writer(path: Path, first_seed: int, count: int, go: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(first_seed), str(count), str(go or "")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def assert_rows_complete(store: LabelStore) -> None:
    for atoms in store.labelled(status=None):
        assert atoms.info["status"] == "ok" and atoms.info["fingerprint"] == fingerprint(atoms)
        assert np.isfinite(atoms.get_potential_energy())
        assert atoms.get_forces().shape == (24, 3) and atoms.get_stress().shape == (6,)
        assert {"iteration", "origin", "settings_hash", "created", "started", "finished"} <= set(atoms.info)


def test_writers_killed_mid_write_lose_no_committed_label(tmp_path, vashishta):
    # Each kill lands at a random moment of a write (a write takes a few ms); every new writer
    # also has to go on after the last one was killed.
    path, committed = tmp_path / "data.db", []
    LabelStore(path)
    for first_seed in (0, 1000, 2000, 3000):
        child = start_writer(path, first_seed, count=100_000)
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        reported = []
        for line in child.stdout:
            if line.strip() != "writing":
                reported.append(int(line))
            elif len(reported) >= 10:
                time.sleep(random.uniform(0.0, 0.004))
                os.kill(child.pid, signal.SIGKILL)
                break
        rest, _ = child.communicate()
        committed += reported + [int(line) for line in rest.split() if line != "writing"]
        assert child.returncode == -signal.SIGKILL

        store = LabelStore(path)
        assert len(committed) <= len(store) <= len(committed) + 1  # one may commit before its id is printed
        assert_rows_complete(store)
        assert {a.info["row_id"] for a in store.labelled()} >= set(committed)
        committed = [a.info["row_id"] for a in store.labelled()]

    old = store.label_with(vashishta, [rattled(beta_cristobalite(), 0.05, seed=0)], Provenance(2, "explore:0"))
    new = store.label_with(vashishta, [rattled(beta_cristobalite(), 0.05, seed=999_999)], Provenance(2, "explore:0"))
    assert old[0].reused and not new[0].reused and len(store) == len(committed) + 1


def test_two_processes_write_while_a_reader_counts(tmp_path):
    path, go = tmp_path / "data.db", tmp_path / "go"
    LabelStore(path)
    children = [start_writer(path, first_seed, 40, go) for first_seed in (0, 1000)]
    for child in children:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()
    reader, counts = LabelStore(path), []
    while any(child.poll() is None for child in children):
        counts.append(len(reader))  # WAL: reading never waits for the writers
        time.sleep(0.01)
    outputs = [child.communicate() for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    ids = [int(line) for out, _ in outputs for line in out.split() if line != "writing"]
    assert len(ids) == len(set(ids)) == 80
    assert counts == sorted(counts) and len(reader) == 80
    assert reader.summary().by_origin == {"explore:0": 40, "explore:1000": 40}
    assert_rows_complete(reader)
