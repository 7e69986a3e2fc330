"""The structure stays untangled: no import cycle among llmft's modules (function-local imports counted), and a
request resolves its task once (a task file is read once).

Run: pytest tests/test_structure.py
"""

import ast
import textwrap
from pathlib import Path

from llmft.cli import main

LLMFT = Path(__file__).resolve().parent.parent / "llmft"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, from every import statement of its source (at the top, in a
    function, anywhere), relative or absolute."""
    name = package.name
    modules = {}
    for path in package.rglob("*.py"):
        parts = [name, *path.relative_to(package).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            else:
                continue
            imported |= {c for c in candidates if c in modules and c != module}
        graph[module] = imported
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_llmft_has_no_import_cycle():
    graph = import_graph(LLMFT)
    assert len(graph) > 30 and "llmft.kinds" in graph["llmft.tasks"]  # the graph was read, not empty
    assert cycles(graph) == []


def test_a_cycle_through_a_function_local_import_is_found(tmp_path):
    """The check above can fail: a package whose second module imports the first inside a function."""
    package = tmp_path / "knot"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("from .high import helper\n")
    (package / "high.py").write_text(
        textwrap.dedent(
            """
            def helper():
                from . import low  # the local import that closes the circle
                return low
            """
        )
    )
    (package / "apart.py").write_text("import os\n")
    assert cycles(import_graph(package)) == [["knot.high", "knot.low"]]
    (package / "high.py").write_text("def helper():\n    return 1\n")
    assert cycles(import_graph(package)) == []


def test_train_reads_the_task_file_once(topic_data, tmp_path, monkeypatch):
    task_file, train_csv, _ = topic_data
    reads = []
    original = Path.read_text

    def counting(self, *args, **kwargs):
        if Path(self).resolve() == Path(task_file).resolve():
            reads.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    argv = ["train", "--task", task_file, "--data", train_csv, "--max-steps", "1", "--val-split", "0"]
    assert main([*argv, "--runs-dir", str(tmp_path), "--run-name", "once"]) == 0
    assert (tmp_path / "once" / "adapter").is_dir()
    assert len(reads) == 1
