"""The package's layers, read from its imports (at the top and inside functions): core imports no stage and no tool;
a stage (stages/<name>.py for each workflow/rules/<name>.smk) imports core and its own helpers only, never another
stage; a helper (any other module in stages/) is imported by one stage at most and imports core only; tools may
import anything. A stage's code hash follows its imports (core.stage.code_hash), so a stage importing another
would rerun whenever that one changes."""
import ast
import shutil
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "workflow" / "warmbench"


def imports_of(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) of every warmbench module a file imports, as dotted names under the package (core.files);
    relative imports are resolved from the file's subpackage, and `from ..core import files` names core.files."""
    here = path.relative_to(package).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("warmbench.")) for a in node.names
                      if a.name.startswith("warmbench.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level + 1])
                module = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").split(".")[0] == "warmbench":
                module = node.module.split(".")[1:]
            else:
                continue
            names = [".".join(module + [a.name]) for a in node.names]
            # a name that is a module file is that module; otherwise the name comes from `module` itself
            found += [(node.lineno, name if (package / name.replace(".", "/")).with_suffix(".py").is_file()
                       else ".".join(module)) for name in names]
    return [(line, name) for line, name in found if "." in name]


def layer_problems(package: Path = PACKAGE, rules: Path = REPO / "workflow" / "rules") -> list[str]:
    stage_names = {p.stem for p in rules.glob("*.smk")} - {"common"}
    modules = {f"{p.parent.name}.{p.stem}": p for p in package.glob("*/*.py") if p.stem != "__init__"}
    graph = {name: imports_of(path, package) for name, path in modules.items()}
    stages = {m for m in modules if m.startswith("stages.") and m.split(".")[1] in stage_names}
    helpers = {m for m in modules if m.startswith("stages.")} - stages
    problems = []
    for name, edges in sorted(graph.items()):
        where = modules[name].relative_to(package.parent)
        for line, dep in edges:
            layer = dep.split(".")[0]
            if name.startswith("core.") and layer != "core":
                problems.append(f"{where}:{line}: core module {name} imports {dep} (core imports core only)")
            elif name in stages and dep in stages | {m for m in modules if m.startswith("tools.")} and dep != name:
                problems.append(f"{where}:{line}: stage {name} imports {dep} (a stage imports core and its own "
                                "helpers; move what they share into core)")
            elif name in helpers and layer != "core":
                problems.append(f"{where}:{line}: stage helper {name} imports {dep} (a helper imports core only)")
    for helper in sorted(helpers):
        users = sorted(name for name, edges in graph.items() if name in stages and helper in {d for _, d in edges})
        if len(users) > 1:
            problems.append(f"{helper} is a helper of several stages ({', '.join(users)}): it belongs in core")
    return problems


def test_core_imports_no_stage_or_tool_and_no_stage_imports_another():
    problems = layer_problems()
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_every_rule_file_has_its_stage_module():
    stage_names = {p.stem for p in (REPO / "workflow" / "rules").glob("*.smk")} - {"common"}
    missing = sorted(s for s in stage_names if not (PACKAGE / "stages" / f"{s}.py").is_file())
    assert not missing, f"rule files without a module in warmbench/stages/: {missing}"


@pytest.mark.parametrize("module, bad_import, expected", [
    ("core/figures.py", "    from ..stages.judge import REFUSAL\n", "core module core.figures imports stages.judge"),
    ("core/files.py", "from warmbench.tools import plan\n", "core module core.files imports tools.plan"),
    ("stages/replicates.py", "    from .analysis import capability_table\n",
     "stage stages.replicates imports stages.analysis"),
    ("stages/cost.py", "    from ..tools.plan import plan\n", "stage stages.cost imports tools.plan"),
    ("stages/warmth.py", "    from . import nsfw\n", "stages.nsfw is a helper of several stages (stages.sft_data, "
                                                       "stages.warmth)"),
])
def test_a_bad_import_fails_naming_it(tmp_path, module, bad_import, expected):
    # a function-level (lazy) import counts as much as a top-level one: both are in the code hash
    package = tmp_path / "warmbench"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    path = package / module
    body = bad_import if not bad_import.startswith(" ") else f"\n\ndef _lazy():\n{bad_import}"
    path.write_text(path.read_text() + body)
    problems = layer_problems(package)
    assert any(expected in p for p in problems), problems
    if "helper of several" not in expected:  # the file and line of the import
        assert any(p.startswith(f"warmbench/{module}:") for p in problems), problems


def test_the_code_hash_sees_the_same_imports():
    """core.stage.warmbench_imports (what a stage's code hash follows) finds the modules this test checks."""
    from warmbench.core.stage import warmbench_imports

    for path in PACKAGE.glob("*/*.py"):
        assert warmbench_imports(path) == {name for _, name in imports_of(path)}, path
