"""One module owns each on-disk and wire format: nobody else spells it.

* RocksDB keys (tags ``p j c i o m a y h k`` followed by NUL): ``state/layout.py``;
* the Redis serving copy's value ``{version}|{json}`` (split, built, or matched in Lua) and its
  fields ``{account}|{fiscal_year}`` and ``{org}|{account}`` (positions, threshold overrides):
  ``state/projection.py``; the marker field's name: ``cashpos/names.py`` (``META_FIELD``);
* which side (and input topic) an event kind or a topic is: ``cashpos/names.py``.

The source tree is scanned with regular expressions (tests, virtualenvs and build output
excluded); a literal spelt outside its owner fails, naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"tests", "build", "dist", "node_modules", "site-packages", "__pycache__"}

# A string literal (any b/f/r prefix) that starts with a key tag and a NUL: b"p\0", "j\0",
# f"p\0{org}", b"a\x00q\x00", ...
ROCKSDB_TAG = re.compile(r"""(?<![\w"'])[bBfFrRuU]{0,2}(["'])[pjciomayhkwsf]\\(?:0|x00)""")
# The serving copy's value split or built by hand, its version matched in Lua.
REDIS_VALUE = re.compile(
    r"""partition\(\s*b["']\|["']\s*\)|split\(\s*b["']\|["']|b["']%d\|%s["']|\^\(%d\+\)\|"""
)
# A two-part field joined or split on ``|`` by hand (f"{a}|{b}", field.partition("|")).
REDIS_FIELD = re.compile(r"""[fF](["'])\{[^{}"']*\}\|\{[^{}"']*\}\1|\.r?(?:partition|split)\(\s*["']\|["']""")
# The marker field's name as a literal.
META_LITERAL = re.compile(r"""(["'])_meta\1""")
# A side decided by hand from a topic's name or a kind.
SIDE = re.compile(
    r"""endswith\(\s*["']\.(?:revenue|expenditure)["']"""
    r"""|\b(?:revenue|expenditure)["']?\s+if\s+[\w.]*kind\b"""
    r"""|\b(?:revenue|expenditure)["']?\s+if\s+[^\n]*_KINDS\b"""
)

# (what, pattern, owners, the owner spells it with such a literal: a rule that stops finding it
# there has gone stale)
RULES = [
    ("RocksDB key tag", ROCKSDB_TAG, {"state/layout.py"}, True),
    ("serving-copy value format", REDIS_VALUE, {"state/projection.py"}, True),
    ("serving-copy field format", REDIS_FIELD, {"state/projection.py"}, True),
    ("marker field name", META_LITERAL, {"cashpos/names.py"}, True),
    ("side of a kind or topic", SIDE, {"cashpos/names.py"}, False),  # names.py uses constants
]


def _sources() -> list[Path]:
    out = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts[:-1]
        if any(p in SKIP_DIRS or p.startswith(".") or p.endswith(".egg-info") or "venv" in p for p in parts):
            continue
        out.append(path)
    return sorted(out)


def _hits(pattern: re.Pattern[str], text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]


def test_the_patterns_catch_what_they_are_for() -> None:
    for bad in ['b"p\\0"', '"j\\0"', 'f"p\\0{org}\\0"', "b'o\\0'", 'f"a\\0s\\0{org}"', 'b"m\\x00seq"']:
        assert ROCKSDB_TAG.search(bad), bad
    for ok in ['"\\0".join(x)', 'b"\\0"', 'key.split("\\0")', '"top\\0"']:
        assert not ROCKSDB_TAG.search(ok), ok
    for bad in [
        'v.partition(b"|")',
        "raw.partition(b'|')[0]",
        'b"%d|%s" % (v, b)',
        "string.match(cur, '^(%d+)|')",
    ]:
        assert REDIS_VALUE.search(bad), bad
    assert not REDIS_VALUE.search('field.partition("|")')
    for bad in ['f"{org}|{account}"', "key.partition('|')", 'f"{account}|{fiscal_year}"', 'k.split("|")']:
        assert REDIS_FIELD.search(bad), bad
    for ok in ['"|".join(RULES)', 'f"{org}|{account}|{fy}|{cash}\\n"', 'raw.partition(b"|")']:
        assert not REDIS_FIELD.search(ok), ok
    assert META_LITERAL.search("local meta_field = '_meta'") and META_LITERAL.search('x == "_meta"')
    assert not META_LITERAL.search("the ``_meta`` field")
    for bad in [
        'topic.endswith(".revenue")',
        '"revenue" if k in REVENUE_KINDS else',
        'topics.revenue if kind == "receipt" else',
        '"revenue" if rec.kind == "receipt"',
    ]:
        assert SIDE.search(bad), bad
    assert not SIDE.search("f\"{'revenue' if revenue else 'expenditure'} side\"")


def test_each_format_is_spelt_only_by_its_owner() -> None:
    sources = _sources()
    names = {p.relative_to(ROOT).as_posix() for p in sources}
    problems = []
    for what, pattern, owners, literal in RULES:
        assert owners <= names, f"owner of the {what} missing: {owners - names}"
        owned = 0
        for path in sources:
            rel = path.relative_to(ROOT).as_posix()
            lines = _hits(pattern, path.read_text(encoding="utf-8"))
            if rel in owners:
                owned += len(lines)
            else:
                problems += [f"{rel}:{n}: {what} spelt outside {', '.join(sorted(owners))}" for n in lines]
        assert owned or not literal, (
            f"the {what} pattern no longer finds anything in its owner (a stale rule?)"
        )
    assert not problems, "\n".join(problems)
