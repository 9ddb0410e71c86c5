"""Site files: where a campaign runs, as YAML that maps one to one onto a ``parsl.Config``.

A site has two executors, with Parsl's own names for every key:

- ``serial``: a ``HighThroughputExecutor`` for the python tasks (fit, select, judge);
- ``mpi``: Parsl's ``MPIExecutor`` (HTEX in MPI mode) for tasks that start MPI ranks (LAMMPS MD,
  CP2K). Its bash apps begin with a launcher such as ``$PARSL_MPI_PREFIX`` and pass
  ``parsl_resource_specification`` = :meth:`Site.resource_specification`.

and the resources of each kind of task (``tasks.md``, ``tasks.cp2k``, ``tasks.fit``). The file is
validated once, at load; a bad key or value raises :class:`SiteError` naming the field and the fix.
See ``sites/README.md`` for the keys and ``sites/*.yaml`` for examples.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from alcgap.config import read_yaml

#: executor labels; Parsl apps choose one with ``executors=[...]``
SERIAL, MPI = "serial", "mpi"
#: which executor runs each kind of task
TASK_EXECUTOR = {"md": MPI, "cp2k": MPI, "fit": SERIAL, "select": SERIAL, "judge": SERIAL}
#: the site files shipped with alcgap; ``load_site("local", ...)`` finds ``sites/local.yaml``
SITES_DIR = Path(__file__).resolve().parent.parent / "sites"
DEFAULT_SITE = "local"

_PROVIDERS = ("local", "slurm", "pbspro")
_PROVIDER_ALIASES = {"localprovider": "local", "slurmprovider": "slurm", "pbsproprovider": "pbspro"}
_LAUNCHER_ALIASES = {
    "simplelauncher": "simple", "srunlauncher": "srun", "mpiexeclauncher": "mpiexec",
    "singlenodelauncher": "single_node",
}


class SiteError(ValueError):
    """A site file that cannot work; the message names the field and the fix."""


def _walltime(value: Any) -> str:
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 1:30:00 as the base-60 number 5400
            hint = f" (YAML read an unquoted H:MM:SS as the number {value}: quote it)"
        raise ValueError(f"walltime must be a quoted string 'HH:MM:SS', e.g. \"02:00:00\"{hint}")
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d)", value.strip())
    if value.strip().startswith("-"):
        raise ValueError(f"walltime '{value}' is negative; give a positive HH:MM:SS, e.g. \"02:00:00\"")
    if not match:
        raise ValueError(f"walltime '{value}' is not HH:MM:SS (e.g. \"02:00:00\", \"00:30:00\")")
    if not any(int(part) for part in match.groups()):
        raise ValueError(f"walltime '{value}' is zero; give a positive HH:MM:SS")
    return value.strip()


def _int_or_auto(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"expected a whole number >= 1 or 'auto', got {value!r}")


def _ranks(value: Any) -> int | str | dict[int, int | str]:
    """A rank count, or ranks by size: ``{from_atoms: ranks}``, the first key 1."""
    if not isinstance(value, dict):
        return _int_or_auto(value)
    if not value:
        raise ValueError("ranks by size is empty; give {from_atoms: ranks, ...} starting at 1, e.g. {1: 1, 500: 8}")
    table = {}
    for key, ranks in value.items():
        atoms = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if not isinstance(atoms, int) or isinstance(atoms, bool) or atoms < 1:
            raise ValueError(f"ranks by size: key {key!r} is not an atom count >= 1 "
                             "(keys: from how many atoms on a task takes these ranks)")
        try:
            table[atoms] = _int_or_auto(ranks)
        except ValueError as err:
            raise ValueError(f"ranks by size: {key}: {err}") from None
    if min(table) != 1:
        raise ValueError(f"ranks by size: the smallest key is {min(table)}; start at 1 so that every size has ranks, "
                         f"e.g. {{1: 1, {min(table)}: {table[min(table)]}}}")
    return dict(sorted(table.items()))


def _alias(table: dict[str, str]):
    return lambda value: table.get(value.lower(), value) if isinstance(value, str) else value


Walltime = Annotated[str, BeforeValidator(_walltime)]
IntOrAuto = Annotated[Union[int, Literal["auto"]], BeforeValidator(_int_or_auto)]
#: ranks of a task: one count, or ``{from_atoms: ranks}`` (a task of n atoms takes the entry of the
#: largest key <= n; the first key is 1)
Ranks = Annotated[Union[int, Literal["auto"], dict[int, Union[int, Literal["auto"]]]], BeforeValidator(_ranks)]
LauncherName = Annotated[
    Literal["simple", "srun", "mpiexec", "single_node"], BeforeValidator(_alias(_LAUNCHER_ALIASES))
]


def walltime_seconds(walltime: str) -> int:
    hours, minutes, seconds = (int(part) for part in walltime.split(":"))
    return 3600 * hours + 60 * minutes + seconds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- providers (parsl.providers)
class ProviderBase(Strict):
    """Keys every Parsl provider has. ``launcher`` None means the executor's usual one."""

    nodes_per_block: int = Field(1, ge=1)
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    parallelism: float = Field(1.0, ge=0.0, le=1.0)
    worker_init: str = ""
    launcher: LauncherName | None = None

    def cores(self) -> int | str:
        return self.cores_per_node  # type: ignore[attr-defined]


