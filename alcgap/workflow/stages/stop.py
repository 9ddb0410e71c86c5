"""The stopping rule of a campaign, as a pure function of an iteration's judgement.

Converged when every gate of ``judge.gates`` holds (all three by default):

1. **clean**, the paper's: every run at the target size (``judge.target_size`` x the training cell,
   10 in the paper) free of clustering on every monitored frame;
2. **confidence**: at least ``judge.confident_fraction`` of those runs' monitored frames have no atom
   whose predicted force error is over ``judge.force_tolerance``;
3. **accuracy** where the loop goes: the force error on the explored test set, and on the held-out
   set, within the tolerance once its standard error is added; the held-out energy (and, when
   ``judge.max_stress_rmse`` is set, stress) errors under their gates.

With ``judge.survival`` set, the survival test (run once every other gate passes) must hold too.
Otherwise the campaign goes on while each iteration learns something: an iteration that could add
no new label stops with ``nothing_to_learn``; an iteration that adds labels while no failing gate's
figure has improved on its best for ``judge.stall_iterations`` iterations stops as ``stalled``,
naming the gate. The iteration and label limits stop it too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from alcgap.config import CampaignConfig


@dataclass
class Judgement:
    """What one iteration showed: held-out errors of its model, the verdicts of its MD runs, the
    confidence of its target-size runs and its error on the explored test set."""

    iteration: int
    energy_mae: float  # meV/atom, held-out
    force_rmse: float  # eV/A, held-out (nan when the labels carry no forces)
    #: task id -> "clean" | "clustered" | "failed" (with the cell multiplier of each task)
    verdicts: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    target_size: int = 10
    n_labels: int = 0
    n_selected: int = 0
    #: labels this iteration added to the training data (selected and labelled ok)
    n_new_labels: int = 0
    #: GPa, held-out (nan when no held-out frame carries a stress)
    stress_rmse: float = float("nan")
    #: the force tolerance (eV/A) the gates use; None: not known (then the accuracy gate is not measured)
    tolerance: float | None = None
    #: the standard error of the held-out force RMSE (eV/A, over frames)
    force_se: float = 0.0
    #: target-size monitored frames with no atom over the tolerance, of all (None: not measured)
    confident_fraction: float | None = None
    n_target_frames: int = 0
    #: share of the target-size monitored frames free of clustering (the clean gate's figure)
    clean_frames: float | None = None
    #: force RMSE (eV/A) on the explored test set's atoms at the explored geometry, its standard
    #: error over frames, and its frames (None: no explored test frame yet)
    explored_force_rmse: float | None = None
    explored_force_se: float | None = None
    n_explored: int = 0
    #: the gate figures of the earlier iterations (:meth:`figures`), oldest first: the stall rule's memory
    history: list[dict] = field(default_factory=list)
    #: the survival test (``judge.survival``): the fraction of its runs that held; None: not run (it
    #: runs only when every other gate passed)
    survival_held: float | None = None
    #: per survival run: temperature, seed, outcome, held, first_inside_aux_step, and its pair
    #: closest to the aux (``worst_pair``, ``worst_fraction``: shortest distance over the cutoff)
    survival_runs: list[dict] = field(default_factory=list)
    #: what the survival test ran with (:func:`survival_settings`): a replay with other settings runs it again
    survival_settings: dict | None = None

    def target_runs(self) -> list[str]:
        return sorted(task for task, size in self.sizes.items() if size == self.target_size)

    def target_clean(self) -> bool:
        """All runs at the target size are free of clustering on every monitored frame."""
        runs = self.target_runs()
        return bool(runs) and all(self.verdicts.get(task) == "clean" for task in runs)

    def explored_upper(self) -> float | None:
        """The explored test set's force RMSE plus its standard error (what the accuracy gate compares)."""
        if self.explored_force_rmse is None:
            return None
        return self.explored_force_rmse + (self.explored_force_se or 0.0)

    def figures(self) -> dict:
        """Each gate's figure, higher better for clean and confidence, lower for accuracy."""
        return {"clean": self.clean_frames, "confidence": self.confident_fraction, "accuracy": self.explored_upper()}


@dataclass
class StopDecision:
    stop: bool
    #: "converged" | "max_iterations" | "max_labels" | "nothing_to_learn" | "stalled" | "continue";
    #: the driver adds "time_limit" (stop.max_minutes)
    rule: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


