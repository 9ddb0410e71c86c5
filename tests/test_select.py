"""Selection of flagged local environments (flags -> merge -> same event -> SOAP de-duplication
-> budget) with real per-atom quippy SOAP and real Vashishta MD, and the stopping rule."""

from __future__ import annotations

import math

import ase.io
import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from alcgap.config import ConfigError, load_campaign_config
from alcgap.md.classical import run_classical_md
from alcgap.md.protocols import nvt, scaled_cell
from alcgap.reference import vashishta_sio2_commands
from alcgap.explore.select import MIN_DISTANCE, SelectionSettings, per_atom_soap, select_environments
from alcgap.provenance import centre_atoms
from alcgap.structures import beta_cristobalite, rattled
from alcgap.workflow.stages.stop import Judgement, decide

from conftest import GATES_PASS

SPECIES = ["Si", "O"]
#: flag distances (Angstrom) as the monitors use them
FLAG = {("Si", "O"): 1.4, ("O", "Si"): 1.4, ("O", "O"): 2.2, ("Si", "Si"): 2.6}


def with_ratios(atoms):
    """``arrays["short_pair_ratio"]`` as the MD monitors write it: per atom, min over its pairs
    of distance / that species pair's flag distance (inf: no pair in range)."""
    i, j, d = neighbor_list("ijd", atoms, 3.0)
    symbols = np.array(atoms.get_chemical_symbols())
    ratio = np.full(len(atoms), np.inf)
    np.minimum.at(ratio, i, d / np.array([FLAG[(a, b)] for a, b in zip(symbols[i], symbols[j])]))
    atoms.arrays["short_pair_ratio"] = ratio
    return atoms


def flag(atoms, ratios: dict[int, float]):
    """Set the monitor's ratios by hand on chosen atoms (the rest unflagged)."""
    ratio = np.full(len(atoms), np.inf)
    for atom, value in ratios.items():
        ratio[atom] = value
    atoms.arrays["short_pair_ratio"] = ratio
    return atoms


def crystal_240(seed=1, stdev=0.02):
    return rattled(scaled_cell(beta_cristobalite(), 10), stdev, seed)


def nearest_of(atoms, atom, symbol):
    others = [k for k, s in enumerate(atoms.get_chemical_symbols()) if s == symbol and k != atom]
    d = atoms.get_distances(atom, others, mic=True)
    return others[int(np.argmin(d))], float(d.min())


@pytest.fixture(scope="module")
def planted():
    """240 atoms; one O pushed from 1.51 to 1.20 A of its Si (Si-O flags at 1.4 A)."""
    base = crystal_240()
    atoms = base.copy()
    o = atoms.get_chemical_symbols().index("O") + 14
    si, _ = nearest_of(atoms, o, "Si")
    vector = atoms.get_distance(o, si, mic=True, vector=True)
    atoms.positions[o] += vector * (1.0 - 1.2 / np.linalg.norm(vector))
    return base, with_ratios(atoms), o, si


