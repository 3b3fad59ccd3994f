"""The report's front page (workflow/report/workflow.rst), rendered as `snakemake --report` renders it."""
import docutils.core
import jinja2
import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO

FRONT_PAGE = REPO / "workflow/report/workflow.rst"
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
CONFIGS = ["config/config.yaml", "config/paper.yaml", "tests/config/config.yaml", "config/judges.yaml"]


def render_front_page(config: dict) -> tuple[str, list]:
    """The text Snakemake's auto_report renders (same Jinja options, the same `snakemake.config`), except that
    a missing key raises instead of printing nothing; also every value a `{{ }}` field printed."""
    printed = []

    def finalize(value):
        printed.append(value)
        return value

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                             finalize=finalize)

    class Snakemake:
        pass

    Snakemake.config = config
    return env.from_string(FRONT_PAGE.read_text()).render(snakemake=Snakemake, categories={}, files=[]), printed


def validated(path: str) -> dict:
    config = yaml.safe_load((REPO / path).read_text())
    validate(config, str(SCHEMA))  # fills the schema's defaults, as the Snakefile does
    return config


@pytest.mark.parametrize("path", CONFIGS)
def test_front_page_renders_every_field_from_real_config_keys(path):
    text, printed = render_front_page(validated(path))  # StrictUndefined: a key the config lacks fails here
    assert printed and all(str(value).strip() for value in printed), printed
    assert "epoch ." not in text
    parts = docutils.core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})
    assert "system-message" not in parts["html_body"], parts["html_body"]  # valid reStructuredText


def test_front_page_states_the_checkpoint_selection_in_force():
    fixed, _ = render_front_page(validated("config/config.yaml"))
    assert "epoch-2 checkpoint" in fixed and "plateau" not in fixed
    plateau, _ = render_front_page(validated("tests/config/config.yaml"))
    assert "plateau rule" in plateau and "within 50%" in plateau and "epoch-" not in plateau
