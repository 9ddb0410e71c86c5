"""A campaign's frozen config: written once per start, compared on every resume, read in one place.

``<run>/campaign.json`` is the record the campaign ran with (the config as JSON, the reference's
name and settings hash); ``<run>/campaign.yaml`` is the same config for people. A resume whose
config changes what a label or the auxiliary means is refused, naming every difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import yaml

from alcgap.config import CampaignConfig, ConfigError, read_yaml
from alcgap.workflow.state import located, write_atomic, write_json_atomic

#: config sections that change what a label or the auxiliary means: a resume must not change them
FROZEN_SECTIONS = ("species", "reference", "aux", "data", "seed", "potential")
FROZEN_YAML, RECORD_JSON = "campaign.yaml", "campaign.json"


class ResumeRefused(ConfigError):
    """The config changed in a way that would make the stored data inconsistent."""


def is_run(run_dir: str | os.PathLike) -> bool:
    """Does ``run_dir`` hold a campaign (its frozen config)?"""
    return (Path(run_dir) / FROZEN_YAML).is_file()


def frozen_data(run_dir: str | os.PathLike) -> dict | None:
    """The config a campaign ran with, as written (JSON types): the record's copy, else
    ``campaign.yaml`` (which people may edit; an edit is checked on resume like any config);
    None where the run directory holds neither."""
    run = Path(run_dir)
    record = run / RECORD_JSON
    if record.exists():
        recorded = json.loads(record.read_text()).get("config")
        if recorded is not None:
            return located(recorded, run)
    if (run / FROZEN_YAML).exists():
        return located(read_yaml(run / FROZEN_YAML, ConfigError) or {}, run)
    return None


def frozen_config(run_dir: str | os.PathLike) -> CampaignConfig:
    """The frozen config of a run, validated; :class:`ConfigError` where there is none."""
    data = frozen_data(run_dir)
    if data is None:
        raise ConfigError(f"{run_dir} holds no campaign (no {FROZEN_YAML}): start it with `alcgap run`")
    return CampaignConfig.model_validate(data)


def config_differences(old: dict, new: dict, sections: Sequence[str] = FROZEN_SECTIONS) -> list[str]:
    """Human-readable differences of the frozen sections of two configs."""
    diffs = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif a != b:
            diffs.append(f"{where}: {a!r} -> {b!r}")

    for section in sections:
        walk(old.get(section), new.get(section), section)
    return diffs


def _label_meaning(dumped: dict, config: CampaignConfig | None) -> dict:
    """The config with its reference section reduced to what changes a label (CP2K: not how the
    program runs: executable, launcher, threads, walltime, data_dir or recovery settings)."""
    label_settings = getattr(getattr(config, "reference", None), "label_settings", None)
    return {**dumped, "reference": label_settings()} if label_settings else dumped


def freeze(run_dir: Path, config: CampaignConfig, reference_name: str, settings_hash: str,
           log: Callable[[str], None]) -> None:
    """Write the frozen config, after checking a resume against what the run started with."""
    current = config.model_dump(mode="json")
    before = frozen_data(run_dir)
    if before is not None:
        try:  # in today's layout (a frozen file of an older layout compares by what it means)
            before_config = CampaignConfig.model_validate(before)
        except ValueError:
            before_config = None  # it no longer validates: compare as written, and show every difference
        if before_config is not None:
            before = before_config.model_dump(mode="json")
        diffs = config_differences(_label_meaning(before, before_config), _label_meaning(current, config))
        if diffs:
            raise ResumeRefused(
                f"{run_dir / FROZEN_YAML} was run with other settings; resuming with these would mix "
                "inconsistent data:\n  " + "\n  ".join(diffs) + "\nstart a new run directory, or restore those settings")
        harmless = config_differences(before, current, ("reference",))
        if harmless:  # where or how the reference runs, not what its labels mean
            log("resuming with changes that do not change a label (recorded in campaign.yaml): " + "; ".join(harmless))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / RECORD_JSON, {"settings_hash": settings_hash, "reference": reference_name, "config": current})
    write_atomic(run_dir / FROZEN_YAML, yaml.safe_dump(current, sort_keys=False))
