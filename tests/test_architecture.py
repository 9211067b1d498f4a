"""The shape of the code: the import graph of engine/ and app/ has no circle, and no module reaches into
another module's underscore names.

The graph is read from the source with `ast`, not by importing: every `import x`, `from x import y` and
relative import, at module level and inside functions (a lazy import still ties two modules together),
and `importlib.import_module("literal")` / `__import__("literal")`. A module that imports by a computed name
(a registry of subcommand modules) is taken to import every module it names in a string. Only Artveil's
own modules count; `argparse._SubParsersAction` is the standard library's business.

A private name is one with a leading underscore that is not a dunder (`__version__` is public). Reaching
for one counts however it is spelled: `from engine.cli import _param`, `engine.cli._param`,
`importlib.import_module("engine.cli")._param`, `getattr(cli, "_param")`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "app")


@dataclass(frozen=True)
class PrivateImport:
    importer: str  # the module that reaches in
    target: str  # module.name reached for, e.g. "engine.cli._param"
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} uses {self.target}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def project_sources(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, is a package), for every .py file under the given top-level packages."""
    sources = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            sources[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return sources


def _known_prefix(dotted: str, modules) -> tuple[str | None, list[str]]:
    """The longest leading part of `dotted` that is one of `modules`, and the parts after it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in modules:
            return head, parts[cut:]
    return None, parts


def _is_dynamic_import(node: ast.AST) -> bool:
    """A call of `importlib.import_module(...)`, `import_module(...)` or `__import__(...)`."""
    if not (isinstance(node, ast.Call) and node.args):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ("import_module", "__import__")


def _literal_import(node: ast.AST) -> str | None:
    """The module a dynamic import names as a literal string, e.g. `importlib.import_module("x")`."""
    if _is_dynamic_import(node) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def _dotted(node: ast.AST, bound: dict[str, str]) -> str | None:
    """`a.b.c` as the dotted module path it stands for, where `a` is bound to a module (or is a literal import)."""
    tail = []
    while isinstance(node, ast.Attribute):
        tail.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in bound:
        head = bound[node.id]
    elif (literal := _literal_import(node)) is not None:
        head = literal
    else:
        return None
    return ".".join([head, *reversed(tail)])


def scan(sources: dict[str, tuple[str, bool]]) -> tuple[dict[str, set[str]], list[PrivateImport]]:
    """Module -> the project modules it imports, and every use of another module's private name."""
    modules = set(sources)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private: list[PrivateImport] = []
    for module, (text, is_package) in sources.items():
        tree = ast.parse(text, filename=module)
        package = module if is_package else module.rpartition(".")[0]
        bound: dict[str, str] = {}  # local name -> the dotted path it was imported as

        def import_of(dotted: str, line: int) -> None:
            target, rest = _known_prefix(dotted, modules)
            if target is None:
                return  # not Artveil's
            if target != module:
                graph[module].add(target)
            if rest and is_private(rest[0]) and target != module:
                private.append(PrivateImport(module, f"{target}.{rest[0]}", line))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    import_of(alias.name, node.lineno)
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        first = alias.name.partition(".")[0]
                        bound[first] = first
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    if alias.name == "*":
                        import_of(base, node.lineno)
                        continue
                    full = f"{base}.{alias.name}"
                    import_of(full, node.lineno)
                    bound[alias.asname or alias.name] = full
            elif isinstance(node, ast.Call) and (literal := _literal_import(node)) is not None:
                import_of(literal, node.lineno)
        if any(_is_dynamic_import(n) and _literal_import(n) is None for n in ast.walk(tree)):
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules - {module}:
                    graph[module].add(node.value)
        # Then, with every name bound to a module known: reaching in through attributes.
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if (literal := _literal_import(node.value)) is not None:
                    bound[node.targets[0].id] = literal
        for node in ast.walk(tree):
            dotted = None
            if isinstance(node, ast.Attribute):
                dotted = _dotted(node, bound)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str)):
                owner = _dotted(node.args[0], bound)
                dotted = f"{owner}.{node.args[1].value}" if owner else None
            if dotted is not None:
                target, rest = _known_prefix(dotted, modules)
                # Only the name right after the module: `engine.cli._param`, not `ModelBundle._field`.
                if target is not None and target != module and rest and is_private(rest[0]):
                    private.append(PrivateImport(module, f"{target}.{rest[0]}", node.lineno))
    # One entry per (module, name reached for), at the first line it appears on.
    unique = {(p.importer, p.target): p for p in sorted(private, key=lambda p: p.line, reverse=True)}
    return graph, sorted(unique.values(), key=lambda p: (p.importer, p.line))


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules, each as a path that ends where it starts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    circles = []
    for group in groups:
        start = min(group)
        # Shortest way back to the start inside the group (breadth first).
        came_from = {start: None}
        queue = [start]
        while queue:
            v = queue.pop(0)
            if start in graph.get(v, ()) and (v != start or len(group) == 1):
                path = [start]
                while v is not None:
                    path.append(v)
                    v = came_from[v]
                circles.append(list(reversed(path)))
                break
            for w in sorted(graph.get(v, ())):
                if w in group and w not in came_from:
                    came_from[w] = v
                    queue.append(w)
    return sorted(circles)


