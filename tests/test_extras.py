"""The extras in pyproject.toml against what the code imports, read from the source without importing it.

Each first-party module is owned by one extra (OWNER). Its module-level imports, followed through
first-party modules, may reach only the standard library and packages that the owner's extra lists
(resolved recursively: `train` includes `model` and `pipeline`; every extra includes the base
dependencies). Imports inside functions are lazy by design; one that needs a package outside the
owner's extra must be guarded (under `try: ... except ImportError`, behind `importlib.util.find_spec`, or
through `configuration.extras.require`) and the module must name an extra that provides it
(`pip install 'asymdsd-scale[EXTRA]'`). The packages layer (FLOORS): configuration < {sharding, model} <
pipeline < launch, nothing imports bench or tests, and module-level imports form no circle. The other
way round, every requirement of an extra is imported by code that needs the extra (or is in
LOADED_BY_OTHERS), and what tests/ and bench/ import is in `all` or `dev`.

The subprocess tests run the command-line entry points' `--help` with every package outside their extra
blocked, as where it is not installed; the console-script tests check [project.scripts].
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import shutil
import subprocess
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "asymdsd-scale"
PACKAGES = ("configuration", "sharding", "pipeline", "model", "launch")

# Which extra each first-party module needs; the longest matching prefix wins.
OWNER = {
    "configuration": "base",
    "sharding": "sharding",
    "model": "model",
    "pipeline": "pipeline",
    "launch": "train",
    "launch.demo": "all",  # it shards its corpus with sharding.shard_corpus on a local Ray instance
}

# What each package may import besides itself (module-level and lazy imports alike).
FLOORS = {
    "configuration": (),
    "sharding": ("configuration",),
    "model": ("configuration",),
    "pipeline": ("configuration", "model", "sharding.manifest", "sharding.layouts"),
    "launch": ("configuration", "sharding", "model", "pipeline"),
}
NEVER_IMPORTED = ("bench", "tests")  # not installed
# Lazy imports allowed below a floor. The leak check reads evaluation test sets with the evaluation's own
# readers, so it matches exactly the clouds the benchmarks score; only a run given a test set imports them.
LAZY_EXCEPTIONS = {"sharding.dedup.test_sets": ("launch.evaluation.data", "launch.evaluation.part_data")}

# Import names of distributions whose name is not the import name, for those not installed here (an
# installed distribution's names are read from importlib.metadata).
IMPORT_NAMES = {
    "pyyaml": {"yaml"},
    "scikit-learn": {"sklearn"},
    "umap-learn": {"umap"},
    "kubernetes-validate": {"kubernetes_validate"},
    "psycopg2-binary": {"psycopg2"},
}

# Requirements that no module imports: another package loads them at run time.
LOADED_BY_OTHERS = {
    "s3fs": "fsspec's s3:// filesystem, which fsspec imports by protocol name",
}

GUARD_CALLS = {"require"}  # configuration.extras.require(module, extra)


# ---------------------------------------------------------------------------------------------------
# pyproject.toml


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, tuple[str, ...]]:
    """'ray[default]>=2.40' -> ('ray', ('default',))."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", text)
    assert m, f"unreadable requirement {text!r}"
    extras = tuple(e.strip() for e in (m.group(2) or "").split(",") if e.strip())
    return canonical(m.group(1)), extras


def declared_extras() -> dict[str, list[str]]:
    project = pyproject()["project"]
    return {"base": list(project["dependencies"]), **project["optional-dependencies"]}


@cache
def included(extra: str) -> frozenset[str]:
    """`extra` and every extra it includes (always `base`)."""
    extras = declared_extras()
    assert extra in extras, f"no extra {extra!r} in pyproject.toml"
    out = {extra, "base"}
    for req in extras[extra]:
        name, subs = parse_requirement(req)
        if name == canonical(DISTRIBUTION):
            for sub in subs:
                out |= included(sub)
    return frozenset(out)


