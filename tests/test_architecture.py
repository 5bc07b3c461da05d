"""Dependencies point one way: composition roots → routers → api → domain packages → core.

Read from the source with `ast` (nothing is imported), so a lazy import inside a function counts
like one at the top. A package may import its own modules, the packages of its own layer (if the
package graph stays free of cycles) and those of any layer below it; never one above.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

# Top to bottom. A new package under app/ must be placed here before the test passes.
LAYERS: list[tuple[str, ...]] = [
    # Composition roots and tools: they build and run the rest; nothing imports them back.
    ("main", "runtime", "cli", "production", "sandbox", "migrations"),
    ("routers",),  # HTTP only: parse, call a service, answer
    ("api",),  # auth, dependencies, middleware, problem+json, rate limits
    ("web",),  # the pages' templates, stylesheet and translations (gettext with Babel)
    # The domain packages, in the order their uses run today: partners feeds read delivery
    # outcomes; privacy exports and erases what intake and updates wrote; delivery records
    # the updates it is given; updates follow enquiries that intake stored.
    # Casework is people working enquiries: it redrives deliveries, re-enables partners'
    # subscriptions and moves parts as updates do.
    # The conversation after submission: it closes parts as casework does and sends
    # follow-ups with the dispatcher's snapshot.
    # The Open311 front door: a channel in front of intake and the conversation.
    ("open311",),
    ("conversation",),
    ("casework",),
    ("partners", "privacy", "alerts"),
    ("delivery",),
    ("updates",),
    # Photos and documents: checked, re-encoded, sealed, stored; read by intake's rule.
    ("attachments",),
    ("intake",),
    ("adapters", "clients"),  # one module per back-office protocol; API clients and keys
    ("catalogue",),  # organisations, services, areas, routing: data read at start-up
    ("core",),  # db, models, settings, crypto, outbound, logs, errors: imports no app package
]

APP = Path(__file__).resolve().parent.parent / "app"


def _rank() -> dict[str, int]:
    return {package: depth for depth, layer in enumerate(LAYERS) for package in layer}


def _package_of(path: Path) -> tuple[str, str | None]:
    """(dotted module name, its top-level package under app/ or None for app/__init__.py)."""
    parts = path.relative_to(APP.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts), parts[1] if len(parts) > 1 else None


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """Every app module or name this module imports, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "app":  # `from app import x`: x is the package
                yield from ((f"app.{alias.name}", node.lineno) for alias in node.names)
            else:
                yield base, node.lineno


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) → where, for every import across packages."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(APP.rglob("*.py")):
        module, package = _package_of(path)
        if package is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, line in _imported(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            if parts[0] == "app" and len(parts) > 1 and parts[1] != package:
                edges[(package, parts[1])].append(f"{path.relative_to(APP.parent)}:{line}")
    return edges


def _packages() -> set[str]:
    return {
        path.stem if path.is_file() else path.name
        for path in APP.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }


def test_every_package_has_a_layer():
    unplaced = _packages() - set(_rank())
    assert not unplaced, f"place these packages in LAYERS: {sorted(unplaced)}"


def test_no_package_imports_a_layer_above_its_own():
    rank = _rank()
    upward = [
        f"{importer} → {imported} ({', '.join(where)})"
        for (importer, imported), where in sorted(_edges().items())
        if rank.get(imported, -1) < rank.get(importer, -1)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_packages_form_no_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported in _edges():
        graph[importer].add(imported)
    done: set[str] = set()

    def cycle_from(package: str, path: list[str]) -> list[str] | None:
        if package in path:
            return [*path[path.index(package) :], package]
        if package in done:
            return None
        for imported in sorted(graph[package]):
            found = cycle_from(imported, [*path, package])
            if found:
                return found
        done.add(package)
        return None

    for package in sorted(graph):
        found = cycle_from(package, [])
        assert found is None, "a cycle between packages: " + " → ".join(found)


def test_core_imports_no_other_app_package():
    """Said on its own because it is the rule everything else stands on."""
    assert not [edge for edge in _edges() if edge[0] == "core"]
