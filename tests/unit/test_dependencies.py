"""The dependency rule between packages (docs/architecture.md), read from the source.

Every module of every package is parsed (ast, nothing imported), so the rule holds for
imports inside functions too, which is where the CLI and serving keep their heavy ones.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# What each package may import of the project; lower layers never import higher ones.
ALLOWED: dict[str, frozenset[str]] = {
    "outcomes": frozenset(),
    "router": frozenset(),
    # The fake Bedrock is a test double beside serving: it knows the outcomes and the
    # ladder, never the client it stands in for.
    "fake_bedrock": frozenset({"router", "outcomes"}),
    "serving": frozenset({"router", "outcomes", "fake_bedrock"}),
    "training": frozenset({"router", "outcomes", "serving"}),
    "labeling": frozenset({"router", "outcomes", "serving"}),
    "tier_router": frozenset(
        {"router", "outcomes", "serving", "training", "labeling", "fake_bedrock"}
    ),
}
LIBRARIES = ("router", "outcomes", "serving", "training", "labeling", "fake_bedrock")
# Besides the CLI, tests and benchmarks, only the offline demos (which start one in
# process) may import the fake Bedrock; serving may import it for those modules alone.
FAKE_BEDROCK = "fake_bedrock"
FAKE_BEDROCK_USERS = {"serving/demo.py", "serving/batch_demo.py"}


@cache
def imports() -> dict[str, frozenset[str]]:
    """Module path (repo-relative) -> absolute module names it imports."""
    out: dict[str, frozenset[str]] = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
                    names.update(f"{node.module}.{a.name}" for a in node.names)
            out[path.relative_to(REPO).as_posix()] = frozenset(names)
    return out


def project_imports(module: str) -> set[str]:
    return {n.split(".")[0] for n in imports()[module]} & set(ALLOWED)


def test_every_package_is_read() -> None:
    read = {m.split("/")[0] for m in imports()}
    assert read == set(ALLOWED)
    # Not vacuous: the parser sees a lazy (in-function) import where one is known to be.
    assert FAKE_BEDROCK in imports()["tier_router/serving_cli.py"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    bad = {
        (m, dep)
        for m in imports()
        if m.split("/")[0] == package
        for dep in project_imports(m) - {package} - ALLOWED[package]
    }
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}; found {bad}"


def test_no_library_imports_the_cli_or_parses_arguments() -> None:
    bad = {
        (m, n.split(".")[0])
        for m, names in imports().items()
        if m.split("/")[0] in LIBRARIES
        for n in names
        if n.split(".")[0] in ("tier_router", "argparse")
    }
    assert not bad, f"command-line code belongs in tier_router/: {bad}"


def test_the_fake_bedrock_is_imported_only_by_the_cli_and_the_demo() -> None:
    users = {
        m
        for m, names in imports().items()
        if any(n == FAKE_BEDROCK or n.startswith(FAKE_BEDROCK + ".") for n in names)
        and m.split("/")[0] not in ("tier_router", FAKE_BEDROCK)
    }
    assert users <= FAKE_BEDROCK_USERS, f"{sorted(users - FAKE_BEDROCK_USERS)} import it"
