"""The code's shape, as the README's layout promises it: two towers (run: config -> task -> loop -> store; analysis
and report: store -> fit -> figure) that meet at the store, on a ground that imports neither; no import circle; no
private name used outside its module; tasks that implement the ``Task`` protocol the loop is written against.
Read from the source (``ast``), so a wrong import fails here before it fails a user."""

import ast
from pathlib import Path

import torch

from surge_repro.tasks import Task, TensorTask

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "surge_repro"
TOWERS = ("run", "launch", "analysis", "report")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "hydra_plugins").rglob("*.py"))
    return {module_name(f): ast.parse(f.read_text()) for f in files}


def imports(tree: ast.Module, top_level_only: bool = False) -> list[tuple[str, list[str]]]:
    """(module, names) for each import; ``top_level_only``: those that run when the module is imported."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def targets(module: str, names: list[str], known: set[str]) -> set[str]:
    """The project's modules an import statement reaches (``from surge_repro.run import train`` reaches
    surge_repro.run.train)."""
    found = {module} if module in known else set()
    found |= {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
    return found


def tower(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return "plugin"
    if module == "surge_repro.cli":  # the console scripts: the top, which nothing of the suite imports
        return "entry"
    return parts[1] if len(parts) > 2 and parts[1] in TOWERS else "ground"


def test_the_analysis_side_and_the_ground_import_nothing_of_running_or_launching():
    trees = sources()
    known = set(trees)
    # the plugin only registers configs (it imports nothing of surge_repro when imported): config.compose needs them
    allowed = {"ground": {"ground", "plugin"}, "analysis": {"ground", "analysis"},
               "report": {"ground", "analysis", "report"}, "run": {"ground", "analysis", "run"},
               "launch": {"ground", "run", "launch"}, "plugin": set(),
               "entry": {"ground", "analysis", "report", "run", "launch"}}
    wrong = []
    for name, tree in trees.items():
        lazy_ok = tower(name) == "plugin"  # the plugin builds its launchers on first use, never at import
        for module, names in imports(tree, top_level_only=lazy_ok):
            for target in targets(module, names, known):
                if tower(target) not in allowed[tower(name)] and target != name:
                    wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    trees = sources()
    known = set(trees)
    graph = {name: {t for m, ns in imports(tree, top_level_only=True) for t in targets(m, ns, known)} - {name}
             for name, tree in trees.items()}
    graph = {k: {t for t in v if not k.startswith(t + ".")} for k, v in graph.items()}  # a package's own __init__
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_used_outside_its_module():
    trees = sources()
    trees.update({module_name(f): ast.parse(f.read_text()) for f in (ROOT / "reports").glob("*.py")})
    known = {name for name in trees if name.split(".")[0] in ("surge_repro", "hydra_plugins")}
    wrong = []
    for name, tree in trees.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in known | {"surge_repro"}:
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and node.module != name:
                        wrong.append(f"{name}: from {node.module} import {a.name}")
                    if f"{node.module}.{a.name}" in known:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                aliases.update({(a.asname or a.name): a.name for a in node.names if a.name in known})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{name}: {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_every_task_implements_the_protocol_the_loop_is_written_against():
    from surge_repro.tasks.quadratic import noisy_quadratic
    from surge_repro.tasks.text import TokenTask

    images = TensorTask("images", torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long))
    tokens = TokenTask("tokens", torch.zeros(4, 9, dtype=torch.long), batch_unit="tokens")
    for task in (images, tokens, noisy_quadratic(dim=4, size=16)):
        assert isinstance(task, Task), type(task).__name__
    assert not isinstance(object(), Task)  # the check has teeth: an object without the methods is not a task
