"""The layers, read from every module's source (AST): who may import whom, and what `rota` may do.

- `rota` is the domain: it imports nothing of ours, reads no clock (time is an argument) and
  draws no terminal output (that is the CLI's).
- `bot` reaches the Slack layer only through its pure Block Kit builders (`handlers.blocks`);
  the Bolt app factory is the one place that registers the surfaces, lazily.
- The builders import no Slack surface (a module with `register(app, …)`), so nothing in
  `bot` can reach a surface through them.
- Delivery (`bot.delivery`, `bot.channels`) takes only functions from them (builders,
  formatters), never an identifier: those it depends on are its own (`bot/delivery/actions.py`,
  `bot/delivery/metadata.py`), and the Slack layer takes them from there.
- `bot` and `handlers` never import each other in a cycle at module level. (The builders render
  values `bot` defines, so `bot` and `handlers.blocks` import each other's modules: never in a
  cycle, which is what breaks an import.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "handlers", "rota")
# The modules that deliver: the outbox, the dispatcher and its steps, and the channels.
DELIVERY = ("bot.delivery", "bot.channels")
# The Bolt app factory registers every Slack surface: the composition root, and only inside it.
SURFACE_REGISTRY = "bot.web.app"
# No module of rota may draw on the terminal: the importer reports progress to the CLI's bar.
TERMINAL_EXCEPTIONS: set[str] = set()
CLOCK_READS = {
    "datetime": {"now", "utcnow", "today"},
    "date": {"today"},
    "time": {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "localtime"},
    "func": {"now", "current_timestamp", "localtimestamp"},
}
TERMINAL_MODULES = {"tqdm", "click", "rich", "curses"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    """Every module of ours, by dotted name."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


