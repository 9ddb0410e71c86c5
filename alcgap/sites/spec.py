"""The schema of a site file: Parsl's own objects and names, one model per object.

Providers (``parsl.providers``), the two executors (``parsl.executors``) and the resources of
each kind of task; each model forbids unknown keys, and field validators give the fix in their
message (a walltime YAML read as a number, ranks by size that do not start at 1, ...).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from alcgap.settings import Strict

#: executor labels; Parsl apps choose one with ``executors=[...]``
SERIAL, MPI = "serial", "mpi"


class SiteError(ValueError):
    """A site file that cannot work; the message names the field and the fix."""


PROVIDERS = ("local", "slurm", "pbspro")
PROVIDER_ALIASES = {"localprovider": "local", "slurmprovider": "slurm", "pbsproprovider": "pbspro"}
_LAUNCHER_ALIASES = {
    "simplelauncher": "simple", "srunlauncher": "srun", "mpiexeclauncher": "mpiexec",
    "singlenodelauncher": "single_node",
}


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
            value = {**value, "type": PROVIDER_ALIASES.get(kind.lower(), kind)}
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
