"""The import rules of ARCHITECTURE.md: the line runs one way, and no part reaches back up it.

Every `import` in evalkit/ counts, inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evalkit"

# part -> parts it must never import (a part is a module or package directly under evalkit/,
# with models/qwen_vl's bench commands counted as their own part: they drive the whole line)
NEVER = {
    "errors": {"*"},
    "task": {"registry", "prompts", "chat", "metrics", "models", "runner", "results", "api", "cli", "distributed"},
    "chat": {"registry", "prompts", "metrics", "models", "runner", "results", "api", "cli", "data"},
    "prompts": {"registry", "metrics", "models", "runner", "results", "api", "cli", "data"},
    "data": {"registry", "prompts", "chat", "metrics", "models", "runner", "results", "api", "cli"},
    "metrics": {"registry", "prompts", "chat", "models", "runner", "results", "api", "cli"},
    "registry": {"prompts", "models", "runner", "results", "api", "cli"},
    "models": {"registry", "metrics", "runner", "results", "api", "cli", "demo"},
    "runner": {"api", "cli", "bench"},
    "distributed": {"api", "cli", "runner", "results", "models", "bench"},
    "api": {"cli"},
    "results": {"models", "runner", "prompts", "cli", "bench"},
    "demo": {"cli", "api", "results", "runner"},
    "integrations": {"cli", "api", "results", "runner", "registry"},
}
SUPPORT = {"resources", "quiet", "argtypes", "timing", "errors"}


def part_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "evalkit" or len(parts) == 1:
        return None
    if parts[1:3] == ["models", "qwen_vl"] and len(parts) > 3 and parts[3].startswith("bench"):
        return "bench"
    return parts[1]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "evalkit":
                found.update(f"evalkit.{a.name}" for a in node.names)
    return found


@functools.cache
def edges() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        source = part_of(module)
        for target in imports(path):
            dest = part_of(target)
            if source and dest and dest != source:
                out.append((source, dest, f"{path.relative_to(PACKAGE.parent)} imports {target}"))
    return out


@pytest.mark.parametrize("source", sorted(NEVER))
def test_no_part_imports_what_it_never_may(source):
    banned = NEVER[source]
    wrong = [where for s, d, where in edges() if s == source and ("*" in banned or d in banned)]
    assert not wrong, "\n".join(wrong)


def test_support_modules_import_no_part_of_the_line():
    wrong = [where for s, d, where in edges() if s in SUPPORT and d not in SUPPORT]
    assert not wrong, "\n".join(wrong)


def test_every_module_is_on_the_map():
    """Each package and module of evalkit/ (data's and metrics' adapters aside: their folder is the entry)."""
    mapped = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    listed = [p for p in PACKAGE.iterdir() if not p.name.startswith("_") and (p.suffix == ".py" or p.is_dir())]
    listed += [p for sub in ("results", "models", "models/qwen_vl") for p in (PACKAGE / sub).glob("*.py")
               if not p.name.startswith("_")]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in listed if p.stem not in mapped)
    assert not missing, f"not in ARCHITECTURE.md: {missing}"


def test_the_nouns_reach_into_data_only_for_url_images():
    wrong = [where for s, d, where in edges() if s == "task" and not where.endswith("imports evalkit.data.remote")
             and d not in SUPPORT]
    assert not wrong, "\n".join(wrong)