MODULES = source_files()


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, *, top_level_only: bool) -> Iterator[tuple[str, int]]:
    """(module, line) for each import in a module: at any depth, or at module level only.

    `from a import b` names `a.b` when that is a module of ours, else `a`.
    """
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _module_level(tree.body) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, path.name == "__init__.py")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in MODULES else base), node.lineno


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run when the module is imported (not in functions, not TYPE_CHECKING-only)."""
    for node in body:
        if isinstance(node, ast.If):
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                continue
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level(
                node.body
                + node.orelse
                + node.finalbody
                + [s for h in node.handlers for s in h.body]
            )
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node


def of_package(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def modules_of(package: str) -> list[str]:
    return [name for name in MODULES if of_package(name, package)]


# rota: the domain ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", modules_of("rota"))
def test_rota_imports_nothing_of_ours(module: str) -> None:
    ours = [
        (imported, line)
        for imported, line in imports_of(module, top_level_only=False)
        if any(of_package(imported, p) for p in ("bot", "handlers", "tests"))
    ]
    assert ours == []


def clock_reads(tree: ast.AST) -> list[tuple[str, int]]:
    """`datetime.now()`, `date.today()`, `time.time()`, SQL `func.now()`, … and their imports."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name | ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
            if node.attr in CLOCK_READS.get(owner, ()):
                found.append((f"{owner}.{node.attr}", node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            names = {alias.name for alias in node.names} & CLOCK_READS["time"]
            found.extend((f"time.{n}", node.lineno) for n in sorted(names))
    return found


@pytest.mark.parametrize("module", modules_of("rota"))
def test_rota_reads_no_clock(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    assert clock_reads(tree) == []


def terminal_output(tree: ast.AST) -> list[tuple[str, int]]:
    """`print`, `input`, `sys.stdout`/`sys.stderr`, and progress-bar or console libraries."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("print", "input"):
                found.append((node.func.id, node.lineno))
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append((f"sys.{node.attr}", node.lineno))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found.extend(
                (n, node.lineno) for n in names if n and n.split(".")[0] in TERMINAL_MODULES
            )
    return found


@pytest.mark.parametrize("module", sorted(set(modules_of("rota")) - TERMINAL_EXCEPTIONS))
def test_rota_draws_no_terminal_output(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    assert terminal_output(tree) == []


def test_the_checks_find_what_they_look_for() -> None:
    """The rota checks are not vacuous: they catch each thing they forbid."""
    source = (
        "import sys\nfrom datetime import date, datetime\nfrom time import monotonic\n"
        "import tqdm\nfrom sqlalchemy import func\n"
        "def f():\n    print(datetime.now(), date.today(), func.now())\n"
        "    sys.stderr.write('x')\n"
    )
    tree = ast.parse(source)
    assert [n for n, _ in clock_reads(tree)] == [
        "time.monotonic",
        "datetime.now",
        "date.today",
        "func.now",
    ]
    assert sorted(n for n, _ in terminal_output(tree)) == ["print", "sys.stderr", "tqdm"]


# bot -> handlers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", modules_of("bot"))
def test_bot_reaches_slack_only_through_block_kit_builders(module: str) -> None:
    surfaces = [
        (imported, line)
        for imported, line in imports_of(module, top_level_only=False)
        if of_package(imported, "handlers") and not of_package(imported, "handlers.blocks")
    ]
    if module == SURFACE_REGISTRY:
        # It registers the surfaces, but only once the app is built (never at import time).
        at_import = [
            imported
            for imported, _ in imports_of(module, top_level_only=True)
            if of_package(imported, "handlers")
        ]
        assert at_import == []
        return
    assert surfaces == []


def surfaces() -> set[str]:
    """The Slack surfaces: the modules of `handlers` with a `register` function."""
    found = set()
    for name in modules_of("handlers"):
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body):
            found.add(name)
    return found


def test_the_surfaces_are_found() -> None:
    assert {"handlers.commands", "handlers.actions", "handlers.home"} <= surfaces()


@pytest.mark.parametrize("module", modules_of("handlers.blocks"))
def test_block_kit_builders_import_no_slack_surface(module: str) -> None:
    found = surfaces()
    imported = [(m, line) for m, line in imports_of(module, top_level_only=False) if m in found]
    assert imported == []


def functions_of(module: str) -> set[str]:
    """The functions a module of ours defines at its top level."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def taken_from_handlers(name: str, source: str) -> list[tuple[str, int]]:
    """What a module (`name`, its `source`) imports from `handlers` that is not a function
    defined there: an identifier, a label, a module."""
    taken = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            taken += [(m, node.lineno) for m in modules if of_package(m, "handlers")]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, name, False)
            if not of_package(base, "handlers"):
                continue
            defined = functions_of(base) if base in MODULES else set()
            taken += [
                (f"{base}.{alias.name}", node.lineno)
                for alias in node.names
                if alias.name not in defined
            ]
    return taken


@pytest.mark.parametrize("module", [m for p in DELIVERY for m in modules_of(p)])
def test_delivery_takes_only_functions_from_the_slack_layer(module: str) -> None:
    assert taken_from_handlers(module, MODULES[module].read_text(encoding="utf-8")) == []


def test_the_delivery_check_finds_an_identifier_taken_from_the_slack_layer() -> None:
    source = (
        "from handlers.blocks.prompt import PROMPT_ACTIONS_BLOCK, build_prompt_message\n"
        "from handlers.ids import ACK\nimport handlers.blocks.card\n"
    )
    assert taken_from_handlers("bot.delivery.x", source) == [
        ("handlers.blocks.prompt.PROMPT_ACTIONS_BLOCK", 1),
        ("handlers.ids.ACK", 2),
        ("handlers.blocks.card", 3),
    ]


def _graph() -> dict[str, set[str]]:
    """Module-level imports among our modules; importing a module runs its packages' too."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for imported, _ in imports_of(name, top_level_only=True):
            parts = imported.split(".")
            for end in range(1, len(parts) + 1):
                target = ".".join(parts[:end])
                if target in MODULES and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_bot_and_handlers_do_not_import_each_other_in_a_cycle() -> None:
    mixed = [
        sorted(component)
        for component in _cycles(_graph())
        if any(of_package(m, "bot") for m in component)
        and any(of_package(m, "handlers") for m in component)
    ]
    assert mixed == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycles({"bot.a": {"handlers.b"}, "handlers.b": {"bot.a"}, "rota.c": set()}) == [
        {"bot.a", "handlers.b"}
    ]


# the vocabulary ------------------------------------------------------------------------------


def test_the_slack_layer_takes_its_vocabulary_from_the_domain() -> None:
    from bot import models
    from bot.delivery import actions
    from bot.delivery.kinds import RESPONSE_KINDS
    from handlers import ids

    assert ids.CATEGORIES is models.CATEGORIES
    assert ids.URGENCIES is models.URGENCIES
    assert ids.RESPONSE_KIND_BY_ACTION is actions.RESPONSE_KIND_BY_ACTION
    assert ids.CONTACT_ACTIONS is actions.CONTACT_ACTIONS
    assert ids.RESPONSE_KIND_BY_ACTION == {
        "handover_ack": "acknowledged",
        "handover_has_info": "has_information",
        "handover_not_known": "not_known",
        "handover_redirect": "redirected",
    }
    assert set(ids.RESPONSE_KIND_BY_ACTION.values()) == set(RESPONSE_KINDS)
