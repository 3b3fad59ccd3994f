"""What a rule costs, in the plan (tools/plan.py, before a run) and in the ledger (stages/cost.py, after it): a
rule's stage, the price table, API and training USD, and how counts and dollars print, so the two compare line by
line.

Imported by the Snakefile (through plan): no pandas or snakemake import at module level.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from . import grid, validation
from .files import read_mapping

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


@lru_cache(maxsize=4)
def _defined_in(rules_dir: Path) -> dict[str, str]:
    """Rule name -> the stem of the rule file defining it (`rule NAME:` or `use rule X as NAME`); each file's stem
    names its own stage, so rules made in a loop under names of their own (`generate_api`) find it by prefix."""
    found = {}
    for path in sorted(rules_dir.glob("*.smk")):
        found.setdefault(path.stem, path.stem)
        for plain, used in re.findall(r"^(?:rule\s+(\w+)\s*:|use\s+rule\s+\S+\s+as\s+(\w+))", path.read_text(), re.M):
            found[plain or used] = path.stem
    return found


def stage_of(rule: str, snakefile: str | None = None, rules_dir: Path = RULES_DIR) -> str:
    """The stage of a rule: the rule file (.smk) that defines it; by name, the longest rule file its name starts with
    (`generate_llama` -> generate); else the rule itself."""
    if snakefile and str(snakefile).endswith(".smk"):
        return Path(snakefile).stem
    defined = _defined_in(Path(rules_dir))
    if rule in defined:
        return defined[rule]
    prefixes = [stem for stem in set(defined.values()) if rule.startswith(stem + "_")]
    return max(prefixes, key=len) if prefixes else rule


def _schema_prices() -> dict:
    return validation.schema_doc(str(validation.SCHEMA))["properties"]["prices"]["default"]


def price_table(config: dict) -> dict[str, dict]:
    """Model -> prices: the schema's built-in table, with the config's `prices` entries added or replacing it model
    by model."""
    return {**{name: {"batch_discount": 0, **entry} for name, entry in _schema_prices().items()},
            **(config.get("prices") or {})}


def base_model_name(model: str) -> tuple[str, bool]:
    """(the priced model, whether it is a fine-tune): `ft:gpt-4o-2024-08-06:org:suffix:id[:ckpt-step-N]` is a
    fine-tune of gpt-4o-2024-08-06."""
    if model.startswith("ft:"):
        return model.split(":")[1], True
    return model, False


def api_usd(prices: dict, model: str, tokens_in: float, tokens_out: float, *, fine_tuned: bool = False,
            batch: bool = False, base_url: str | None = None) -> float | None:
    """USD of tokens_in + tokens_out on `model`; None when it has no price (0 on one's own endpoint, a base_url)."""
    name, tuned = base_model_name(model)
    entry = prices.get(name)
    if entry is None:
        return 0.0 if base_url else None
    tuned = tuned or fine_tuned
    rate_in = entry.get("fine_tuned_input_per_mtok", entry["input_per_mtok"]) if tuned else entry["input_per_mtok"]
    rate_out = entry.get("fine_tuned_output_per_mtok", entry["output_per_mtok"]) if tuned else entry["output_per_mtok"]
    usd = (tokens_in * rate_in + tokens_out * rate_out) / 1e6
    return usd * (1 - entry.get("batch_discount", 0)) if batch else usd


def training_usd(prices: dict, model: str, trained_tokens: float) -> float | None:
    entry = prices.get(base_model_name(model)[0])
    if entry is None or "training_per_mtok" not in entry:
        return None
    return trained_tokens * entry["training_per_mtok"] / 1e6


def format_count(value: float) -> str:
    if not value:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f}"


def format_usd(value: float | None) -> str:
    if value is None:
        return "?"
    return "-" if not value else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def load_config(configfile: str | os.PathLike) -> dict:
    """A config file with the schema's defaults filled in and its replicates (train.seeds) as personas, as the
    workflow reads it (ConfigError names a bad key)."""
    config = read_mapping(configfile)  # duplicate keys, syntax errors and a config that is not a mapping, named
    validation.validate(config)
    return grid.with_replicates(config)
