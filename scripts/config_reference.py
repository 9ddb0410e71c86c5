"""Write the configuration reference, docs/reference/config.md, from the pydantic models.

    python scripts/config_reference.py            # (re)write docs/reference/config.md
    python scripts/config_reference.py --check    # exit 1 if the committed page is stale
    python scripts/config_reference.py --stdout   # print the page instead

The page has one table per model (the campaign config, the fit config, the site file and every
model nested in them), one row per field: its path in the YAML file, type, default, bounds and
description. Everything is read from the models themselves (``model_fields``, the annotations and
their metadata), so a new field, a new bound or a model moved to another module needs no change
here, only a rerun. Descriptions are the field's ``description=``, else its ``#:`` comment in the
class source (the comments alcgap writes above each field), else, for a field that holds a nested
model, the first paragraph of that model's docstring. The output depends on the models only, never
on the machine or the date, so ``tests/test_docs.py`` can compare it with the committed page.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import html
import importlib
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "reference" / "config.md"
COMMAND = "python scripts/config_reference.py"

#: the files a user writes, in page order: (title, model class name, what the file is)
ROOTS = (
    ("Campaign config", "CampaignConfig",
     "`alcgap run CONFIG` (or `alcgap.run_campaign`): the whole active-learning campaign. It takes every key "
     "of the fit config below, plus the loop's own sections."),
    ("Fit config", "FitConfig", "`alcgap fit CONFIG` (or `alcgap.run_fit`): one composite fit, no active learning."),
    ("Site file", "SiteSpec", "`--site SITE` (or `site=` in the Python API): where the tasks run, as a `parsl.Config`."),
)
#: where the root models are looked for, in order; the first module that has the name wins
MODULES = ("alcgap", "alcgap.config", "alcgap.settings", "alcgap.sites")


def find_model(name: str) -> type[BaseModel]:
    """The model class called ``name``: from the public modules, else from any alcgap module whose
    name says it holds settings (models move between modules while the package is reorganised)."""
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    import pkgutil

    import alcgap

    for info in sorted(pkgutil.walk_packages(alcgap.__path__, "alcgap."), key=lambda i: i.name):
        if not re.search(r"config|settings|site", info.name):
            continue
        try:
            candidate = getattr(importlib.import_module(info.name), name, None)
        except ImportError:
            continue
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise SystemExit(f"config_reference: no pydantic model '{name}' in {', '.join(MODULES)} or any alcgap "
                     f"*config*/*settings*/*site* module; update ROOTS in {Path(__file__).name}")


# ------------------------------------------------------------------ text helpers
def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def code(text: str) -> str:
    """An inline code span that survives a Markdown table cell (a ``|`` in it would split the cell)."""
    if "|" in text or "`" in text:
        return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"
    return f"`{text}`"


def cell(text: str) -> str:
    """Prose for a table cell: one line, pipes escaped outside and inside code spans."""
    text = " ".join(text.split())
    text = re.sub(r":[a-z]+:(?=`)", "", text)  # Sphinx roles (:mod:`x`) read as plain code here
    parts = re.split(r"(``.+?``|`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(code(part.strip("`")))
        else:
            out.append(part.replace("|", "\\|"))
    return "".join(out)


def first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def anchor_of(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub both give a heading of this text."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


# ------------------------------------------------------------------ field comments (#:)
_COMMENTS: dict[type, dict[str, str]] = {}


def _class_comments(cls: type) -> dict[str, str]:
    """``{field: text}`` of the ``#:`` comments just above (or after) each annotated field of ``cls``."""
    if cls in _COMMENTS:
        return _COMMENTS[cls]
    found: dict[str, str] = {}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        _COMMENTS[cls] = found
        return found
    lines = source.splitlines()
    body = next((node.body for node in tree.body if isinstance(node, ast.ClassDef)), [])
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            above.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        trailing = re.search(r"#:\s*(.*)$", lines[(node.end_lineno or node.lineno) - 1])
        text = " ".join(above) or (trailing.group(1).strip() if trailing else "")
        if text:
            found[node.target.id] = text
    _COMMENTS[cls] = found
    return found


