"""The active-learning campaign: the driver that wires stages, futures and checkpoints.

iteration 0   dimers + isolated atoms --label--> aux fit;  bootstrap frames --label--> held-out
              split; the one distance table                       (stages/bootstrap.py)
iteration k   fit the main GAP on the residual (stages/fit.py) -> explore: MD tasks, each task's
              pick as it finishes, labels as soon as picked (stages/explore.py) -> judge, with
              judge.survival the survival test (stages/judge.py) -> stop? (stages/stop.py)

The driver does no science: every step is a stage function calling apps (:mod:`.apps`). The
label stage is the only writer of the label store, and writes each label the moment its future
returns. Stages are checkpointed in ``iter-NNN/state.json`` (:mod:`.checkpoint`); a resumed
campaign re-runs only what did not finish, and a label computed but not yet stored is found in
its task folder.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from alcgap.config import CampaignConfig, ConfigError, load_campaign_config, read_yaml
from alcgap.reference import Reference, make_reference
from alcgap.sites import check_site, load_site
from alcgap.store import LabelStore
from alcgap.workflow.apps import CampaignApps
from alcgap.workflow.context import Run, SelectFn, console, log
from alcgap.workflow.freeze import FROZEN_YAML, freeze
from alcgap.workflow.lock import RunLock
from alcgap.workflow.progress import ProgressBoard
from alcgap.workflow.stages.bootstrap import run_bootstrap
from alcgap.workflow.stages.explore import Explorer
from alcgap.workflow.stages.fit import fit
from alcgap.workflow.stages.judge import gate_fails, judge, survival_due
from alcgap.workflow.stages.stop import Judgement, StopDecision, decide
from alcgap.workflow.state import iteration_dir, read_run_json, relocatable, write_json_atomic


class Campaign:
    """An active-learning campaign in ``run_dir``; ``run()`` runs or resumes it to its stopping rule.

    ``reference`` replaces the configured reference (any :class:`Reference`, picklable);
    ``select_fn`` replaces the built-in selection (flags + SOAP de-duplication + budget).
    Everything that can be wrong with the config, the site and the reference is found here,
    before any work starts or any file is written."""

    def __init__(self, config: CampaignConfig | str | os.PathLike | dict, run_dir: str | os.PathLike, *,
                 site=None, reference: Reference | None = None, select_fn: SelectFn | None = None):
        self.config = config if isinstance(config, CampaignConfig) else load_campaign_config(config)
        # absolute, so that workers started elsewhere find it; checkpoints keep paths relative to it
        self.run_dir = Path(run_dir).absolute()
        self.site_source = site or "local"
        check_site(self.site_source, cp2k_walltime=getattr(self.config.reference, "walltime", None)
                   if self.config.reference.kind == "cp2k" else None)
        try:
            self.reference = reference or make_reference(self.config.reference, self.config.species)
        except ValueError as err:  # a check that needs the species and the machine (CP2K's libraries)
            raise ConfigError(str(err)) from None
        self.select_fn = select_fn
        self.settings_hash = self.reference.settings_hash()
        #: live progress (started by run(); until then it only counts); one console: logs print above it
        self.board = ProgressBoard(self.run_dir, console=console)

    def _freeze_config(self) -> None:
        freeze(self.run_dir, self.config, self.reference.name, self.settings_hash, console.log)

    def run(self) -> dict:
        """Run (or resume) to the stopping rule; return the campaign summary.

        One driver per run directory (:class:`~alcgap.workflow.lock.RunLock`): a second one is
        refused, and what a dead driver left running on this host is stopped first. SIGTERM (a
        batch job's walltime, ``kill``) ends the driver through its clean-up, which stops Parsl's
        workers; the checkpoints keep what finished."""
        import parsl  # the campaign's executors; imported where a campaign starts them

        with RunLock(self.run_dir, watchdog=True) as lock:
            if lock.stopped:
                console.log(f"stopped {len(lock.stopped)} process(es) a dead driver of {self.run_dir} left running")
            self._freeze_config()
            store = LabelStore(self.run_dir / "data.db")
            store.register_settings(self.reference.name, self.settings_hash, self.reference.settings())
            site = load_site(self.site_source, self.run_dir)
            parsl.clear()
            dfk = parsl.load(site.config)
            run = Run(self.config, self.run_dir, self.reference, store, CampaignApps(site, self.reference), self.board,
                      threads=self.config.threads if self.config.threads is not None else site.tasks.fit.threads,
                      select_fn=self.select_fn)
            handler = _campaign_log(self.run_dir)
            previous = _exit_on_sigterm()
            self.board.start()
            started = time.monotonic()  # stop.max_minutes counts from here: iteration 0 included
            try:
                _check_reference_on_compute(run)
                run_bootstrap(run, distance_table=True)
                decision, iteration = StopDecision(False, "continue", ""), 0
                while not decision.stop:
                    iteration += 1
                    began = time.monotonic()
                    decision = out_of_time(run, iterate(run, iteration), time.monotonic() - started,
                                           time.monotonic() - began)
                summary = write_summary(run, iteration, decision)
            finally:
                self.board.stop()
                dfk.cleanup()
                parsl.clear()
                logging.getLogger("alcgap").removeHandler(handler)
                handler.close()
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        return summary


def _campaign_log(run_dir: Path) -> logging.Handler:
    """``campaign.log`` takes the campaign's own messages; Parsl's go to its own log under ``parsl/``."""
    handler = logging.FileHandler(run_dir / "campaign.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("alcgap")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    return handler


def _check_reference_on_compute(run: Run) -> None:
    """``reference.check_on: compute``: the checks the login node could not make, made by a
    first task where the labels run, before any label."""
    if getattr(getattr(run.reference, "config", None), "check_on", "driver") != "compute":
        return
    try:
        found = run.apps.check_reference(run.reference).result()
    except Exception as err:  # noqa: BLE001  (the worker's ValueError, named by field)
        raise ConfigError(f"reference (check_on: compute): the check where the labels run failed: {err}") from None
    run.log(f"reference checked on the compute side: CP2K data in {found}")


def iterate(run: Run, iteration: int) -> StopDecision:
    """Iteration ``iteration``: fit, explore (select and label as it goes), judge, the decision."""
    state = run.iteration(iteration)
    fitted = run.stage(state, "fit", lambda: fit(run, state))
    run.stage(state, "explore_select_label",
              lambda: Explorer(run, state, fitted, lambda plan: gate_fails(run, state, fitted, plan)).run_all())
    replayed = state.done("judge")
    judged = run.stage(state, "judge", lambda: judge(run, state, fitted))
    if replayed and "judgement" in judged and survival_due(run.config, Judgement(**judged["judgement"])):
        # judge.survival set or changed since: the survival test is a measurement, not a rule, so
        # the stage runs again (its finished survival runs are read back, not run again)
        run.log(f"iteration {iteration}: judge.survival differs from what it was judged with: judging it again")
        del state.stages["judge"]
        judged, replayed = run.stage(state, "judge", lambda: judge(run, state, fitted)), False
    decision = StopDecision(**judged["decision"])
    if replayed and "judgement" in judged:
        # the stop rule is a pure function of what the iteration showed and of today's stop
        # and judge settings: a campaign stopped by stop.max_iterations goes on when it is raised
        now = decide(Judgement(**judged["judgement"]), run.config)
        if now != decision:
            run.log(f"iteration {iteration}: stopped by {decision.rule} when it ran; with today's settings "
                    f"the stop rule says [bold]{now.rule}[/]")
            log.info("iteration %d: decision %s replaced by %s (settings changed)", iteration, decision, now)
            decision = now
    run.log(f"iteration {iteration}: [bold]{decision.rule}[/] {decision.why}")
    return decision


def out_of_time(run: Run, decision: StopDecision, elapsed: float, last: float) -> StopDecision:
    """``decision``, or a stop at ``stop.max_minutes`` when the next iteration, as long as the last
    one took (``last`` seconds; ``elapsed`` since this driver started), would end past it."""
    limit = run.config.stop.max_minutes
    if decision.stop or limit is None or elapsed + last <= 60.0 * limit:
        return decision
    stopped = StopDecision(True, "time_limit", f"stop.max_minutes {limit:g}: {elapsed / 60:.1f} min so far and the last "
                           f"iteration took {last / 60:.1f}, so the next would end past the limit (`alcgap resume` goes "
                           f"on); not converged: {decision.why}")
    run.log(f"[bold]time_limit[/] {stopped.why}")
    return stopped


def write_summary(run: Run, last: int, decision: StopDecision) -> dict:
    target = run.config.judge.target_size
    metrics = [iteration_dir(run.run_dir, k) / "metrics.json" for k in range(1, last + 1)]
    summary = {"run_dir": str(run.run_dir), "iterations": last, "stopped_by": decision.rule, "why": decision.why,
               "target_size": target, "target_is_10x": target == 10, "store": str(run.store.summary()),
               "settings_hash": run.settings_hash,
               "metrics": [read_run_json(path, run.run_dir) for path in metrics if path.exists()]}
    write_json_atomic(run.run_dir / "summary.json", relocatable(summary, run.run_dir))
    return summary


def _exit_on_sigterm():
    """Make SIGTERM raise SystemExit in the driver (main thread only), so that ``finally`` blocks
    run; return the handler it replaced (None when not in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def run_campaign(config, run_dir, *, site=None, reference=None, select_fn=None) -> dict:
    """Run (or resume) a campaign: the Python API behind ``alcgap run``."""
    return Campaign(config, run_dir, site=site, reference=reference, select_fn=select_fn).run()


def resume_campaign(run_dir, *, site=None, reference=None, select_fn=None, stop: dict | None = None) -> dict:
    """Continue a stopped or killed campaign from its checkpoints, with its frozen config
    (``campaign.yaml``, as a person may have edited it: the edit is checked like any config).

    ``stop`` raises (or lowers) its limits, e.g. ``{"max_iterations": 8}``: a campaign that
    stopped at a limit goes on from its last finished iteration."""
    frozen = Path(run_dir) / FROZEN_YAML
    if not frozen.exists():
        raise ConfigError(f"{run_dir} holds no campaign (no campaign.yaml): start it with `alcgap run`")
    config = read_yaml(frozen, ConfigError) or {}
    if stop:
        config["stop"] = {**config.get("stop", {}), **stop}
    return run_campaign(load_campaign_config(config), run_dir, site=site, reference=reference, select_fn=select_fn)
