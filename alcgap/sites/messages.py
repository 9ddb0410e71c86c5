"""Validation errors of a site file as a user can act on them: the field, what is wrong, the fix.

Pydantic's messages name its own internals (the provider union's tag, "Value error, ..."); these
name the key as the user wrote it, suggest the closest known key for a typo and list the allowed
ones otherwise.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from alcgap.sites.spec import (PROVIDER_ALIASES, PROVIDERS, LocalProviderSpec, PBSProProviderSpec, SiteSpec,
                               SlurmProviderSpec)


def _keys_at(loc: list[str], data: Any) -> list[str]:
    """The keys allowed where an unknown key was found (``loc`` ends with that key)."""
    model: Any = SiteSpec
    for part in loc[:-1]:
        data = data.get(part) if isinstance(data, dict) else None
        if part == "provider":
            kind = data.get("type", "") if isinstance(data, dict) else ""
            kind = PROVIDER_ALIASES.get(str(kind).lower(), kind)
            model = dict(zip(PROVIDERS, (LocalProviderSpec, SlurmProviderSpec, PBSProProviderSpec))).get(kind)
        else:
            field = model.model_fields.get(part) if model else None
            model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)


def validation_message(err: ValidationError, source: str, data: dict) -> str:
    """One line per error of ``data`` (read from ``source``): the dotted key and what to do."""
    lines = [f"invalid site in {source}:"]
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        # pydantic puts the union's tag (e.g. 'slurm') into the path; a user never wrote it
        loc = [p for i, p in enumerate(loc) if not (i and loc[i - 1] == "provider" and p in PROVIDERS)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _keys_at(loc, data)
            close = difflib.get_close_matches(loc[-1], known, n=1)
            message = f"unknown key '{loc[-1]}'; " + (
                f"did you mean '{close[0]}'?" if close else f"the keys here are: {', '.join(known)}"
            )
        elif item["type"] == "union_tag_invalid":
            loc.append("type")
            message = f"unknown provider '{item['input'].get('type')}'; use one of: {', '.join(PROVIDERS)}"
        elif item["type"] == "union_tag_not_found":
            loc.append("type")
            message = f"missing: say which provider, type: {' | '.join(PROVIDERS)}"
        elif item["type"] == "missing":
            message = "missing (required here; see sites/README.md)"
        elif item["type"] == "literal_error":
            message = f"{item['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
        lines.append(f"  {'.'.join(loc)}: {message}")
    return "\n".join(lines)
