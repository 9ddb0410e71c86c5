"""Carving small periodic cells around flagged atoms of a large MD frame (alcgap.explore.carve).

The frame is real: 240 atoms of SiO2 (beta-cristobalite x10) melted and quenched with the
Vashishta potential in LAMMPS (~4 s), so the carved cells see amorphous surroundings."""

from __future__ import annotations

import re

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.geometry import find_mic
from matscipy.neighbours import neighbour_list

from alcgap.explore.carve import (
    CarveSettings,
    carve,
    carve_events,
    check_carved,
    info_indices,
    source_minima,
    stoichiometry_off,
)
from alcgap.md.classical import run_classical_md
from alcgap.md.protocols import Segment, scaled_cell
from alcgap.reference import vashishta_sio2_commands
from alcgap.structures import beta_cristobalite, rattled

SI, O = 14, 8
SOAP = ("soap n_max=4 l_max=4 cutoff=4.0 atom_sigma=0.5 cutoff_transition_width=0.5 "
        "n_species=2 species_Z={8 14}")


@pytest.fixture(scope="module")
def amorphous():
    """240 atoms: 400 steps 300 -> 5000 K, 400 at 5000 K, 600 back to 300 K (1 fs)."""
    segments = [Segment(steps=400, t_start=300, t_end=5000), Segment(steps=400, t_start=5000, t_end=5000),
                Segment(steps=600, t_start=5000, t_end=300)]
    frame = run_classical_md(scaled_cell(beta_cristobalite(), 10), vashishta_sio2_commands(), ["Si", "O"],
                             segments, timestep=1.0, sample_every=1400, seed=11)[-1]
    assert len(frame) == 240 and frame.info["md_step"] == 1400
    return frame


def bonded_pair(frame, near=None):
    """(Si, O) of a Si-O bond, the one whose O is closest to ``near`` (fractional; default the middle)."""
    i, j, d = neighbour_list("ijd", frame, 1.9)
    bonds = [(int(a), int(b)) for a, b in zip(i, j) if frame.numbers[a] == SI and frame.numbers[b] == O]
    target = frame.cell.cartesian_positions(np.full(3, 0.5) if near is None else near)
    gaps, _ = find_mic(frame.positions[[o for _, o in bonds]] - target, frame.cell, frame.pbc)
    return bonds[int(np.argmin(np.linalg.norm(gaps, axis=1)))]


@pytest.fixture(scope="module")
def flagged(amorphous):
    """The frame with one O pushed 0.5 A toward its Si: a short Si-O pair, as MD would flag it;
    plus the info and per-atom arrays an exploration frame carries."""
    frame = amorphous.copy()
    si, o = bonded_pair(frame)
    bond, _ = find_mic(frame.positions[si] - frame.positions[o], frame.cell, frame.pbc)
    frame.positions[o] += 0.5 * bond / np.linalg.norm(bond)
    frame.info.update(task="explore-3", energy=-1234.5)
    frame.arrays["local_gap_variance"] = np.linspace(0.0, 1.0, len(frame))
    frame.arrays["forces"] = np.ones((len(frame), 3))
    return frame, si, o


@pytest.fixture(scope="module")
def carved(flagged):
    frame, si, o = flagged
    return carve(frame, [si, o])


def core_vectors(atoms, centre, radius):
    """{neighbour index: vector from the centre} of every neighbour within radius (one image each)."""
    i, j, vectors = neighbour_list("ijD", atoms, radius)
    return {int(b): v for a, b, v in zip(i, j, vectors) if a == centre}


# --------------------------------------------------------------------------- the short pair


