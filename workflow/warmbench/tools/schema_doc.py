"""config/README.md's reference tables, rendered from the config schema (workflow/schemas/config.schema.yaml).

Every key's type, default and meaning is written once, in the schema; the README holds one generated table per
top-level section, between `<!-- schema:SECTION -->` and `<!-- /schema:SECTION -->`, and hand-written prose
around them. Regenerate after editing the schema:

    PYTHONPATH=workflow python -m warmbench.tools.schema_doc          # rewrite config/README.md's tables
    PYTHONPATH=workflow python -m warmbench.tools.schema_doc --check  # exit 1 naming each stale table

Nested blocks are dotted keys (`models.<name>.source.kind`); a map's entries are `<name>`; `$ref`s are followed
into `definitions`; a block checked by `kind` (if/then branches) lists each branch's keys, marked with the kind.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from ..core.config import REPO_ROOT
from ..core.validation import SCHEMA
from ..core.validation import _resolved as _resolve  # $ref merged as validation merges it

README = REPO_ROOT / "config" / "README.md"
REGENERATE = "PYTHONPATH=workflow python -m warmbench.tools.schema_doc"
BLOCK = re.compile(r"(<!-- schema:(?P<name>[A-Za-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /schema:(?P=name) -->)", re.S)


def load_schema(path: str | Path = SCHEMA) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _value(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _bound(prop: dict) -> str:
    low = (f"≥ {prop['minimum']}" if "minimum" in prop else f"> {prop['exclusiveMinimum']}"
           if "exclusiveMinimum" in prop else "")
    high = f"≤ {prop['maximum']}" if "maximum" in prop else ""
    return ", ".join(b for b in (low, high) if b)


def type_of(doc: dict, prop: dict) -> str:
    """A short, readable type: `integer ≥ 1`, `number or null`, one of `a`, `b`, list of `x`."""
    prop = _resolve(doc, prop)
    if "const" in prop:
        return f"`{_value(prop['const'])}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{_value(v)}`" for v in prop["enum"])
    for combinator in ("oneOf", "anyOf"):
        if combinator in prop:
            return " or ".join(type_of(doc, option) for option in prop[combinator])
    kinds = prop.get("type")
    if kinds is None:
        if "allOf" in prop and "properties" not in prop:
            return type_of(doc, prop["allOf"][0])
        kinds = "object" if {"properties", "additionalProperties", "allOf"} & set(prop) else "any"
    kinds = [kinds] if isinstance(kinds, str) else kinds
    names = []
    for kind in kinds:
        if kind == "array":
            items = prop.get("items")
            names.append(f"list of {type_of(doc, items)}" if items else "list")
        elif kind == "object" and isinstance(prop.get("additionalProperties"), dict) and "properties" not in prop:
            names.append("map")
        else:
            names.append(kind)
    text = " or ".join(names)
    bound = _bound(prop)
    return f"{text} {bound}" if bound else text


def _branches(doc: dict, prop: dict):
    """(condition, schema) of each `if kind is X then ...` branch of prop's allOf, and (None, schema) of others."""
    for member in prop.get("allOf", []):
        if "if" in member and "then" in member:
            field, spec = next(iter(member["if"].get("properties", {}).items()))
            yield (field, spec.get("const")), _resolve(doc, member["then"])
        elif "if" not in member:
            yield None, _resolve(doc, member)


def rows(doc: dict, key: str, prop: dict, required: bool = False, condition: str = "") -> list[tuple]:
    """(key, type, default, description) of prop and of everything nested in it, in schema order."""
    prop = _resolve(doc, prop)
    if "default" in prop:
        default = f"`{_value(prop['default'])}`"
    else:
        default = "*required*" if required else ""
    description = " ".join(str(prop.get("description", "")).split())
    discriminated = {}
    for cond, branch in _branches(doc, prop):
        if cond and branch.get("description"):
            discriminated.setdefault(cond[0], []).append(f"`{_value(cond[1])}`: {branch['description']}")
    out = [(key, type_of(doc, prop), default, condition + description)]
    out += _children(doc, key, prop, discriminated)
    for option in prop.get("anyOf", []) + prop.get("oneOf", []):
        option = _resolve(doc, option)
        if "properties" in option or "allOf" in option:
            out += _children(doc, key, option, {})
    seen, unique = set(), []
    for row in out:
        if (row[0], row[3]) not in seen:
            seen.add((row[0], row[3]))
            unique.append(row)
    return unique


def _children(doc: dict, key: str, prop: dict, discriminated: dict) -> list[tuple]:
    out = []
    required = set(prop.get("required", []))
    for name, child in prop.get("properties", {}).items():
        child_rows = rows(doc, f"{key}.{name}", child, name in required)
        if name in discriminated:
            first = child_rows[0]
            child_rows[0] = (*first[:3], " ".join([first[3], *discriminated[name]]).strip())
        out += child_rows
    entries = prop.get("additionalProperties")
    if isinstance(entries, dict):
        out += rows(doc, f"{key}.<name>", entries)
    for cond, branch in _branches(doc, prop):
        if cond is None:
            out += _children(doc, key, branch, {})
            continue
        field, value = cond
        branch_required = set(branch.get("required", []))
        for name, child in branch.get("properties", {}).items():
            if name != field:
                out += rows(doc, f"{key}.{name}", child, name in branch_required,
                            condition=f"(`{field}: {_value(value)}`) ")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(doc: dict, section: str) -> str:
    """The markdown table of one top-level section."""
    prop = doc["properties"][section]
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, kind, default, description in rows(doc, section, prop, section in doc.get("required", [])):
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(lines) + "\n"


def render(readme: str, doc: dict) -> str:
    """readme with every `<!-- schema:SECTION -->` block's table rendered anew from the schema."""
    def replace(match):
        return f"{match.group(1)}{table(doc, match.group('name'))}{match.group(4)}"
    return BLOCK.sub(replace, readme)


def problems(readme: str, doc: dict) -> list[str]:
    """What is out of date: a section without its table, a table for no section, a table that differs from the
    schema."""
    found = {m.group("name"): m.group("body") for m in BLOCK.finditer(readme)}
    out = [f"{name}: no <!-- schema:{name} --> table" for name in doc["properties"] if name not in found]
    out += [f"{name}: a table for a section the schema does not have" for name in found if name not in doc["properties"]]
    out += [f"{name}: the table differs from the schema" for name, body in found.items()
            if name in doc["properties"] and body != table(doc, name)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if config/README.md's tables are stale")
    parser.add_argument("--readme", default=str(README))
    args = parser.parse_args(argv)
    path, doc = Path(args.readme), load_schema()
    text = path.read_text(encoding="utf-8")
    if args.check:
        stale = problems(text, doc)
        for line in stale:
            print(f"{path}: {line}", file=sys.stderr)
        if stale:
            print(f"regenerate with: {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    path.write_text(render(text, doc), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