def direct_requirements(extra: str) -> list[str]:
    names = [name for name, _ in map(parse_requirement, declared_extras()[extra])]
    return [name for name in names if name != canonical(DISTRIBUTION)]


@cache
def installed_import_names() -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            out[canonical(dist)].add(module)
    return {k: frozenset(v) for k, v in out.items()}


def import_names(dist: str) -> frozenset[str]:
    """What the installed distribution provides, else the table or the distribution's own name."""
    installed = installed_import_names().get(dist)
    return frozenset(installed or IMPORT_NAMES.get(dist) or {dist.replace("-", "_")})


@cache
def provided(extra: str) -> frozenset[str]:
    """Top-level import names of the requirements of `extra` (not of their own dependencies)."""
    dists = {dist for e in included(extra) for dist in direct_requirements(e)}
    return frozenset(n for dist in dists for n in import_names(dist))


def providers(top: str) -> list[str]:
    """The extras whose own requirements list the package `top`, smallest first."""
    extras = [e for e in declared_extras() if e != "dev" and top in provided(e)]
    return sorted(extras, key=lambda e: len(included(e)))


def is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names


# ---------------------------------------------------------------------------------------------------
# The import graph


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted module name
    names: tuple[str, ...]  # from-import names (may be submodules)
    line: int
    lazy: bool  # inside a function: runs when called
    guarded: bool  # under try/except ImportError, or through require(...)
    extra: str | None = None  # the extra a require(module, extra) call names


@dataclass
class Module:
    name: str
    path: Path
    source: str
    imports: list[Import]

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    catches = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in catches for t in types)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def called_name(call: ast.Call) -> str:
    """`f` of `f(...)` and of `a.b.f(...)`."""
    return getattr(call.func, "id", getattr(call.func, "attr", ""))


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def parse_imports(name: str, tree: ast.Module, is_package: bool) -> list[Import]:
    out: list[Import] = []

    def visit(node: ast.AST, lazy: bool, guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.iter_child_nodes(node):
                visit(child, True, guarded)
            return
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            body_guarded = guarded or any(_catches_import_error(h) for h in node.handlers)
            for stmt in node.body:
                visit(stmt, lazy, body_guarded)
            for part in (*node.handlers, *node.orelse, *node.finalbody):
                visit(part, lazy, guarded)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.orelse:  # the body never runs
                visit(stmt, lazy, guarded)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(alias.name, (), node.lineno, lazy, guarded))
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                target = _resolve_relative(name, is_package, node.level, node.module)
            out.append(Import(target, tuple(a.name for a in node.names), node.lineno, lazy, guarded))
        elif isinstance(node, ast.Call):
            called = called_name(node)
            module = _literal(node.args[0]) if node.args else None
            if called == "import_module" and module and not module.startswith("."):
                out.append(Import(module, (), node.lineno, lazy, guarded))
            elif called in GUARD_CALLS and module and len(node.args) >= 2:
                out.append(Import(module, (), node.lineno, lazy, True, _literal(node.args[1])))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy, guarded)

    for stmt in tree.body:
        visit(stmt, False, False)
    return out


@cache
def modules() -> dict[str, Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            name = ".".join(parts)
            source = path.read_text()
            tree = ast.parse(source, filename=str(path))
            out[name] = Module(name, path, source, parse_imports(name, tree, path.name == "__init__.py"))
    return out


def top_level(name: str) -> str:
    return name.split(".")[0]


def is_first_party(name: str) -> bool:
    return top_level(name) in PACKAGES


def owner(module: str) -> str:
    prefix = max((p for p in OWNER if module == p or module.startswith(p + ".")), key=len)
    return OWNER[prefix]


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def touched(imp: Import) -> list[str]:
    """The first-party modules an import runs: the packages on the way, the module, imported submodules."""
    mods = modules()
    parts = imp.target.split(".")
    out = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods]
    out += [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in mods]
    return out