def test_the_environment_of_the_flagged_pair_is_complete_and_exact(flagged, carved):
    frame, si, o = flagged
    radius = carved.info["carve_radius"]
    carved_from = carved.arrays["carved_from"]
    local = {int(s): k for k, s in enumerate(carved_from)}
    for centre, carved_centre in zip((si, o), info_indices(carved, "centre_atoms")):
        assert carved_from[carved_centre] == centre
        source = core_vectors(frame, centre, radius)
        assert len(source) > 10
        for j, vector in source.items():
            assert j in local, f"source atom {j}, {np.linalg.norm(vector):.3f} A from centre {centre}, is missing"
            again, _ = find_mic(carved.positions[local[j]] - carved.positions[carved_centre], carved.cell, True)
            np.testing.assert_allclose(again, vector, atol=1e-8)
        # and nothing else within the radius, images included
        assert sorted(int(carved_from[k]) for k in core_vectors(carved, carved_centre, radius)) == sorted(source)


def test_the_carved_cell_is_small_periodic_stoichiometric_and_has_no_new_short_pair(flagged, carved):
    frame, si, o = flagged
    assert check_carved(frame, carved) == []
    n_si, n_o = int((carved.numbers == SI).sum()), int((carved.numbers == O).sum())
    assert n_o - 2 * n_si in (-1, 0, 1)
    assert all(carved.pbc) and np.allclose(carved.cell.array, np.eye(3) * carved.info["carve_side"])
    # cube side 2 * 4 A + the pair's extent (1.1 A), a little more if protected atoms met across a face
    pair = frame.get_distance(si, o, mic=True)
    assert carved.info["carve_side"] == pytest.approx(8.0 + pair + carved.info["carve_grown"])
    print(f"\ncarved {len(carved)} atoms (Si{n_si} O{n_o}) of {len(frame)}; side {carved.info['carve_side']:.2f} A, "
          f"{carved.info['carve_removed_boundary']} boundary + {carved.info['carve_removed_stoichiometry']} "
          f"stoichiometry removals")
    assert 25 <= len(carved) <= 70 and len(carved) < len(frame) / 3
    a, b = info_indices(carved, "centre_atoms")
    assert carved.get_chemical_symbols()[a] == "Si" and carved.get_chemical_symbols()[b] == "O"
    assert carved.get_distance(a, b, mic=True) == pytest.approx(pair, abs=1e-10)
    # the flagged pair is the shortest Si-O of the carved cell, as it is of the frame
    assert source_minima(carved)[(O, SI)] == pytest.approx(pair, abs=1e-10)


def test_provenance_metadata_and_extxyz_round_trip(flagged, carved, tmp_path):
    frame, si, o = flagged
    info = carved.info
    assert info["carved_from_natoms"] == 240 and info_indices(carved, "carve_centres") == [si, o]
    assert info["carve_radius"] == 4.0 and info["carve_shape"] == "cube"
    assert info["carve_removed"] == info["carve_removed_boundary"] + info["carve_removed_stoichiometry"]
    assert info["md_step"] == 1400 and info["task"] == "explore-3"
    assert "energy" not in info and "forces" not in carved.arrays and carved.calc is None
    np.testing.assert_array_equal(carved.arrays["local_gap_variance"],
                                  frame.arrays["local_gap_variance"][carved.arrays["carved_from"]])
    ase.io.write(tmp_path / "carved.xyz", carved)
    back = ase.io.read(tmp_path / "carved.xyz")
    for key in ("carve_centres", "centre_atoms"):
        assert info_indices(back, key) == info_indices(carved, key)
    for key in ("carved_from_natoms", "carve_radius", "carve_side", "carve_removed", "md_step", "task"):
        assert back.info[key] == info[key]
    assert check_carved(frame, back) == []


def test_the_soap_of_each_centre_is_the_frame_s(flagged, carved):
    """The physical guarantee: what the GAP sees at the flagged atoms is unchanged by carving."""
    from quippy.descriptors import Descriptor

    frame, si, o = flagged
    descriptor = Descriptor(SOAP)
    source, small = descriptor.calc(frame), descriptor.calc(carved)
    # one row per atom, in atom order (ci is 1-based)
    assert list(source["ci"]) == list(range(1, len(frame) + 1)) and list(small["ci"]) == list(range(1, len(carved) + 1))
    for centre, local in zip((si, o), info_indices(carved, "centre_atoms")):
        np.testing.assert_allclose(small["data"][local], source["data"][centre], rtol=0, atol=1e-10)
    # a cell that is merely cut (radius 3 < the SOAP cutoff) does not reproduce it: the test can fail
    cut = carve(frame, [si, o], CarveSettings(radius=3.0))
    local = info_indices(cut, "centre_atoms")[0]
    assert np.abs(descriptor.calc(cut)["data"][local] - source["data"][si]).max() > 1e-4


