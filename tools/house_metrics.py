"""How easy the house is to find one's way in, in numbers: ``python -m tools.house_metrics [DIR ...]``.

For each tree (default: this checkout) prints the largest modules, how many places spell each
format (the rules of ``tests/test_format_owners.py``; the owner counts as one), the number of
``# type: ignore`` outside the tests, the import cycles between modules, and the number of
duplicated-code pairs the ``duplicates`` tool reports. Give an older checkout (``git worktree
add /tmp/old REV``) as a second directory for a before/after table.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_format_owners import RULES

SKIP = {"tests", "build", "dist", "node_modules", "site-packages", "__pycache__", "var", "artifacts"}
TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore")


def sources(root: Path, *, with_tests: bool = False) -> list[Path]:
    out = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts[:-1]
        if any(
            (p in SKIP and not (with_tests and p == "tests"))
            or p.startswith(".")
            or "venv" in p
            or p.endswith(".egg-info")
            for p in parts
        ):
            continue
        out.append(path)
    return sorted(out)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_cycles(root: Path) -> list[list[str]]:
    """Strongly connected components (more than one module) of the module import graph,
    counting imports at any depth of a module (a function-level import is still a dependency)."""
    paths = sources(root)
    mods = {module_name(root, p): p for p in paths}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m and not m.startswith(n + "."):  # a package's own modules aside
                    graph[m].add(n)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def format_places(root: Path) -> dict[str, tuple[int, int]]:
    """Per format: (files spelling it, lines spelling it)."""
    out = {}
    for what, pattern, _owners, _literal in RULES:
        files = lines = 0
        for p in sources(root):
            n = len(pattern.findall(p.read_text(encoding="utf-8")))
            files += n > 0
            lines += n
        out[what] = (files, lines)
    return out


def duplicate_pairs(root: Path) -> int | None:
    tool = shutil.which("duplicates")
    if tool is None:
        return None
    run = subprocess.run(
        [tool, "--repo", str(root), "--most", "1", "--seconds", "120"],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.match(r"(\d+) pairs of places", run.stdout)  # its first line: "N pairs of places (...)"
    return int(m.group(1)) if m else 0


def report(root: Path) -> dict[str, object]:
    paths = sources(root)
    sizes = sorted(
        ((len(p.read_text(encoding="utf-8").splitlines()), p.relative_to(root).as_posix()) for p in paths),
        reverse=True,
    )
    ignores = sum(len(TYPE_IGNORE.findall(p.read_text(encoding="utf-8"))) for p in paths)
    return {
        "largest modules": sizes[:3],
        "formats (files, lines)": format_places(root),
        "type: ignore outside tests": ignores,
        "import cycles": import_cycles(root),
        "duplicated-code rows": duplicate_pairs(root),
    }


def main(argv: list[str]) -> int:
    roots = [Path(a).resolve() for a in argv] or [Path(__file__).resolve().parent.parent]
    for root in roots:
        print(f"## {root}")
        for k, v in report(root).items():
            if isinstance(v, dict):
                print(f"- {k}:")
                for kk, vv in v.items():
                    print(f"    - {kk}: {vv}")
            else:
                print(f"- {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