class Gates(NamedTuple):
    """The verdict of each gate of an iteration (a gate not in ``judge.gates`` passes)."""

    clean: bool
    confidence: bool
    accuracy: bool
    #: the survival test (``judge.survival``): passes without one; fails when set and not measured
    survival_test: bool

    def before_survival_test(self) -> bool:
        """Every gate but the survival test passes: what the survival test waits for."""
        return self.clean and self.confidence and self.accuracy


def survival_md_settings(config: CampaignConfig) -> dict:
    """How each survival run is integrated and judged against the aux: the explore section's step
    settings and the aux cutoffs (the same for every run of a survival test)."""
    explore = config.explore
    return {"timestep": explore.timestep, "max_displacement": explore.max_displacement,
            "max_energy_change": explore.max_energy_change, "monitor_every": explore.monitor_every,
            "aux_cutoffs": dict(config.aux.cutoffs)}


def survival_settings(config: CampaignConfig) -> dict | None:
    """What a survival test is measured with: ``judge.survival`` (but ``min_held``, which only judges
    it) and :func:`survival_md_settings`; None without a survival test."""
    stress = config.judge.survival
    if stress is None:
        return None
    return {**stress.model_dump(mode="json", exclude={"min_held"}), **survival_md_settings(config)}


def accuracy_misses(judgement: Judgement, config: CampaignConfig) -> list[str]:
    """What keeps the accuracy gate shut, each with its figure and by how much ([]: it holds).
    A figure asked for and never measured fails: no explored test frame, a stress gate without
    a held-out stress."""
    judge, j, tol = config.judge, judgement, judgement.tolerance
    misses = []
    if j.energy_mae > judge.max_energy_mae:
        misses.append(f"held-out energy MAE {j.energy_mae:.2f} > judge.max_energy_mae {judge.max_energy_mae} meV/atom")
    if tol is None:
        misses.append("the force tolerance is not known for this iteration (judged before judge.force_tolerance existed)")
    elif not math.isnan(j.force_rmse) and j.force_rmse + j.force_se > tol:
        misses.append(f"held-out force RMSE {j.force_rmse:.3f} +- {j.force_se:.3f} > tolerance {tol:.3f} eV/A "
                      f"(by {j.force_rmse + j.force_se - tol:.3f})")
    if j.explored_force_rmse is None:
        misses.append("no explored test frame is labelled yet (judge.test_frames)")
    elif tol is not None and j.explored_upper() > tol:
        misses.append(f"explored-set force RMSE {j.explored_force_rmse:.3f} +- {j.explored_force_se:.3f} eV/A on "
                      f"{j.n_explored} frames > tolerance {tol:.3f} (by {j.explored_upper() - tol:.3f})")
    if judge.max_stress_rmse is not None:
        if math.isnan(j.stress_rmse):
            misses.append(f"judge.max_stress_rmse {judge.max_stress_rmse} GPa is set but no held-out frame carries a stress")
        elif j.stress_rmse > judge.max_stress_rmse:
            off = " (main.use_virials is false: the fit never saw a stress)" if config.main.use_virials is False else ""
            misses.append(f"stress RMSE {j.stress_rmse:.2f} > judge.max_stress_rmse {judge.max_stress_rmse} GPa{off}")
    return misses


def confidence_holds(judgement: Judgement, config: CampaignConfig) -> bool:
    share = judgement.confident_fraction
    return share is not None and judgement.n_target_frames > 0 and share >= config.judge.confident_fraction


def gates(judgement: Judgement, config: CampaignConfig) -> Gates:
    """(clean, confidence, accuracy, survival test held): each gate not in ``judge.gates`` passes.

    A gate asked for and never measured fails: the survival test (``judge.survival``) not run is
    not passed (see :meth:`Gates.before_survival_test`)."""
    judge, on = config.judge, set(config.judge.gates)
    survival_ok = judge.survival is None or (judgement.survival_held is not None
                                              and judgement.survival_held >= judge.survival.min_held)
    return Gates("clean" not in on or judgement.target_clean(),
                 "confidence" not in on or confidence_holds(judgement, config),
                 "accuracy" not in on or not accuracy_misses(judgement, config), survival_ok)