def test_check_carved_finds_planted_problems(flagged, carved):
    frame, si, o = flagged
    # an outer atom pushed next to another across the boundary
    broken = carved.copy()
    radius = carved.info["carve_radius"]
    centres = info_indices(carved, "centre_atoms")
    gaps, distances = find_mic(carved.positions - carved.positions[centres[0]], carved.cell, True)
    outer = [k for k in np.argsort(-distances) if carved.numbers[k] == O][:2]
    side = carved.info["carve_side"]
    broken.positions[outer[1]] = broken.positions[outer[0]] + np.array([side - 0.3, 0.0, 0.0])  # 0.3 A via an image
    broken.wrap()
    problems = check_carved(frame, broken)
    assert any(p.startswith("O-O pair") and "at 0.3000 A" in p for p in problems), problems
    # a core atom deleted
    core = [k for k in range(len(carved)) if k not in centres
            and np.linalg.norm(find_mic(carved.positions[k] - carved.positions[centres[1]], carved.cell, True)[0]) < radius]
    holed = carved.copy()
    del holed[core[0]]
    holed.info["centre_atoms"] = np.array([c - (c > core[0]) for c in centres])
    assert any("missing" in p for p in check_carved(frame, holed))


def test_stoichiometry_rule():
    source = {SI: 80, O: 160}
    assert stoichiometry_off({SI: 12, O: 24}, source) == pytest.approx(0)
    for n_si, n_o in [(12, 25), (12, 23), (13, 24), (12, 26)]:
        assert stoichiometry_off({SI: n_si, O: n_o}, source) == pytest.approx(2 / 3 * abs(n_o - 2 * n_si))
    # max_off 1: one O too many or too few, not one Si too many (+4 formal charge)
    assert stoichiometry_off({SI: 12, O: 25}, source) <= 1 < stoichiometry_off({SI: 13, O: 24}, source)
    assert stoichiometry_off({14: 7}, {14: 216}) == 0


def test_exact_stoichiometry_and_boundary_margin(flagged):
    frame, si, o = flagged
    exact = carve(frame, [si, o], CarveSettings(max_off=0))
    assert (exact.numbers == O).sum() == 2 * (exact.numbers == SI).sum()
    assert check_carved(frame, exact) == []
    margin = 0.05
    wide = carve(frame, [si, o], CarveSettings(boundary_margin=margin))
    minima = source_minima(frame, [(si, o)])
    i, j, d, shifts = neighbour_list("ijdS", wide, 4.0)
    across = np.any(shifts != 0, axis=1)
    for a, b, dist in zip(i[across], j[across], d[across]):
        key = tuple(sorted((int(wide.numbers[a]), int(wide.numbers[b]))))
        assert dist >= (1 + margin) * minima[key] - 1e-9
    assert check_carved(frame, wide) == []


def test_template_cell_shape(flagged):
    frame, si, o = flagged
    template = beta_cristobalite().cell.array @ np.array([[1.0, 0, 0], [0.2, 1.0, 0], [0, 0, 1.3]])
    carved = carve(frame, [si, o], CarveSettings(shape="cell"), template_cell=template)
    nonzero = np.abs(template) > 1e-12
    assert np.allclose(carved.cell.array[~nonzero], 0)
    ratio = carved.cell.array[nonzero] / template[nonzero]
    assert np.allclose(ratio, ratio[0])  # the template's shape, scaled
    widths = 1 / np.linalg.norm(np.linalg.inv(carved.cell.array), axis=0)
    assert widths.min() == pytest.approx(carved.info["carve_side"])
    assert widths.min() >= 8.0 + frame.get_distance(si, o, mic=True) - 1e-9
    assert check_carved(frame, carved) == []


