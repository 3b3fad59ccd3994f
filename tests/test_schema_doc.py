"""config/README.md's reference tables are rendered from the schema: one definition per config key.

Stale tables? Regenerate them with `PYTHONPATH=workflow python -m warmbench.tools.schema_doc`."""
import copy

from warmbench.tools import schema_doc
from warmbench.core.config import REPO_ROOT


def test_the_readme_tables_are_the_schema_rendered():
    readme = (REPO_ROOT / "config" / "README.md").read_text(encoding="utf-8")
    stale = schema_doc.problems(readme, schema_doc.load_schema())
    assert not stale, f"{stale}; regenerate with: {schema_doc.REGENERATE}"


def test_every_key_has_a_type_and_a_description():
    doc = schema_doc.load_schema()
    rows = [row for section, prop in doc["properties"].items() for row in schema_doc.rows(doc, section, prop)]
    assert len(rows) > 213
    assert [key for key, kind, _, description in rows if not description.strip() or kind in ("", "any")] == []


def test_a_changed_description_or_default_makes_the_tables_stale():
    doc = schema_doc.load_schema()
    readme = (REPO_ROOT / "config" / "README.md").read_text(encoding="utf-8")
    changed = copy.deepcopy(doc)
    changed["properties"]["warmth"]["properties"]["max_chars"]["default"] = 301
    changed["definitions"]["sampling"]["properties"]["top_p"]["description"] = "changed"
    # top_p is defined once (definitions.sampling) and rendered wherever a block refers to it
    assert set(schema_doc.problems(readme, changed)) == {
        f"{name}: the table differs from the schema"
        for name in ("data", "persona_rewrite", "evaluation", "judge", "rewrite_fidelity", "warmth")}
    rendered = schema_doc.render(readme, changed)
    assert "| `warmth.max_chars` | integer ≥ 1 | `301` |" in rendered
    assert schema_doc.problems(rendered, changed) == []


def test_nested_blocks_are_dotted_keys_with_refs_followed_and_kinds_marked():
    table = schema_doc.table(schema_doc.load_schema(), "models")
    assert "| `models.<name>.source.kind` |" in table
    assert "| `models.<name>.source.api_key_env` | string | `OPENAI_API_KEY` | (`kind: openai`) " in table
    assert "| `models.<name>.resources.train.gpus` | integer ≥ 0 | `1` |" in table


def test_a_section_without_its_table_is_named():
    doc = schema_doc.load_schema()
    readme = (REPO_ROOT / "config" / "README.md").read_text(encoding="utf-8")
    cut = readme.replace("<!-- schema:seed -->", "").replace("<!-- /schema:seed -->", "")
    assert "seed: no <!-- schema:seed --> table" in schema_doc.problems(cut, doc)
