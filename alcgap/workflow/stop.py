"""The stopping rule of a campaign, as a pure function of an iteration's judgement.

Converged: every run at the target size (``judge.target_size`` x the training cell, 10 in the
paper) was clean on every monitored frame, and the held-out errors (energy, force and, when
``judge.max_stress_rmse`` is set, stress) are under their gates.
Otherwise the campaign goes on while each iteration learns something: an iteration that could
add no new label stops with ``nothing_to_learn``, naming the gate that failed and the setting to
change, rather than refit the same data. The iteration and label limits stop it too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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


def gates(judgement: Judgement, config: CampaignConfig) -> tuple[bool, bool, bool, bool]:
    """(target-size runs clean, energy, force and stress errors under their gates).

    With a stress gate (``judge.max_stress_rmse``) a model whose held-out frames carry no stress
    fails it: a gate asked for and never measured is not passed."""
    judge = config.judge
    energy_ok = judgement.energy_mae <= judge.max_energy_mae
    force_ok = math.isnan(judgement.force_rmse) or judgement.force_rmse <= judge.max_force_rmse
    stress_ok = judge.max_stress_rmse is None or judgement.stress_rmse <= judge.max_stress_rmse  # nan fails
    return judgement.target_clean(), energy_ok, force_ok, stress_ok


def decide(judgement: Judgement, config: CampaignConfig) -> StopDecision:
    """Converged when the target-size runs are all clean and the held-out errors are under their
    gates; otherwise stop at the iteration or label limit, or when the iteration learned nothing;
    otherwise go on."""
    judge = config.judge
    clean, energy_ok, force_ok, stress_ok = gates(judgement, config)
    size = f"{judgement.target_size}x" + ("" if judgement.target_size == 10 else " (not the paper's 10x)")
    stress = f"stress RMSE {judgement.stress_rmse:.2f}"
    if clean and energy_ok and force_ok and stress_ok:
        return StopDecision(True, "converged", f"iteration {judgement.iteration}: every {size} run is clean on every "
                            f"monitored frame, energy MAE {judgement.energy_mae:.2f} <= {judge.max_energy_mae} meV/atom, "
                            f"force RMSE {judgement.force_rmse:.3f} <= {judge.max_force_rmse} eV/A"
                            + (f", {stress} <= {judge.max_stress_rmse} GPa" if judge.max_stress_rmse is not None else ""))
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
        else:
            fix = ("the runs are clean and explore nothing the model does not know: explore harder "
                   "(explore.temperatures, explore.protocol_scale), or relax the error gate")
        return StopDecision(True, "nothing_to_learn", f"iteration {judgement.iteration} added no label, so the next "
                            f"would refit the same data; {failing}; {fix}")
    return StopDecision(False, "continue", failing)
