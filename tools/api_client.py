"""A Python client generated from the API's OpenAPI document: ``python -m tools.api_client [DIR]``.

Writes the document (``serving.app.create_app().openapi()``: no stack needed; less the event
stream, :func:`for_generator`) to ``DIR/openapi.json`` and generates the package ``DIR/cashpos_client`` from it with
openapi-python-client (attrs models, httpx calls). Prints the generator's warnings and exits 1
when one is the document's doing: each is an operation, or a part of one, that the client
lacks, and the text says which part of the document the generator could not use
(``GENERATOR_LIMITS``: what it cannot do whatever the document). ``tests/test_api_client.py``
generates, compiles, type-checks and imports it, and reads a position with it from a real stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "cashpos_client"
SSE = "text/event-stream"
# The generator's own settings: no post hooks (they would run ruff from PATH on the output).
CONFIG = {"package_name_override": PACKAGE, "project_name_override": PACKAGE, "post_hooks": []}
# What the generator cannot do, whatever the document: an NDJSON request body (POST
# /v1/events:batch is generated with its JSON-array body only).
GENERATOR_LIMITS = ("Unsupported content type application/x-ndjson",)


@dataclass
class Generated:
    package: Path  # DIR/cashpos_client
    document: Path  # DIR/openapi.json
    warnings: list[str]  # the generator's warnings, one block each
    output: str  # everything it printed
    left_out: list[str]  # operations not given to the generator (for_generator)

    @property
    def faults(self) -> list[str]:
        """The warnings that are the document's doing (not one of GENERATOR_LIMITS alone)."""
        return [w for w in self.warnings if not _limit_only(w)]


def _limit_only(warning: str) -> bool:
    if "will not be generated" in warning or "not supported" in warning:
        return False
    lines = [ln for ln in warning.splitlines()[1:] if ln.startswith(("Unsupported", "Unknown", "Invalid"))]
    return bool(lines) and all(ln.strip() in GENERATOR_LIMITS for ln in lines)


def document() -> dict[str, object]:
    """The OpenAPI document the API serves at /openapi.json."""
    from serving.app import create_app

    return create_app().openapi()


def for_generator(doc: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The document less the operations whose success is an event stream (GET /v1/stream): the
    generator would read the endless body whole, and its code calls ``from_dict`` on the text.
    Returns the document and the operations left out ("GET /v1/stream")."""
    left_out: list[str] = []
    for path, item in list(doc.get("paths", {}).items()):
        for method, op in list(item.items()):
            ok = (op.get("responses") or {}).get("200") if isinstance(op, dict) else None
            if isinstance(ok, dict) and SSE in (ok.get("content") or {}):
                del item[method]
                left_out.append(f"{method.upper()} {path}")
        if not item:
            del doc["paths"][path]
    return doc, left_out


def generate(out: Path) -> Generated:
    """The document in ``out/openapi.json``, the client in ``out/cashpos_client``; raises
    ``RuntimeError`` if the generator fails outright."""
    out.mkdir(parents=True, exist_ok=True)
    doc = out / "openapi.json"
    spec, left_out = for_generator(document())
    doc.write_text(json.dumps(spec, ensure_ascii=False, indent=1), encoding="utf-8")
    config = out / "openapi-python-client.json"
    config.write_text(json.dumps(CONFIG))
    package = out / PACKAGE
    generator = Path(sys.executable).parent / "openapi-python-client"
    cmd = [str(generator), "generate", "--path", str(doc), "--output-path", str(package)]
    cmd += ["--meta", "none", "--config", str(config), "--overwrite"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or not (package / "__init__.py").exists():
        raise RuntimeError(f"openapi-python-client failed ({proc.returncode}):\n{output}")
    return Generated(package, doc, _warnings(output), output, left_out)


def _warnings(output: str) -> list[str]:
    """The generator's warning blocks (``WARNING parsing ...`` and the lines up to the next blank
    pair), without its closing advice to file an issue."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("WARNING"):
            if current:
                blocks.append("\n".join(current).strip())
            current = [line]
        elif current is not None:
            if line.startswith("If you believe this was a mistake"):
                blocks.append("\n".join(current).strip())
                current = None
            else:
                current.append(line)
    if current:
        blocks.append("\n".join(current).strip())
    return blocks


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "build/api-client")
    gen = generate(out)
    print(f"{gen.package} generated from {gen.document}")
    if gen.left_out:
        print(f"left out (event streams: read them with an SSE client): {', '.join(gen.left_out)}")
    for w in gen.warnings:
        print(("" if w in gen.faults else "(a limit of the generator) ") + w, end="\n\n")
    return 1 if gen.faults else 0


if __name__ == "__main__":
    sys.exit(main())
