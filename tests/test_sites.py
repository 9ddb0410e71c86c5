"""Site files -> parsl.Config: every shipped site loads, broken ones fail naming the field, the local
site runs real Parsl apps (python and 2 MPI ranks), and the Slurm site submits real Slurm jobs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alcgap.sites import MPI, SERIAL, SITES_DIR, SiteError, load_site

ROOT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = ROOT / "scripts" / "slurm_localhost.sh"
SITE_FILES = sorted(SITES_DIR.glob("*.yaml"))


def mpi4py_ranks(folder: Path) -> str:
    """Each rank prints and writes '<folder>/rank-<rank>' holding the world size (ranks' output
    lines can interleave in the launcher's stdout, files cannot)."""
    code = ("from mpi4py import MPI; c = MPI.COMM_WORLD; print('rank', c.rank, 'of', c.size); "
            f"open(f'{folder}/rank-{{c.rank}}', 'w').write(str(c.size))")
    return f'{sys.executable} -c "{code}"'


def ranks_seen(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text().strip() for p in sorted(folder.glob("rank-*"))}


def assert_cp2k_launcher_starts_two_ranks(site, ranks_app, folder: Path) -> None:
    """OpenMPI sets OMPI_COMM_WORLD_RANK/SIZE in each rank it starts."""
    if not shutil.which("ompi_info", path="/usr/bin"):
        pytest.skip("no OpenMPI in /usr/bin (apt-get install cp2k brings it): CP2K launcher not checked")
    folder.mkdir()
    each_rank = f"sh -c 'echo $OMPI_COMM_WORLD_SIZE > {folder}/rank-$OMPI_COMM_WORLD_RANK'"
    ranks_app(site.mpi_command("cp2k", each_rank), stdout=str(folder / "out"), stderr=str(folder / "err"),
              parsl_resource_specification=site.resource_specification("cp2k")).result(timeout=60)
    assert ranks_seen(folder) == {"rank-0": "2", "rank-1": "2"}


def slurm_site(**tasks) -> dict:
    """A minimal valid Slurm site (nothing is submitted unless Parsl loads it)."""
    provider = {"type": "slurm", "partition": "compute", "walltime": "01:00:00", "cores_per_node": 4}
    return {
        "executors": {
            "serial": {"provider": dict(provider)},
            "mpi": {"mpi_launcher": "srun", "provider": dict(provider, launcher="simple")},
        },
        "tasks": tasks,
    }


def with_tests_importable(data: dict) -> dict:
    """Workers unpickle the apps below by reference to this module: put tests/ on their path."""
    for executor in data["executors"].values():
        init = executor["provider"].get("worker_init", "")
        executor["provider"]["worker_init"] = f'{init}\nexport PYTHONPATH="{Path(__file__).parent}"'
    return data


def site_data(name: str) -> dict:
    return yaml.safe_load((SITES_DIR / f"{name}.yaml").read_text())


@pytest.fixture
def load_parsl():
    """Load a site's Config into Parsl; always clean up (blocks cancelled, DFK cleared)."""
    import parsl

    def load(site):
        return parsl.load(site.config)

    yield load
    try:
        parsl.dfk().cleanup()
    except Exception:  # nothing was loaded, or the test already cleaned up
        pass
    parsl.clear()


# ---------------------------------------------------------------- every site file loads
@pytest.mark.parametrize("path", SITE_FILES, ids=[p.stem for p in SITE_FILES])
def test_site_file_builds_parsl_config(path, tmp_path):
    from parsl.config import Config

    site = load_site(path, tmp_path)
    assert isinstance(site.config, Config)
    assert [e.label for e in site.config.executors] == [SERIAL, MPI]
    assert site.config.run_dir == str(tmp_path / "parsl")
    for kind in ("md", "cp2k"):
        for n_atoms in (2, 24, 240, 2160):  # a dimer, a training cell, 10x, 90x
            spec = site.resource_specification(kind, n_atoms)
            assert spec["num_ranks"] == spec["num_nodes"] * spec["ranks_per_node"]
        assert site.executor(kind) == MPI
    assert site.executor("fit") == SERIAL


def test_shipped_sites_are_the_documented_ones():
    assert {p.stem for p in SITE_FILES} >= {"local", "slurm-template", "pbs-template", "slurm-localhost"}


def test_local_site_is_sized_to_the_machine(tmp_path):
    site = load_site("local", tmp_path, cpu_count=6)
    # small cells: one rank per MD or CP2K task, as many tasks as cores; a cell of 200 atoms or
    # more (the demo's 10x run, which runs alone once the 1x runs are done) takes two; fits take every core
    assert site.tasks.md.ranks_for(24) == 1 and site.tasks.md.ranks_for(240) == 2
    # auto concurrency holds for the largest cells: 6 cores / 2 ranks
    assert site.tasks.md.max_concurrent == 3 and site.tasks.fit.threads == 6
    nodefile = tmp_path / "parsl" / "mpi-nodefile"
    assert nodefile.read_text().split() == ["localhost"] * site.spec.executors.mpi.max_workers_per_block
    mpi_provider = site.config.executors[1].provider
    assert f'export PBS_NODEFILE="{nodefile}"' in mpi_provider.worker_init
    assert type(mpi_provider.launcher).__name__ == "SimpleLauncher"
    # two 1-rank MD tasks fit at once on 2 cores, so the nodefile offers two slots
    data = site_data("local")
    data["tasks"]["md"]["ranks"] = data["tasks"]["cp2k"]["ranks"] = 1
    site = load_site(data, tmp_path / "two", cpu_count=2)
    assert site.tasks.md.max_concurrent == 2
    assert (tmp_path / "two" / "parsl" / "mpi-nodefile").read_text().split() == ["localhost"] * 2


def test_parsl_class_names_are_accepted(tmp_path):
    data = slurm_site()
    data["executors"]["serial"]["provider"].update(type="SlurmProvider", launcher="SrunLauncher")
    site = load_site(data, tmp_path)
    assert type(site.config.executors[0].provider.launcher).__name__ == "SrunLauncher"


# ---------------------------------------------------------------- broken sites name the field
def _broken(mutate):
    data = slurm_site(md={"ranks": 4})
    mutate(data)
    return data


BROKEN = {
    "unknown provider": (
        lambda d: d["executors"]["serial"]["provider"].update(type="sge"),
        ["executors.serial.provider.type", "unknown provider 'sge'", "local, slurm, pbspro"],
    ),
    "walltime not HH:MM:SS": (
        lambda d: d["executors"]["mpi"]["provider"].update(walltime="2h"),
        ["executors.mpi.provider.walltime", "'2h' is not HH:MM:SS"],
    ),
    "negative walltime": (
        lambda d: d["executors"]["mpi"]["provider"].update(walltime="-01:00:00"),
        ["executors.mpi.provider.walltime", "'-01:00:00' is negative"],
    ),
    "unquoted walltime read by YAML as seconds": (
        lambda d: d["executors"]["mpi"]["provider"].update(walltime=5400),
        ["executors.mpi.provider.walltime", "quote it"],
    ),
    "missing cores_per_node": (
        lambda d: d["executors"]["mpi"]["provider"].pop("cores_per_node"),
        ["executors.mpi.provider.cores_per_node", "missing"],
    ),
    "missing executors": (lambda d: d.pop("executors"), ["executors: missing"]),
    "unknown key": (
        lambda d: d["executors"]["mpi"]["provider"].update(partiton="x"),
        ["executors.mpi.provider.partiton", "did you mean 'partition'"],
    ),
    "ranks beyond a block": (
        lambda d: d["tasks"]["md"].update(ranks=16),
        ["tasks.md.ranks", "need 4 nodes", "executors.mpi.provider.nodes_per_block = 1", "at most 4"],
    ),
    "MPI provider launched per node": (
        lambda d: d["executors"]["mpi"]["provider"].update(launcher="srun"),
        ["executors.mpi.provider.launcher", "needs 'simple'"],
    ),
    "a key that did nothing: the CP2K walltime": (
        lambda d: d["tasks"].update(cp2k={"walltime": "02:00:00"}),
        ["tasks.cp2k.walltime is not a site setting", "reference.walltime"],
    ),
    "a key that did nothing: the fit's memory": (
        lambda d: d["tasks"].update(fit={"threads": 1, "memory": 200}),
        ["tasks.fit.memory is not a site setting", "mem_per_node"],
    ),
    "unknown mpi_launcher": (
        lambda d: d["executors"]["mpi"].update(mpi_launcher="mpirun"),
        ["executors.mpi.mpi_launcher", "'mpirun' is not allowed"],
    ),
    "negative ranks": (
        lambda d: d["tasks"]["md"].update(ranks=-2),
        ["tasks.md.ranks", "whole number >= 1 or 'auto'"],
    ),
    "ranks by size not starting at 1 atom": (
        lambda d: d["tasks"]["md"].update(ranks={24: 1, 240: 4}),
        ["tasks.md.ranks", "smallest key is 24", "start at 1"],
    ),
    "ranks by size with a key that is no atom count": (
        lambda d: d["tasks"].update(cp2k={"ranks": {1: 1, -5: 2}}),
        ["tasks.cp2k.ranks", "key -5 is not an atom count >= 1"],
    ),
    "ranks by size with zero ranks": (
        lambda d: d["tasks"]["md"].update(ranks={1: 1, 240: 0}),
        ["tasks.md.ranks", "240: expected a whole number >= 1"],
    ),
    "ranks of one size beyond a block": (
        lambda d: d["tasks"]["md"].update(ranks={1: 1, 2000: 16}),
        ["tasks.md.ranks.2000", "16 ranks", "need 4 nodes", "at most 4"],
    ),
}


def test_a_cp2k_call_longer_than_a_block_is_refused_before_the_campaign_starts(tmp_path):
    from alcgap.sites import check_site

    site = _broken(lambda d: None)
    check_site(site, cp2k_walltime=1800.0)  # within the blocks' walltime
    with pytest.raises(SiteError, match=r"reference.walltime: 7200 s .* longer than a block"):
        check_site(site, cp2k_walltime=7200.0)


def test_a_throttle_holds_a_kind_of_task_to_its_limit_in_submission_order():
    """tasks.<kind>.max_concurrent as the driver applies it, on real threads."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from alcgap.workflow.futures import Throttle

    throttle, lock, running, peak, order = Throttle(2), threading.Lock(), [0], [0], []

    def work(k):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            order.append(k)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if k == 3:
            raise RuntimeError("task 3 failed")
        return k

    with ThreadPoolExecutor(8) as pool:
        futures = [throttle.submit(lambda k=k: pool.submit(work, k)) for k in range(7)]
        results = [f.exception() or f.result() for f in futures]
    assert peak[0] == throttle.peak == 2 and order == list(range(7))
    assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5, 6]
    assert str(results[3]) == "task 3 failed"  # a failure is handed on, and the next task still starts


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_site_names_the_field(case, tmp_path):
    mutate, expected = BROKEN[case]
    with pytest.raises(SiteError) as info:
        load_site(_broken(mutate), tmp_path)
    for text in expected:
        assert text in str(info.value)


# ---------------------------------------------------------------- ranks by the size of a task
def mpi_prefix(site, kind: str, n_atoms: int, hosts: list[str]) -> str:
    """The $PARSL_MPI_PREFIX a worker sets for this task: Parsl's own composer, given the
    resource specification the site makes for ``n_atoms`` atoms (as strings, as Parsl sends them)."""
    from parsl.executors.high_throughput.mpi_prefix_composer import compose_all

    spec = {key: str(value) for key, value in site.resource_specification(kind, n_atoms).items()}
    return compose_all(site.spec.executors.mpi.mpi_launcher, spec, hosts)["PARSL_MPI_PREFIX"].strip()


def test_ranks_are_one_count_or_by_atoms(tmp_path):
    scalar = load_site(slurm_site(md={"ranks": 4}, cp2k={"ranks": "auto", "threads": 2}), tmp_path)
    assert scalar.ranks("md") == scalar.ranks("md", 2160) == 4 and scalar.ranks("cp2k", 24) == 2

    data = slurm_site(md={"ranks": {1: 1, 200: 4, 2000: 8}}, cp2k={"ranks": {"1": 1, "100": "auto"}, "threads": 2})
    data["executors"]["mpi"]["provider"]["nodes_per_block"] = 2
    site = load_site(data, tmp_path / "by-size")
    assert site.tasks.md.ranks == {1: 1, 200: 4, 2000: 8} and site.tasks.cp2k.ranks == {1: 1, 100: 2}
    # the largest key <= n atoms: the 24-atom training cell, its 10x (240) and 90x (2160)
    assert [site.ranks("md", n) for n in (24, 199, 200, 240, 1999, 2160)] == [1, 1, 4, 4, 4, 8]
    assert site.resource_specification("md", 2160) == {"num_nodes": 2, "ranks_per_node": 4, "num_ranks": 8}
    # CP2K by atoms per labelled structure: dimers and carved cells small, whole frames large
    assert [site.ranks("cp2k", n) for n in (2, 45, 99, 240)] == [1, 1, 1, 2]
    with pytest.raises(ValueError, match="depend on its size"):
        site.resource_specification("md")
    # auto concurrency is sized for the largest tasks: 8 ranks on 2 nodes of a 2-node block
    assert site.tasks.md.max_concurrent == 1


def test_a_1x_and_a_10x_md_task_get_their_own_launch_prefix(tmp_path):
    """What would run: the mpiexec / srun line Parsl composes for a 24- and a 240-atom task."""
    data = site_data("local")
    data["tasks"]["md"]["ranks"] = {1: 1, 200: 2}
    local = load_site(data, tmp_path / "local", cpu_count=2)
    assert mpi_prefix(local, "md", 24, ["localhost"]) == "mpiexec -n 1 -ppn 1 -hosts localhost"
    assert mpi_prefix(local, "md", 240, ["localhost"]) == "mpiexec -n 2 -ppn 2 -hosts localhost"
    assert local.mpi_command("md", "python -m alcgap.md.task t.json").endswith("$PARSL_MPI_PREFIX python -m alcgap.md.task t.json")

    data = slurm_site(md={"ranks": {1: 4, 2000: 8}})
    data["executors"]["mpi"]["provider"]["nodes_per_block"] = 2
    slurm = load_site(data, tmp_path / "slurm")
    assert mpi_prefix(slurm, "md", 216, ["n1"]) == "srun --ntasks 4 --ntasks-per-node 4 --nodelist n1 --nodes 1"
    assert mpi_prefix(slurm, "md", 2160, ["n1", "n2"]) == "srun --ntasks 8 --ntasks-per-node 4 --nodelist n1,n2 --nodes 2"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("cp2k.psmp") is None, reason="cp2k.psmp not on PATH (apt-get install cp2k)")
def test_campaign_apps_start_md_and_cp2k_with_the_ranks_of_their_size(tmp_path, load_parsl):
    """Real runs through the campaign's apps on the local site: a 24-atom Vashishta MD task on 1
    rank and its 10x (240 atoms) on 2 (LAMMPS' own count), a 3-atom CP2K xTB label on 1 rank and
    a 24-atom one on 2 (CP2K's own count)."""
    import ase.io
    from ase import Atoms

    from alcgap.md.forces import ForceField
    from alcgap.md.protocols import Segment
    from alcgap.md.task import MDTask
    from alcgap.reference import Cp2kReference, Cp2kSettings, vashishta_sio2_commands
    from alcgap.structures import beta_cristobalite
    from alcgap.workflow.apps import CampaignApps

    data = site_data("local")
    data["tasks"]["md"]["ranks"] = {1: 1, 200: 2}
    data["tasks"]["cp2k"]["ranks"] = {1: 1, 20: 2}
    data["tasks"]["md"]["max_concurrent"] = 1  # the two MD tasks below are submitted together
    site = load_site(data, tmp_path, cpu_count=2)
    load_parsl(site)
    reference = Cp2kReference(Cp2kSettings(method="xtb", walltime=120), ["Si", "O"], workdir=tmp_path / "cp2k")
    apps = CampaignApps(site, reference)

    ase.io.write(tmp_path / "start.xyz", beta_cristobalite())
    futures = []
    for size in (1, 10):
        task = MDTask(structure=str(tmp_path / "start.xyz"), size_factor=size,
                      force_field=ForceField.classical(vashishta_sio2_commands(), ["Si", "O"]),
                      protocol=[Segment(steps=20, t_start=300, t_end=300)], sample_every=10,
                      output_dir=str(tmp_path / f"x{size}"))
        task_file = task.write(tmp_path / f"task-x{size}.json")
        futures.append(apps.explore(str(task_file)))
    for future in futures:
        future.result(timeout=180)
    assert apps.throttles["md"].limit == 1 and apps.throttles["md"].peak == 1  # one at a time, as the site says
    results = {size: json.loads((tmp_path / f"x{size}" / "result.json").read_text()) for size in (1, 10)}
    assert [(r["n_atoms"], r["n_ranks"], r["steps_done"]) for r in results.values()] == [(24, 1, 20), (240, 2, 20)]

    molecule = Atoms("OSiO", positions=[[2.0, 3, 3], [3.55, 3, 3], [5.1, 3, 3]], cell=[7, 6, 6], pbc=True)
    processes = {}
    for atoms in (molecule, beta_cristobalite()):
        label, _, _ = apps.label(reference, atoms, str(tmp_path / f"label-{len(atoms)}")).result(timeout=180)
        assert label.ok, label.reason
        output = (Path(label.info["directory"]) / "cp2k.out").read_text()
        processes[len(atoms)] = int(re.search(r"Total number of message passing processes\s+(\d+)", output).group(1))
    assert processes == {3: 1, 24: 2}


def test_missing_site_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SiteError, match="site file not found: nosuch .*local"):
        load_site("nosuch", tmp_path)


# ---------------------------------------------------------------- the local site runs real apps
@pytest.mark.integration
def test_local_site_runs_python_and_mpi_apps(tmp_path, load_parsl):
    from parsl import bash_app, python_app

    data = with_tests_importable(site_data("local"))
    data["tasks"]["md"]["ranks"] = data["tasks"]["cp2k"]["ranks"] = 2
    site = load_site(data, tmp_path, cpu_count=max(2, os.cpu_count() or 1))
    load_parsl(site)

    @python_app(executors=[SERIAL])
    def where():
        import os

        return os.getpid()

    @bash_app(executors=[MPI])
    def ranks(command, stdout=None, stderr=None, parsl_resource_specification={}):
        return command

    assert where().result(timeout=60) != os.getpid()

    md_dir = tmp_path / "md"
    md_dir.mkdir()
    ranks(site.mpi_command("md", mpi4py_ranks(md_dir)), stdout=str(md_dir / "out"), stderr=str(md_dir / "err"),
          parsl_resource_specification=site.resource_specification("md")).result(timeout=60)
    assert ranks_seen(md_dir) == {"rank-0": "2", "rank-1": "2"}

    # CP2K's launcher is Debian's OpenMPI mpiexec (not the MPICH of $PARSL_MPI_PREFIX)
    assert_cp2k_launcher_starts_two_ranks(site, ranks, tmp_path / "cp2k")


# ---------------------------------------------------------------- the Slurm site submits real jobs
def _slurm_status() -> bool:
    if not shutil.which("sinfo"):
        return False
    return subprocess.run(["bash", SLURM_SCRIPT, "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def slurm():
    """The one-node Slurm of scripts/slurm_localhost.sh: used if up; started (and stopped after)
    only when ALCGAP_TEST_SLURM=1 asks for it."""
    if _slurm_status():
        yield
        return
    if os.environ.get("ALCGAP_TEST_SLURM") != "1":
        pytest.skip("no local Slurm: start it with `bash scripts/slurm_localhost.sh start` "
                    "(or set ALCGAP_TEST_SLURM=1 to let the tests start and stop it)")
    subprocess.run(["bash", SLURM_SCRIPT, "start"], check=True)
    yield
    subprocess.run(["bash", SLURM_SCRIPT, "stop"], check=True)


def _job_record(job_id: str) -> tuple[str, str]:
    """`scontrol show job` and `sacct -c` (the completion log: no slurmdbd, plain sacct is off)."""
    show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    sacct = subprocess.run(["sacct", "-c", "-j", job_id], capture_output=True, text=True).stdout
    return show, sacct


@pytest.mark.integration
def test_slurm_site_runs_python_app_in_a_slurm_job(slurm, tmp_path, load_parsl):
    import parsl
    from parsl import python_app

    site = load_site(with_tests_importable(site_data("slurm-localhost")), tmp_path)
    load_parsl(site)

    @python_app(executors=[SERIAL])
    def job_of_worker():
        import os

        return os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_PARTITION")

    job_id, partition = job_of_worker().result(timeout=120)
    assert partition == site.spec.executors.serial.provider.partition
    assert job_id in site.config.executors[0].provider.resources  # the block Parsl submitted
    show, _ = _job_record(job_id)
    assert f"JobId={job_id} JobName=parsl.serial.block-0" in show and "JobState=RUNNING" in show
    parsl.dfk().cleanup()  # scancel the block: it ends, and the completion log records it
    for _ in range(40):
        _, sacct = _job_record(job_id)
        record = [line.split() for line in sacct.splitlines() if line.split()[:1] == [job_id]]
        if record:
            break
        time.sleep(0.5)
    assert record and record[0][6] in ("CANCELLED", "COMPLETED"), sacct


@pytest.mark.integration
def test_slurm_site_runs_mpi_ranks_with_srun(slurm, tmp_path, load_parsl):
    from parsl import bash_app

    site = load_site(with_tests_importable(site_data("slurm-localhost")), tmp_path)
    load_parsl(site)

    @bash_app(executors=[MPI])
    def ranks(command, stdout=None, stderr=None, parsl_resource_specification={}):
        return command

    md = 'echo "$PARSL_MPI_PREFIX" >&2; ' + site.mpi_command("md", mpi4py_ranks(tmp_path))
    ranks(md, stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err"),
          parsl_resource_specification=site.resource_specification("md")).result(timeout=120)
    assert ranks_seen(tmp_path) == {"rank-0": "2", "rank-1": "2"}
    assert "\nsrun --ntasks 2 --ntasks-per-node 2 " in (tmp_path / "err").read_text()

    # CP2K's launcher: Debian's OpenMPI mpiexec inside the block (srun cannot start it here)
    assert_cp2k_launcher_starts_two_ranks(site, ranks, tmp_path / "cp2k")