# --------------------------------------------------------------------------- across the frame's boundary, events


def test_a_centre_at_a_corner_of_the_frame(amorphous):
    frame = amorphous
    fractional = frame.get_scaled_positions()
    corner = int(np.argmin(np.linalg.norm(np.minimum(fractional, 1 - fractional), axis=1)))
    i, shifts = neighbour_list("iS", frame, 4.0)
    crossing = shifts[i == corner]
    assert {tuple(np.sign(s)) for s in crossing if np.any(s)}, "the corner atom's surroundings cross the frame's faces"
    assert len({tuple(s) for s in crossing}) >= 4
    carved = carve(frame, [corner])
    assert check_carved(frame, carved) == []
    assert len(carved) < 60
    si, o = bonded_pair(frame, near=np.array([0.999, 0.001, 0.5]))  # a pair on an edge of the frame
    edge = carve(frame, [si, o])
    assert check_carved(frame, edge) == []


def test_far_events_give_two_cells_close_ones_one(amorphous):
    frame = amorphous
    first = 0
    _, distances = find_mic(frame.positions - frame.positions[first], frame.cell, True)
    near = int(np.flatnonzero((distances > 3.0) & (distances < 4.0))[0])
    far = int(np.argmax(distances))
    assert distances[far] > 2 * 4.0 + 1

    two = carve_events(frame, [[first], [far]])
    assert [info_indices(c, "carve_events") for c in two] == [[0], [1]]
    assert [info_indices(c, "carve_centres") for c in two] == [[first], [far]]
    one = carve_events(frame, [[first], [near]])
    assert len(one) == 1 and info_indices(one[0], "carve_events") == [0, 1]
    merged = one[0]
    assert info_indices(merged, "carve_centres") == [first, near]
    assert merged.info["carve_side"] >= 8.0 + distances[near] - 1e-9
    for cell in two + one:
        assert check_carved(frame, cell) == []


def test_each_event_s_cell_keeps_only_its_own_short_pair(amorphous):
    """Two short pairs more than ``radius`` apart (not merged), the second inside the first one's
    cube (toward a corner): the first cell must not carry the second's short contact."""
    frame = amorphous.copy()
    first = bonded_pair(frame)
    centroid = frame.positions[first[0]] + 0.5 * find_mic(frame.positions[first[1]] - frame.positions[first[0]],
                                                          frame.cell, True)[0]
    half = (8.0 + frame.get_distance(*first, mic=True)) / 2
    i, j = neighbour_list("ij", frame, 1.9)
    second = None
    for si, o in zip(i.tolist(), j.tolist()):
        if frame.numbers[si] != SI or frame.numbers[o] != O or {si, o} & set(first):
            continue
        rel, _ = find_mic(frame.positions[[si, o]] - centroid, frame.cell, True)
        to_first = [np.linalg.norm(find_mic(frame.positions[[si, o]] - frame.positions[c], frame.cell, True)[0], axis=1)
                    for c in first]
        if np.abs(rel).max() < half - 0.6 and np.min(to_first) > 4.5:
            second = (si, o)
            break
    assert second is not None
    for si, o in (first, second):
        bond, _ = find_mic(frame.positions[si] - frame.positions[o], frame.cell, frame.pbc)
        frame.positions[o] += 0.5 * bond / np.linalg.norm(bond)
    cells = carve_events(frame, [first, second])
    assert len(cells) == 2
    both = [first, second]
    for cell, own in zip(cells, both):
        assert info_indices(cell, "carve_centres") == list(own)
        assert check_carved(frame, cell) == [] and check_carved(frame, cell, flagged_pairs=both) == []
    kept = set(cells[0].arrays["carved_from"].tolist())
    assert len(kept & set(second)) == 1  # one atom of the second pair was in the cube and stays: the other went


