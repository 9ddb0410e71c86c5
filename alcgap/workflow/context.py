"""What every stage of a run shares: the config, the run directory, the reference and its label
store, the apps that do the work (Parsl-bound or inline), the progress board and the log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ase import Atoms
from rich.console import Console
from rich.text import Text

from alcgap.config import CampaignConfig, FitConfig
from alcgap.reference.base import Reference
from alcgap.store import LabelStore
from alcgap.workflow.checkpoint import StageRecord, done_or_run
from alcgap.workflow.progress import ProgressBoard
from alcgap.workflow.state import IterationState

#: the campaign's messages: a console on stderr (above the live panel) and campaign.log
console = Console(stderr=True)
log = logging.getLogger("alcgap.campaign")

#: how a selection function looks: (flagged candidates, frames already known, budget) -> chosen
SelectFn = Callable[[list[Atoms], list[Atoms], int], Sequence[Atoms]]


@dataclass
class Run:
    """One run directory's shared state; stages read it and call its apps."""

    config: FitConfig | CampaignConfig
    run_dir: Path
    reference: Reference
    store: LabelStore
    #: CampaignApps (Parsl) or InlineApps (called here): see :mod:`alcgap.workflow.apps`
    apps: Any
    board: ProgressBoard
    #: OpenMP threads of gap_fit and quippy (the config's, else the site's)
    threads: int | None = None
    select_fn: SelectFn | None = None
    settings_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.settings_hash = self.reference.settings_hash()

    @property
    def potential(self) -> str:
        """"composite" (aux + main) or "plain" (main alone); a fit is always composite."""
        return getattr(self.config, "potential", "composite")

    def log(self, message: str) -> None:
        """A campaign message: on the console, and in ``campaign.log`` without its markup."""
        console.log(message)
        try:
            plain = Text.from_markup(message).plain
        except Exception:  # noqa: BLE001  (text that only looks like markup: kept as written)
            plain = message
        log.info(plain)

    def iteration(self, k: int) -> IterationState:
        return IterationState(self.run_dir, k)

    def stage(self, state: IterationState, name: str, work: Callable[[], dict]) -> dict:
        """A stage of an iteration, run once: its outputs read back from ``state.json`` when it
        finished before, else ``work()``'s, timed and recorded."""
        if state.done(name):
            self.log(f"iteration {state.iteration}: {name} already done")

        def timed() -> dict:
            self.log(f"iteration {state.iteration}: {name} ...")
            self.board.set_stage(f"iteration {state.iteration}: {name}")
            started = time.time()
            outputs = work()
            outputs["seconds"] = round(time.time() - started, 2)
            # the outputs themselves are in state.json; the log says where, not what (a curve is long)
            log.info("iteration %d stage %s done in %.1f s (outputs: %s)", state.iteration, name,
                     outputs["seconds"], state.path.relative_to(self.run_dir))
            return outputs

        done_or_run(StageRecord(state, name), timed)
        return state.get(name)
