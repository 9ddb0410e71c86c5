"""The judge stage: what an iteration showed (prospective errors of its model on the frames it
chose, the verdicts of its runs, and with ``judge.survival`` the survival test), its metrics, and
the stop rule's decision (:mod:`.stop`)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from ase import Atoms

from alcgap.analysis.calibration import (ErrorModel, calibration_plot, coverage, force_rmse_with_error,
                                        variance_and_errors)
from alcgap.analysis.metrics import error_metrics, parity_data
from alcgap.analysis.uncertainty import centre_force_errors, variance_error_plot, variance_vs_error
from alcgap.calculator import GapCalculator
from alcgap.config import CampaignConfig
from alcgap.provenance import exact_atoms
from alcgap.survival import SurvivalRun, held, survival_run, write_sweep
from alcgap.workflow.checkpoint import JsonRecord, done_or_run
from alcgap.workflow.context import Run
from alcgap.workflow.futures import Pending
from alcgap.workflow.stages.explore import tasks_of
from alcgap.workflow.stages.explore_plan import Exploration
from alcgap.workflow.stages.bootstrap import bootstrap_split
from alcgap.workflow.stages.fit import explored_test_set
from alcgap.workflow.stages.stop import (Judgement, decide, gate_figures, gates, survival_md_settings,
                                         survival_settings)
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


def judge_errors(xml: str, previous_xml: str | None, new: list[Atoms], explored: list[Atoms], held_out: list[Atoms],
                 variance: dict, plots: str, iteration: int, seed: int) -> dict:
    """The app: what the iteration's model gets wrong, on labels it never trained on.

    - ``explored``: the explored test set (frames drawn at random from where the loop's MD went,
      never trained on), on the atoms at the explored geometry; and ``held_out``, the bootstrap's:
      each force RMSE with its standard error over frames (the accuracy gate's figures).
    - ``new``: the frames this iteration chose, labelled after its fit: the prospective error
      (and the previous model's on the same frames), biased high, as selection picks the hardest.
    - calibration out of sample: the share of the atoms of ``new`` and of this iteration's
      explored frames inside the band the fit's error model predicts (fitted before they existed).
    """
    calc = GapCalculator(xml, variance=True)
    out: dict = {"explored": force_rmse_with_error(calc, explored, exact_atoms, seed=seed),
                 "held_out": force_rmse_with_error(calc, held_out, seed=seed),
                 "prospective": None, "variance_vs_error": None}
    if new:
        prospective = error_metrics(parity_data(calc, new)).as_dict()
        prospective.update(centre_force_errors(calc, new))
        if previous_xml is not None:
            previous = GapCalculator(previous_xml)
            before = error_metrics(parity_data(previous, new)).as_dict()
            before.update(centre_force_errors(previous, new))
            prospective["previous_model"] = before
        data = variance_vs_error(calc, new)
        variance_error_plot(data, variance["threshold"], Path(plots) / "variance_vs_error.png",
                            title=f"iteration {iteration}: {len(new)} selected frames")
        out["prospective"], out["variance_vs_error"] = prospective, {"spearman": data["spearman"], "n_atoms": data["n_atoms"]}
    calibration = variance.get("calibration")
    if calibration:
        model, level = ErrorModel(**calibration["error_model"]), calibration["level"]
        fresh = [a for a in explored if int(a.info.get("iteration", -1)) == iteration]
        sets = {"selected (new)": variance_and_errors(calc, new, exact_atoms),
                "explored test (new)": variance_and_errors(calc, fresh, exact_atoms)}
        out["calibration"] = {"level": level, "error_model": calibration["error_model"],
                              "in_sample": calibration["in_sample"],
                              "out_of_sample": {name: coverage(model, v, e, level) for name, (v, e) in sets.items()},
                              "plot": str(calibration_plot(model, sets, level, variance["tolerance"]["value"],
                                                           Path(plots) / "calibration_out_of_sample.png",
                                                           title=f"iteration {iteration}: the fit's calibration on new labels"))}
    return out


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


def target_frames(run: Run, state: IterationState, plan: Exploration, threshold: float | None) -> dict:
    """The target-size runs' monitored frames (``monitor.jsonl``): how many, how many with no atom
    over the flag threshold (the tolerance), and how many free of clustering."""
    frames = confident = 0
    clustered = 0
    for task_id, summary in plan.md.items():
        if summary.get("size") != run.config.judge.target_size:
            continue
        path = state.dir / "md" / task_id / "monitor.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        frames += len(lines)
        confident += sum(1 for line in lines if threshold is None or (line.get("max_variance") or 0.0) <= threshold)
        clustered += int(summary.get("n_clustered", 0))
    return {"frames": frames, "confident": confident,
            "confident_fraction": confident / frames if frames else None,
            "clean_fraction": 1.0 - clustered / frames if frames else None}


def _judgement(run: Run, state: IterationState, fitted: dict, plan: Exploration, **more) -> Judgement:
    errors = fitted["errors"][fitted.get("deployed", "composite")]
    frames = target_frames(run, state, plan, fitted["variance"]["threshold"])
    tolerance = (fitted["variance"].get("tolerance") or {}).get("value")
    return Judgement(state.iteration, errors["energy_mae"], errors["force_rmse"],
                     {t: s["verdict"] for t, s in plan.md.items()}, {t: s["size"] for t, s in plan.md.items()},
                     target_size=run.config.judge.target_size, stress_rmse=errors.get("stress_rmse", float("nan")),
                     tolerance=tolerance, confident_fraction=frames["confident_fraction"],
                     n_target_frames=frames["frames"], clean_frames=frames["clean_fraction"], **more)


def gate_fails(run: Run, state: IterationState, fitted: dict, plan: Exploration) -> bool:
    """Would this iteration fail to converge (a target run not clean, its frames not confident,
    the held-out errors over the tolerance)? The explored test set is measured at the judge and
    the survival test after it: neither is known here."""
    judgement = _judgement(run, state, fitted, plan, explored_force_rmse=0.0, explored_force_se=0.0)
    return not gates(judgement, run.config).before_survival_test()


def _history(run: Run, iteration: int) -> list[dict]:
    """The gate figures of the iterations before ``iteration`` (their metrics.json), oldest first."""
    out = []
    for k in range(1, iteration):
        path = run.iteration(k).dir / "metrics.json"
        if path.exists():
            out.append(json.loads(path.read_text()).get("gate_figures") or {})
    return out


def judge(run: Run, state: IterationState, fitted: dict) -> dict:
    """The judge stage: the judgement, the survival test when due, metrics.json, the decision."""
    config, plan = run.config, plan_of(run, state.iteration)
    new = run.store.labelled(iteration=state.iteration, origin="explore*", settings_hash=run.settings_hash)
    explored = explored_test_set(run, state.iteration)
    _, held_out = bootstrap_split(run)
    previous = run.iteration(state.iteration - 1).get("fit")["xml"] if state.iteration > 1 else None
    measured = run.apps.judge_errors(fitted["xml"], previous, new, explored, held_out, fitted["variance"],
                                     str(state.dir / "plots"), state.iteration, config.seed).result()
    n_labels = run.store.summary().by_status.get("ok", 0)  # failed rows are not labels
    explored_select = state.get("explore_select_label")
    far, held = measured["explored"], measured["held_out"]
    judgement = _judgement(run, state, fitted, plan, n_labels=n_labels, n_selected=explored_select["selected"],
                           n_new_labels=len(new), force_se=held["se"] or 0.0, explored_force_rmse=far["rmse"],
                           explored_force_se=far["se"], n_explored=far["n_frames"], history=_history(run, state.iteration))
    survival = None
    if config.judge.survival is not None and gates(judgement, config).before_survival_test():
        # the decision would be "converged": the survival test decides
        survival = survival_test(run, state, fitted)
        judgement.survival_held, judgement.survival_settings = survival["fraction_held"], survival["settings"]
        judgement.survival_runs = [{k: r[k] for k in ("name", "temperature", "seed", "outcome", "steps_done", "held",
                                                      "first_inside_aux_step", "worst_pair", "worst_fraction")}
                                   for r in survival["records"]]
    decision = decide(judgement, config)
    verdicts = judgement.verdicts
    metrics = {"iteration": state.iteration, "labels": n_labels, "new_labels": len(new), "errors": errors_of(fitted),
               "gates": gates(judgement, config)._asdict(), "gate_figures": judgement.figures(),
               "deciding_gates": list(config.judge.gates),
               "tolerance": fitted["variance"].get("tolerance"),
               "confidence": {"confident_fraction": judgement.confident_fraction, "frames": judgement.n_target_frames,
                              "needed": config.judge.confident_fraction},
               "explored_test_set": far, "held_out_with_error": held, "calibration": measured.get("calibration"),
               "prospective_errors": measured["prospective"], "variance_vs_error": measured["variance_vs_error"],
               "variance_threshold": fitted["variance"], "n_train": fitted["n_train"], "n_test": fitted["n_test"],
               "clustering": verdicts, "runs": plan.md, "sizes": judgement.sizes, "target_size": config.judge.target_size,
               "flags": {t: s.get("n_flagged", 0) for t, s in plan.md.items()}, "selected": explored_select["selected"],
               "flagged_atom_fraction": {t: s.get("flagged_atom_fraction") for t, s in plan.md.items()},
               "flag_distances": explored_select.get("flag_distances"),
               "picks": {name: p.get("events", []) for name, p in plan.picks.items()},
               "test_draw": plan.tests.get("explored", {}).get("events", []),
               "survival": survival, "decision": decision.as_dict()}
    write_json_atomic(state.dir / "metrics.json", relocatable(metrics, run.run_dir))
    _log_judgement(run, state, plan, measured, len(new))
    deciding = "" if len(config.judge.gates) == 3 else f" (deciding: {', '.join(config.judge.gates)})"
    run.log(f"iteration {state.iteration}: gates{deciding}: {gate_figures(judgement, config, every=True)}")
    return {"decision": decision.as_dict(), "verdicts": verdicts, "judgement": asdict(judgement)}


def errors_of(fitted: dict) -> dict:
    return fitted["errors"][fitted.get("deployed", "composite")]


def _figures(errors: dict) -> str:
    core = errors.get("core_force_rmse")
    return ((f"F {core:.3f} eV/A on the {errors['n_core']} atoms at the explored geometry "
             f"({errors['core_force_relative']:.2f} of their reference RMS); " if core is not None else "")
            + f"all atoms {errors['energy_mae']:.1f} meV/atom, F {errors['force_rmse']:.3f} eV/A")


def _log_judgement(run: Run, state: IterationState, plan: Exploration, measured: dict, n_new: int) -> None:
    for task_id, summary in plan.md.items():
        where = f" first at step {summary['first_bad_step']}" if summary.get("first_bad_step") is not None else ""
        run.log(f"iteration {state.iteration}: {task_id} {summary['verdict']}{where}; "
                f"{summary.get('n_flagged', 0)} flagged frames; T reached {summary.get('temperature')}")
    prospective = measured["prospective"]
    if prospective:
        run.log(f"iteration {state.iteration}: prospective error on its {n_new} new labels (selected: biased high): "
                + _figures(prospective)
                + (f"; the previous model on them: {_figures(prospective['previous_model'])}"
                   if "previous_model" in prospective else "")
                + f"; variance-error Spearman {measured['variance_vs_error']['spearman']}")
    calibration = measured.get("calibration")
    if calibration:
        said = [f"{name}: {c['inside']:.0%} of {c['n_atoms']} atoms" for name, c in calibration["out_of_sample"].items()
                if c["inside"] is not None]
        run.log(f"iteration {state.iteration}: calibration, share inside the {calibration['level']:.0%} band: "
                f"{calibration['in_sample']['inside']:.0%} where fitted" + (", out of sample " + ", ".join(said) if said else ""))
