"""The package's shape: no import cycle inside spineseg/, inference/ never reaches into outputs/, and one
label table (spineseg.labels) that the rest takes its values from."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "spineseg"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every spineseg module ``path`` imports, at the top or inside a function (both can close a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "spineseg"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "spineseg":
            for alias in node.names:    # `from spineseg.inference import backends` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found & set(MODULES)


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_inside_spineseg():
    assert cycles(GRAPH) == []


def test_inference_does_not_import_outputs():
    wrong = {m: sorted(i for i in imports if i.startswith("spineseg.outputs"))
             for m, imports in GRAPH.items() if m.startswith("spineseg.inference")}
    assert {m: i for m, i in wrong.items() if i} == {}


def test_label_values_come_from_the_one_table():
    """No module but spineseg.labels spells out the level ranges (e.g. range(11, 18) for C1-C7)."""
    spelled = []
    for name, path in MODULES.items():
        if name == "spineseg.labels":
            continue
        text = path.read_text()
        spelled += [f"{name}: {s}" for s in ("range(11, 18)", "range(21, 33)", "range(41, 47)", "range(63, 68)",
                                              "range(71, 83)", "range(91, 97)") if s in text]
    assert spelled == []
