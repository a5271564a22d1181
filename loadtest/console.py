"""The runner's lines on stdout: ``[loadtest HH:MM:SS] ...``."""

from __future__ import annotations

import time


def log(msg: str) -> None:
    print(f"[loadtest {time.strftime('%H:%M:%S')}] {msg}", flush=True)
