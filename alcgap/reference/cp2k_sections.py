"""CP2K input beyond the built-in form: a user's input sections merged into the generated input.

``reference.input_sections`` is a fragment of CP2K input (the same syntax as a whole input):

    &FORCE_EVAL
      &DFT
        &KPOINTS
          SCHEME MONKHORST-PACK 2 2 2
        &END KPOINTS
        &SCF
          SCF_GUESS RESTART
        &END SCF
      &END DFT
    &END FORCE_EVAL

It is merged into the input alcgap writes, section by section:

- a section of the fragment is the generated section of the same name (and, for the sections
  CP2K repeats, such as ``&KIND Si``, the same parameter); a section the generated input has no
  such section for is added where the fragment puts it;
- a section parameter in the fragment replaces the generated one (``&XC_FUNCTIONAL PBE0``
  over ``&XC_FUNCTIONAL PBE``);
- a keyword of the fragment replaces the generated keyword of the same name in that section, or
  is added to it.

The merged input is what CP2K runs and what each label keeps (``cp2k.inp``). The fragment is
checked for its form when the settings are made (balanced ``&END``, no keyword outside a
section); what CP2K thinks of it comes from CP2K: an unknown section or keyword fails the first
label as an input error, with CP2K's own message, and labelling stops there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: sections CP2K allows more than once in the same place: matched by their parameter too
REPEATABLE = {"KIND", "IMPROPER", "BOND", "BEND", "TORSION"}


@dataclass
class Section:
    name: str
    parameter: str = ""
    keywords: list[tuple[str, str]] = field(default_factory=list)
    sections: list["Section"] = field(default_factory=list)

    def key(self) -> tuple[str, str]:
        return self.name.upper(), self.parameter.upper() if self.name.upper() in REPEATABLE else ""


class SectionError(ValueError):
    """A fragment of CP2K input that is not well formed."""


def _strip(line: str) -> str:
    for mark in ("!", "#"):
        if mark in line:
            line = line.split(mark, 1)[0]
    return line.strip()


def parse(text: str, what: str = "input") -> Section:
    """The section tree of CP2K input ``text`` under an unnamed root."""
    root = Section("")
    stack = [root]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip(raw)
        if not line:
            continue
        words = line.split(None, 1)
        head = words[0].upper()
        if head.startswith("&END"):
            name = (head[4:] or (words[1].split()[0].upper() if len(words) > 1 else "")).lstrip("&")
            if len(stack) == 1:
                raise SectionError(f"{what}, line {number}: '{raw.strip()}' ends a section that was never opened")
            opened = stack.pop()
            if name and name != opened.name.upper():
                raise SectionError(f"{what}, line {number}: '{raw.strip()}' ends &{opened.name}, which is still open; "
                                   f"close it with &END {opened.name}")
        elif head.startswith("&"):
            section = Section(words[0][1:], words[1].strip() if len(words) > 1 else "")
            if not section.name:
                raise SectionError(f"{what}, line {number}: '&' without a section name")
            stack[-1].sections.append(section)
            stack.append(section)
        else:
            if len(stack) == 1:
                raise SectionError(f"{what}, line {number}: keyword '{words[0]}' outside any section; "
                                   "put it inside the section it belongs to (e.g. &FORCE_EVAL / &DFT / &SCF)")
            stack[-1].keywords.append((words[0], words[1].strip() if len(words) > 1 else ""))
    if len(stack) > 1:
        raise SectionError(f"{what}: &{stack[-1].name} is never closed; add &END {stack[-1].name}")
    return root


def merge(base: Section, extra: Section) -> Section:
    """``extra`` merged into ``base`` (in place; returned): see the module docstring."""
    for name, value in extra.keywords:
        for i, (existing, _) in enumerate(base.keywords):
            if existing.upper() == name.upper():
                base.keywords[i] = (existing, value)
                break
        else:
            base.keywords.append((name, value))
    for section in extra.sections:
        same = [s for s in base.sections if s.key() == section.key()]
        if same:
            target = same[0]
            if section.parameter and section.name.upper() not in REPEATABLE:
                target.parameter = section.parameter
            merge(target, section)
        else:
            base.sections.append(section)
    return base


def render(root: Section) -> str:
    lines: list[str] = []

    def write(section: Section, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}&{section.name}" + (f" {section.parameter}" if section.parameter else ""))
        lines.extend(f"{pad}  {name}" + (f" {value}" if value else "") for name, value in section.keywords)
        for child in section.sections:
            write(child, depth + 1)
        lines.append(f"{pad}&END {section.name}")

    for section in root.sections:
        write(section, 0)
    return "\n".join(lines) + "\n"


def merged_input(generated: str, fragment: str | None) -> str:
    """The generated CP2K input with ``fragment`` merged in (unchanged without one)."""
    if not fragment or not fragment.strip():
        return generated
    return render(merge(parse(generated, "the generated input"), parse(fragment, "reference.input_sections")))