def field_comment(model: type[BaseModel], name: str) -> str:
    """The ``#:`` comment of field ``name``, from the class of ``model``'s MRO that declares it."""
    for cls in model.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return _class_comments(cls).get(name, "")
    return ""


# ------------------------------------------------------------------ types
_NONE = type(None)
_CONSTRAINTS = (("gt", "> {}"), ("ge", ">= {}"), ("lt", "< {}"), ("le", "<= {}"), ("multiple_of", "multiple of {}"),
                ("min_length", "length >= {}"), ("max_length", "length <= {}"), ("pattern", "matches {}"))


def constraints(metadata: list[Any]) -> list[str]:
    """Bounds written in a field's (or an Annotated type's) metadata: annotated_types and pydantic's."""
    out = []
    for item in metadata:
        for attr, form in _CONSTRAINTS:
            value = getattr(item, attr, None)
            if value is None:
                continue
            text = code(str(value)) if attr == "pattern" else _number(value)
            out.append(form.format(text))
    return out


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """``tp`` without its Annotated wrappers, and the metadata they carried."""
    metadata: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        metadata.extend(tp.__metadata__)
        tp = tp.__origin__
    return tp, metadata


@dataclass
class Variant:
    """A model reached through a field: where (path suffix), and how it is chosen in a union."""

    model: type[BaseModel]
    suffix: str = ""
    chosen_by: str = ""


@dataclass
class TypeInfo:
    text: str
    bounds: list[str] = field(default_factory=list)
    models: list[Variant] = field(default_factory=list)


class Renderer:
    def __init__(self, anchors: dict[type, str]):
        self.anchors = anchors  # model -> the anchor of its table

    def link(self, model: type[BaseModel]) -> str:
        return f"[{model.__name__}](#{self.anchors[model]})"

    def describe(self, tp: Any, discriminator: Any = None, where: str = "") -> TypeInfo:
        """The type as text, its nested bounds (``where`` says of what: items, values) and its models."""
        tp, metadata = _strip(tp)
        bounds = [f"{where}{b}" for b in constraints(metadata)] if where else []
        for item in metadata:  # Field(discriminator=...) or Discriminator(...) inside Annotated
            discriminator = getattr(item, "discriminator", None) or discriminator
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if _is_union(tp):
            info = self._union(args, discriminator, where)
        elif origin is Literal:
            info = TypeInfo(" \\| ".join(dict.fromkeys(type(v).__name__ for v in args)),
                            ["one of " + ", ".join(code(json.dumps(v)) for v in args) if len(args) > 1
                             else f"always {code(json.dumps(args[0]))}"])
        elif isinstance(origin, type) and issubclass(origin, abc.Mapping):
            key = self.describe(args[0]) if args else TypeInfo("any")
            value = self.describe(args[1], where="each value: ") if len(args) > 1 else TypeInfo("any")
            info = TypeInfo(f"dict[{key.text}, {value.text}]", value.bounds,
                            [Variant(v.model, ".<key>" + v.suffix, v.chosen_by) for v in value.models])
        elif isinstance(origin, type) and issubclass(origin, (abc.Sequence, abc.Set)) and origin not in (str, bytes):
            info = self._collection(origin, args)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            info = TypeInfo(self.link(tp), models=[Variant(tp)])
        else:
            info = TypeInfo(_plain_name(tp))
        info.bounds = bounds + info.bounds
        return info

    def _union(self, args: tuple, discriminator: Any, where: str) -> TypeInfo:
        """``A | B | None``: a Literal among other members is shown by its values, a model by a link
        and how it is chosen (the discriminator's value, or the callable discriminator's tag)."""
        members = [m for m in args if m is not _NONE]
        info = TypeInfo("")
        parts = []
        for member in members:
            bare, member_meta = _strip(member)
            if typing.get_origin(bare) is Literal and len(members) > 1:
                parts += [code(json.dumps(v)) for v in typing.get_args(bare)]
                continue
            sub = self.describe(member, discriminator, where)
            parts.append(sub.text)
            info.bounds += sub.bounds
            tag = next((getattr(m, "tag") for m in member_meta if type(m).__name__ == "Tag"), None)
            for variant in sub.models:
                if not variant.chosen_by and len(members) > 1:
                    variant.chosen_by = self._chosen_by(variant.model, discriminator, tag)
                info.models.append(variant)
        if _NONE in args:
            parts.append("null")
        info.text = " \\| ".join(dict.fromkeys(parts))
        return info

    def _collection(self, origin: type, args: tuple) -> TypeInfo:
        """``list[X]``, ``set[X]``, ``tuple[X, ...]`` or a fixed ``tuple[X, Y, Z]``."""
        name = "list" if origin is abc.Sequence else origin.__name__
        if origin is tuple and args and args[-1] is not Ellipsis:
            subs = [self.describe(a, where="each item: ") for a in args]
            text = f"{name}[{', '.join(s.text for s in subs)}]"
        else:
            subs = [self.describe(args[0], where="each item: ") if args else TypeInfo("any")]
            text = f"{name}[{subs[0].text}{', ...' if origin is tuple else ''}]"
        return TypeInfo(text, [b for s in subs for b in s.bounds],
                        [Variant(v.model, "[]" + v.suffix, v.chosen_by) for s in subs for v in s.models])

    @staticmethod
    def _chosen_by(model: type[BaseModel], discriminator: Any, tag: str | None) -> str:
        key = discriminator if isinstance(discriminator, str) else None
        if key and key in model.model_fields:
            value = model.model_fields[key].default
            if value is not PydanticUndefined:
                return f"{code(key)}: {code(json.dumps(value))}"
            choices = typing.get_args(_strip(model.model_fields[key].annotation)[0])
            if choices:
                return f"{code(key)}: {code(json.dumps(choices[0]))}"
        if tag is not None:
            return f"the {code(tag)} form"
        return ""


