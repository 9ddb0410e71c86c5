"""The campaign through a real Slurm cluster (scripts/slurm_localhost.sh, sites/slurm-localhost.yaml):
every Parsl block is an sbatch job, MD ranks start with srun inside the MPI block, labels are
computed inside the serial block, and a block cancelled with scancel during labelling costs
nothing: Parsl starts a new block, the killed label task runs again there, and the store ends
with every bootstrap frame labelled exactly once.

Skipped (with the reason) unless the local Slurm is up, or ALCGAP_TEST_SLURM=1 lets the
fixture of tests/test_sites.py start and stop it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from alcgap.store import LabelStore, fingerprint
from alcgap.workflow.campaign import run_campaign
from alcgap.workflow.state import read_frames
from test_campaign import QUICK, SlowVashishta, no_duplicate_labels
from test_sites import site_data, slurm, with_tests_importable  # noqa: F401  (slurm: the fixture)

#: one iteration, one exploration run at 1x the cell (QUICK explores 1x and 2x, for 3 iterations)
CONFIG = dict(QUICK, explore=dict(QUICK["explore"], sizes=[1]), judge=dict(QUICK["judge"], target_size=1),
              stop={"max_iterations": 1})
#: condensed labels stored before the block is cancelled (SlowVashishta: 0.5 s each)
CANCEL_AFTER = 3


class SlurmVashishta(SlowVashishta):
    """SlowVashishta that writes into each condensed label (``label.info``, kept in label.json
    and in the store) the Slurm job and host it was computed in, as its process saw them."""

    def compute(self, atoms):
        label = super().compute(atoms)
        if atoms.pbc.all():
            label.info["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
            label.info["host"] = os.uname().nodename
        return label


def condensed_labels(run_dir: Path) -> list[dict]:
    """The label.json files (written by label_structure in the workers) of condensed structures,
    oldest first: {"job": Slurm job id, "started", "finished", "energy", "fingerprint"}."""
    found = []
    for path in run_dir.glob("labels/*/*/label.json"):
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):  # written atomically, but the folder may be new
            continue
        info = saved["label"]["info"]
        if "slurm_job_id" in info:
            found.append({"job": info["slurm_job_id"], "started": saved["started"], "finished": saved["finished"],
                          "energy": saved["label"]["energy"], "fingerprint": path.parent.name})
    return sorted(found, key=lambda item: item["finished"])


def slurm_jobs_of(run_dir: Path, since: float) -> dict[str, dict[str, str]]:
    """Every Slurm job submitted from ``since`` on whose batch script Parsl wrote under ``run_dir``
    (finished jobs stay in slurmctld for MinJobAge = 600 s): job id -> {"name", "state"}."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        submitted = datetime.fromisoformat(fields.get("SubmitTime", "1970-01-01T00:00:00"))
        if (fields.get("Command", "").startswith(f"{run_dir}/parsl/")
                and submitted >= datetime.fromtimestamp(int(since))):
            jobs[fields["JobId"]] = {"name": fields["JobName"], "state": fields["JobState"]}
    return jobs


def completion_log(job_ids) -> dict[str, str]:
    """`sacct -c` (the job-completion log; no slurmdbd here): job id -> final state."""
    out = subprocess.run(["sacct", "-c", "-j", ",".join(job_ids)], capture_output=True, text=True).stdout
    return {words[0]: words[6] for words in (line.split() for line in out.splitlines()) if words and words[0] in job_ids}


class CancelDuringLabelling(threading.Thread):
    """Waits until the bootstrap labels are being computed in a Slurm job, then scancels that
    job (the serial block) and notes when and what was stored by then."""

    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.run_dir, self.done = run_dir, threading.Event()
        self.job = self.at = self.error = None
        self.before: list[dict] = []
        self.label_stage_done = None

    def run(self):
        try:
            while not self.done.wait(0.2):
                labels = condensed_labels(self.run_dir)
                if len(labels) >= CANCEL_AFTER:
                    self.job = labels[-1]["job"]  # the block computing the labels right now
                    subprocess.run(["scancel", self.job], check=True)
                    self.at = time.time()
                    self.before = labels
                    state = json.loads((self.run_dir / "iter-000" / "state.json").read_text())
                    self.label_stage_done = "label" in state["stages"]
                    return
        except Exception as err:  # reported by the test
            self.error = err


