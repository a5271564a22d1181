"""Habits the checkers cannot enforce alone.

Every ``# type: ignore`` names the error codes it silences and says why, on the same line:
``# type: ignore[code]  # reason``. A bare ignore hides every error on its line, present and
future (ruff's PGH003 catches that one too, but only in the files ruff is run on); an ignore
without a reason leaves the next reader to guess whether it is still needed.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = frozenset({"build", "var", "node_modules", "__pycache__"})  # and every dot-directory
_IGNORE = re.compile(r"type:\s*ignore")
# The form required: codes in brackets, then a comment of its own with at least one word.
_WELL_FORMED = re.compile(r"type:\s*ignore\[\s*[\w-]+(\s*,\s*[\w-]+)*\s*\]\s*#\s*\S*\w")


def _python_files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*.py*")):
        rel = path.relative_to(root).parts
        if path.suffix not in (".py", ".pyi") or any(p in SKIP_DIRS or p.startswith(".") for p in rel[:-1]):
            continue
        out.append(path)
    return out


def _comments(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment; a file that does not tokenize is read line by line."""
    try:
        return [
            (tok.start[0], tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT
        ]
    except (tokenize.TokenError, SyntaxError):
        return [(i, line[line.index("#") :]) for i, line in enumerate(source.splitlines(), 1) if "#" in line]


def bad_ignores(comment: str) -> bool:
    """Whether a comment holds a ``type: ignore`` without its codes or without a reason."""
    return bool(_IGNORE.search(comment)) and not _WELL_FORMED.search(comment)


@pytest.mark.parametrize(
    ("comment", "bad"),
    [
        ("# type: ignore", True),
        ("# type: ignore  # rocksdict has no stubs", True),
        ("# type: ignore[attr-defined]", True),
        ("# type: ignore[attr-defined]  #", True),
        ("# type: ignore[]  # why", True),
        ("# type: ignore[attr-defined]  # faust: Worker has no stubs", False),
        ("# type: ignore[method-assign,assignment]  # rocksdict.pyi: a method; it is a property", False),
        ("# type: ignore[misc, valid-type]  # aiokafka has no types", False),
        ("# noqa: E501  # type: ignore[arg-type]  # locust says str | dict", False),
        ("# an ordinary comment", False),
    ],
)
def test_the_rule(comment: str, bad: bool) -> None:
    assert bad_ignores(comment) is bad


def test_every_type_ignore_names_its_codes_and_its_reason() -> None:
    found = []
    for path in _python_files(ROOT):
        for line, text in _comments(path.read_text(encoding="utf-8", errors="replace")):
            if bad_ignores(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text.strip()}")
    assert not found, "write `# type: ignore[code]  # reason` (or fix the type):\n" + "\n".join(found)
