"""The dependency rule of the layout (docs/architecture.md), checked on every import statement in the source.

``run_rl`` -> ``agents`` -> (``envs``, ``policies``): ``envs`` knows gymnasium but no policy, ``policies`` knows
torch and SB3 but no env, neither knows ``agents``; inside ``agents`` the rooms are layered
(``errors``, ``stats`` <- ``ppo`` <- ``run`` <- ``study``). No module imports itself through others (no import
circle). Imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package (or module) -> the first-party packages it must never import
FORBIDDEN = {
    "envs": ("agents", "policies", "run_rl", "benchmarks", "tests"),
    "policies": ("agents", "envs", "run_rl", "benchmarks", "tests"),
    "agents": ("run_rl", "benchmarks", "tests"),
    "agents.errors": ("agents.ppo", "agents.run", "agents.study", "agents.stats"),
    "agents.stats": ("agents.ppo", "agents.run", "agents.study", "agents.errors"),
    "agents.paths": ("agents.ppo", "agents.run", "agents.study", "agents.stats"),
    "agents.ppo": ("agents.run", "agents.study"),
    "agents.run": ("agents.study",),
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module an import statement in ``path`` names, relative imports resolved to absolute names."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from agents import run` names agents.run
    return found


def violations(root: Path) -> list[str]:
    """One line per file and forbidden package it imports (``FORBIDDEN``)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if not _in_source(path, root):
            continue
        name = module_name(path, root)
        rules = [
            bad for owner, bads in FORBIDDEN.items() if name == owner or name.startswith(owner + ".") for bad in bads
        ]
        modules = sorted(imported_modules(path, root))
        for bad in rules:
            hits = [m for m in modules if m == bad or m.startswith(bad + ".")]
            if hits:
                found.append(f"{path.relative_to(root)}: {name} imports {hits[0]} ({bad} is off limits to {name})")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (a package's ``__init__`` counts as the package)."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py")) if _in_source(p, root)}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for module in imported_modules(path, root):
            while module and module not in paths:  # `from pkg.mod import name`: the module is pkg.mod
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def circles(root: Path) -> list[list[str]]:
    """Import circles among the first-party modules, each as its path of modules (first == last), found by
    depth-first search; a package importing its own submodules (``__init__`` re-exports) is not a circle."""
    graph = import_graph(root)
    found, state = [], {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph[name]):
            if name.startswith(target + "."):  # a module imports its own package's __init__: not a circle
                continue
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return found


def _in_source(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return parts[0] in ("agents", "envs", "policies", "configs", "run_rl.py")


def test_the_source_has_no_import_circle():
    assert circles(ROOT) == []


def test_an_import_circle_is_caught(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs/__init__.py").write_text("from .a import A\n")
    (tmp_path / "envs/a.py").write_text("A = 1\n\ndef vec():\n    from .b import B\n")
    (tmp_path / "envs/b.py").write_text("from .a import A\n\nB = 2\n")
    assert circles(tmp_path) == [["envs.a", "envs.b", "envs.a"]]


def test_the_source_keeps_the_dependency_rule():
    assert violations(ROOT) == []


def test_every_layer_exists():
    # A rule on a package that was renamed away would pass vacuously.
    for owner in FORBIDDEN:
        path = ROOT.joinpath(*owner.split("."))
        assert path.is_dir() or path.with_suffix(".py").is_file(), owner


@pytest.mark.parametrize(
    ("path", "source", "bad"),
    [
        ("envs/foo.py", "import policies.gates", "policies.gates"),
        ("envs/foo.py", "def f():\n    from agents.run import factory", "agents.run"),
        ("policies/foo.py", "from envs import make_env", "envs"),
        ("agents/ppo/foo.py", "from ..run import rundir", "agents.run"),
        ("agents/ppo/foo.py", "from .. import run", "agents.run"),
        ("agents/run/foo.py", "from ..study.results import load_runs", "agents.study"),
        ("agents/errors.py", "from .ppo import buffers", "agents.ppo"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path, path, source, bad):
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source + "\n")
    (tmp_path / "agents/run").mkdir(parents=True, exist_ok=True)
    (tmp_path / "agents/run/ok.py").write_text("from ..ppo import buffers\nfrom ..errors import UrgateError\n")
    found = violations(tmp_path)
    assert len(found) == 1 and bad in found[0], found


# docs/architecture.md describes the layout file for file: a module added, moved or removed must update it.
PAGE = ROOT / "docs" / "architecture.md"
DESCRIBED = ("agents/**/*.py", "envs/**/*.py", "policies/**/*.py", "policies/csrc/*", "configs/*", "benchmarks/*")
PAGE_PATH = re.compile(r"`((?:agents|envs|policies|configs|benchmarks|tests)/[\w/.-]+\.\w+|run_rl\.py)`")


def layout_files(root: Path) -> list[str]:
    files = {p for pattern in DESCRIBED for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}
    return sorted(str(p.relative_to(root)) for p in files if p.suffix != ".pyc") + ["run_rl.py"]


def test_the_architecture_page_lists_every_file_of_the_layout():
    named = set(PAGE_PATH.findall(PAGE.read_text()))
    missing = [f for f in layout_files(ROOT) if f not in named]
    assert missing == [], f"docs/architecture.md does not describe {missing}: add a line for each"


def test_every_file_the_architecture_page_names_exists():
    named = set(PAGE_PATH.findall(PAGE.read_text()))
    assert "agents/run/rundir.py" in named  # the pattern finds the page's paths
    assert sorted(f for f in named if not (ROOT / f).is_file()) == []
