"""The judge stage: what an iteration showed (prospective errors of its model on the frames it
chose, the verdicts of its runs, and with ``judge.survival`` the survival test), its metrics, and
the stop rule's decision (:mod:`.stop`)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from ase import Atoms

from alcgap.analysis.metrics import error_metrics, parity_data
from alcgap.analysis.uncertainty import centre_force_errors, variance_error_plot, variance_vs_error
from alcgap.calculator import GapCalculator
from alcgap.config import CampaignConfig
from alcgap.survival import SurvivalRun, held, survival_run, write_sweep
from alcgap.workflow.checkpoint import JsonRecord, done_or_run
from alcgap.workflow.context import Run
from alcgap.workflow.futures import Pending
from alcgap.workflow.stages.explore import tasks_of
from alcgap.workflow.stages.explore_plan import Exploration
from alcgap.workflow.stages.stop import Judgement, decide, gates, survival_md_settings, survival_settings
from alcgap.workflow.state import IterationState, read_frames, relocatable, write_json_atomic

#: a finished survival run's record in its folder: read back on resume, not run again
SURVIVAL_RECORD = "record.json"


# -- apps --------------------------------------------------------------------------------------

def survival_md(run_settings: dict, xml: str, species: list[str], start_path: str, folder: str) -> dict:
    """The app: one run of the survival test (:func:`alcgap.survival.survival_run`, serial MD in
    this process) of ``xml`` from the training cell; its record (fields, ``physical`` and the
    run's ``settings``) is kept in ``folder/record.json``, and a record there made with the same
    settings is read back, not run again."""

    def run() -> dict:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        s = run_settings
        record = survival_run(s["potential"], xml, species, read_frames(start_path)[0], temperature=s["temperature"],
                              density=1.0, seed=s["seed"], steps=s["steps"], timestep=s["timestep"],
                              aux_cutoffs=s["aux_cutoffs"], max_displacement=s["max_displacement"],
                              max_energy_change=s["max_energy_change"], monitor_every=s["monitor_every"], folder=out)
        return json.loads(json.dumps({**asdict(record), "physical": record.physical, "settings": run_settings}))

    return done_or_run(survival_record(folder, run_settings), run)


def survival_record(folder: str | Path, run_settings: dict) -> JsonRecord:
    """The record of a survival run in ``folder``, accepted only when made with ``run_settings``."""
    wanted = json.loads(json.dumps(run_settings))
    return JsonRecord(Path(folder) / SURVIVAL_RECORD, accept=lambda data: data.get("settings") == wanted)


def prospective_errors(xml: str, previous_xml: str | None, new: list[Atoms], threshold: float | None, plot: str,
                       title: str) -> tuple[dict, dict]:
    """The app: this iteration's model on the frames it chose, labelled after its fit (and the
    previous model on the same frames: neither has seen them, so this is the like-for-like figure
    of what the last refit learned about the hard part); the variance-error correlation and plot."""
    calc = GapCalculator(xml, variance=True)
    prospective = error_metrics(parity_data(calc, new)).as_dict()
    prospective.update(centre_force_errors(calc, new))
    if previous_xml is not None:
        previous = GapCalculator(previous_xml)
        before = error_metrics(parity_data(previous, new)).as_dict()
        before.update(centre_force_errors(previous, new))
        prospective["previous_model"] = before
    data = variance_vs_error(calc, new)
    variance_error_plot(data, threshold, plot, title=title)
    return prospective, {"spearman": data["spearman"], "n_atoms": data["n_atoms"]}


# -- the survival test -------------------------------------------------------------------------

def survival_run_settings(config: CampaignConfig, temperature: float, seed: int) -> dict:
    """What one survival run of ``judge.survival`` is, besides the model: a record made with other
    settings is not this run's (a resume with a changed judge.survival or explore step runs it again)."""
    return {"potential": config.potential, "temperature": float(temperature), "seed": int(seed),
            "steps": config.judge.survival.steps, **survival_md_settings(config)}


