"""The layering of DESIGN.md, checked on the source: what imports what, and how big a file is.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a circle
that only type checkers or a lazy import close is still a circle a reader has to follow.
A unit is a package under ``hsmkms`` (``api``, ``service``, ``store``, ``hsm``, ``modes``,
``model``) or a top-level module (``kms``, ``compose``, ``specs``, ...).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hsmkms"
MAX_LINES = 500


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


MODULES = dict(_modules())


def _imports(name: str, path: Path) -> Iterator[str]:
    """The hsmkms modules (or packages) a module imports, wherever the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        src = _unit(name)
        for target in _imports(name, path):
            if target.split(".")[0] == "hsmkms" and _unit(target) != src:
                graph.setdefault(src, set()).add(_unit(target))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, if it has any (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_units_of_hsmkms_import_each_other_without_a_circle():
    cycle = _cycle(_unit_graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "unit, forbidden",
    [
        # The operation layer knows nothing of HTTP, the faces above it, or the modes.
        ("hsmkms.service", {"hsmkms.api", "hsmkms.kms", "hsmkms.cli", "hsmkms.compose",
                            "hsmkms.modes", "hsmkms.home"}),
        # The wire knows nothing of PKCS#11, the store or the operation layer's insides.
        ("hsmkms.api", {"hsmkms.hsm", "hsmkms.store", "hsmkms.service", "hsmkms.modes"}),
        # The token layer knows nothing of KMS, HTTP or the store.
        ("hsmkms.hsm", {"hsmkms.service", "hsmkms.api", "hsmkms.store", "hsmkms.kms",
                        "hsmkms.model", "hsmkms.blob", "hsmkms.modes"}),
        ("hsmkms.store", {"hsmkms.service", "hsmkms.api", "hsmkms.hsm", "hsmkms.kms"}),
        # The nouns at the bottom import nothing of hsmkms.
        ("hsmkms.specs", {u for u in {_unit(m) for m in MODULES} if u != "hsmkms.specs"}),
        ("hsmkms.identity", {u for u in {_unit(m) for m in MODULES} if u != "hsmkms.identity"}),
    ],
)  # fmt: skip
def test_a_layer_does_not_import_what_lies_above_or_beside_it(unit, forbidden):
    imported = _unit_graph().get(unit, set())
    assert not imported & forbidden, sorted(imported & forbidden)


# The benchmark's count of a token's objects is independent of hsmkms's token layer on purpose:
# it checks that layer's claim (token objects flat in the number of keys, issue 22).
INDEPENDENT = {"bench/token_count.py"}


def test_only_the_token_layer_imports_pkcs11():
    offenders = []
    for base in ("hsmkms", "tests", "scripts", "bench"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if path.is_relative_to(PACKAGE / "hsm") or "node_modules" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )  # fmt: skip
                if any(n == "pkcs11" or n.startswith("pkcs11.") for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not set(offenders) - INDEPENDENT


def test_no_file_of_the_package_is_longer_than_500_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long


def test_the_benchmark_is_not_part_of_the_installed_package():
    assert not (PACKAGE / "bench").exists()


def test_the_readme_names_every_operation_served():
    import hsmkms.service  # noqa: F401  (registers the handlers)
    from hsmkms.service.core import OPERATIONS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Operations") : text.index("### Configuration")]
    missing = sorted(op for op in OPERATIONS if op not in section.replace("\n  ", " "))
    assert not missing
    assert f"All {len(OPERATIONS)} operations" in section