def test_a_planted_short_pair_is_the_event_and_its_environment_is_scored(planted, tmp_path):
    base, atoms, o, si = planted
    assert np.flatnonzero(atoms.arrays["short_pair_ratio"] < 1).tolist() == sorted([o, si])
    # the undistorted frame is known: the frame as a whole hardly changed, its O environment did
    selection = select_environments([atoms], SPECIES, SelectionSettings(budget=5), known=[base])
    assert len(selection.events) == 1 and selection.n_candidates == 2 and selection.n_merged == 1
    event = selection.events[0]
    assert event.kind == "short_pair" and event.score == pytest.approx(1.2 / 1.4)
    assert event.centres == sorted([o, si])  # equal ratios: the lower index is the chosen atom
    assert event.soap_distance > MIN_DISTANCE
    pushed = per_atom_soap([base, atoms], SPECIES, SelectionSettings(), [[o], [o]])
    assert 1.0 - pushed[0] @ pushed[1] > 10 * MIN_DISTANCE
    # with a coarser threshold the Si (ranked first) is a known environment, the O is not: the O
    # is the event and its partner, turned away before the O was chosen, still belongs to it
    assert si < o
    coarse = select_environments([atoms], SPECIES, SelectionSettings(min_distance=0.01), known=[base])
    assert [e.centres for e in coarse.events] == [[o, si]] and coarse.n_duplicates == 0 and coarse.n_merged == 1
    # structure-averaged SOAP, as frames were compared before, washes the event out in 240 atoms
    settings = SelectionSettings()
    rows = per_atom_soap([base, atoms], SPECIES, settings)
    averaged = [row / np.linalg.norm(row) for row in (rows[:240].mean(axis=0), rows[240:].mean(axis=0))]
    assert 1.0 - averaged[0] @ averaged[1] < 1e-4
    # the frame to label: a copy with its centres, kind and score; no calculator; arrays kept
    (frame,) = selection.frames([atoms])
    assert frame is not atoms and frame.calc is None
    assert frame.info["selection_kind"] == "short_pair" and "short_pair_ratio" in frame.arrays
    ase.io.write(tmp_path / "selected.xyz", frame)
    back = ase.io.read(tmp_path / "selected.xyz")
    assert centre_atoms(back) == sorted([o, si]) and back.info["selection_score"] == pytest.approx(1.2 / 1.4)
    assert centre_atoms(frame) == sorted([o, si])
    assert len(select_environments([atoms], SPECIES, SelectionSettings(), known=[base]).events) == 1


def test_short_pairs_rank_by_their_own_minimum_then_variance():
    atoms = crystal_240(seed=2, stdev=0.15)  # disordered enough that no two environments are the same
    si_a = 0
    si_b, _ = nearest_of(atoms, si_a, "Si")

    def away(k, *others):
        return all(atoms.get_distance(k, m, mic=True) > 6.0 for m in others)

    si_c = next(k for k in range(len(atoms)) if atoms[k].symbol == "Si" and away(k, si_a, si_b))
    o_c, _ = nearest_of(atoms, si_c, "O")
    high, higher = [k for k in range(len(atoms)) if away(k, si_a, si_b, si_c, o_c)][:2]
    # Si-Si at 0.8 x 2.6 = 2.08 A; Si-O at 0.9 x 1.4 = 1.26 A: the shorter distance, the milder pair
    flag(atoms, {si_a: 0.8, si_b: 0.8, si_c: 0.9, o_c: 0.9})
    variance = np.zeros(len(atoms))
    variance[[si_c, high, higher]] = [50.0, 3.0, 6.0]  # si_c is a short pair whatever its variance
    atoms.arrays["local_gap_variance"] = variance
    selection = select_environments([atoms], SPECIES, SelectionSettings(budget=10, variance_threshold=1.0))
    assert [(e.kind, e.centres) for e in selection.events] == [
        ("short_pair", [si_a, si_b]), ("short_pair", sorted([si_c, o_c])), ("variance", [higher]), ("variance", [high])]
    assert [e.score for e in selection.events] == pytest.approx([0.8, 0.9, 6.0, 3.0])
    one = select_environments([atoms], SPECIES, SelectionSettings(budget=1, variance_threshold=1.0))
    assert [e.centres for e in one.events] == [[si_a, si_b]] and one.n_over_budget == 4


@pytest.fixture(scope="module")
def melt():
    """Real MD: 240 atoms of Vashishta SiO2, NVT at 4000 K, 1 fs steps, a frame every 10 fs."""
    frames = run_classical_md(scaled_cell(beta_cristobalite(), 10), vashishta_sio2_commands(), SPECIES,
                              [nvt(800, 4000.0)], timestep=1.0, sample_every=10, seed=7)[20:]
    for frame in frames:
        frame.info["task"] = "melt-4000K"
    return frames


def oxygen_far_from(atoms, atom, distance):
    return next(k for k in range(len(atoms)) if atoms[k].symbol == "O" and atoms.get_distance(atom, k, mic=True) > distance)


