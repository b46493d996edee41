"""The package's shape: no import cycle inside spineseg/, inference/ never reaches into outputs/, and one
label table (spineseg.labels) that the rest takes its values from. The dev code beside it (tools/, bench/) edits
no sys.path and imports the dev modules by package."""
import ast
import re
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


# --- tools/ and bench/: packages of the checkout, reached without editing sys.path ---------------------------------

DEV_DIRS = ("tools", "bench")
PATH_EDIT = re.compile(r"sys\.path\s*(\.(insert|append|extend)\s*\(|\[[^\]]*\]\s*\+?=|\+?=)|site\.addsitedir\(")
# the modules a bare `import NAME` could only find with a folder of the checkout on sys.path
DEV_MODULES = {p.stem for d in (*DEV_DIRS, "tests") for p in (ROOT / d).glob("*.py")} | {"browser"}


def dev_files():
    for d in DEV_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def path_edits(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if PATH_EDIT.search(line)]


def bare_dev_imports(path: Path) -> list[str]:
    """Imports of a dev module by its bare name (``import phantom``) rather than by package (``from tools import
    phantom``): they resolve only where that module's own folder is on sys.path."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names
                  if name.split(".")[0] in DEV_MODULES]
    return found


def test_the_path_edit_finder_finds_edits():
    lines = ["sys.path.insert(0, str(ROOT))", "sys.path[:0] = [x]", "sys.path.append(x)", "sys.path += [x]",
             "sys.path = [x] + sys.path", "site.addsitedir(x)", "sys.path[0:0] = [x]"]
    assert all(PATH_EDIT.search(line) for line in lines)
    assert not any(PATH_EDIT.search(line) for line in ("print(sys.path)", "env['PYTHONPATH'] = str(ROOT)",
                                                       "on ``sys.path``: the root"))


def test_tools_and_benches_edit_no_sys_path():
    """Benches run as `python -m bench.NAME` from the repository root, tools as `python tools/NAME.py` or
    `python -m tools.NAME`; spineseg is installed. Nothing in tools/ or bench/ puts a folder on sys.path."""
    assert [e for path in dev_files() for e in path_edits(path)] == []


def test_tools_and_benches_import_dev_modules_by_package():
    assert [e for path in dev_files() for e in bare_dev_imports(path)] == []