@pytest.mark.integration
def test_campaign_on_slurm_survives_a_cancelled_block(slurm, tmp_path):  # noqa: F811
    run_dir = (tmp_path / "run").resolve()
    site = with_tests_importable(site_data("slurm-localhost"))  # workers unpickle SlurmVashishta
    # srun says, in md.err, which job step it launched the MD ranks as (and changes nothing else)
    site["tasks"]["md"]["launcher_options"] += " --verbose"
    # test speed only: the 2-core node holds one block at a time, and the serial and MPI blocks
    # hand it over twice (fit -> MD -> select); each hand-over waits max_idletime (site: 30 s)
    site["max_idletime"] = 10
    assert site["retries"] >= 1, "a task of a cancelled block must run again"

    canceller = CancelDuringLabelling(run_dir)
    canceller.start()
    started = time.time()
    try:
        summary = run_campaign(CONFIG, run_dir, site=site, reference=SlurmVashishta.vashishta_sio2())
    finally:
        canceller.done.set()
        canceller.join(10)
    seconds = time.time() - started
    assert canceller.error is None, canceller.error
    assert canceller.job, "the campaign never reached the bootstrap labels"
    assert canceller.label_stage_done is False, "the scancel came too late: labelling had finished"

    # the campaign finished its iteration
    assert summary["iterations"] == 1 and summary["stopped_by"] in ("converged", "max_iterations")

    # every block was a Slurm job of partition alcgap, seen by slurmctld and in the completion log
    jobs = slurm_jobs_of(run_dir, started)
    serial = {j for j, job in jobs.items() if job["name"].startswith("parsl.serial.block-")}
    mpi = {j for j, job in jobs.items() if job["name"].startswith("parsl.mpi.block-")}
    assert canceller.job in serial and mpi, jobs
    assert len(serial) >= 2, f"no new serial block after the scancel: {jobs}"
    for _ in range(20):  # the last blocks end at cleanup: wait until they are logged
        finished = completion_log(list(jobs))
        if set(finished) == set(jobs):
            break
        time.sleep(0.5)
    assert set(finished) == set(jobs), (jobs, finished)
    assert finished[canceller.job] == "CANCELLED"

    # labels were computed inside serial blocks: each condensed label names its job
    labels = condensed_labels(run_dir)
    assert labels and {label["job"] for label in labels} <= serial, (labels, serial)
    after = [label for label in labels if label["started"] > canceller.at]
    assert after and all(label["job"] != canceller.job for label in after), "no label computed in a new block"

    # the MD ranks ran as a job step of an MPI block: srun --verbose says which
    md_dirs = list(run_dir.glob("iter-001/md/*"))
    assert md_dirs
    for folder in md_dirs:
        err, out = (folder / "md.err").read_text(), (folder / "md.out").read_text()
        steps = re.findall(r"srun: launching StepId=(\d+)\.\d+ on host \S+, 2 tasks", err)
        assert steps and set(steps) <= mpi, (err[-2000:], mpi)
        assert "on 2 ranks" in out and (folder / "result.json").exists()

    # nothing lost, nothing labelled twice
    store = LabelStore(run_dir / "data.db")
    no_duplicate_labels(store)
    frames = read_frames(run_dir / "iter-000" / "bootstrap.xyz")
    rows = store.rows(origin="bootstrap")
    assert sorted(row.fingerprint for row in rows) == sorted(fingerprint(a) for a in frames)
    state = json.loads((run_dir / "iter-000" / "state.json").read_text())
    assert state["stages"]["label"] == {**state["stages"]["label"], "labelled": len(frames), "failed": 0}
    # the labels finished in the cancelled block are the stored ones, not computed again
    stored = {row.fingerprint: row for row in rows}
    for label in canceller.before:
        row = stored[label["fingerprint"]]
        assert row.energy == label["energy"] and row.data["label_info"]["slurm_job_id"] == canceller.job

    # the timeline, for the log (-s): Parsl's retries of tasks lost with the block
    retried = [f"+{float(line.split()[0]) - canceller.at:.1f} s: {line.split(' INFO: ')[-1]}"
               for line in (run_dir / "parsl" / "000" / "parsl.log").read_text().splitlines()
               if "failed with exception of type ManagerLost" in line]
    new_block = min(after, key=lambda label: label["started"])
    print(f"\ncampaign {seconds:.0f} s; blocks {jobs}; scancel {canceller.job} after {len(canceller.before)} labels; "
          f"first label in the new block {new_block['job']} {new_block['started'] - canceller.at:.1f} s later; "
          f"labels per job {dict((j, sum(lab['job'] == j for lab in labels)) for j in sorted(serial))}; "
          f"retried: {retried}")


def test_heartbeats_of_the_slurm_site_reach_parsl(tmp_path):
    """How soon a cancelled block's tasks are rerun: the site's heartbeat keys are Parsl's."""
    from alcgap.sites import SiteError, load_site

    data = site_data("slurm-localhost")
    site = load_site(data, tmp_path)
    assert site.config.retries >= 1
    for executor in site.config.executors:
        assert (executor.heartbeat_period, executor.heartbeat_threshold) == (
            data["executors"][executor.label]["heartbeat_period"], data["executors"][executor.label]["heartbeat_threshold"])
    data["executors"]["serial"]["heartbeat_threshold"] = 5
    with pytest.raises(SiteError, match="executors.serial.heartbeat_threshold: 5 s is not longer than heartbeat_period 5 s"):
        load_site(data, tmp_path)