@pytest.mark.integration
def test_consecutive_frames_of_one_event_are_one_label(melt):
    first, then = melt[10].copy(), melt[11].copy()
    assert then.info["md_step"] - first.info["md_step"] == 10
    o = [k for k, s in enumerate(first.get_chemical_symbols()) if s == "O"][3]
    partner, _ = nearest_of(first, o, "Si")
    frames = [flag(first, {o: 0.92, partner: 0.92}), flag(then, {o: 0.95, partner: 0.95})]
    lag = per_atom_soap(frames, SPECIES, SelectionSettings(), [[o], [o]])
    # in the melt 10 fs is enough to move the O's environment past the SOAP threshold ...
    assert 1.0 - lag[0] @ lag[1] > MIN_DISTANCE
    no_time_rule = select_environments(frames, SPECIES, SelectionSettings(same_event_steps=0))
    assert [e.frame for e in no_time_rule.events] == [0, 1]
    # ... so the same event is recognised by the run, the step and the place
    selection = select_environments(frames, SPECIES, SelectionSettings())
    assert [(e.frame, e.centres) for e in selection.events] == [(0, sorted([o, partner]))]
    assert selection.n_duplicates == 2 and {d["decision"] for d in selection.details} == {"chosen", "merged", "same_event"}
    # another run at the same step is another event
    other = frames[1].copy()
    other.info["task"] = "another-run"
    assert len(select_environments([frames[0], other], SPECIES, SelectionSettings()).events) == 2


@pytest.mark.integration
def test_distinct_events_of_one_run_each_get_a_label_within_the_budget(melt):
    early, late = melt[0].copy(), melt[50].copy()  # 500 fs apart
    o = [k for k, s in enumerate(early.get_chemical_symbols()) if s == "O"][5]
    elsewhere = oxygen_far_from(early, o, 6.0)
    frames = [flag(early, {o: 0.9, elsewhere: 0.93}), flag(late, {o: 0.91})]
    selection = select_environments(frames, SPECIES, SelectionSettings(budget=5))
    assert [(e.frame, e.centres) for e in selection.events] == [(0, [o]), (1, [o]), (0, [elsewhere])]
    assert all(e.soap_distance > MIN_DISTANCE for e in selection.events[1:])
    tight = select_environments(frames, SPECIES, SelectionSettings(budget=1))
    assert [(e.frame, e.centres) for e in tight.events] == [(0, [o])]
    assert tight.n_over_budget == 2 and tight.n_duplicates == 0
    # a small cell is labelled whole: its flagged atoms are one event however far apart
    small = select_environments(frames, SPECIES, SelectionSettings(whole_frame_atoms=240))
    assert [(e.frame, e.centres) for e in small.events] == [(0, [o, elsewhere]), (1, [o])]


def test_known_environments_are_not_selected_again(planted):
    atoms = planted[1]
    again = select_environments([atoms], SPECIES, SelectionSettings(), known=[atoms.copy()])
    assert again.events == [] and again.n_duplicates == 2 and again.n_candidates == 2
    # a rattled copy of the distorted cell is known as well: 0.02 A of noise stays below the threshold
    close = select_environments([atoms], SPECIES, SelectionSettings(), known=[rattled(atoms, 0.01, 3)])
    assert close.events == []
    # an event chosen in this batch suppresses its twin in another run's frame
    twin = atoms.copy()
    twin.info["task"] = "other"
    both = select_environments([atoms, twin], SPECIES, SelectionSettings())
    assert len(both.events) == 1 and both.n_duplicates == 2


