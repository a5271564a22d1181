"""Run a built cashpos image's processes against the development broker and Redis, and check them.

    STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot flock /tmp/cashpos-heavy.lock \\
        .venv/bin/python deploy/check_image.py localhost/cashpos:test

With ``buildah run`` (chroot isolation: the host's network, so the image's processes reach the
embedded broker and Redis on the loopback): the runtime user, no compiler, the C kernel loaded,
``cashpos --help``; then a worker and the API from the image, events published from the host's
checkout, ``/readyz`` and ``/v1/summary`` answering, the health check, and ``cashpos reconcile``
from the image exact. Prints each result; exit 0 when all hold. docs/operations.md, "The image as
built here", has a run's output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cashpos.devstack import http_get, new_stack
from cashpos.embedded import free_port, start_infra

CLI = "/opt/cashpos/bin/cashpos"
PYTHON = "/opt/cashpos/bin/python"


def buildah(*args: str, check: bool = True) -> str:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=check).stdout.strip()


def run_args(ctr: str, env: dict[str, str], *cmd: str) -> list[str]:
    """``buildah run`` of ``cmd`` in ``ctr`` as the image's user, with the CASHPOS_ variables."""
    out = ["buildah", "run", "--user", "cashpos"]
    for k, v in env.items():
        if k.startswith("CASHPOS_"):
            out += ["-e", f"{k}={v}"]
    return [*out, ctr, "--", *cmd]


def check_image(image: str, events: int) -> bool:
    tmp = Path(tempfile.mkdtemp(prefix="cashpos-image-"))
    infra = start_infra(tmp)
    stack = new_stack(infra, tmp / "stack", partitions=4)
    ctrs: list[str] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ok = True
    try:
        worker, api, tool = (buildah("from", image) for _ in range(3))
        ctrs += [worker, api, tool]
        uid = buildah("run", "--user", "cashpos", tool, "--", "id")
        compiler = buildah("run", tool, "--", "sh", "-c", "command -v gcc cc || echo none", check=False)
        kernel = buildah(
            "run",
            "--user",
            "cashpos",
            tool,
            "--",
            PYTHON,
            "-c",
            "from state import native; assert native.kernel is not None; print(native.kernel.__file__)",
        )
        usage = buildah("run", "--user", "cashpos", tool, "--", CLI, "--help").splitlines()[0]
        print(f"user: {uid}\ncompiler: {compiler}\nkernel: {kernel}\ncashpos --help: {usage}")
        ok &= "uid=10001(cashpos)" in uid and compiler == "none" and kernel.endswith(".so")
        web = free_port()
        env = {
            "worker": stack.env(CASHPOS_WORKER_ID="image-w1", CASHPOS_WORKER_WEB_PORT=str(web)),
            "api": stack.env(CASHPOS_REDIS_URL=stack.redis_urls["api"]),
        }
        for name, ctr in (("worker", worker), ("api", api)):
            with open(tmp / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    run_args(ctr, env[name], CLI, name), stdout=log, stderr=subprocess.STDOUT
                )
        stack.procs.update(procs)  # wait_ready fails fast if one of them exits
        sim = stack.start("sim", "simulate", "--total", str(events), "--rate", "3000", "--speed", "60")
        sim.wait(300)
        del stack.procs["sim"]
        t0 = time.monotonic()
        stack.wait_ready(timeout=120)
        status, body = http_get(f"{stack.api}/v1/summary", stack.headers)
        govs = json.loads(body)["national"]["governments"]
        print(
            f"API from the image ready after {time.monotonic() - t0:.1f}s; /v1/summary {status}, {govs} governments"
        )
        ok &= status == 200 and govs == 243
        probe = (
            "import sys; sys.path.insert(0, '/opt/cashpos'); import healthcheck as h; "
            f"print(h.check('api', {{'CASHPOS_API_PORT': '{stack.api_port}'}}) is None, "
            f"h.check('worker', {{'CASHPOS_WORKER_WEB_PORT': '{web}'}}) is None, "
            f"h.check('worker', {{'CASHPOS_WORKER_WEB_PORT': '{free_port()}'}}, 1) is not None)"
        )
        health = buildah("run", "--user", "cashpos", tool, "--", PYTHON, "-c", probe)
        print(f"health check (api healthy, worker healthy, no worker unhealthy): {health}")
        ok &= health == "True True True"
        for _ in range(10):  # until the worker has folded everything
            rec = subprocess.run(
                run_args(tool, stack.env(), CLI, "reconcile"), check=False, capture_output=True, text=True
            )
            print(f"reconcile from the image: exit {rec.returncode}: {rec.stdout.strip()[:300]}")
            if rec.returncode == 0:
                break
            time.sleep(3)
        ok &= rec.returncode == 0
    except Exception as exc:  # noqa: BLE001 - reported as a failed check, then cleaned up
        print(f"FAILED: {exc!r}")
        ok = False
    finally:
        for name, p in procs.items():
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            tail = (tmp / f"{name}.log").read_text(errors="replace").splitlines()[-3:]
            print(f"--- {name} (exit {p.returncode}), last lines:", *tail, sep="\n")
        for ctr in ctrs:
            buildah("rm", ctr, check=False)
        infra.stop()
    print("image check:", "PASS" if ok else "FAIL")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="the image to check, e.g. localhost/cashpos:test")
    ap.add_argument("--events", type=int, default=3000, help="simulator events besides the opening balances")
    args = ap.parse_args()
    return 0 if check_image(args.image, args.events) else 1


if __name__ == "__main__":
    sys.exit(main())
