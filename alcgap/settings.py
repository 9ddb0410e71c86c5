"""The ground every settings model stands on, shared by the campaign config and the site files.

- :class:`Strict`: the base model; an unknown key is an error, never ignored;
- :class:`ConfigError`: a configuration that cannot work, with a message naming the field and the fix;
- :func:`read_yaml`, :func:`load_model`: a YAML file (or a dict) into a validated model, with
  errors that name the field (:func:`format_validation_error`), never a traceback;
- :func:`parse_pair` and the per-pair distance tables (``{"Si-O": 1.5}``) several sections share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from ase.data import atomic_numbers
from pydantic import BaseModel, ConfigDict, ValidationError

from alcgap.structures import Pair, pair_key, pair_name, species_pairs

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the field and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_pair(name: str) -> Pair:
    """The species pair ``'A-B'`` names, in the package's order (``'O-Si'`` and ``'Si-O'`` are one pair)."""
    parts = name.replace(" ", "").split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"'{name}' is not a species pair; write it as 'A-B', e.g. 'Si-O'")
    for symbol in parts:
        if symbol not in atomic_numbers or symbol == "X":
            raise ValueError(f"'{symbol}' in '{name}' is not a chemical element symbol")
    return pair_key(*parts)


def check_pair_distances(table: dict[str, float], upper: float) -> dict[str, float]:
    """A per-pair distance table (``{"Si-O": 1.5}``): every key a pair, every pair once (``Si-O``
    and ``O-Si`` are one pair), every distance in (0, ``upper``] Angstrom."""
    seen: dict[Pair, str] = {}
    for name, distance in table.items():
        pair = parse_pair(name)
        if pair in seen:
            raise ValueError(f"'{seen[pair]}' and '{name}' are the same pair, given twice; give it once")
        seen[pair] = name
        if not 0.0 < distance <= upper:
            raise ValueError(f"'{name}': {distance} A; give a distance in Angstrom, 0 < d <= {upper:g}")
    return table


def check_pairs_of_species(field: str, table: dict[str, float], species: list[str]) -> None:
    """Refuse a per-pair table (at ``field``) naming a pair that is not one of ``species``."""
    wanted = {pair_name(p) for p in species_pairs(species)}
    given = {pair_name(parse_pair(name)) for name in table}
    if not given <= wanted:
        raise ValueError(f"{field}: {sorted(given - wanted)} are not pairs of species {species}")


def read_yaml(path: Path, error: type[Exception]):
    """The YAML document in ``path``; a syntax error raises ``error`` naming the line, the column
    and what the parser expected, never a parser traceback."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        what = "; ".join(part for part in (err.context, err.problem) if part)
        raise error(f"{path}: not valid YAML at {where}: {what} (check the indentation and the ':' after each key "
                    "there; a value holding ':' or '#' needs quotes)") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML: {err}") from None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per error, each led by the dotted path of its field (``main.soap.n_max: ...``)."""
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see configs/ for the known keys)"
        lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


def load_model(model: type[Model], source: str | Path | dict) -> Model:
    """``model`` validated from a YAML file or a dict; :class:`ConfigError` naming the field otherwise."""
    if isinstance(source, dict):
        data, name = source, "the given dict"
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        data, name = read_yaml(path, ConfigError) or {}, str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, name)) from None
