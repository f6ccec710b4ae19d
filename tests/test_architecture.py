"""The layering the README describes, checked on the source with `ast` (nothing is imported).

Every module under engine/ and webapp/ is parsed; an import is any `import`/`from ... import` at any
depth (inside functions and `if` blocks too), relative imports resolved against the importing
module's package, plus `importlib.import_module("...")` / `__import__("...")` with a literal name.
An import resolves to the longest known module it names (`from engine.train import trainer` is
engine.train.trainer, `from engine.models import save_model` is the package engine.models).

  (a) engine modules import each other without cycles (module granularity);
  (b) swapping and evaluating never import training (engine.train);
  (c) the engine imports no UI: nothing from webapp, app or gradio;
  (d) the web app names no file of a model folder: those names belong to the engine, which the
      web app asks instead of reading the folder itself;
      Likewise an evaluation's files (report.json, report.html, swapped.mp4): engine.evaluate.report's;
  (e) nothing under webapp/ imports app.py (the entry point: flags both share live in webapp.flags);
  (f) the job bodies (webapp.tasks) and the worker process (webapp.worker) reach no Gradio through any
      module they import, so a GPU box runs jobs without the page.

A failure prints the offending imports or strings (file:line) and a summary of the import graph.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "webapp")
UI_TOPS = ("webapp", "app", "gradio", "gradio_client")
TRAINING = "engine.train"
ENTRY_POINT = "app"
JOB_SIDE = ("webapp.tasks", "webapp.worker")  # what runs jobs: free of the page
FREE_OF_TRAINING = ("engine.swap", "engine.evaluate")

# The files of a model folder, by the engine constant that names each: (constant, module it lives in
# today). Looked up by name across engine/ so that moving a constant does not break this test.
MODEL_FOLDER_CONSTANTS = (
    ("WEIGHTS", "engine/models/store.py"),
    ("CONFIG", "engine/models/store.py"),
    ("COLOR_WEIGHTS", "engine/models/store.py"),
    ("OPTIMIZER", "engine/train/checkpoint.py"),
    ("LOSS_CSV", "engine/train/checkpoint.py"),
    ("SNAPSHOTS", "engine/train/checkpoint.py"),
    ("BACKUP", "engine/train/checkpoint.py"),
    ("COLOR_OPTIMIZER", "engine/train/color.py"),
    ("COLOR_LOSS_CSV", "engine/train/color.py"),
    ("PREVIEWS", "engine/train/preview.py"),
)
# names the engine writes as inline literals rather than constants
MODEL_FOLDER_LITERALS = {
    "latest.png": "engine/train/preview.py write_preview (previews/latest.png; color.py: color-latest.png)",
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted name as imported (resolved when relative)
    resolved: str | None  # the engine/webapp module it lands on, None for third-party
    path: Path
    line: int
    statement: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.statement}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    found = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    assert "engine" in found and "webapp" in found and len(found) > 20, sorted(found)
    return found


@functools.cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def resolve(name: str) -> str | None:
    """The longest known module that `name` (a dotted import target) starts with."""
    known = modules()
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _targets(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = importer if is_package else importer.rpartition(".")[0]
            base_parts = package.split(".")
            if node.level > 1:
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base for alias in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        func = node.func
        dynamic = (isinstance(func, ast.Attribute) and func.attr == "import_module"
                   and isinstance(func.value, ast.Name) and func.value.id == "importlib") \
            or (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
        if dynamic and not node.args[0].value.startswith("."):
            return [node.args[0].value]
    return []


@functools.cache
def imports() -> tuple[Import, ...]:
    found = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(tree(path)):
            for target in dict.fromkeys(_targets(node, name, path.name == "__init__.py")):
                statement = " ".join((ast.get_source_segment(source, node) or ast.unparse(node)).split())
                found.append(Import(name, target, resolve(target), path, node.lineno, statement))
    return tuple(sorted(found, key=lambda i: (i.importer, i.line, i.target)))


def engine_graph() -> dict[str, dict[str, list[Import]]]:
    """importer -> imported engine module -> the import statements making that edge."""
    graph: dict[str, dict[str, list[Import]]] = {m: {} for m in modules() if _in(m, "engine")}
    for imp in imports():
        if _in(imp.importer, "engine") and imp.resolved and _in(imp.resolved, "engine") \
                and imp.resolved != imp.importer:
            graph[imp.importer].setdefault(imp.resolved, []).append(imp)
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (self-imports are not edges)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def shortest_cycle(graph: dict[str, dict[str, list[Import]]], component: list[str]) -> list[str]:
    """A shortest import cycle through the component's first module: [m0, m1, ..., m0]."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle found in component {component}")