def unknown_first_party() -> list[str]:
    return [f"{m.name} (line {i.line}): imports {i.target}, which is not a module of the project"
            for m in modules().values() for i in m.imports
            if is_first_party(i.target) and i.target not in modules()]


def module_level(mod: Module) -> list[Import]:
    return [i for i in mod.imports if not i.lazy and not i.guarded]


@cache
def third_party_closure(start: str) -> dict[str, list[str]]:
    """Every third-party top-level package the module-level imports of `start` reach, with one (shortest)
    import chain each: ['launch.evaluate', 'launch.evaluation.data:12', ..., 'fsspec']."""
    mods = modules()
    parent: dict[str, tuple[str, int] | None] = {start: None}
    queue = deque([start])
    found: dict[str, list[str]] = {}
    while queue:
        name = queue.popleft()
        for imp in module_level(mods[name]):
            if is_first_party(imp.target):
                for nxt in touched(imp):
                    if nxt not in parent:
                        parent[nxt] = (name, imp.line)
                        queue.append(nxt)
            elif not is_stdlib(top_level(imp.target)) and top_level(imp.target) not in found:
                found[top_level(imp.target)] = chain(parent, name, imp.line) + [imp.target]
    return found


def chain(parent: dict[str, tuple[str, int] | None], name: str, line: int) -> list[str]:
    links = [f"{name}:{line}"]
    while parent[name] is not None:
        name, line = parent[name]
        links.append(f"{name}:{line}")
    return links[::-1]


def needs_of(imp: Import) -> dict[str, list[str]]:
    """What executing one import needs: third-party top-level package -> chain."""
    if not is_first_party(imp.target):
        top = top_level(imp.target)
        return {} if is_stdlib(top) else {top: [imp.target]}
    out: dict[str, list[str]] = {}
    for mod in touched(imp):
        for top, links in third_party_closure(mod).items():
            out.setdefault(top, links)
    return out


# ---------------------------------------------------------------------------------------------------
# The checks on the source


def test_every_first_party_module_parses_and_has_an_owner_extra():
    assert set(modules()) >= {"configuration", "sharding.shard_corpus", "pipeline.loader", "model.asymdsd",
                              "launch.pretrain", "launch.evaluate", "launch.pictures.__main__", "launch.demo"}
    extras = declared_extras()
    for extra in set(OWNER.values()):
        assert extra in extras, f"OWNER names {extra!r}, which pyproject.toml does not declare"
    assert not unknown_first_party(), "\n".join(unknown_first_party())


def also(names: set[str], shown: int = 6) -> str:
    if not names:
        return ""
    listed = ", ".join(sorted(names)[:shown])
    listed += f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"; also reached from {listed}"


def test_module_level_imports_are_provided_by_the_owner_extra():
    """Everything a module's import reaches (following first-party modules) is in its owner's extra."""
    leaks: dict[tuple[str, str, str], list[str]] = {}  # (extra, package, importer) -> shortest chain
    reached_from: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for name in modules():
        extra = owner(name)
        for top, links in third_party_closure(name).items():
            if top in provided(extra) or is_first_party(top) or top in NEVER_IMPORTED:
                continue
            key = (extra, top, links[-2].split(":")[0])
            reached_from[key].add(name)
            if key not in leaks or len(links) < len(leaks[key]):
                leaks[key] = links
    report = []
    for (extra, top, importer), links in sorted(leaks.items()):
        start = links[0].split(":")[0]
        listed = ", ".join(providers(top)) or "no extra"
        others = also(reached_from[extra, top, importer] - {start})
        report.append(f"{' -> '.join(links)}: '{top}' is not in the '{extra}' extra that owns {start} "
                      f"(listed by: {listed}){others}")
    assert not report, "module-level imports outside the owner's extra:\n" + "\n".join(report)