def survival_test(run: Run, state: IterationState, fitted: dict) -> dict:
    """judge.survival: the deployed model from the training cell (1x, the exploration's start),
    one serial app per temperature and seed in ``survival/runs/<name>/``; then
    ``survival/survival.json`` and ``survival.png`` (:func:`alcgap.survival.write_sweep`);
    returns the metrics entry."""
    config, survival = run.config, run.config.judge.survival
    out = state.dir / "survival"
    start = str(run.iteration(0).dir / "start.xyz")
    runs = [(float(t), int(seed)) for t in survival.temperatures for seed in survival.seeds]
    names = {key: f"{config.potential}-T{key[0]:g}-s{key[1]}" for key in runs}
    records: dict[tuple[float, int], dict] = {}
    pending = Pending()
    run.board.set_stage(f"iteration {state.iteration}: judge: survival test ({len(runs)} runs)")

    def finished(record: dict, key: tuple[float, int]) -> None:
        records[key] = record
        run.board.md_ended(names[key], record["outcome"])
        run.log(f"iteration {state.iteration}: survival {names[key]}: {record['outcome']}; "
                f"shortest over aux cutoff {record['cutoff_fractions']}")

    def failed(error: BaseException, key: tuple[float, int]) -> None:
        raise RuntimeError(f"survival run {names[key]} failed: {str(error)[:500]} (see {out / 'runs' / names[key]}); "
                           "a resume runs it again") from error

    for key in runs:
        folder, settings = out / "runs" / names[key], survival_run_settings(config, *key)
        done = survival_record(folder, settings).read()
        if done is not None:  # finished before a restart
            records[key] = done
            continue
        run.board.md_started(names[key], folder, survival.steps)
        pending.add(run.apps.survival_md(settings, fitted["xml"], config.species, start, str(folder)),
                    lambda record, key=key: finished(record, key), lambda error, key=key: failed(error, key))
    pending.drain()
    ordered = [records[key] for key in runs]
    known = {f.name for f in fields(SurvivalRun)}
    write_sweep([SurvivalRun(**{k: v for k, v in r.items() if k in known}) for r in ordered], out, survival.steps,
                survival_settings(config))
    entries = [_survival_entry(names[key], key, record, survival.held_fraction) for key, record in zip(runs, ordered)]
    n_held = sum(entry["held"] for entry in entries)
    return {"settings": survival_settings(config), "min_held": survival.min_held, "runs": len(entries), "held": n_held,
            "fraction_held": n_held / len(entries), "records": entries, "survival_json": str(out / "survival.json")}


def _survival_entry(name: str, key: tuple[float, int], record: dict, held_fraction: float) -> dict:
    fractions = record.get("cutoff_fractions") or {}
    worst = min(fractions, key=fractions.get) if fractions else None
    return {"name": name, "temperature": key[0], "seed": key[1], "outcome": record["outcome"],
            "steps_done": record["steps_done"], "cutoff_fractions": fractions,
            "first_inside_aux_step": record.get("first_inside_aux_step"), "physical": record.get("physical"),
            "held": held(record, held_fraction), "worst_pair": worst,
            "worst_fraction": fractions.get(worst) if worst else None}


def survival_due(config: CampaignConfig, judgement: Judgement) -> bool:
    """A judged iteration whose survival test is missing or was measured with other settings,
    though its other gates pass: today's judge.survival must measure it."""
    return (config.judge.survival is not None and gates(judgement, config).before_survival_test()
            and (judgement.survival_held is None or judgement.survival_settings != survival_settings(config)))


# -- the stage ---------------------------------------------------------------------------------

def plan_of(run: Run, iteration: int) -> Exploration:
    return Exploration.load(run.iteration(iteration).dir / "exploration.json", tasks_of(run.config, iteration),
                            run.config.select.budget)


def gate_fails(run: Run, fitted: dict, plan: Exploration) -> bool:
    """Would this iteration fail to converge (errors over a gate, or a target run not clean)?
    (The survival test runs at the judge, after exploration: not known here.)"""
    errors = fitted["errors"][fitted.get("deployed", "composite")]
    judgement = Judgement(0, errors["energy_mae"], errors["force_rmse"], {t: s["verdict"] for t, s in plan.md.items()},
                          {t: s["size"] for t, s in plan.md.items()}, target_size=run.config.judge.target_size,
                          stress_rmse=errors.get("stress_rmse", float("nan")))
    return not gates(judgement, run.config).before_survival_test()