def graph_summary(graph: dict[str, dict[str, list[Import]]]) -> str:
    """Package-level edges (with how many module edges make each), then every module's engine imports."""
    lines = ["engine import graph, by package (module edges):"]
    packages: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for importer, targets in graph.items():
        for target in targets:
            a, b = _package(importer), _package(target)
            if a != b:
                packages[a][b] += 1
    for a in sorted(packages):
        lines.append(f"  {a} -> " + ", ".join(f"{b} ({n})" for b, n in sorted(packages[a].items())))
    lines.append("engine import graph, by module:")
    for importer in sorted(graph):
        targets = sorted(graph[importer])
        lines.append(f"  {importer} -> {', '.join(targets) if targets else '(nothing in engine)'}")
    return "\n".join(lines)


def _package(module: str) -> str:
    path = modules()[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0] or module


def _listing(found: list[Import]) -> str:
    return "\n".join(f"  {imp.where()}" for imp in found)


def _resolved(code: str, importer: str, is_package: bool = False) -> list[str | None]:
    return [resolve(t) for node in ast.walk(ast.parse(code)) for t in _targets(node, importer, is_package)]


def test_imports_are_found_at_any_depth_and_resolved():
    """Guards the checks below against silently seeing nothing."""
    nested = "def f():\n    if True:\n        from .align import warp_face\n"
    assert _resolved(nested, "engine.faces.extract") == ["engine.faces.align"]
    assert _resolved("from .. import errors", "engine.faces.extract") == ["engine.errors"]
    assert _resolved("from ..faces import align, detection", "engine.swap.blend") == \
        ["engine.faces.align", "engine.faces.detection"]
    assert _resolved("from . import align", "engine.faces", is_package=True) == ["engine.faces.align"]
    assert _resolved("from engine.faces.align import invert", "webapp.ui") == ["engine.faces.align"]
    assert _resolved("import engine.faces.align as a, numpy", "webapp.ui") == ["engine.faces.align", None]
    assert _resolved("importlib.import_module('engine.faces.align')", "engine.cli") == ["engine.faces.align"]
    assert _resolved("from engine.errors import UserError as E", "engine.media") == ["engine.errors"]
    assert len(imports()) > 100 and all(imp.resolved for imp in imports() if imp.statement.startswith("from ."))


def test_cycle_finder_on_a_known_graph():
    graph = {"a": {"b": []}, "b": {"c": [], "d": []}, "c": {"a": []}, "d": {}, "e": {"a": [], "f": []}, "f": {"e": []}}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e", "f"]]
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert strongly_connected({"a": {"b": []}, "b": {}}) == []


def test_engine_has_no_import_cycles():
    graph = engine_graph()
    components = strongly_connected(graph)
    if components:
        report = []
        for component in components:
            cycle = shortest_cycle(graph, component)
            report.append(f"cycle: {' -> '.join(cycle)}")
            for a, b in itertools.pairwise(cycle):
                report.extend(f"  {imp.where()}" for imp in graph[a][b])
            report.append(f"all imports among {', '.join(component)} (one group: each reaches every other):")
            for a in component:
                for b in sorted(set(graph[a]) & set(component)):
                    report.extend(f"  {a} -> {b}   {imp.where()}" for imp in graph[a][b])
        raise AssertionError("engine modules import each other in a cycle:\n" + "\n".join(report)
                             + "\n\n" + graph_summary(graph))


def test_swap_and_evaluate_do_not_import_training():
    found = [imp for imp in imports()
             if any(_in(imp.importer, pkg) for pkg in FREE_OF_TRAINING) and _in(imp.target, TRAINING)]
    assert not found, (f"{' and '.join(FREE_OF_TRAINING)} must not import {TRAINING}:\n{_listing(found)}"
                       f"\n\n{graph_summary(engine_graph())}")


def test_engine_imports_no_ui():
    found = [imp for imp in imports()
             if _in(imp.importer, "engine") and imp.target.split(".")[0] in UI_TOPS]
    assert not found, f"the engine imports UI code:\n{_listing(found)}"