def stalled(judgement: Judgement, config: CampaignConfig, failing: list[str]) -> str | None:
    """Why the campaign stalls (None: it does not): it added labels, yet no failing gate's
    figure improved on its best of before for the last ``judge.stall_iterations`` iterations."""
    n = config.judge.stall_iterations
    history = [*judgement.history, judgement.figures()]
    if judgement.n_new_labels == 0 or len(history) <= n or not failing:
        return None
    said = []
    for gate in failing:
        sign = -1.0 if gate == "accuracy" else 1.0  # the explored error: lower is better
        values = [h.get(gate) for h in history]
        before = [sign * v for v in values[:-n] if v is not None]
        recent = [sign * v for v in values[-n:] if v is not None]
        if not before or not recent or max(recent) > max(before):
            return None
        said.append(f"{gate} {values[-1]:.3g}, no better than its best before, {sign * max(before):.3g}")
    return (f"no failing gate improved in {n} iterations while labels were added: " + "; ".join(said))


def _survival_failure(judgement: Judgement, config: CampaignConfig) -> str:
    """Why the survival test failed: held runs out of all, per temperature, and the runs that did not hold."""
    stress = config.judge.survival
    runs = judgement.survival_runs
    if judgement.survival_held is None:
        return ("judge.survival is set but this iteration's survival test never ran (it was set after the iteration "
                "was judged): a resume runs it")
    by_t: dict[float, list[dict]] = {}
    for run in runs:
        by_t.setdefault(float(run["temperature"]), []).append(run)
    counts = ", ".join(f"{sum(bool(r['held']) for r in group)} of {len(group)} runs held at {t:g} K"
                       for t, group in sorted(by_t.items())) or f"{judgement.survival_held:.0%} of the runs held"
    failed = []
    for run in runs:
        if run["held"]:
            continue
        what = run["outcome"] if run["outcome"] == "survived" else f"{run['outcome']} at step {run.get('steps_done')}"
        closest = (f", {run['worst_pair']} down to {run['worst_fraction']:.2f} of its aux cutoff"
                   if run.get("worst_pair") else "")
        inside = (f", inside the aux from step {run['first_inside_aux_step']}"
                  if run.get("first_inside_aux_step") is not None else "")
        failed.append(f"seed {run['seed']} at {float(run['temperature']):g} K: {what}{closest}{inside}")
    shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
    hottest = max((float(r["temperature"]) for r in runs if not r["held"]), default=max(stress.temperatures))
    explored = max(config.explore.temperatures)
    hint = (f"; exploration runs at most {explored:g} K: add explore.temperatures up to {hottest:g} K so that it "
            "reaches, flags and labels the range the survival runs reached" if explored < hottest else "")
    return (f"survival test: {counts} (judge.survival.min_held {stress.min_held}; a run holds when it survives with "
            f"every pair at >= judge.survival.held_fraction {stress.held_fraction} of its aux cutoff)"
            + (f": {shown}" if shown else "") + hint)


def gate_figures(judgement: Judgement, config: CampaignConfig, every: bool = False) -> str:
    """Each gate of ``judge.gates`` (``every``: all three, deciding or not) with its figure and
    threshold, for the log and the decision."""
    j, judge, said = judgement, config.judge, []
    on = ("clean", "confidence", "accuracy") if every else judge.gates
    size = f"{j.target_size}x" + ("" if j.target_size == 10 else " (not the paper's 10x)")
    if "clean" in on:
        runs = j.target_runs()
        clean = sum(j.verdicts.get(t) == "clean" for t in runs)
        said.append(f"clean: {clean} of {len(runs)} {size} runs free of clustering on every monitored frame")
    if "confidence" in on:
        share = "not measured" if j.confident_fraction is None else f"{j.confident_fraction:.0%}"
        said.append(f"confidence: {share} of {j.n_target_frames} {size} frames with no atom over the tolerance "
                    f"(needs {judge.confident_fraction:.0%})")
    if "accuracy" in on:
        tol = "?" if j.tolerance is None else f"{j.tolerance:.3f}"
        explored = ("no explored test frame" if j.explored_force_rmse is None else
                    f"explored-set force RMSE {j.explored_force_rmse:.3f} +- {j.explored_force_se:.3f} eV/A ({j.n_explored} frames)")
        said.append(f"accuracy: {explored}, held-out {j.force_rmse:.3f} +- {j.force_se:.3f} eV/A, tolerance {tol} eV/A; "
                    f"held-out energy MAE {j.energy_mae:.2f} (gate {judge.max_energy_mae}) meV/atom"
                    + (f", stress RMSE {j.stress_rmse:.2f} (gate {judge.max_stress_rmse}) GPa"
                       if judge.max_stress_rmse is not None else ""))
    return "; ".join(said)