def _prospective(run: Run, state: IterationState, fitted: dict, new: list[Atoms]) -> tuple[dict | None, dict | None]:
    if not new:
        return None, None
    previous = run.iteration(state.iteration - 1).get("fit")["xml"] if state.iteration > 1 else None
    return run.apps.prospective(fitted["xml"], previous, new, fitted["variance"]["threshold"],
                                str(state.dir / "plots" / "variance_vs_error.png"),
                                f"iteration {state.iteration}: {len(new)} selected frames").result()


def judge(run: Run, state: IterationState, fitted: dict) -> dict:
    """The judge stage: the judgement, the survival test when due, metrics.json, the decision."""
    config, plan = run.config, plan_of(run, state.iteration)
    verdicts = {task_id: summary["verdict"] for task_id, summary in plan.md.items()}
    sizes = {task_id: summary["size"] for task_id, summary in plan.md.items()}
    new = run.store.labelled(iteration=state.iteration, origin="explore*", settings_hash=run.settings_hash)
    prospective, correlation = _prospective(run, state, fitted, new)
    errors = fitted["errors"][fitted.get("deployed", "composite")]
    n_labels = run.store.summary().by_status.get("ok", 0)  # failed rows are not labels
    explored = state.get("explore_select_label")
    judgement = Judgement(state.iteration, errors["energy_mae"], errors["force_rmse"], verdicts, sizes,
                          target_size=config.judge.target_size, n_labels=n_labels, n_selected=explored["selected"],
                          n_new_labels=len(new), stress_rmse=errors.get("stress_rmse", float("nan")))
    survival = None
    if config.judge.survival is not None and gates(judgement, config).before_survival_test():
        # the decision would be "converged": the survival test decides
        survival = survival_test(run, state, fitted)
        judgement.survival_held, judgement.survival_settings = survival["fraction_held"], survival["settings"]
        judgement.survival_runs = [{k: r[k] for k in ("name", "temperature", "seed", "outcome", "steps_done", "held",
                                                      "first_inside_aux_step", "worst_pair", "worst_fraction")}
                                   for r in survival["records"]]
    decision = decide(judgement, config)
    metrics = {"iteration": state.iteration, "labels": n_labels, "new_labels": len(new), "errors": errors,
               "prospective_errors": prospective, "variance_vs_error": correlation,
               "variance_threshold": fitted["variance"], "n_train": fitted["n_train"], "n_test": fitted["n_test"],
               "clustering": verdicts, "runs": plan.md, "sizes": sizes, "target_size": config.judge.target_size,
               "flags": {t: s.get("n_flagged", 0) for t, s in plan.md.items()}, "selected": explored["selected"],
               "flagged_atom_fraction": {t: s.get("flagged_atom_fraction") for t, s in plan.md.items()},
               "flag_distances": explored.get("flag_distances"),
               "picks": {name: p.get("events", []) for name, p in plan.picks.items()},
               "survival": survival, "decision": decision.as_dict()}
    write_json_atomic(state.dir / "metrics.json", relocatable(metrics, run.run_dir))
    _log_judgement(run, state, plan, prospective, correlation, len(new))
    return {"decision": decision.as_dict(), "verdicts": verdicts, "judgement": asdict(judgement)}


def _figures(errors: dict) -> str:
    core = errors.get("core_force_rmse")
    return ((f"F {core:.3f} eV/A on the {errors['n_core']} atoms at the explored geometry "
             f"({errors['core_force_relative']:.2f} of their reference RMS); " if core is not None else "")
            + f"all atoms {errors['energy_mae']:.1f} meV/atom, F {errors['force_rmse']:.3f} eV/A")


def _log_judgement(run: Run, state: IterationState, plan: Exploration, prospective: dict | None,
                   correlation: dict | None, n_new: int) -> None:
    for task_id, summary in plan.md.items():
        where = f" first at step {summary['first_bad_step']}" if summary.get("first_bad_step") is not None else ""
        run.log(f"iteration {state.iteration}: {task_id} {summary['verdict']}{where}; "
                f"{summary.get('n_flagged', 0)} flagged frames; T reached {summary.get('temperature')}")
    if prospective:
        run.log(f"iteration {state.iteration}: prospective error on its {n_new} new labels: " + _figures(prospective)
                + (f"; the previous model on them: {_figures(prospective['previous_model'])}"
                   if "previous_model" in prospective else "")
                + f"; variance-error Spearman {correlation['spearman']}")