class LocalProviderSpec(ProviderBase):
    """``parsl.providers.LocalProvider``: this machine, no scheduler."""

    type: Literal["local"]
    #: not a LocalProvider key: the machine's size, for checking ranks (auto: os.cpu_count())
    cores_per_node: IntOrAuto = "auto"


class SlurmProviderSpec(ProviderBase):
    """``parsl.providers.SlurmProvider``: each block is one ``sbatch`` job."""

    type: Literal["slurm"]
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    walltime: Walltime = "01:00:00"
    cores_per_node: IntOrAuto
    #: GB per node (``#SBATCH --mem``)
    mem_per_node: int | None = Field(None, ge=1)
    exclusive: bool = True
    scheduler_options: str = ""


class PBSProProviderSpec(ProviderBase):
    """``parsl.providers.PBSProProvider``: each block is one ``qsub`` job."""

    type: Literal["pbspro"]
    queue: str | None = None
    account: str | None = None
    walltime: Walltime = "01:00:00"
    #: Parsl's PBS name for the cores of a node (``select=N:ncpus=...``)
    cpus_per_node: IntOrAuto
    select_options: str = ""
    scheduler_options: str = ""

    def cores(self) -> int | str:
        return self.cpus_per_node


Provider = Annotated[
    Union[LocalProviderSpec, SlurmProviderSpec, PBSProProviderSpec], Field(discriminator="type")
]


