"""The layout is the architecture: no import circles (function-scoped imports included), calibration/ is a
library of its own, and each folder imports only from the folders below it (docs/architecture.md)."""
import ast
from pathlib import Path

from tests.conftest import REPO

# folder -> the quantgate folders and modules it must not import (the ones above it)
ABOVE = {
    "pipeline.guard": {"*"},  # standard library only (tests/unit/guard/test_guard_package.py checks the rest)
    "pipeline.config": {"pipeline.builder", "pipeline.verify", "pipeline.release", "pipeline.runtimes"},
    "pipeline.isa": {"pipeline.builder", "pipeline.verify", "pipeline.release", "pipeline.runtimes"},
    "pipeline.runtimes": {"pipeline.builder", "pipeline.verify", "pipeline.release"},
    "pipeline.verify": {"pipeline.builder", "pipeline.release"},
    "pipeline.builder": {"pipeline.release"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in ("pipeline", "calibration"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()
# Nothing below them imports them: the command line (pipeline/commands/ and its dispatcher) and the Hydra app.
ENTRY_POINTS = {"pipeline.cli", "pipeline.app", "pipeline.__main__", "pipeline.commands",
                *(name for name in MODULES if name.startswith("pipeline.commands."))}


def imports(name: str, path: Path) -> set[str]:
    """The quantgate modules `name` imports anywhere in its source, inside functions too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in MODULES else base)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others():
    assert cycles(GRAPH) == []


def test_cycles_are_found_when_there_are_some():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_calibration_is_a_library_that_imports_nothing_of_the_pipeline():
    wrong = {name: sorted(t for t in targets if t.startswith("pipeline"))
             for name, targets in GRAPH.items() if name.startswith("calibration")}
    assert {name: targets for name, targets in wrong.items() if targets} == {}


def test_each_folder_imports_only_from_the_folders_below_it():
    wrong = []
    for name, targets in GRAPH.items():
        for folder, above in ABOVE.items():
            if name == folder or name.startswith(folder + "."):
                wrong += [f"{name} -> {t}" for t in targets if not t.startswith(folder) and (
                    "*" in above or any(t == a or t.startswith(a + ".") for a in above))]
        wrong += [f"{name} -> {t}" for t in targets & ENTRY_POINTS if name not in ENTRY_POINTS]
    assert wrong == []


def layout_section() -> str:
    """The Layout section of the contributors' page (docs/contributing.md; it was README's)."""
    return (REPO / "docs" / "contributing.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_folders_are_the_ones_the_layout_lists():
    folders = {p.name for p in (REPO / "pipeline").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {"guard", "isa", "builder", "verify", "runtimes", "release", "config", "commands"}
    layout = layout_section()
    for folder in sorted(folders):
        assert f"pipeline/{folder}/" in layout, f"docs/contributing.md's Layout does not list pipeline/{folder}/"


def test_every_top_level_folder_has_its_line_in_the_layout():
    listed = {line.split("/", 1)[0] for line in layout_section().split("```text\n")[1].split("```")[0].splitlines()
              if line[:1].isalpha()}
    # The folders git tracks, less the hidden ones (.ci/, .github/): not what runs and installs leave (artifacts/,
    # *.egg-info/, gitignored).
    import subprocess
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {path.split("/", 1)[0] for path in tracked if "/" in path and not path.startswith((".", "__"))}
    assert folders == listed


def test_the_hydra_plugins_import_nothing_of_quantgate():
    # The launcher is Hydra's and Ray's business only: a worker imports it before any of quantgate.
    paths = sorted((REPO / "hydra_plugins").rglob("*.py"))
    assert paths
    for path in paths:
        assert imports(".".join(path.relative_to(REPO).with_suffix("").parts), path) == set(), path
