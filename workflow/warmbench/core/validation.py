"""Config validation against the JSON schema (workflow/schemas/config.schema.yaml): its defaults, filled in, and
errors that name the field and what it expects; the keys an old config may still use; the canonical (key-sorted)
form of a config.

Imported by the Snakefile at parse time, so it must stay light (no torch, no pandas).
"""
from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from pathlib import Path

from .files import UserInputError


SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(UserInputError):
    """An invalid config; the message starts with the offending key."""


@functools.lru_cache(maxsize=4)
def schema_doc(path: str) -> dict:
    import yaml

    # libyaml's loader where PyYAML has it: the schema is read on every Snakemake start (4x faster)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (safe)


def _resolved(schema_doc: dict, prop: dict) -> dict:
    """A property's schema with a local `$ref` (#/definitions/...) merged under its own keys, so a default given
    once in a definition is the default of every property that refers to it."""
    ref = prop.get("$ref")
    if not ref:
        return prop
    target = schema_doc
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolved(schema_doc, target), **{k: v for k, v in prop.items() if k != "$ref"}}


def schema_defaults(definition: str) -> dict:
    """The defaults of a block the schema defines once (`sampling`, `openai_endpoint`, `lora`): what a validated
    config holds where the user left keys out. Code handed such a block from elsewhere (a benchmark, a test, a
    constructor's default arguments) takes its defaults from here, never from a literal of its own."""
    doc = schema_doc(str(SCHEMA))
    properties = doc["definitions"][definition]["properties"]
    return {name: spec["default"] for name, spec in ((n, _resolved(doc, p)) for n, p in properties.items())
            if "default" in spec}


def validate(config: dict, schema: str | os.PathLike | None = None) -> None:
    """Check `config` against the JSON schema and fill in its defaults (as snakemake.utils.validate does), raising
    ConfigError with one line per problem, each naming the field (`models.smollm2.source.id`) and what it
    expects. Values are shown only where the user wrote them, and never for `api_key_env` (it may hold a key)."""
    check_replaced_keys(config)
    _validate(config, schema_doc(str(SCHEMA if schema is None else schema)))


def validated_section(key: str, value: dict, schema: str | os.PathLike | None = None) -> dict:
    """A copy of one top-level section (`train`) checked against its part of the schema, with its defaults filled
    in: for code handed a section alone (a stage run outside Snakemake, a benchmark), so the schema stays the one
    source of its defaults. Errors name the field under `key`."""
    doc = schema_doc(str(SCHEMA if schema is None else schema))
    value = copy.deepcopy(value)
    _validate({key: value}, {"type": "object", "properties": {key: doc["properties"][key]},
                             "definitions": doc.get("definitions", {})})
    return value


def _validate(config: dict, schema_doc: dict) -> None:
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                prop = _resolved(schema_doc, prop)
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    validator = validators.extend(Draft202012Validator, {"properties": set_defaults})(schema_doc)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(schema_error(e) for e in errors)))


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _shown(field: str, value) -> str:
    if field.endswith("api_key_env"):
        return "the value given (not shown: it may be a key)"
    return repr(value)


def did_you_mean(word, choices) -> str:
    """The hint that ends an error naming a wrong key or value: " (did you mean 'x'?)" with the choice closest to
    `word`, or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def schema_error(error) -> str:
    """One schema violation as `field: what is wrong, what is expected`."""
    field, schema, instance, kind = _field(error.absolute_path), error.schema, error.instance, error.validator
    expected = schema.get("description")
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        unknown = [k for k in instance if k not in allowed and not any(
            re.search(p, k) for p in schema.get("patternProperties", {}))]
        prefix = f"{field}." if error.absolute_path else ""
        return "\n".join(f"{prefix}{k}: unknown key{did_you_mean(k, allowed)}; allowed here: {', '.join(allowed)}"
                         for k in unknown)
    if kind == "required":
        name = re.match(r"'([^']+)'", error.message).group(1)
        prefix = f"{field}." if error.absolute_path else ""
        return f"{prefix}{name}: required, missing"
    if kind == "enum":
        return (f"{field}: {_shown(field, instance)} is not one of {schema['enum']}"
                f"{did_you_mean(instance, schema['enum'])}")
    if kind == "const":
        return f"{field}: must be {schema['const']!r} here, not {_shown(field, instance)}"
    if kind == "pattern":
        wanted = expected or f"of the form {schema[kind]}"
        if "propertyNames" in error.absolute_schema_path:
            return f"{field}: key {instance!r} is not {wanted}"
        if field.endswith("api_key_env"):
            return f"{field}: must be {wanted} (the value given is not shown: it may be a key itself)"
        return f"{field}: {instance!r} is not {wanted}"
    if kind in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "minItems",
                "uniqueItems", "minProperties"):
        return f"{field}: {error.message}" if not field.endswith("api_key_env") else f"{field}: {kind} {schema[kind]}"
    if kind in ("oneOf", "anyOf") and expected:
        return f"{field}: expected {expected}"
    return f"{field}: {error.message}"


def canonical(value):
    """The same config with every mapping's keys sorted.

    Snakemake compares dict-valued params in order, so without this, reordering keys in a YAML file
    (or writing it with another tool) would rerun every job.
    """
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


# Keys that `personas:` replaced, and where each went.
REPLACED_KEYS = {("persona_rewrite", "personas"): "the names under `personas:`",
                 ("persona_rewrite", "prompts"): "personas.<name>.rewrite",
                 ("evaluation", "warm_system_prompt"): "personas.<name>.system_prompt (warm_prompt in the shipped configs)"}


def check_replaced_keys(config: dict) -> None:
    """An old config's persona keys, named with where they went (checked before the schema, whose message would
    only call them unknown)."""
    found = [f"{section}.{key}: replaced by {new} (config/README.md, `personas`)"
             for (section, key), new in REPLACED_KEYS.items() if key in (config.get(section) or {})]
    if found:
        raise ConfigError("\n".join(found))