# ---------------------------------------------------------------- executors (parsl.executors)
class ExecutorBase(Strict):
    provider: Provider
    #: the interchange's address the workers connect to (None: Parsl tries all of the driver's)
    address: str | None = None
    worker_debug: bool = False
    #: seconds between heartbeats of a block's worker pool and the interchange
    heartbeat_period: int = Field(30, ge=1)
    #: seconds without a heartbeat after which a worker pool counts as lost (its block was cancelled,
    #: hit its walltime or lost its node): its tasks then fail with ManagerLost, and run again if
    #: ``retries`` allows. Parsl's default 120 s is that much delay before the rerun.
    heartbeat_threshold: int = Field(120, ge=1)

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_aliases(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            kind = value["type"]
            value = {**value, "type": _PROVIDER_ALIASES.get(kind.lower(), kind)}
        return value


class SerialExecutorSpec(ExecutorBase):
    """``HighThroughputExecutor(label="serial")``: python tasks (fit, select, judge)."""

    max_workers_per_node: int | None = Field(None, ge=1)
    cores_per_worker: float = Field(1.0, gt=0.0)
    mem_per_worker: float | None = Field(None, gt=0.0)


class MPIExecutorSpec(ExecutorBase):
    """``MPIExecutor(label="mpi")``: tasks that start MPI ranks with ``$PARSL_MPI_PREFIX``."""

    mpi_launcher: Literal["mpiexec", "srun", "aprun"] = "mpiexec"
    #: MPI tasks at once per block (auto: nodes_per_block; on a local provider, see Site docs)
    max_workers_per_block: IntOrAuto = "auto"


class Executors(Strict):
    serial: SerialExecutorSpec
    mpi: MPIExecutorSpec


# ---------------------------------------------------------------- resources per kind of task
class MPITaskSpec(Strict):
    """Ranks and threads of one MPI task, and the command that starts its ranks.

    ``ranks`` may depend on the task's size in atoms (an MD cell, a structure to label):
    ``{1: 1, 500: 4, 2000: 16}`` gives a task of n atoms the ranks of the largest key <= n.
    """

    ranks: Ranks = 1
    threads: int = Field(1, ge=1)
    #: nodes per task, for every size (None: as few as hold ranks x threads cores)
    nodes: int | None = Field(None, ge=1)
    #: shell prefix that starts the ranks. ``$PARSL_MPI_PREFIX`` is the executor's mpi_launcher as
    #: Parsl composes it; any other MPI may be named with $PARSL_NUM_RANKS, $PARSL_RANKS_PER_NODE,
    #: $PARSL_NUM_NODES, $PARSL_MPI_NODELIST (set by Parsl for each task)
    launcher: str = "$PARSL_MPI_PREFIX"
    #: Parsl's resource-specification key: extra options appended to $PARSL_MPI_PREFIX
    launcher_options: str = ""
    #: at most this many of these tasks in flight (auto: as many as the mpi executor holds, of
    #: the largest size's ranks)
    max_concurrent: IntOrAuto = 1

    def ranks_by_atoms(self) -> dict[int, int]:
        """``{from_atoms: ranks}`` of a resolved site; one count is ``{1: ranks}``."""
        return dict(self.ranks) if isinstance(self.ranks, dict) else {1: self.ranks}

    def ranks_for(self, n_atoms: int | None = None) -> int:
        """The ranks of a task of ``n_atoms`` atoms (None only where ranks do not depend on size)."""
        table = self.ranks_by_atoms()
        if n_atoms is None:
            if len(table) > 1:
                raise ValueError(f"the ranks of this task depend on its size ({table}): give n_atoms")
            return table[1]
        return table[max(key for key in table if key <= max(1, n_atoms))]

    def nodes_for(self, ranks: int, cores_per_node: int) -> int:
        """Nodes of a task of ``ranks`` ranks: ``nodes``, or as few as hold ranks x threads cores."""
        return self.nodes or math.ceil(ranks * self.threads / cores_per_node)


class FitTaskSpec(Strict):
    #: gap_fit's OpenMP threads (a fit runs on one worker of the serial executor, one at a time)
    threads: IntOrAuto = 1


#: keys a site once had that did nothing, and where what they meant lives now
_GONE = {
    ("cp2k", "walltime"): "the limit of one CP2K call is reference.walltime (seconds) in the campaign config",
    ("cp2k", "executable"): "the CP2K executable is reference.executable in the campaign config",
    ("fit", "memory"): "nothing requested or limited a fit's memory; size the serial block with "
                       "executors.serial.provider.mem_per_node",
    ("fit", "max_concurrent"): "a campaign fits one model at a time",
}


class Tasks(Strict):
    md: MPITaskSpec = Field(default_factory=MPITaskSpec)
    cp2k: MPITaskSpec = Field(default_factory=MPITaskSpec)
    fit: FitTaskSpec = Field(default_factory=FitTaskSpec)

    @model_validator(mode="before")
    @classmethod
    def _no_keys_that_did_nothing(cls, data):
        if isinstance(data, dict):
            for (kind, key), where in _GONE.items():
                if isinstance(data.get(kind), dict) and key in data[kind]:
                    raise ValueError(f"tasks.{kind}.{key} is not a site setting: {where}; remove it from the site")
        return data


class SiteSpec(Strict):
    name: str | None = None
    #: where workers find python, process_worker_pool.py and mpiexec: "driver" puts the bin/ of
    #: the Python running alcgap first on PATH; "none" leaves it to worker_init; or an env prefix
    python_env: str = "driver"
    retries: int = Field(0, ge=0)
    max_idletime: float = Field(120.0, ge=0.0)
    strategy: Literal["simple", "htex_auto_scale", "none"] = "simple"
    executors: Executors
    tasks: Tasks = Field(default_factory=Tasks)


# ---------------------------------------------------------------- loading
@dataclass(frozen=True)
class Site:
    """A loaded site: the ``parsl.Config`` and the resolved resources of each kind of task.

    On a local provider the MPI executor has no batch job to take nodes from: each MPI task gets
    one line ``localhost`` of ``<run>/parsl/mpi-nodefile`` (exported as ``PBS_NODEFILE``), so
    ``max_workers_per_block`` lines let that many MPI tasks run at once.
    """

    name: str
    spec: SiteSpec
    config: Any  # parsl.Config
    run_dir: Path

    @property
    def tasks(self) -> Tasks:
        return self.spec.tasks

    def executor(self, kind: str) -> str:
        """The executor label that runs this kind of task ('md', 'cp2k', 'fit', 'select', 'judge')."""
        return TASK_EXECUTOR[kind]

    def ranks(self, kind: str, n_atoms: int | None = None) -> int:
        """The MPI ranks of a task of this kind ('md' or 'cp2k') of ``n_atoms`` atoms."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        return task.ranks_for(n_atoms)

    def resource_specification(self, kind: str, n_atoms: int | None = None) -> dict:
        """``parsl_resource_specification`` for an MPI task of this kind ('md' or 'cp2k') of
        ``n_atoms`` atoms (needed when the site gives ranks by size)."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        ranks = task.ranks_for(n_atoms)
        nodes = task.nodes_for(ranks, self.spec.executors.mpi.provider.cores())
        spec = {"num_nodes": nodes, "ranks_per_node": ranks // nodes, "num_ranks": ranks}
        if task.launcher_options:
            spec["launcher_options"] = task.launcher_options
        return spec

    def mpi_command(self, kind: str, command: str) -> str:
        """The shell line of a bash app that runs ``command`` on the ranks of this kind of task."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        return f"export OMP_NUM_THREADS={task.threads}; {task.launcher} {command}"


def load_site(source: str | Path | dict | None, run_dir: str | Path, cpu_count: int | None = None) -> Site:
    """Read and check a site (a YAML path, a name in ``sites/``, or a dict) and build its Config.

    ``run_dir`` is the campaign's run directory; Parsl's run_dir is ``<run_dir>/parsl``.
    ``cpu_count`` (default ``os.cpu_count()``) resolves ``auto`` sizes.
    """
    spec = check_site(source, cpu_count)
    run_dir = Path(run_dir).resolve()
    return Site(spec.name or "custom", spec, build_config(spec, run_dir / "parsl"), run_dir)


def check_site(source: str | Path | dict | None, cpu_count: int | None = None,
               cp2k_walltime: float | None = None) -> SiteSpec:
    """The site's resolved spec, checked; raise SiteError naming the field. Writes nothing and
    starts nothing, so a campaign can call it before its first file. ``cp2k_walltime``: seconds
    of one CP2K call (the campaign's reference.walltime), checked against the blocks' walltime."""
    data, name = _read(DEFAULT_SITE if source is None else source)
    try:
        spec = SiteSpec.model_validate(data)
    except ValidationError as err:
        raise SiteError(_format_errors(err, name, data)) from None
    spec = _resolve(spec, cpu_count or os.cpu_count() or 1)
    problems = _check(spec, cp2k_walltime)
    if problems:
        raise SiteError("\n".join([f"the site in {name} cannot work:"] + [f"  {p}" for p in problems]))
    return spec


def _read(source: str | Path | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "the given dict"
    path = Path(source)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        path = SITES_DIR / f"{source}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SITES_DIR.glob("*.yaml")))
        raise SiteError(f"site file not found: {source} (sites shipped with alcgap: {known})")
    data = read_yaml(path, SiteError) or {}
    if not isinstance(data, dict):
        raise SiteError(f"{path}: the top level must be a mapping of keys")
    data.setdefault("name", path.stem)
    return data, str(path)


def _keys_at(loc: list[str], data: Any) -> list[str]:
    """The keys allowed where an unknown key was found (``loc`` ends with that key)."""
    model: Any = SiteSpec
    for part in loc[:-1]:
        data = data.get(part) if isinstance(data, dict) else None
        if part == "provider":
            kind = data.get("type", "") if isinstance(data, dict) else ""
            kind = _PROVIDER_ALIASES.get(str(kind).lower(), kind)
            model = dict(zip(_PROVIDERS, (LocalProviderSpec, SlurmProviderSpec, PBSProProviderSpec))).get(kind)
        else:
            field = model.model_fields.get(part) if model else None
            model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)


def _format_errors(err: ValidationError, source: str, data: dict) -> str:
    lines = [f"invalid site in {source}:"]
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        # pydantic puts the union's tag (e.g. 'slurm') into the path; a user never wrote it
        loc = [p for i, p in enumerate(loc) if not (i and loc[i - 1] == "provider" and p in _PROVIDERS)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _keys_at(loc, data)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            message = f"unknown key '{loc[-1]}'; " + (
                f"did you mean '{close[0]}'?" if close else f"the keys here are: {', '.join(known)}"
            )
        elif item["type"] == "union_tag_invalid":
            loc.append("type")
            message = f"unknown provider '{item['input'].get('type')}'; use one of: {', '.join(_PROVIDERS)}"
        elif item["type"] == "union_tag_not_found":
            loc.append("type")
            message = f"missing: say which provider, type: {' | '.join(_PROVIDERS)}"
        elif item["type"] == "missing":
            message = "missing (required here; see sites/README.md)"
        elif item["type"] == "literal_error":
            message = f"{item['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
        lines.append(f"  {'.'.join(loc)}: {message}")
    return "\n".join(lines)


def _resolve(spec: SiteSpec, cpu_count: int) -> SiteSpec:
    """Replace every 'auto' with a number (cores from ``cpu_count``) and fill nodes per task."""
    spec = spec.model_copy(deep=True)
    providers = (spec.executors.serial.provider, spec.executors.mpi.provider)
    for provider in providers:
        key = "cpus_per_node" if provider.type == "pbspro" else "cores_per_node"
        if getattr(provider, key) == "auto":
            setattr(provider, key, cpu_count)
    mpi = spec.executors.mpi
    cores = mpi.provider.cores()
    for task in (spec.tasks.md, spec.tasks.cp2k):
        full_node = max(1, cores // task.threads)
        if isinstance(task.ranks, dict):
            task.ranks = {atoms: full_node if ranks == "auto" else ranks for atoms, ranks in task.ranks.items()}
        elif task.ranks == "auto":
            task.ranks = full_node
    if spec.tasks.fit.threads == "auto":
        spec.tasks.fit.threads = spec.executors.serial.provider.cores()
    local = mpi.provider.type == "local"
    for task in (spec.tasks.md, spec.tasks.cp2k):
        if task.max_concurrent == "auto":
            # sized for the largest tasks: a local slot does not know how many ranks its task has,
            # so smaller tasks at once than the cores allow, never more ranks than cores
            largest = max(task.ranks_by_atoms().values())
            if local:  # each task takes one 'localhost' slot and ranks x threads cores
                task.max_concurrent = max(1, cores // (largest * task.threads))
            else:  # the MPI executor hands out whole nodes
                per_block = max(1, mpi.provider.nodes_per_block // task.nodes_for(largest, cores))
                task.max_concurrent = per_block * mpi.provider.max_blocks
    if mpi.max_workers_per_block == "auto":
        if local:
            mpi.max_workers_per_block = max(spec.tasks.md.max_concurrent, spec.tasks.cp2k.max_concurrent)
        else:
            mpi.max_workers_per_block = mpi.provider.nodes_per_block
    return spec


def _check(spec: SiteSpec, cp2k_walltime: float | None = None) -> list[str]:
    """Cross-field checks: does each task fit the blocks it will run in (a CP2K call of
    ``cp2k_walltime`` seconds, the campaign's reference.walltime, included)?"""
    problems = []
    for label in (SERIAL, MPI):
        provider = getattr(spec.executors, label).provider
        where = f"executors.{label}.provider"
        if provider.min_blocks > provider.max_blocks:
            problems.append(f"{where}.min_blocks: {provider.min_blocks} > max_blocks {provider.max_blocks}")
        if provider.init_blocks > provider.max_blocks:
            problems.append(f"{where}.init_blocks: {provider.init_blocks} > max_blocks {provider.max_blocks}")
    for label in (SERIAL, MPI):
        executor = getattr(spec.executors, label)
        if executor.heartbeat_threshold <= executor.heartbeat_period:
            problems.append(
                f"executors.{label}.heartbeat_threshold: {executor.heartbeat_threshold} s is not longer than "
                f"heartbeat_period {executor.heartbeat_period} s; healthy blocks would count as lost: "
                f"make it a few periods, e.g. {4 * executor.heartbeat_period}"
            )
    mpi = spec.executors.mpi
    where = "executors.mpi.provider"
    cores_key = "cpus_per_node" if mpi.provider.type == "pbspro" else "cores_per_node"
    if mpi.provider.launcher not in (None, "simple"):
        problems.append(
            f"{where}.launcher: '{mpi.provider.launcher}' cannot work; Parsl's MPIExecutor needs 'simple' "
            "(one worker pool on the first node of a block; the ranks start per task with mpi_launcher)"
        )
    if mpi.provider.type == "local" and mpi.mpi_launcher != "mpiexec":
        problems.append(
            f"executors.mpi.mpi_launcher: '{mpi.mpi_launcher}' needs a batch job; a local provider uses 'mpiexec'"
        )
    cores, nodes_per_block = mpi.provider.cores(), mpi.provider.nodes_per_block
    for kind in ("md", "cp2k"):
        task: MPITaskSpec = getattr(spec.tasks, kind)
        for atoms, ranks in task.ranks_by_atoms().items():
            field = f"tasks.{kind}.ranks" + (f".{atoms}" if isinstance(task.ranks, dict) else "")
            nodes = task.nodes_for(ranks, cores)
            if nodes > nodes_per_block:
                most = cores * nodes_per_block // task.threads
                problems.append(
                    f"{field}: {ranks} ranks x {task.threads} thread(s) need {nodes} nodes "
                    f"of {cores} cores ({where}.{cores_key}) but a block has {where}.nodes_per_block = "
                    f"{nodes_per_block}: raise nodes_per_block to {nodes} or lower ranks to at most {most}"
                )
            elif ranks % nodes:
                problems.append(
                    f"{field}: {ranks} ranks do not split evenly over {nodes} nodes (tasks.{kind}.nodes); "
                    f"use a multiple of {nodes}"
                )
            elif ranks // nodes * task.threads > cores:
                problems.append(
                    f"{field}: {ranks // nodes} ranks x {task.threads} threads per node exceed "
                    f"{cores} cores ({where}.{cores_key}); raise tasks.{kind}.nodes or lower ranks"
                )
    walltime = getattr(mpi.provider, "walltime", None)
    if walltime and cp2k_walltime and cp2k_walltime > walltime_seconds(walltime):
        problems.append(
            f"reference.walltime: {cp2k_walltime:g} s for one CP2K call is longer than a block ({where}.walltime "
            f"{walltime}); no CP2K call could finish: shorten it or raise the block's walltime"
        )
    serial = spec.executors.serial.provider
    if spec.tasks.fit.threads > serial.cores():
        problems.append(
            f"tasks.fit.threads: {spec.tasks.fit.threads} > {serial.cores()} cores of executors.serial.provider"
        )
    return problems


# ---------------------------------------------------------------- parsl objects
def build_config(spec: SiteSpec, parsl_dir: Path):
    """The ``parsl.Config`` of a resolved, checked site; Parsl's run_dir is ``parsl_dir``."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, MPIExecutor

    bin_dir = Path(sys.executable).parent
    # The interchange runs on the driver, started by name ('interchange.py'), which only an
    # activated environment has on PATH: name the driver's own.
    interchange = bin_dir / "interchange.py"
    interchange_cmd = str(interchange) if interchange.exists() else None
    serial, mpi = spec.executors.serial, spec.executors.mpi
    executors = [
        HighThroughputExecutor(
            label=SERIAL,
            provider=_provider(serial.provider, "single_node", _worker_init(spec, serial.provider)),
            max_workers_per_node=serial.max_workers_per_node,
            cores_per_worker=serial.cores_per_worker,
            mem_per_worker=serial.mem_per_worker,
            interchange_launch_cmd=[interchange_cmd] if interchange_cmd else None,
            address=serial.address,
            worker_debug=serial.worker_debug,
            heartbeat_period=serial.heartbeat_period,
            heartbeat_threshold=serial.heartbeat_threshold,
        ),
        MPIExecutor(
            label=MPI,
            provider=_provider(mpi.provider, "simple", _worker_init(spec, mpi.provider, parsl_dir, mpi)),
            mpi_launcher=mpi.mpi_launcher,
            max_workers_per_block=mpi.max_workers_per_block,
            # MPIExecutor types this as a str (HTEX: a list); a str is run as one program
            interchange_launch_cmd=interchange_cmd,
            address=mpi.address,
            worker_debug=mpi.worker_debug,
            heartbeat_period=mpi.heartbeat_period,
            heartbeat_threshold=mpi.heartbeat_threshold,
        ),
    ]
    return Config(
        executors=executors,
        run_dir=str(parsl_dir),
        retries=spec.retries,
        max_idletime=spec.max_idletime,
        strategy=None if spec.strategy == "none" else spec.strategy,
    )


def _worker_init(spec: SiteSpec, provider: ProviderBase, parsl_dir: Path | None = None,
                 mpi: MPIExecutorSpec | None = None) -> str:
    lines = [provider.worker_init.strip()] if provider.worker_init.strip() else []
    # after the site's own worker_init (module load ...), so that this environment's python,
    # process_worker_pool.py and mpiexec come first
    if spec.python_env == "driver":
        lines.append(f'export PATH="{Path(sys.executable).parent}:$PATH"')
    elif spec.python_env != "none":
        lines.append(f'export PATH="{Path(spec.python_env).expanduser()}/bin:$PATH"')
    if mpi is not None and provider.type == "local":
        # Parsl's MPI mode takes its nodes from the batch job (SLURM_NODELIST or PBS_NODEFILE);
        # with neither it stops: "mpi_mode does not support scheduler:Scheduler.Unknown".
        # A nodefile of 'localhost' lines gives it one slot per concurrent MPI task.
        parsl_dir.mkdir(parents=True, exist_ok=True)
        nodefile = parsl_dir / "mpi-nodefile"
        nodefile.write_text("localhost\n" * mpi.max_workers_per_block)
        lines += ["unset SLURM_NODELIST", f'export PBS_NODEFILE="{nodefile}"']
    return "\n".join(lines)


def _provider(provider: ProviderBase, default_launcher: str, worker_init: str):
    from parsl import launchers, providers

    launcher = {
        "simple": launchers.SimpleLauncher, "srun": launchers.SrunLauncher,
        "mpiexec": launchers.MpiExecLauncher, "single_node": launchers.SingleNodeLauncher,
    }[provider.launcher or default_launcher]()
    common = {
        "nodes_per_block": provider.nodes_per_block, "init_blocks": provider.init_blocks,
        "min_blocks": provider.min_blocks, "max_blocks": provider.max_blocks,
        "parallelism": provider.parallelism, "worker_init": worker_init, "launcher": launcher,
    }
    if isinstance(provider, LocalProviderSpec):
        return providers.LocalProvider(**common)
    if isinstance(provider, SlurmProviderSpec):
        return providers.SlurmProvider(
            partition=provider.partition, account=provider.account, qos=provider.qos,
            constraint=provider.constraint, walltime=provider.walltime,
            cores_per_node=provider.cores_per_node, mem_per_node=provider.mem_per_node,
            exclusive=provider.exclusive, scheduler_options=provider.scheduler_options, **common,
        )
    return providers.PBSProProvider(
        queue=provider.queue, account=provider.account, walltime=provider.walltime,
        cpus_per_node=provider.cpus_per_node, select_options=provider.select_options,
        scheduler_options=provider.scheduler_options, **common,
    )
