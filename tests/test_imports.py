"""The decoding package's import graph: no cycles (imports inside functions and under
TYPE_CHECKING included), and no module imports another module's private names. Read from the
source with ``ast``, so a cycle hidden in a function body fails here too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "decoding"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for every import in ``path`` within the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "decoding" or target.startswith("decoding."):
                names = [a.name for a in node.names]
                # ``from . import processors``: the names are modules
                submodules = [f"{target}.{n}" for n in names if (PACKAGE.parent / Path(
                    *f"{target}.{n}".split("."))).with_suffix(".py").exists()]
                found += [(m, []) for m in submodules] or [(target, names)]
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("decoding")]
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = {t for t, _ in imports(path) if t in modules and t != name}
        # importing a package runs its __init__, but ``decoding`` itself is the public face
        edges[name] = {t for t in targets if t != "decoding"}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_decoding_has_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_the_core_modules():
    edges = graph()
    assert "decoding.stages" in edges["decoding.config"]
    assert "decoding.step" in edges["decoding.beam"]
    assert "decoding.loop" not in edges["decoding.beam"]




def test_no_module_imports_another_modules_private_names():
    offenders = {f"{module_name(path)} imports {name} from {target}"
                 for path in PACKAGE.rglob("*.py") for target, names in imports(path)
                 for name in names if name.startswith("_") and name != "__version__"}
    assert not offenders, sorted(offenders)


def top_level_imports(folder: str) -> set[tuple[str, str]]:
    """(file, imported top-level package) for every .py file under ``folder`` of the project."""
    root = PACKAGE.parent
    found = set()
    for path in (root / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add((str(path.relative_to(root)), node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found |= {(str(path.relative_to(root)), a.name.split(".")[0]) for a in node.names}
    return found


def test_dependencies_point_one_way():
    """app → experiments → alignment → decoding, and nothing outside tests imports tests."""
    rules = {"decoding": {"app", "experiments", "alignment", "tests"},
             "alignment": {"app", "experiments", "tests"},
             "experiments": {"app", "tests"}, "app": {"tests"}}
    wrong = sorted(f"{path} imports {package}" for folder, banned in rules.items()
                   for path, package in top_level_imports(folder) if package in banned)
    assert wrong == []