def engine_constant(name: str, home: str = "") -> tuple[str, Path]:
    """The value of a module-level string constant `name` defined somewhere under engine/."""
    hits = []
    for module, path in modules().items():
        if not _in(module, "engine"):
            continue
        for node in tree(path).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    hits.append((node.value.value, path))
    # while a name moves between modules it may be written in both, but it must mean one file
    assert hits and len({value for value, _ in hits}) == 1, \
        (f"engine constant {name} (a model-folder file name, in {home or 'engine/'} when this test was written) "
         f"should name one file under engine/, found {hits}")
    return hits[0]


def model_folder_names() -> tuple[dict[str, str], dict[str, str]]:
    """({file or folder name: where the engine defines it}, {suffix: where}) of a model folder."""
    names = {}
    for constant, expected_home in MODEL_FOLDER_CONSTANTS:
        value, path = engine_constant(constant, expected_home)
        names[value] = f"{path.relative_to(ROOT)} {constant}"
    names.update(MODEL_FOLDER_LITERALS)
    weights, weights_home = engine_constant("WEIGHTS", "engine/models/store.py")
    suffixes = {Path(weights).suffix: f"{weights_home.relative_to(ROOT)} WEIGHTS"}
    assert {"config.json", "loss.csv", "optimizer.pt", "previews"} <= set(names) and ".safetensors" in suffixes, \
        (names, suffixes)  # the names this check was written for are still the engine's
    return names, suffixes


def _docstrings(module: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def webapp_strings() -> list[tuple[Path, int, str]]:
    """(file, line, text) of every string literal under webapp/ that is not a docstring."""
    found = []
    for module, path in modules().items():
        if not _in(module, "webapp"):
            continue
        docstrings = _docstrings(tree(path))
        found += [(path, node.lineno, node.value) for node in ast.walk(tree(path))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    return found


def test_webapp_names_no_model_folder_file():
    names, suffixes = model_folder_names()
    folders = {n for n in names if "." not in n}
    found = []
    for path, line, text in webapp_strings():
        hit = max((n for n in names if text.endswith(n)), key=len, default=None) \
            or next((f for f in sorted(folders) if text.startswith(f + "/")), None) \
            or next((s for s in sorted(suffixes) if text.endswith(s)), None)
        if hit:
            home = names.get(hit) or suffixes[hit]
            found.append(f"  {path.relative_to(ROOT)}:{line}: {text!r} (engine's {hit!r}: {home})")
    assert not found, "the web app names files of a model folder; ask the engine instead:\n" + "\n".join(found)


def test_webapp_does_not_import_the_entry_point():
    found = [imp for imp in imports() if _in(imp.importer, "webapp") and imp.target.split(".")[0] == ENTRY_POINT]
    assert not found, f"the web app imports {ENTRY_POINT}.py (shared flags belong in webapp.flags):\n{_listing(found)}"


def reached(start: str) -> dict[str, list[str]]:
    """{module: the import chain from `start` to it} for every project module `start` imports, at any depth."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imp in imports():
                if imp.importer == module and imp.resolved and imp.resolved not in chains:
                    chains[imp.resolved] = [*chains[module], imp.resolved]
                    following.append(imp.resolved)
        frontier = following
    return chains


def test_job_bodies_and_the_worker_import_no_gradio():
    assert "webapp.jobs" in reached("webapp.tasks") and "engine.swap.pipeline" not in reached("webapp.jobs")
    found = []
    for start in JOB_SIDE:
        for module, chain in reached(start).items():
            found += [f"  {' -> '.join(chain)}: {imp.where()}" for imp in imports()
                      if imp.importer == module and imp.target.split(".")[0] in ("gradio", "gradio_client")]
    assert not found, "what runs jobs imports Gradio:\n" + "\n".join(found)


REPORT_CONSTANTS = ("REPORT_JSON", "REPORT_HTML", "SWAPPED_VIDEO")  # engine/evaluate/report.py


def test_webapp_names_no_evaluation_file():
    names = {engine_constant(c, "engine/evaluate/report.py")[0]: c for c in REPORT_CONSTANTS}
    assert {"report.json", "report.html"} <= set(names), names
    found = [f"  {path.relative_to(ROOT)}:{line}: {text!r} (engine's {names[n]})"
             for path, line, text in webapp_strings() for n in names if n in text]
    assert not found, "the web app names an evaluation's files; ask engine.evaluate.report:\n" + "\n".join(found)
