"""Imports run only downward through the library's layers (docs/architecture.md): a module imports its own layer or
a lower one, so finding neurons never depends on the tables, and no analysis module depends on a rule's code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Top to bottom. A module not listed is an error: every new module takes a place here (and in the architecture map).
LAYERS = {
    "entry": ["kneurons.api", "kneurons.rules", "kneurons.rules.*", "kneurons.preflight"],
    "analysis": [
        "kneurons.metrics",
        "kneurons.tables",
        "kneurons.comparisons",
        "kneurons.textmetrics",
        "kneurons.figures",
        "kneurons.reporting",
        "kneurons.editscores",
    ],
    "method": [
        "kneurons.neuronsets",
        "kneurons.neurons",
        "kneurons.dumpstats",
        "kneurons.calibration",
        "kneurons.dumps",
        "kneurons.logprob",
        "kneurons.perturb",
        "kneurons.restore",
        "kneurons.vocab",
        "kneurons.edit",
        "kneurons.editsets",
        "kneurons.integrated",
        "kneurons.synth.captioner",
        "kneurons.synth.evaluate",
    ],
    "models": [
        "kneurons.models",
        "kneurons.families",
        "kneurons.hooks",
        "kneurons.generation",
        "kneurons.convert",
        "kneurons.minigpt4",
        "kneurons.minigpt4.*",
    ],
    "data": [
        "kneurons.coco",
        "kneurons.samples",
        "kneurons.inpaint",
        "kneurons.imagecheck",
        "kneurons.captions",
        "kneurons.lines",
        "kneurons.synth",
        "kneurons.synth.scenes",
        "kneurons.synth.record",
    ],
    "base": ["kneurons.errors", "kneurons.names", "kneurons.io", "kneurons.h5io", "kneurons.protocol", "kneurons.jobs"],
}
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer(module: str) -> str:
    """The layer of a kneurons module (the package itself, imported for ``__version__``, is base)."""
    if module == "kneurons":
        return "base"
    for name, patterns in LAYERS.items():
        for p in patterns:
            if module == p or (p.endswith(".*") and module.startswith(p[:-1])):
                return name
    raise KeyError(f"{module}: not in LAYERS (tests/test_layers.py); give it a layer")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, package_modules: set[str]) -> set[str]:
    """The kneurons modules a module imports, at the top or inside a function (``from kneurons import x``: the
    module kneurons.x when there is one, else the package)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "kneurons"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kneurons":
            subs = {f"{node.module}.{a.name}" for a in node.names} & package_modules
            found |= subs or {node.module}
    return found


def wrong_way_imports(root: Path) -> list[str]:
    """Every import of a module from a higher layer than its own, as "importer -> imported (layer -> layer)"."""
    paths = sorted(root.joinpath("kneurons").rglob("*.py"))
    modules = {module_name(p, root): p for p in paths}
    wrong = []
    for name, path in modules.items():
        if name == "kneurons":  # the package's lazy public names (KnowledgeNeurons) come from the API, by design
            continue
        for target in sorted(imported(ast.parse(path.read_text()), set(modules))):
            if RANK[layer(target)] < RANK[layer(name)]:
                wrong.append(f"{name} -> {target} ({layer(name)} -> {layer(target)})")
    return wrong


def test_every_module_has_a_layer():
    for path in SRC.joinpath("kneurons").rglob("*.py"):
        layer(module_name(path, SRC))


def test_imports_only_run_downward():
    assert wrong_way_imports(SRC) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The oracle can fail: a copy of the library in which the method imports a table is caught, inside a function
    too."""
    copy = tmp_path / "src"
    for path in SRC.joinpath("kneurons").rglob("*.py"):
        target = copy / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    neuronsets = copy / "kneurons/neuronsets.py"
    neuronsets.write_text(neuronsets.read_text() + "\n\ndef f():\n    from kneurons.tables import with_intervals\n")
    api = copy / "kneurons/names.py"
    api.write_text(api.read_text() + "\nfrom kneurons import rules\n")
    assert wrong_way_imports(copy) == [
        "kneurons.names -> kneurons.rules (base -> entry)",
        "kneurons.neuronsets -> kneurons.tables (method -> analysis)",
    ]


ROOMS = ("samples", "neurons", "perturb", "figures", "model", "synth")


@pytest.mark.parametrize("module", [f"kneurons.rules.{room}" for room in ROOMS])
def test_each_rule_file_has_its_room(module):
    """rules/{name}.smk's rules are the functions of kneurons.rules.{name}, named after them, and every workflow
    script of those rules imports its rule's function from there."""
    import re

    root = SRC.parent
    smk = root / "rules" / f"{module.rsplit('.', 1)[1]}.smk"
    rules = re.findall(r"^\s*(?:rule|checkpoint) (\w+):", smk.read_text(), re.M)
    tree = ast.parse((SRC / (module.replace(".", "/") + ".py")).read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert rules and set(rules) <= functions
    for rule in rules:
        script = root / "workflow/scripts" / f"{rule}.py"
        assert f"from {module} import {rule}" in script.read_text(), script