def decide(judgement: Judgement, config: CampaignConfig) -> StopDecision:
    """Converged when every gate of ``judge.gates`` holds (and the survival test, when set);
    otherwise stop at the iteration or label limit, when the iteration learned nothing, or when
    the gates stalled; otherwise go on. Each decision names every gate's figure."""
    judge = config.judge
    verdict = gates(judgement, config)
    size = f"{judgement.target_size}x" + ("" if judgement.target_size == 10 else " (not the paper's 10x)")
    figures = gate_figures(judgement, config)
    if all(verdict):
        held_runs = ""
        if judge.survival is not None:
            runs = judgement.survival_runs
            share = (f"{sum(bool(r['held']) for r in runs)} of {len(runs)} runs" if runs
                     else f"{judgement.survival_held:.0%} of the runs")
            held_runs = f"; survival test: {share} held (judge.survival.min_held {judge.survival.min_held})"
        return StopDecision(True, "converged", f"iteration {judgement.iteration}: every gate holds: {figures}{held_runs}")
    missing, failing_gates = [], []
    if not verdict.clean:
        dirty = [t for t in judgement.target_runs() if judgement.verdicts.get(t) != "clean"]
        missing.append(f"clean: {size} runs not clean: {dirty}")
        failing_gates.append("clean")
    if not verdict.confidence:
        share = judgement.confident_fraction
        missing.append("confidence: not measured (no monitored target-size frame)" if share is None or not judgement.n_target_frames
                       else f"confidence: {share:.0%} of {judgement.n_target_frames} {size} frames with no atom over the "
                       f"tolerance < judge.confident_fraction {judge.confident_fraction:.0%} (short by "
                       f"{judge.confident_fraction - share:.0%})")
        failing_gates.append("confidence")
    if not verdict.accuracy:
        missing.append("accuracy: " + "; ".join(accuracy_misses(judgement, config)))
        failing_gates.append("accuracy")
    # the survival test runs only once every other gate passed: not run otherwise, and not a reason
    survival_failed = not verdict.survival_test and verdict.before_survival_test()
    if survival_failed:
        missing.append(_survival_failure(judgement, config))
    failing = "; ".join(missing)
    if judgement.iteration >= config.stop.max_iterations:
        return StopDecision(True, "max_iterations", f"reached stop.max_iterations={config.stop.max_iterations}; {failing}")
    if judgement.n_labels >= config.stop.max_labels:
        return StopDecision(True, "max_labels", f"{judgement.n_labels} labels >= stop.max_labels={config.stop.max_labels}; {failing}")
    if judgement.n_new_labels == 0:
        return StopDecision(True, "nothing_to_learn", f"iteration {judgement.iteration} added no label, so the next "
                            f"would refit the same data; {failing}; {_nothing_learned(judgement, config, verdict, survival_failed)}")
    stall = stalled(judgement, config, failing_gates)
    if stall is not None:
        return StopDecision(True, "stalled", f"iteration {judgement.iteration}: {stall} (judge.stall_iterations "
                            f"{judge.stall_iterations}); {failing}")
    return StopDecision(False, "continue", failing)


def _nothing_learned(judgement: Judgement, config: CampaignConfig, verdict: Gates, survival_failed: bool) -> str:
    """What to change when an iteration could add no label."""
    judge = config.judge
    if judgement.n_selected:
        return "every selected frame failed to label: see the failed rows of data.db (label_reason)"
    if not verdict.clean or not verdict.confidence:
        return ("no run flagged a new environment the selection could take: raise select.budget or "
                "distances.data_margin, or tighten judge.force_tolerance")
    if survival_failed and judgement.survival_held is not None:
        hotter = max(config.explore.temperatures) < max(judge.survival.temperatures)
        return ("exploration is clean and found nothing new, but the survival test did not hold: "
                + ("explore as hot as it (explore.temperatures, above)" if hotter else
                   "explore longer or wider (explore.protocol_scale, explore.seeds, explore.sizes)")
                + " so that the loop flags and labels that range, or relax judge.survival (min_held, held_fraction, "
                "temperatures)")
    return ("the runs are clean and explore nothing the model does not know: explore harder "
            "(explore.temperatures, explore.protocol_scale), or relax the error gates")
