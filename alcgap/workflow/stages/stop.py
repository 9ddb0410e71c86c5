"""The stopping rule of a campaign, as a pure function of an iteration's judgement.

Converged: every run at the target size (``judge.target_size`` x the training cell, 10 in the
paper) was clean on every monitored frame, and the held-out errors (energy, force and, when
``judge.max_stress_rmse`` is set, stress) are under their gates; with ``judge.survival`` set, the
survival test (run once every other gate passes) must hold too: ``judge.survival.min_held``
of its hot runs survived with no pair far inside its aux cutoff.
Otherwise the campaign goes on while each iteration learns something: an iteration that could
add no new label stops with ``nothing_to_learn``, naming the gate that failed and the setting to
change, rather than refit the same data. The iteration and label limits stop it too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from alcgap.config import CampaignConfig


@dataclass
class Judgement:
    """What one iteration showed: held-out errors of its model and the verdicts of its MD runs."""

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


@dataclass
class StopDecision:
    stop: bool
    #: "converged" | "max_iterations" | "max_labels" | "nothing_to_learn" | "continue"
    rule: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


class Gates(NamedTuple):
    """The verdict of each gate of an iteration."""

    clean: bool
    energy: bool
    force: bool
    stress_rmse: bool
    #: the survival test (``judge.survival``): passes without one; fails when set and not measured
    survival_test: bool

    def before_survival_test(self) -> bool:
        """Every gate but the survival test passes: what the survival test waits for."""
        return self.clean and self.energy and self.force and self.stress_rmse


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


def gates(judgement: Judgement, config: CampaignConfig) -> Gates:
    """(target-size runs clean, energy, force and stress errors under their gates, survival test held).

    With a stress gate (``judge.max_stress_rmse``) a model whose held-out frames carry no stress
    fails it: a gate asked for and never measured is not passed. The same holds for the stress
    test (``judge.survival``): not run, it is not passed (see :meth:`Gates.before_survival_test`)."""
    judge = config.judge
    energy_ok = judgement.energy_mae <= judge.max_energy_mae
    force_ok = math.isnan(judgement.force_rmse) or judgement.force_rmse <= judge.max_force_rmse
    stress_ok = judge.max_stress_rmse is None or judgement.stress_rmse <= judge.max_stress_rmse  # nan fails
    survival_ok = judge.survival is None or (judgement.survival_held is not None
                                              and judgement.survival_held >= judge.survival.min_held)
    return Gates(judgement.target_clean(), energy_ok, force_ok, stress_ok, survival_ok)


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


def decide(judgement: Judgement, config: CampaignConfig) -> StopDecision:
    """Converged when the target-size runs are all clean and the held-out errors are under their
    gates; otherwise stop at the iteration or label limit, or when the iteration learned nothing;
    otherwise go on."""
    judge = config.judge
    verdict = gates(judgement, config)
    clean, energy_ok, force_ok, stress_ok, survival_ok = verdict
    size = f"{judgement.target_size}x" + ("" if judgement.target_size == 10 else " (not the paper's 10x)")
    stress = f"stress RMSE {judgement.stress_rmse:.2f}"
    if all(verdict):
        held_runs = ""
        if judge.survival is not None:
            runs = judgement.survival_runs
            share = (f"{sum(bool(r['held']) for r in runs)} of {len(runs)} runs" if runs
                     else f"{judgement.survival_held:.0%} of the runs")
            held_runs = f", survival test: {share} held (judge.survival.min_held {judge.survival.min_held})"
        return StopDecision(True, "converged", f"iteration {judgement.iteration}: every {size} run is clean on every "
                            f"monitored frame, energy MAE {judgement.energy_mae:.2f} <= {judge.max_energy_mae} meV/atom, "
                            f"force RMSE {judgement.force_rmse:.3f} <= {judge.max_force_rmse} eV/A"
                            + (f", {stress} <= {judge.max_stress_rmse} GPa" if judge.max_stress_rmse is not None else "")
                            + held_runs)
    missing = []
    if not clean:
        dirty = [t for t in judgement.target_runs() if judgement.verdicts.get(t) != "clean"]
        missing.append(f"{size} runs not clean: {dirty}")
    if not energy_ok:
        missing.append(f"energy MAE {judgement.energy_mae:.2f} > judge.max_energy_mae {judge.max_energy_mae} meV/atom")
    if not force_ok:
        missing.append(f"force RMSE {judgement.force_rmse:.3f} > judge.max_force_rmse {judge.max_force_rmse} eV/A")
    if not stress_ok and math.isnan(judgement.stress_rmse):
        missing.append(f"judge.max_stress_rmse {judge.max_stress_rmse} GPa is set but no held-out frame carries a stress")
    elif not stress_ok:
        off = " (main.use_virials is false: the fit never saw a stress)" if config.main.use_virials is False else ""
        missing.append(f"{stress} > judge.max_stress_rmse {judge.max_stress_rmse} GPa{off}")
    # the survival test runs only once every other gate passed: not run otherwise, and not a reason
    survival_failed = not survival_ok and verdict.before_survival_test()
    if survival_failed:
        missing.append(_survival_failure(judgement, config))
    failing = "; ".join(missing)
    if judgement.iteration >= config.stop.max_iterations:
        return StopDecision(True, "max_iterations", f"reached stop.max_iterations={config.stop.max_iterations}; {failing}")
    if judgement.n_labels >= config.stop.max_labels:
        return StopDecision(True, "max_labels", f"{judgement.n_labels} labels >= stop.max_labels={config.stop.max_labels}; {failing}")
    if judgement.n_new_labels == 0:
        if judgement.n_selected:
            fix = "every selected frame failed to label: see the failed rows of data.db (label_reason)"
        elif not clean:
            fix = ("no run flagged a new environment: lower explore.variance_factor, raise distances.data_margin "
                   "or select.budget")
        elif survival_failed and judgement.survival_held is not None:
            hotter = max(config.explore.temperatures) < max(judge.survival.temperatures)
            fix = ("exploration is clean and found nothing new, but the survival test did not hold: "
                   + ("explore as hot as it (explore.temperatures, above)" if hotter else
                      "explore longer or wider (explore.protocol_scale, explore.seeds, explore.sizes)")
                   + " so that the loop flags and labels that range, or relax judge.survival (min_held, held_fraction, "
                   "temperatures)")
        else:
            fix = ("the runs are clean and explore nothing the model does not know: explore harder "
                   "(explore.temperatures, explore.protocol_scale), or relax the error gate")
        return StopDecision(True, "nothing_to_learn", f"iteration {judgement.iteration} added no label, so the next "
                            f"would refit the same data; {failing}; {fix}")
    return StopDecision(False, "continue", failing)