def test_a_2160_atom_frame():
    """10x the 216-atom cell of the paper; here the cell is found by wrapping about the centroid
    (the frame is far wider than the cell), which must agree with the ghost-atom neighbour list."""
    from alcgap.explore.carve_geometry import near_centroid as _near_centroid

    frame = rattled(scaled_cell(beta_cristobalite(), 90), 0.08, seed=4)
    si, o = bonded_pair(frame, near=np.array([0.0, 0.5, 1.0]))
    carved = carve(frame, [si, o])
    assert check_carved(frame, carved) == []
    assert 25 <= len(carved) <= 70
    centroid = frame.positions[si] + 0.5 * find_mic(frame.positions[o] - frame.positions[si], frame.cell, True)[0]
    fast, slow = (_near_centroid(frame, centroid, 9.0, exhaustive=flag) for flag in (False, True))
    inside = np.linalg.norm(fast[1], axis=1) < 9.0
    assert sorted(fast[0][inside]) == sorted(slow[0])
    order_fast, order_slow = np.argsort(fast[0][inside]), np.argsort(slow[0])
    np.testing.assert_allclose(fast[1][inside][order_fast], slow[1][order_slow], atol=1e-9)


def test_elemental_frame_needs_no_stoichiometry():
    frame = rattled(bulk("Si", "diamond", a=5.43, cubic=True).repeat(3), 0.05, seed=2)
    carved = carve(frame, [10, 11])
    assert carved.info["carve_removed_stoichiometry"] == 0 and carved.info["carve_off"] == 0
    assert check_carved(frame, carved) == []


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_clearly(amorphous):
    frame = amorphous
    with pytest.raises(ValueError, match="at least one"):
        carve(frame, [])
    with pytest.raises(ValueError, match="out of range"):
        carve(frame, [240])
    with pytest.raises(ValueError, match="out of range"):
        carve(frame, [-1])
    with pytest.raises(ValueError, match="integers"):
        carve(frame, [1.5])
    with pytest.raises(ValueError, match="label the frame whole"):
        carve(frame, [0], CarveSettings(radius=7.5))
    with pytest.raises(ValueError, match="label the frame whole"):
        carve(beta_cristobalite(), [0])  # the 24-atom training cell itself
    with pytest.raises(ValueError, match="template_cell"):
        carve(frame, [0], CarveSettings(shape="cell"))
    with pytest.raises(ValueError, match="pbc"):
        open_frame = frame.copy()
        open_frame.pbc = False
        carve(open_frame, [0])
    with pytest.raises(ValueError, match="radius"):
        CarveSettings(radius=-1)
    with pytest.raises(ValueError, match="shape"):
        CarveSettings(shape="sphere")
    with pytest.raises(ValueError, match="stoichiometry"):
        CarveSettings(stoichiometry="exact")
    with pytest.raises(ValueError, match="empty"):
        carve_events(frame, [[0], []])
    # centres spread across the frame: the cell would hold an atom twice
    _, distances = find_mic(frame.positions - frame.positions[0], frame.cell, True)
    with pytest.raises(ValueError, match="label the frame whole"):
        carve(frame, [0, int(np.argmax(distances))], CarveSettings(radius=6.0))


# --------------------------------------------------------------------------- the boundary