def calls_with_literal(mod: Module, function: str) -> set[str]:
    """The string literals passed first to calls of `function` (a name or an attribute) in the module."""
    calls = [c for c in ast.walk(ast.parse(mod.source)) if isinstance(c, ast.Call) and c.args]
    return {_literal(c.args[0]) for c in calls if called_name(c) == function}


def test_lazy_imports_outside_the_owner_extra_are_guarded_and_name_the_extra():
    problems = []
    for mod in modules().values():
        extra = owner(mod.name)
        for imp in mod.imports:
            if not (imp.lazy or imp.guarded):
                continue
            missing = {top: links for top, links in needs_of(imp).items()
                       if not (top in provided(extra) or is_first_party(top) or top in NEVER_IMPORTED)}
            if not missing:
                continue
            site = f"{mod.path.relative_to(ROOT)}:{imp.line} imports {imp.target}"
            needs = "; ".join(" -> ".join(links) for links in missing.values())
            if imp.extra is not None:
                if not set(missing) <= provided(imp.extra):
                    problems.append(f"{site} through require(..., {imp.extra!r}), which does not provide "
                                    f"{sorted(set(missing) - provided(imp.extra))} ({needs})")
                continue
            found_specs = calls_with_literal(mod, "find_spec")
            if not (imp.guarded or set(missing) <= found_specs):
                fix = (f"import it with configuration.extras.require(..., {providers(min(missing))[0]!r})"
                       if providers(min(missing)) else f"list it in the '{extra}' extra or guard the import")
                problems.append(f"{site} unguarded: needs {sorted(missing)} outside the '{extra}' extra "
                                f"({needs}); {fix}")
                continue
            named = {e for e in declared_extras() if f"{DISTRIBUTION}[{e}]" in mod.source}
            named |= calls_with_literal(mod, "install_hint")
            in_some_extra = {top for top in missing if providers(top)}
            if in_some_extra and not any(in_some_extra <= provided(e) for e in named):
                hint = f"pip install '{DISTRIBUTION}[{providers(min(in_some_extra))[0]}]'"
                problems.append(f"{site}: needs {sorted(in_some_extra)} outside the '{extra}' extra "
                                f"({needs}), and the module names no extra that provides it ({hint})")
    assert not problems, "lazy imports of packages outside the owner's extra:\n" + "\n".join(problems)


def test_imports_respect_the_package_floors():
    problems = []
    for mod in modules().values():
        package = top_level(mod.name)
        allowed = FLOORS[package]
        for imp in mod.imports:
            target = imp.target
            where = f"{mod.name} (line {imp.line}{', lazy' if imp.lazy else ''}) imports {target}"
            if top_level(target) in NEVER_IMPORTED:
                problems.append(f"{where}: {top_level(target)} is not installed and is never imported")
            elif is_first_party(target) and top_level(target) != package:
                excepted = imp.lazy and target in LAZY_EXCEPTIONS.get(mod.name, ())
                if not excepted and not any(target == a or target.startswith(a + ".") for a in allowed):
                    problems.append(f"{where}: {package} may import only {', '.join(allowed) or 'itself'}")
    assert not problems, "imports against the package floors:\n" + "\n".join(problems)


def test_no_import_circle_among_first_party_modules():
    """Module-level imports only; a module's import of its own parent packages is not an edge (they are
    already being imported when it runs)."""
    mods = modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in mods}
    for mod in mods.values():
        for imp in module_level(mod):
            if is_first_party(imp.target):
                for nxt in touched(imp):
                    if nxt != mod.name and nxt not in ancestors(mod.name):
                        graph[mod.name].setdefault(nxt, imp.line)
    circles = [scc for scc in strongly_connected(graph) if len(scc) > 1]
    report = []
    for scc in circles:
        cycle = one_cycle(graph, scc)
        links = [f"{a}:{graph[a][b]}" for a, b in zip(cycle, cycle[1:])]
        report.append(" -> ".join(links + [cycle[-1]]))
    assert not report, "import circles (module:line of the import):\n" + "\n".join(report)


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def one_cycle(graph: dict[str, dict[str, int]], scc: list[str]) -> list[str]:
    """A shortest cycle through the first module of the component."""
    start, members = scc[0], set(scc)
    parent = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in graph[v]:
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    return [start]


