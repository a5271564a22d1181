"""The container's HEALTHCHECK: which process the container runs decides what "healthy" means.

``cashpos api``: ``GET /healthz`` answers 200 (the process serves HTTP; readiness, Redis and the
workers, is the load balancer's ``/readyz``). ``cashpos worker``: its internal web server accepts
a connection (its event loop runs). Any other command (``reconcile``, ``token`` ...): alive.
Standard library only (it runs in the image's virtualenv); exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from collections.abc import Mapping


def command(cmdline: bytes) -> str:
    """The cashpos subcommand in a NUL-separated command line ('' if none)."""
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
    for i, arg in enumerate(args):
        if os.path.basename(arg) == "cashpos" and i + 1 < len(args):
            return args[i + 1]
    return ""


def check(cmd: str, env: Mapping[str, str], timeout: float = 2.0) -> str | None:
    """None when the process running ``cashpos {cmd}`` is healthy, else why not."""
    try:
        if cmd == "api":
            port = int(env.get("CASHPOS_API_PORT", "8000"))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
                return None if resp.status == 200 else f"GET /healthz answered {resp.status}"
        if cmd == "worker":
            port = int(env.get("CASHPOS_WORKER_WEB_PORT", "6066"))
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return None
    except (OSError, ValueError) as exc:  # urllib's HTTPError is an OSError
        return f"{exc.__class__.__name__}: {exc}"
    return None


def main() -> int:
    with open("/proc/1/cmdline", "rb") as f:
        cmd = command(f.read())
    why = check(cmd, os.environ)
    if why is not None:
        print(f"cashpos {cmd}: unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