def _plain_name(tp: Any) -> str:
    if tp is Any:
        return "any"
    if tp is _NONE:
        return "null"
    if isinstance(tp, type):
        if issubclass(tp, Path):
            return "path"
        return tp.__name__
    origin = typing.get_origin(tp)
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return str(tp).replace("typing.", "")


# ------------------------------------------------------------------ defaults
def _literal_choice(annotation: Any) -> bool:
    bare = _strip(annotation)[0]
    return typing.get_origin(bare) is Literal and len(typing.get_args(bare)) == 1


def default_text(info: FieldInfo, renderer: Renderer) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:  # a factory that takes the validated data
            return "computed"
    else:
        return "**required**"
    if isinstance(value, BaseModel):
        shown = value.model_dump(mode="json", exclude_defaults=True)
        for name, sub in type(value).model_fields.items():  # a union's discriminator, e.g. kind: classical
            if _literal_choice(sub.annotation):
                shown = {name: to_jsonable_python(getattr(value, name)), **shown}
        target = renderer.link(type(value)) if type(value) in renderer.anchors else type(value).__name__
        return f"{code(json.dumps(shown))} ({target})" if shown else f"the defaults of {target}"
    # sets sorted first: to_jsonable_python would list them in hash order
    return code(json.dumps(to_jsonable_python(_stable(value)), ensure_ascii=False))