def test_every_requirement_of_an_extra_is_imported_by_code_that_needs_the_extra():
    """No dead weight: a requirement of extra E is imported by a module whose owner's extra includes E."""
    imported_by_extra: dict[str, set[str]] = defaultdict(set)
    for mod in modules().values():
        for extra in included(owner(mod.name)):
            imported_by_extra[extra] |= {top_level(i.target) for i in mod.imports}
    unused = []
    for extra in declared_extras():
        if extra == "dev":
            continue
        for dist in direct_requirements(extra):
            if dist in LOADED_BY_OTHERS or import_names(dist) & imported_by_extra[extra]:
                continue
            unused.append(f"'{dist}' in the '{extra}' extra: no module that needs the extra imports it")
    assert not unused, "\n".join(unused)


def imports_of_tests_and_benchmarks() -> dict[str, set[str]]:
    """Third-party top-level packages that tests/ and bench/ import -> the files importing them."""
    out: dict[str, set[str]] = defaultdict(set)
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]:
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for imp in parse_imports(name, ast.parse(path.read_text()), path.name == "__init__.py"):
            top = top_level(imp.target)
            if not (is_stdlib(top) or is_first_party(top) or top in NEVER_IMPORTED):
                out[top].add(str(rel.with_suffix(".py")))
    return out


def test_tests_and_benchmarks_import_only_what_all_and_dev_provide():
    imported = imports_of_tests_and_benchmarks()
    allowed = provided("all") | provided("dev")
    missing = {top: sorted(files) for top, files in imported.items() if top not in allowed}
    assert not missing, f"imported by tests/benchmarks, in neither the 'all' nor the 'dev' extra: {missing}"


def test_dev_requirements_are_used_by_tests_or_benchmarks():
    imported = set(imports_of_tests_and_benchmarks())
    unused = [d for d in direct_requirements("dev") if not import_names(d) & imported]
    assert not unused, f"dev requirements no test or benchmark imports: {unused}"


def test_require_names_the_extra_and_keeps_the_missing_package(monkeypatch):
    from configuration.extras import install_hint, require

    assert require("json", "base") is sys.modules["json"]
    assert install_hint("sharding") == "pip install 'asymdsd-scale[sharding]'"
    monkeypatch.setitem(sys.modules, "trimesh", None)  # as where the sharding extra is not installed
    monkeypatch.delitem(sys.modules, "sharding.synthetic", raising=False)
    with pytest.raises(ImportError) as info:
        require("sharding.synthetic", "sharding")
    assert info.value.name == "trimesh" and isinstance(info.value.__cause__, ImportError)
    assert str(info.value) == ("sharding.synthetic needs the 'sharding' extra (trimesh is not installed): "
                               "pip install 'asymdsd-scale[sharding]'")


def test_the_check_sees_a_leak_a_circle_and_a_floor_violation():
    """The parser and rules on made-up modules: what the tests above would report."""
    leak = parse_imports("launch.x", ast.parse("import trimesh\ndef f():\n    import ray\n"), False)
    assert [(i.target, i.lazy, i.guarded) for i in leak] == [("trimesh", False, False), ("ray", True, False)]
    assert "trimesh" not in provided("train") and "trimesh" in provided("sharding")
    guarded = parse_imports("launch.x", ast.parse(
        "try:\n    import trimesh\nexcept ImportError:\n    trimesh = None\n"
        "def f():\n    return require('sharding.synthetic', 'sharding')\n"), False)
    assert [(i.target, i.guarded, i.extra) for i in guarded] == [("trimesh", True, None),
                                                                 ("sharding.synthetic", True, "sharding")]
    assert "trimesh" in needs_of(guarded[1])
    source = "from .clouds import x\nfrom .. import tracking"
    relative = parse_imports("launch.pictures.sample", ast.parse(source), False)
    assert [(i.target, i.names) for i in relative] == [("launch.pictures.clouds", ("x",)),
                                                       ("launch", ("tracking",))]
    assert touched(relative[1]) == ["launch", "launch.tracking"]
    components = strongly_connected({"a": {"b": 1}, "b": {"a": 2}, "c": {}})
    assert [c for c in components if len(c) > 1] == [["a", "b"]]
    assert one_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert owner("launch.demo") == "all" and owner("launch.evaluation.data") == "train"
    assert included("train") == {"base", "model", "pipeline", "train"}