def test_a_relaxed_boundary_puts_the_carved_cell_in_the_range_of_the_training_data(amorphous, flagged, carved):
    """The issue's test: the carved cell, labelled by the classical reference, lies in the energy
    range of the training data. Cut and labelled as is, it does not (dangling bonds across the
    faces); with its atoms beyond 3 A of the centres relaxed (here by the reference potential
    itself, standing in for the explored model), it does, and the centres and their first shells
    are untouched. Two events: an atom of the unperturbed frame (a variance flag), and the planted
    short pair, whose own energy (what pushing the O costs in the whole frame) is taken out first:
    a whole frame would carry it too."""
    from alcgap.explore.carve import relax_boundary
    from alcgap.reference import LammpsReference

    frame, si, o = flagged
    reference = LammpsReference.vashishta_sio2()
    # the training data: the demo's bootstrap, a melt of the 24-atom cell to 4000 K and back
    segments = [Segment(steps=600, t_start=300, t_end=4000), Segment(steps=300, t_start=4000, t_end=4000),
                Segment(steps=900, t_start=4000, t_end=300)]
    training = run_classical_md(scaled_cell(beta_cristobalite(), 1), vashishta_sio2_commands(), ["Si", "O"],
                                segments, timestep=1.0, sample_every=100, seed=1)

    def energy(atoms):
        bare = ase.Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        label = reference.compute(bare)
        assert label.ok, label.reason
        return label.energy

    low, high = min(energy(a) / len(a) for a in training), max(energy(a) / len(a) for a in training)
    pair_cost = energy(frame) - energy(amorphous)  # the event's own energy, in the whole frame
    assert pair_cost > 1.0
    calculator = reference.calculator()
    atom_cell = carve(amorphous, [si])
    for source, cell, event in ((amorphous, atom_cell, 0.0), (frame, carved, pair_cost)):
        as_cut = (energy(cell) - event) / len(cell)
        relaxed = relax_boundary(source, cell, calculator, 3.0)
        after = (energy(relaxed) - event) / len(cell)
        print(f"\n{len(cell)} atoms: training {low:.3f} .. {high:.3f} eV/atom; carved as cut {as_cut:.3f}, relaxed "
              f"{after:.3f} ({relaxed.info['carve_relax_steps']} steps, largest shift "
              f"{relaxed.info['carve_relax_shift']:.2f} A); event {event:.2f} eV")
        assert as_cut > high + 0.3  # the problem the relaxation solves
        assert relaxed.info["carve_relax"] == "relaxed" and relaxed.info["carve_relax_shift"] > 0.1
        assert low <= after <= high
        # the centres and everything within 3 A of them are the source's; no pair closer than 0.9 x
        # the source's shortest (check_carved reports pairs below 1.0 x, which a relaxed bond may be)
        assert relaxed.info["carve_frozen_radius"] == 3.0
        problems = check_carved(source, relaxed)
        assert not [p for p in problems if " pair " not in p], problems
        for p in problems:
            found, shortest = (float(w) for w in re.findall(r"(\d+\.\d+) A", p))
            assert found >= 0.9 * shortest, p
        assert relaxed.info["carve_relax_entered"] <= 2
        assert relaxed.cell == pytest.approx(cell.cell.array) and len(relaxed) == len(cell)
    a, b = info_indices(relaxed, "centre_atoms")
    assert relaxed.get_distance(a, b, mic=True) == pytest.approx(frame.get_distance(si, o, mic=True), abs=1e-10)


def test_a_relaxation_that_makes_a_short_pair_stops_before_it(flagged, carved):
    """A calculator that pulls every free atom onto one point: the relaxation ends at the last
    step with no pair closer than 0.9 x the source's shortest, saying which pair ended it; the
    atoms near the centres never move."""
    from ase.calculators.calculator import Calculator, all_changes

    from alcgap.explore.carve import relax_boundary

    class Collapse(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            pull = self.atoms.positions.mean(axis=0) - self.atoms.positions
            self.results = {"energy": float(0.5 * (pull ** 2).sum()), "forces": pull}

    frame, _, _ = flagged
    kept = relax_boundary(frame, carved, Collapse(), 3.0, steps=500)
    why = kept.info["carve_relax"]
    assert why.startswith(("stopped: ", "rejected: ")) and "x the source's shortest" in why, why
    assert kept.info["carve_relax_steps"] < 500
    problems = [p for p in check_carved(frame, kept) if " pair " in p]
    for p in problems:
        found, shortest = (float(w) for w in re.findall(r"(\d+\.\d+) A", p))
        assert found >= 0.9 * shortest, p
    centres = info_indices(carved, "centre_atoms")
    near = np.min([carved.get_distances(c, range(len(carved)), mic=True) for c in centres], axis=0) <= 3.0
    np.testing.assert_array_equal(kept.positions[near], carved.positions[near])
    with pytest.raises(ValueError, match="frozen_radius"):
        relax_boundary(frame, carved, Collapse(), -1.0)