def test_fallback_when_nothing_is_flagged(planted):
    base, atoms, o, si = planted
    quiet = atoms.copy()
    del quiet.arrays["short_pair_ratio"]
    variance = np.linspace(0.0, 1.0, len(quiet))  # highest on the last atoms
    quiet.arrays["local_gap_variance"] = variance
    top = int(np.argmax(variance))
    picked = select_environments([quiet], SPECIES, SelectionSettings(budget=3, variance_threshold=10.0))
    assert picked.fallback and picked.n_candidates == 0 and len(picked.events) == 3
    assert picked.events[0].centres == [top] and all(e.kind == "informative" for e in picked.events)
    assert [e.score for e in picked.events] == sorted([e.score for e in picked.events], reverse=True)
    # the next events are the highest-variance atoms outside the merge radius of those chosen
    for k, event in enumerate(picked.events[1:], start=1):
        gaps = quiet.get_distances(event.centres[0], [e.centres[0] for e in picked.events[:k]], mic=True)
        assert gaps.min() > 4.0
    # without variance: farthest from the known environments, i.e. the distorted pair
    del quiet.arrays["local_gap_variance"]
    farthest = select_environments([quiet], SPECIES, SelectionSettings(budget=1), known=[base])
    assert farthest.events[0].centres[0] in (o, si)
    assert select_environments([quiet], SPECIES, SelectionSettings(fallback=False)).events == []
    assert select_environments([quiet], SPECIES, SelectionSettings(), known=[quiet]).events == []


