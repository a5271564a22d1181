"""CPU and memory of every process of a run: ``monitor.csv``.

Every ``every`` seconds, the cores used and the RSS of each component (Tansu, Redis, the worker,
the API, Locust: each with its child processes), and what the rest of the machine used.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import psutil


class Monitor(threading.Thread):
    """Samples CPU (cores used) and RSS of each component every ``every`` seconds."""

    def __init__(self, groups: dict[str, int], path: Path, every: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.groups = dict(groups)
        self.path = path
        self.every = every
        self.stop_event = threading.Event()
        self.rows: list[dict[str, float]] = []
        self._procs: dict[int, psutil.Process] = {}
        self.latest: dict[str, float] = {}

    def add(self, name: str, pid: int) -> None:
        self.groups[name] = pid

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = self._procs.get(pid) or psutil.Process(pid)
            self._procs[pid] = root
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample(self) -> tuple[dict[str, float], dict[str, float]]:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for name, pid in list(self.groups.items()):
            c = r = 0.0
            for p in self._tree(pid):
                try:
                    t = p.cpu_times()
                    c += t.user + t.system
                    r += p.memory_info().rss
                except psutil.Error:
                    pass
            cpu[name], rss[name] = c, r / 2**20
        return cpu, rss

    def run(self) -> None:
        t_prev = time.monotonic()
        cpu_prev, _ = self._sample()
        sys_prev = psutil.cpu_times()
        t0 = t_prev
        while not self.stop_event.wait(self.every):
            t = time.monotonic()
            cpu, rss = self._sample()
            sys_now = psutil.cpu_times()
            dt = max(1e-6, t - t_prev)
            row: dict[str, float] = {"t": round(t - t0, 1)}
            ours = 0.0
            for name in list(self.groups):
                cores = max(0.0, (cpu.get(name, 0) - cpu_prev.get(name, 0)) / dt)
                ours += cores
                row[f"{name}_cores"] = round(cores, 3)
                row[f"{name}_rss_mb"] = round(rss.get(name, 0), 1)
            busy = (_busy(sys_now) - _busy(sys_prev)) / dt
            row["machine_busy_cores"] = round(busy, 3)
            row["other_cores"] = round(max(0.0, busy - ours), 3)
            self.rows.append(row)
            self.latest = row
            t_prev, cpu_prev, sys_prev = t, cpu, sys_now

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        if self.rows:
            keys = list(self.rows[-1])
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)


def _busy(t: psutil._common.scputimes) -> float:
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