# ---------------------------------------------------------------------------------------------------
# Entry points run with only their extra


def blocked_outside(extra: str) -> list[str]:
    """Packages that `all` installs and `extra` does not, plus the test/benchmark-only webdataset and SciPy
    (SciPy comes with scikit-learn, which the CLIs import only when they compute)."""
    return sorted((provided("all") - provided(extra)) | ({"webdataset", "scipy"} - provided(extra)))


ENTRY_POINTS = [  # (what runs, run_module or run_path, extra)
    ("launch.evaluate", "module", "train"),
    ("launch.pictures", "module", "train"),
    ("launch/pretrain.py", "path", "train"),
    ("sharding.shard_corpus", "module", "sharding"),
    ("model.summary", "module", "model"),
]

PRELUDE = """
import runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # import fails as if not installed
sys.argv = [{target!r}, "--help"]
runpy.{runner}({target!r}, run_name="__main__")
"""


@pytest.mark.parametrize(("target", "kind", "extra"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_help_works_with_only_the_extra_installed(target, kind, extra):
    blocked = blocked_outside(extra)
    runner = "run_module" if kind == "module" else "run_path"
    program = PRELUDE.format(blocked=blocked, target=target, runner=runner)
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "usage:" in proc.stdout, (
        f"{target} --help with only the '{extra}' extra (blocked: {', '.join(blocked)}) exited "
        f"{proc.returncode}:\n"
        f"{proc.stderr[-4000:]}")


# ---------------------------------------------------------------------------------------------------
# Console scripts

EXPECTED_SCRIPTS = {"asymdsd-shard", "asymdsd-pretrain", "asymdsd-evaluate", "asymdsd-pictures",
                    "asymdsd-demo", "asymdsd-model-summary"}


def scripts() -> dict[str, str]:
    return pyproject()["project"].get("scripts", {})


def test_console_scripts_are_declared():
    assert set(scripts()) == EXPECTED_SCRIPTS


@pytest.mark.parametrize("name", sorted(EXPECTED_SCRIPTS))
def test_console_script_target_resolves_to_a_main_callable_without_arguments(name):
    """Console scripts call `sys.exit(main())`: the target imports, and takes no required argument."""
    target = scripts()[name]
    module_name, _, attr = target.partition(":")
    assert module_name in modules(), f"{name}: {module_name} is not a module of the installed packages"
    saved = list(sys.path)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path[:] = saved  # launch/pretrain.py puts the project root first when imported
    func = getattr(module, attr)
    assert callable(func)
    required = [p.name for p in inspect.signature(func).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not required, f"{name} = {target}: a console script calls it with no arguments; needs {required}"


def test_installed_pretrain_script_runs_outside_the_project(tmp_path):
    """The installed `asymdsd-pretrain --help` from another directory (needs `pip install -e .` after a change
    to [project.scripts])."""
    script = Path(sys.executable).parent / "asymdsd-pretrain"
    if not script.exists():
        script = shutil.which("asymdsd-pretrain")
        if script is None:
            pytest.skip("asymdsd-pretrain is not installed: pip install --no-deps -e .")
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--config" in proc.stdout, proc.stderr[-3000:]