def _stable(value: Any) -> Any:
    """``value`` with the items of sets sorted, so the page does not depend on hash seeds."""
    if isinstance(value, (set, frozenset)):
        return sorted((_stable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {key: _stable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(item) for item in value]
    return value


def description(model: type[BaseModel], name: str, info: FieldInfo, nested: list[Variant]) -> str:
    text = info.description or field_comment(model, name)
    if not text and len({v.model for v in nested}) == 1:
        text = first_paragraph(nested[0].model.__doc__)
    return cell(text)


# ------------------------------------------------------------------ the walk
@dataclass
class Table:
    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)
    chosen_by: list[str] = field(default_factory=list)


def walk(model: type[BaseModel], path: str, tables: dict[type, Table], chosen_by: str = "") -> None:
    """Record ``model`` at ``path`` and everything nested in it, depth first in field order."""
    table = tables.get(model)
    first_visit = table is None
    if first_visit:
        table = tables[model] = Table(model)
    if path not in table.paths:
        table.paths.append(path)
        table.chosen_by.append(chosen_by)
    if not first_visit:
        return
    probe = Renderer(_NoAnchors())  # only the models a field reaches are wanted here, not the text
    for name, info in model.model_fields.items():
        for variant in probe.describe(info.annotation, info.discriminator).models:
            walk(variant.model, f"{path}.{name}{variant.suffix}" if path else f"{name}{variant.suffix}", tables,
                 variant.chosen_by)


class _NoAnchors(dict):
    def __missing__(self, key):
        return ""


def headings(models: list[type[BaseModel]]) -> dict[type, str]:
    """Each model's heading (and so its anchor): its name, with its module's when two models share
    a name, numbered if that is not enough."""
    names = [model.__name__ for model in models]
    out: dict[type, str] = {}
    for model in models:
        title = model.__name__
        if names.count(title) > 1:
            title = f"{title} ({model.__module__.rsplit('.', 1)[-1]})"
        number = 2
        while title in out.values():
            title, number = f"{title.rsplit(' #', 1)[0]} #{number}", number + 1
        out[model] = title
    return out


def render_table(table: Table, heading: str, renderer: Renderer, root: bool) -> list[str]:
    model = table.model
    lines = [f"### {heading}", ""]
    doc = first_paragraph(model.__doc__)
    if doc:
        lines += [cell(doc), ""]
    # one place: keys are full paths; several (tasks.md and tasks.cp2k): keys are relative to each
    prefix = table.paths[0] if len(table.paths) == 1 else ""
    if not root:
        where = []
        for path, chosen in zip(table.paths, table.chosen_by):
            where.append(code(path) + (f" when {chosen}" if chosen else ""))
        lines += [f"At {', '.join(where)}{'' if prefix else ' (the keys below are relative to each)'}.", ""]
    if not model.model_fields:
        return lines + ["No keys.", ""]
    lines += ["| key | type | default | bounds | description |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        typed = renderer.describe(info.annotation, info.discriminator)
        bounds = constraints(info.metadata) + typed.bounds
        key = f"{prefix}.{name}" if prefix else name
        lines.append(f"| {code(key)} | {typed.text} | {default_text(info, renderer)} | "
                     f"{'; '.join(dict.fromkeys(bounds))} | {description(model, name, info, typed.models)} |")
    return lines + [""]


def render(roots: list[tuple[str, type[BaseModel], str]] | None = None) -> str:
    """The whole page, as Markdown: ``roots`` are (title, model, what the file is); default ROOTS."""
    if roots is None:
        roots = [(title, find_model(name), about) for title, name, about in ROOTS]
    tables: dict[type, Table] = {}
    for _, model, _ in roots:
        walk(model, "", tables)
    titles = headings(list(tables))
    renderer = Renderer({model: anchor_of(title) for model, title in titles.items()})
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the pydantic models by `{COMMAND}`; do not edit by hand. "
        "`tests/test_docs.py` fails when this page and the models disagree.",
        "",
        "Every file is validated once, at load: an unknown key or a value outside its bounds fails before any "
        "work, naming the field. Units are alcgap's: eV, Angstrom, fs, K, GPa. A key is written as its path in "
        "the YAML file; `[]` marks the items of a list, `<key>` the values of a mapping.",
        "",
    ]
    shown = set()
    for title, model, about in roots:
        lines += [f"## {title}", "", about, ""]
        lines += render_table(tables[model], titles[model], renderer, root=True)
        shown.add(model)
        reached: dict[type, Table] = {}
        walk(model, "", reached)  # this root's own models, in its order; shared ones stay under the first root
        for nested in reached:
            if nested not in shown:
                lines += render_table(tables[nested], titles[nested], renderer, root=False)
                shown.add(nested)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page differs from a fresh one")
    parser.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    page = render()
    if args.stdout:
        sys.stdout.write(page)
        return 0
    if args.check:
        old = args.out.read_text() if args.out.exists() else ""
        if old == page:
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), page.splitlines(True), str(args.out), "fresh"))
        print(f"{args.out} is stale: run `{COMMAND}`", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