def test_import_graph_has_no_circle():
    graph, _ = scan(project_sources())
    assert "engine.methods" in graph["engine.protect"] and "engine.bench" in graph["engine.cli"]  # the scan sees the tree
    circles = find_circles(graph)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_module_uses_another_modules_private_names():
    _, private = scan(project_sources())
    assert not private, "private names used across modules:\n" + "\n".join(map(str, private))


def test_checker_reports_a_circle_and_every_spelling_of_a_private_import():
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg import b\n", False),
        "pkg.b": ("def later():\n    from . import c\n", False),
        "pkg.c": ("import importlib\n"
                  "def run():\n"
                  "    importlib.import_module('pkg.a')\n", False),
        "pkg.d": ("from pkg.a import _helper, __version__\n", False),
        "pkg.e": ("import importlib\n"
                  "import pkg.a\n"
                  "from pkg import b as bee\n"
                  "x = importlib.import_module('pkg.c')._secret\n"
                  "y = pkg.a._other\n"
                  "z = getattr(bee, '_hidden')\n"
                  "mod = importlib.import_module('pkg.d')\n"
                  "w = mod._late\n", False),
        "pkg.f": ("from .a import _relative\n"
                  "class Thing:\n"
                  "    def _mine(self):\n"
                  "        return self._mine\n", False),
        "pkg.g": ("import importlib\n"
                  "PLUGINS = ('pkg.f', 'not.ours')\n"
                  "def load():\n"
                  "    return [importlib.import_module(name) for name in PLUGINS]\n", False),
    }
    graph, private = scan(sources)

    assert find_circles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert graph["pkg.e"] == {"pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    assert graph["pkg.g"] == {"pkg.f"}  # named in a registry, imported by a computed name
    assert [(p.importer, p.target) for p in private] == [
        ("pkg.d", "pkg.a._helper"),  # __version__ is fine
        ("pkg.e", "pkg.c._secret"),
        ("pkg.e", "pkg.a._other"),
        ("pkg.e", "pkg.b._hidden"),
        ("pkg.e", "pkg.d._late"),
        ("pkg.f", "pkg.a._relative"),
    ]
    graph["pkg.c"].discard("pkg.a")  # the lazy import that closed it
    assert find_circles(graph) == []


# The floors, lowest first: a module imports only from its own floor or a lower one. Everything under a
# prefix is on that floor; an engine module not named here is on "engine" (the library the window, the
# command line and the evaluation share).
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data", ("engine.errors", "engine.events", "engine.params", "engine.jobs")),
    ("engine", ("engine",)),
    ("proxy", ("engine.proxy",)),
    ("evaluation", ("engine.evaluation",)),
    ("entry points", ("engine.cli", "engine.cli_models", "engine.bench", "engine.__main__")),
    ("window", ("app",)),
)


def floor_of(module: str, floors=FLOORS) -> int:
    """The index of the floor whose longest matching prefix names module."""
    best, best_len = None, -1
    for level, (_, prefixes) in enumerate(floors):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is on no floor")
    return best


def upward_imports(graph: dict[str, set[str]], floors=FLOORS) -> list[str]:
    """'a -> b (floor x imports floor y)' for every import from a lower floor to a higher one."""
    out = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if floor_of(target, floors) > floor_of(module, floors):
                out.append(f"{module} -> {target} ({floors[floor_of(module, floors)][0]} imports "
                           f"{floors[floor_of(target, floors)][0]})")
    return out


def test_no_import_goes_up_a_floor():
    graph, _ = scan(project_sources())
    up = upward_imports(graph)
    assert not up, "imports from a lower floor to a higher one:\n" + "\n".join(up)


def test_the_floor_check_sees_an_import_that_goes_up():
    graph = {"engine.jobs": {"engine.errors"}, "engine.proxy.sanity": {"engine.evaluation.customize", "engine.jobs"},
             "app.bridge": {"engine.jobs"}, "engine.batch": {"app.bridge"}}
    assert upward_imports(graph) == [
        "engine.batch -> app.bridge (engine imports window)",
        "engine.proxy.sanity -> engine.evaluation.customize (proxy imports evaluation)",
    ]


def _trees():
    for module, (text, _) in project_sources().items():
        yield module, ast.parse(text)


def test_stop_is_read_only_through_job_check():
    """No `x.cancelled` property read (a Job has none any more) and no closure of its own: cancel() and check()."""
    reads = []
    for module, tree in _trees():
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("cancelled", "check_cancelled") and id(node) not in called:
                reads.append(f"{module}:{node.lineno} reads .{node.attr}")
            if isinstance(node, ast.FunctionDef) and node.name in ("_stop_check", "check_cancelled"):
                reads.append(f"{module}:{node.lineno} defines {node.name}")
    assert not reads, "\n".join(reads)


def test_no_receiver_tells_events_apart_by_their_shape():
    """Events are typed (engine.events): nobody asks whether one is a tuple."""
    shaped = []
    for module, tree in _trees():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in ("event", "events", "values", "item", "report")
                    and "tuple" in ast.unparse(node.args[1])):
                shaped.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not shaped, "\n".join(shaped)


def test_the_survival_measure_and_its_latent_exist_once():
    defs = [(module, node.name) for module, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name in ("_latent", "survival_latent", "latent_survival")]
    assert sorted(defs) == [("engine.robustness", "latent_survival"), ("engine.robustness", "survival_latent")]
