"""``summary.md``: the verdict, the figures and how the cores were shared, for a person to read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1 else f"{v:,.1f}".rstrip("0").rstrip(".")
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_markdown(s: dict[str, Any], rows: list[dict[str, str]], path: Path) -> str:
    plan = s["plan"]
    L: list[str] = []
    L.append(f"# cashpos load test: {'PASS' if s['passed'] else 'FAIL'} ({s['profile']} thresholds)")
    L.append("")
    p = plan
    if p["mode"] == "day":
        L.append(
            f"**{p['day_label']}** ({p['date']}), {p['window_kst']} KST compressed {p['compress']:g}x "
            f"into {p['duration_s']:g} s; user scale {p['user_scale']:g}, tx scale {p['tx_scale']:g}. "
            f"The day: {p['day_sessions']:,} sessions, {p['day_transactions']:,} transactions."
        )
    else:
        L.append(
            f"**Heavy day**: {p['window_kst']} of the {p['day_label']} ({p['date']}), "
            f"{p['duration_s']:g} s; user scale {p['user_scale']:g}, tx scale {p['tx_scale']:g}."
        )
    L.append(
        f"Planned: peak {p['peak_users']:,} concurrent users (+ source systems), peak "
        f"{p['peak_tps']:g} tx/s, {p['expected_tx']:,} transactions. Weights {p['weights']}."
    )
    L.append("")
    L.append("| check | value | limit | |")
    L.append("|---|---|---|---|")
    for c in s["checks"]:
        L.append(
            f"| {c['check']} | {_fmt(c['value'])} {c['unit']} | {_fmt(c['limit'])} | "
            f"{'ok' if c['pass'] else '**FAIL**'} |"
        )
    L.append("")
    tx = s["transactions"]
    u = s["users"]
    L.append(
        f"- transactions accepted: {tx['accepted']:,} of {tx['planned']:,} planned "
        f"({_fmt(tx['accepted_per_s'])} /s over the run, plan {_fmt(tx['planned_per_s'])} /s, "
        f"peak {_fmt(tx['planned_peak_per_s'])} /s)"
    )
    L.append(f"- requests {s['requests']:,}, failures {s['failures']:,} (error rate {_fmt(s['error_rate'])})")
    L.append(
        f"- users: peak {u['seen_peak']:,} of {u['planned_peak']:,} planned; logins (new sessions) "
        f"{u['logins']} of ~{u['logins_planned']:,} planned; streams held to the session's end "
        f"{u['streams_held_to_session_end']:,}, stream frames read {u['stream_frames_read']:,}"
    )
    if s.get("generator"):
        L.append(
            f"- load generator: {s['generator']} (tx_skipped: Locust fell behind its schedule; "
            "tx_posted_blocking: a source user already had its maximum of posts in flight)"
        )
    lag = s["lag_records"]
    L.append(
        f"- processor lag (records): max {_fmt(lag['max'])}, last {_fmt(lag['last'])}, "
        f"{lag['samples']} samples (bound {lag['bound']})"
    )
    if s.get("metrics"):
        L.append(f"- /metrics at the end: {s['metrics']}")
    L.append("")
    L.append("## Latency by category (ms, merged over all Locust processes)")
    L.append("")
    L.append("| category | requests | failures | p50 | p95 | p99 | max |")
    L.append("|---|---|---|---|---|---|---|")
    for k, c in sorted(s["latency_ms"].items()):
        L.append(
            f"| {k} | {c['requests']:,} | {c['failures']:,} | {_fmt(c.get('p50_ms'))} | "
            f"{_fmt(c.get('p95_ms'))} | {_fmt(c.get('p99_ms'))} | {_fmt(c.get('max_ms'))} |"
        )
    L.append("")
    L.append("`stream_hold` counts held streams (no latency), `probe` the freshness probes' own requests.")
    L.append("")
    if s.get("timeline"):
        L.append("## Over the run (p95 over the last ~10 s; cores from monitor.csv)")
        L.append("")
        L.append(
            "| run s | KST | users | req/s | fail/s | account read p95 | post p95 | api cores | other cores |"
        )
        L.append("|---|---|---|---|---|---|---|---|---|")
        for r in s["timeline"]:
            L.append(
                f"| {r['t_s']} | {r['kst']} | {r['users']:,} | {r['req_per_s']} | {r['fail_per_s']} | "
                f"{r['account_read_p95_ms']} | {r['post_p95_ms']} | {_fmt(r['api_cores'])} | "
                f"{_fmt(r['other_cores'])} |"
            )
        L.append("")
    L.append("## Per endpoint (Locust's statistics)")
    L.append("")
    L.append("| type | name | requests | failures | p50 | p95 | p99 | max | req/s |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(
            f"| {r['Type']} | {r['Name']} | {r['Request Count']} | {r['Failure Count']} | "
            f"{r['50%']} | {r['95%']} | {r['99%']} | {_fmt(float(r['Max Response Time'] or 0))} | "
            f"{float(r['Requests/s'] or 0):.2f} |"
        )
    L.append("")
    L.append(
        "LAG rows are in records, not ms; the Aggregated row mixes in FRESHNESS and LAG samples "
        "(use the categories above)."
    )
    L.append("")
    L.append("## How the cores were shared")
    L.append("")
    cpu = s["cpu"]
    m = cpu.get("machine", {})
    L.append(
        f"{m.get('cores')} cores; the machine was busy {_fmt(m.get('mean_busy_cores'))} cores on average "
        f"(max {_fmt(m.get('max_busy_cores'))}). Mean / max cores and memory per component:"
    )
    L.append("")
    L.append("| component | mean cores | max cores | RSS start MB | RSS end MB | RSS max MB |")
    L.append("|---|---|---|---|---|---|")
    for k, v in cpu.items():
        if k == "machine":
            continue
        L.append(
            f"| {k} | {_fmt(v['mean_cores'])} | {_fmt(v['max_cores'])} | {_fmt(v.get('rss_mb_start'))} | "
            f"{_fmt(v.get('rss_mb_end'))} | {_fmt(v.get('rss_mb_max'))} |"
        )
    L.append("")
    L.append(str(s.get("cpu_note", "")))
    if s.get("tansu_note"):
        L.append("")
        L.append(str(s["tansu_note"]))
    L.append("")
    text = "\n".join(L) + "\n"
    path.write_text(text)
    return text


def tansu_note(monitor_rows: list[dict[str, float]], accepted: int) -> str | None:
    """How Tansu's memory grew over the run (None when it was not monitored: ``--host``)."""
    tansu = [r["tansu_rss_mb"] for r in monitor_rows if float(r.get("tansu_rss_mb") or 0) > 0]
    if not tansu:
        return None
    return (
        f"Tansu RSS {tansu[0]:.0f} MB -> {tansu[-1]:.0f} MB (max {max(tansu):.0f} MB) over "
        f"{accepted:,} posts; Tansu's in-memory storage never frees memory, so a long or "
        f"repeated run needs a fresh broker (run.py starts one per run)."
    )


def cpu_note(args: argparse.Namespace, rows: list[dict[str, float]]) -> str:
    if not rows:
        return ""
    mean = {
        k[:-6]: sum(float(r.get(k, 0)) for r in rows) / len(rows)
        for k in rows[-1]
        if k.endswith("_cores") and k != "machine_busy_cores"
    }
    locust = mean.pop("locust", 0.0)
    other = mean.pop("other", 0.0)
    stack = sum(mean.values())
    pin = (
        f"Locust pinned to CPU {args.locust_cpus}, the stack to CPU {args.stack_cpus}. "
        if args.locust_cpus or args.stack_cpus
        else "No pinning: the kernel shared the cores between all processes. "
    )
    return (
        f"{pin}Locust ({args.locust_processes} process{'es' if args.locust_processes > 1 else ''}) "
        f"used {locust:.2f} cores on average, the stack {stack:.2f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in sorted(mean.items(), key=lambda kv: -kv[1]))}), "
        f"other processes on the machine {other:.2f}. Latencies include any CPU contention "
        f"between the load generator and the system under test."
    )