def test_same_inputs_same_choice_and_ties_in_frame_then_atom_order():
    frames = [flag(crystal_240(seed=s, stdev=0.1), {3: 0.9, 150: 0.9}) for s in (11, 12)]
    runs = [select_environments(frames, SPECIES, SelectionSettings(budget=3)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert [(e.frame, e.centres[0]) for e in runs[0].events] == [(0, 3), (0, 150), (1, 3)]
    assert runs[0].n_over_budget == 1


@pytest.fixture(scope="module")
def config():
    return load_campaign_config({"explore": {"sizes": [1, 10]}, "judge": {"max_energy_mae": 10.0, "force_tolerance": 0.5},
                                 "stop": {"max_iterations": 4, "max_labels": 100}})


def judgement(iteration=1, mae=5.0, rmse=0.3, verdicts=None, n_labels=10, n_selected=3, **figures):
    verdicts = verdicts or {"a-x1": "clean", "a-x10": "clean", "b-x10": "clean"}
    sizes = {k: int(k.split("-x")[1]) for k in verdicts}
    return Judgement(iteration, mae, rmse, verdicts, sizes, n_labels=n_labels, n_selected=n_selected,
                     n_new_labels=n_selected, **{**GATES_PASS, "tolerance": 0.5, "explored_force_rmse": 0.3, **figures})


def test_stop_rules(config):
    assert decide(judgement(), config).rule == "converged"
    # a clustered run at the training size does not block convergence; one at 10x does
    assert decide(judgement(verdicts={"a-x1": "clustered", "a-x10": "clean"}), config).rule == "converged"
    dirty = decide(judgement(verdicts={"a-x1": "clean", "a-x10": "clustered"}), config)
    assert not dirty.stop and "a-x10" in dirty.why
    assert not decide(judgement(mae=12.0), config).stop
    assert decide(judgement(mae=12.0, iteration=4), config).rule == "max_iterations"
    assert decide(judgement(rmse=0.9, n_labels=100), config).rule == "max_labels"
    assert decide(judgement(rmse=math.nan), config).rule == "converged"  # energies-only labels
    assert decide(judgement(verdicts={"a-x10": "clustered"}, n_selected=0), config).rule == "nothing_to_learn"


def test_campaign_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="explore.sizes"):
        load_campaign_config({"explore": {"sizes": [0]}})
    with pytest.raises(ConfigError, match="explore.min_distances"):
        load_campaign_config({"explore": {"min_distances": {"Si-Si": 2.0}}})
    with pytest.raises(ConfigError, match="select.budget"):
        load_campaign_config({"select": {"budget": 0}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_campaign_config({"explore": {"seed": [1]}})
    # one tolerance: the former settings say what replaced them
    with pytest.raises(ConfigError, match="judge.max_force_rmse is now judge.force_tolerance"):
        load_campaign_config({"judge": {"max_force_rmse": 1.0}})
    with pytest.raises(ConfigError, match="'auto' is now 'tolerance'.*or 'percentile'"):
        load_campaign_config({"explore": {"variance_threshold": "auto"}})
    for bad in ("abc", -0.5, "0%", "150%", True):
        with pytest.raises(ConfigError, match="judge.force_tolerance"):
            load_campaign_config({"judge": {"force_tolerance": bad}})
    with pytest.raises(ConfigError, match="judge.test_frames is 0 with the accuracy gate"):
        load_campaign_config({"judge": {"test_frames": 0}})
    assert load_campaign_config({"judge": {"test_frames": 0, "gates": ["clean", "confidence"]}}).judge.test_frames == 0
    with pytest.raises(ConfigError, match="judge.gates"):
        load_campaign_config({"judge": {"gates": ["clean", "clean"]}})


def test_a_campaign_that_adds_labels_but_improves_no_failing_gate_stalls_naming_it(config):
    """judge.stall_iterations (2): labels were added, yet the failing gate's figure has not beaten
    its best from before the last 2 iterations; a gate that improved keeps the campaign going."""
    assert config.judge.stall_iterations == 2
    hist = [{"clean": 1.0, "confidence": 0.6, "accuracy": 0.3}, {"clean": 1.0, "confidence": 0.5, "accuracy": 0.3}]
    stuck = decide(judgement(iteration=3, confident_fraction=0.55, history=hist), config)
    assert stuck.rule == "stalled" and "confidence 0.55, no better than its best before, 0.6" in stuck.why
    assert "short by 35%" in stuck.why
    improving = [{"clean": 1.0, "confidence": 0.5, "accuracy": 0.3}, {"clean": 1.0, "confidence": 0.6, "accuracy": 0.3}]
    assert decide(judgement(iteration=3, confident_fraction=0.55, history=improving), config).rule == "continue"
    # too short a history to call it, and an iteration that passes its gates converges whatever came before
    assert decide(judgement(iteration=2, confident_fraction=0.55, history=hist[:1]), config).rule == "continue"
    assert decide(judgement(iteration=3, history=hist), config).rule == "converged"
    # the accuracy gate's figure is an error: lower is better
    worse = [{"clean": 1.0, "confidence": 1.0, "accuracy": 0.52}, {"clean": 1.0, "confidence": 1.0, "accuracy": 0.6}]
    stalled = decide(judgement(iteration=3, explored_force_rmse=0.55, history=worse), config)
    assert stalled.rule == "stalled" and "accuracy" in stalled.why and "explored-set force RMSE 0.550" in stalled.why


def test_a_time_budget_stops_before_an_iteration_that_would_overrun_it(config):
    """stop.max_minutes: after an iteration, stop as time_limit when the next one, as long as the
    last, would end past the budget; the reason keeps what the gates still lack."""
    from types import SimpleNamespace

    from alcgap.workflow.campaign import out_of_time
    from alcgap.workflow.stages.stop import StopDecision

    said: list[str] = []
    limited = config.model_copy(update={"stop": config.stop.model_copy(update={"max_minutes": 10.0})})
    run = SimpleNamespace(config=limited, log=said.append)
    going = StopDecision(False, "continue", "confidence: 40% of 90 frames ... (short by 50%)")
    assert out_of_time(run, going, elapsed=300.0, last=240.0) == going  # 9 min projected: go on
    stopped = out_of_time(run, going, elapsed=420.0, last=240.0)  # 11 min projected
    assert stopped.stop and stopped.rule == "time_limit" and "(short by 50%)" in stopped.why and said
    assert "stop.max_minutes 10: 7.0 min so far" in stopped.why
    done = StopDecision(True, "converged", "every gate holds")
    assert out_of_time(run, done, elapsed=9000.0, last=900.0) == done  # a decided stop stands
    assert out_of_time(SimpleNamespace(config=config, log=said.append), going, 1e6, 1e6) == going  # no budget set
