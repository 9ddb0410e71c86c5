"""The stopping rule of a campaign, as a pure function of an iteration's judgement."""

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
    #: task id -> "clean" | "clustered" (with the cell multiplier of each task)
    verdicts: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    n_labels: int = 0
    n_selected: int = 0

    def largest_size_clean(self) -> bool:
        """All runs at the largest cell size (10x in the paper) are free of clustering."""
        if not self.sizes:
            return False
        largest = max(self.sizes.values())
        runs = [task for task, size in self.sizes.items() if size == largest]
        return bool(runs) and all(self.verdicts.get(task) == "clean" for task in runs)


@dataclass
class StopDecision:
    stop: bool
    rule: str  # "converged" | "max_iterations" | "max_labels" | "continue"
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def decide(judgement: Judgement, config: CampaignConfig) -> StopDecision:
    """Converged when the largest-size runs are all clean and the held-out errors are under their
    thresholds; otherwise stop at the iteration or label limit; otherwise go on."""
    clean = judgement.largest_size_clean()
    energy_ok = judgement.energy_mae <= config.judge.max_energy_mae
    force_ok = math.isnan(judgement.force_rmse) or judgement.force_rmse <= config.judge.max_force_rmse
    if clean and energy_ok and force_ok:
        return StopDecision(True, "converged", f"iteration {judgement.iteration}: every largest-size run is clean, "
                            f"energy MAE {judgement.energy_mae:.2f} <= {config.judge.max_energy_mae} meV/atom, "
                            f"force RMSE {judgement.force_rmse:.3f} <= {config.judge.max_force_rmse} eV/A")
    missing = []
    if not clean:
        dirty = sorted(t for t, v in judgement.verdicts.items() if v != "clean")
        missing.append(f"runs not clean: {dirty}")
    if not energy_ok:
        missing.append(f"energy MAE {judgement.energy_mae:.2f} > {config.judge.max_energy_mae} meV/atom")
    if not force_ok:
        missing.append(f"force RMSE {judgement.force_rmse:.3f} > {config.judge.max_force_rmse} eV/A")
    if judgement.iteration >= config.stop.max_iterations:
        return StopDecision(True, "max_iterations", f"reached {config.stop.max_iterations} iterations; " + "; ".join(missing))
    if judgement.n_labels >= config.stop.max_labels:
        return StopDecision(True, "max_labels", f"{judgement.n_labels} labels >= {config.stop.max_labels}; " + "; ".join(missing))
    if judgement.n_selected == 0 and not clean:
        return StopDecision(True, "nothing_selected",
                            "runs are not clean but no frame was flagged for labelling: lower "
                            "explore.variance_threshold or raise explore.min_distances; " + "; ".join(missing))
    return StopDecision(False, "continue", "; ".join(missing))
