"""Settings from environment variables (CASHPOS_*), read once per process: their one typed owner.

Every variable is a field of :class:`Settings` with its type, default and description
(``docs/configuration.md`` is generated from them: ``python -m cashpos.settings``; a test fails
when the two differ). A value that does not parse names the variable and what it expects,
secrets are :class:`Secret` (never printed), and ``load()`` warns about a ``CASHPOS_`` variable
that nothing reads (a misspelt one would otherwise be silently ignored).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PREFIX = "CASHPOS_"


class SettingsError(ValueError):
    """A CASHPOS_ variable whose value cannot be used; the message names it."""


class Secret:
    """A secret value: ``str()`` and ``repr()`` never show it; ``reveal()`` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _str(raw: str) -> str:
    return raw


def _int(raw: str) -> int:
    return int(raw)


def _positive(raw: str) -> int:
    n = int(raw)
    if n < 1:
        raise ValueError(raw)
    return n


def _float(raw: str) -> float:
    return float(raw)


def _path(raw: str) -> Path:
    return Path(raw)


def _optional(raw: str) -> str | None:
    return raw or None


def _secret(raw: str) -> Secret | None:
    return Secret(raw) if raw else None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _bool(raw: str) -> bool:
    if raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ValueError(raw)


def _auto_bool(raw: str) -> bool | None:
    """None for ``auto`` (decided at run time), else as :func:`_bool`."""
    return None if raw.lower() == "auto" else _bool(raw)


_EXPECTS: dict[Callable[[str], Any], str] = {
    _int: "an integer",
    _positive: "an integer of 1 or more",
    _float: "a number",
    _str: "a string",
    _path: "a path",
    _optional: "a string",
    _secret: "a string (secret)",
    _bool: "1 or 0",
    _auto_bool: "auto, 1 or 0",
}


def _setting(name: str, default: str | None, parse: Callable[[str], Any], *doc: str) -> Any:
    """A field read from CASHPOS_{name} (else ``default``), parsed by ``parse``."""

    def read() -> Any:
        raw = os.environ.get(PREFIX + name, default)
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name}={raw!r}: expected {_EXPECTS[parse]}") from None

    return field(
        default_factory=read,
        metadata={"env": PREFIX + name, "default": default, "doc": " ".join(doc), "expects": _EXPECTS[parse]},
    )


# Variables read outside Settings, by the one component that needs them.
OTHER_VARIABLES: dict[str, str] = {
    "CASHPOS_ALERT_CONFIG": "Path of an alert-thresholds TOML file replacing the packaged cashpos/alerts.toml (docs/alerts.md).",
    "CASHPOS_ALERT_WEBHOOK_URL": "URL alert changes are POSTed to (off when unset).",
    "CASHPOS_ALERT_WEBHOOK_SECRET": "HMAC key signing the alert webhook's requests.",
    "CASHPOS_COOKIE_SECURE": "1: the dashboard's session cookie is marked Secure (behind HTTPS).",
    "CASHPOS_EMBEDDED": "`cashpos run`: auto (default) starts the embedded broker (Redis) unless CASHPOS_KAFKA_BOOTSTRAP (CASHPOS_REDIS_URL) is set; on: always, on the CASHPOS_EMBEDDED_*_PORT ports; off: never.",
    "CASHPOS_SIMULATOR": "off: `cashpos run` starts no simulator.",
    "CASHPOS_SIMULATOR_RATE": "Events per second of the simulator `cashpos run` starts.",
    "CASHPOS_SIMULATOR_SPEED": "Simulated seconds per real second of that simulator.",
    "CASHPOS_PURE_PYTHON": "1: never load the C kernel (the pure Python fold, for comparison).",
    "CASHPOS_ADMIN_TOKEN": "An admin token for the load test's setup (loadtest/run.py).",
}


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = _setting(
        "KAFKA_BOOTSTRAP",
        "127.0.0.1:19092",
        _str,
        "Kafka bootstrap servers (host:port, comma-separated). Set, `cashpos run` uses this Kafka",
        "instead of starting its embedded broker; the default is where that broker listens.",
    )
    redis_url: str = _setting(
        "REDIS_URL",
        "redis://127.0.0.1:16379/0",
        _str,
        "Redis URL of the serving copy (redis://[user:password@]host:port/db). Set, `cashpos run`",
        "uses this Redis instead of starting its embedded one; the default is where that one listens.",
    )
    embedded_kafka_port: int = _setting(
        "EMBEDDED_KAFKA_PORT",
        "19092",
        _int,
        "Loopback port of the Kafka-protocol broker (Tansu, in memory) that `cashpos run` starts",
        "when CASHPOS_KAFKA_BOOTSTRAP is not set.",
    )
    embedded_redis_port: int = _setting(
        "EMBEDDED_REDIS_PORT",
        "16379",
        _int,
        "Loopback port of the redis-server (in memory) that `cashpos run` starts when",
        "CASHPOS_REDIS_URL is not set.",
    )
    namespace: str = _setting(
        "NAMESPACE",
        "cashpos",
        _str,
        "Namespace for topic names, Redis keys and consumer groups, so several stacks can share",
        "one broker / Redis (tests use a fresh prefix each).",
    )
    partitions: int = _setting(
        "PARTITIONS",
        "12",
        _int,
        "Partitions of each input topic when cashpos creates them (both topics alike:",
        "co-partitioned by org_code).",
    )
    replication_factor: int = _setting(
        "REPLICATION_FACTOR",
        "1",
        _int,
        "Replication factor of the topics cashpos creates (use 3 on a real cluster); `cashpos",
        "topics check` and the worker compare the existing topics' with it.",
    )
    allow_replication_factor_one: bool = _setting(
        "ALLOW_REPLICATION_FACTOR_ONE",
        "0",
        _bool,
        "1: accept replication factor 1 on an external Kafka cluster; otherwise the worker and",
        "`cashpos topics create` refuse it (the embedded broker is always allowed it).",
    )
    kafka_embedded: bool | None = _setting(
        "KAFKA_EMBEDDED",
        "auto",
        _auto_bool,
        "Whether the broker is the embedded development one (no replication, configs not all",
        "reported). auto: when CASHPOS_KAFKA_BOOTSTRAP is its address (the loopback at",
        "CASHPOS_EMBEDDED_KAFKA_PORT) or the broker's cluster id is Tansu's `tansu_cluster`;",
        "0: an external cluster whatever it looks like; 1: the embedded broker.",
    )
    state_dir: Path = _setting(  # noqa: RUF009 - _setting returns a dataclasses.field
        "STATE_DIR", "var/state", _path, "The worker's RocksDB state directory (one per worker)."
    )
    reconcile_interval_seconds: float = _setting(
        "RECONCILE_INTERVAL_SECONDS",
        "300",
        _float,
        "`cashpos reconcile --continuous`: seconds from the end of one incremental reconciliation",
        "to the start of the next (each reads only the records past its checkpoint).",
    )
    reconcile_checkpoint_dir: Path = _setting(  # noqa: RUF009 - _setting returns a dataclasses.field
        "RECONCILE_CHECKPOINT_DIR",
        "var/reconcile",
        _path,
        "`cashpos reconcile --continuous`: the directory of its checkpoint (the reference fold's",
        "state and the offsets read, one file replaced atomically). Local disk, one per reconciler.",
    )
    worker_id: str = _setting(
        "WORKER_ID",
        "worker-1",
        _str,
        "This worker's id, unique per worker: its consumer-group client id and its name in",
        "metrics and heartbeats.",
    )
    worker_web_port: int = _setting(
        "WORKER_WEB_PORT",
        "6066",
        _int,
        "Port of the worker's internal (Faust) web server; give every worker on a host its own.",
    )
    worker_web_bind: str = _setting(
        "WORKER_WEB_BIND",
        "127.0.0.1",
        _str,
        "The interface the worker's (Faust) web server binds to: the loopback unless asked.",
    )
    history_online_years: int = _setting(
        "HISTORY_ONLINE_YEARS",
        "2",
        _positive,
        "Fiscal years of a government kept online in full (every event's bytes and index rows): 2 =",
        "the current and the previous. Once both sides closed a year, the older ones are compacted",
        "to their daily closings (statements stay whole; an instant inside one of their days and",
        "the events behind their figures answer 410 history_retired). The same on every worker.",
    )
    rejoin_after_seconds: float = _setting(
        "REJOIN_AFTER_SECONDS",
        "30",
        _float,
        "A worker that has had no partition assignment for this long while its topics have",
        "partitions leaves the group and joins again as a new member (the assignment watchdog).",
    )
    standby_replicas: int = _setting(
        "STANDBY_REPLICAS",
        "1",
        _int,
        "1: each worker also folds, into its own state, the partitions the group's assignor would",
        "give it if any one other worker left (a warm standby of every partition; a takeover then",
        "catches up from the standby's offsets, not from offset 0); 0: none. A single worker has",
        "no standby. Larger values act as 1 (one standby copy).",
    )
    restart_delay_seconds: float = _setting(
        "RESTART_DELAY_SECONDS",
        "1",
        _float,
        "`cashpos run` restarts a worker or API that died: first after this delay, doubling up to",
        "the maximum; the delay starts again from the first after a child ran this long.",
    )
    restart_delay_max_seconds: float = _setting(
        "RESTART_DELAY_MAX_SECONDS",
        "60",
        _float,
        "The longest delay between two restarts of a crashed child of `cashpos run`.",
    )
    restart_reset_seconds: float = _setting(
        "RESTART_RESET_SECONDS",
        "60",
        _float,
        "A child that ran this long is restarted after the first delay again.",
    )
    api_host: str = _setting("API_HOST", "127.0.0.1", _str, "Interface the HTTP API listens on.")
    api_port: int = _setting("API_PORT", "8000", _int, "Port the HTTP API listens on.")
    batch_max_records: int = _setting(
        "BATCH_MAX_RECORDS",
        "20000",
        _int,
        "Most records the worker folds in one batch (one RocksDB write, one Redis call).",
    )
    batch_timeout_ms: int = _setting(
        "BATCH_TIMEOUT_MS", "50", _int, "Longest wait for records before a (smaller) batch is folded."
    )
    state_flush_seconds: float = _setting(
        "STATE_FLUSH_SECONDS",
        "5",
        _float,
        "Interval of the state's background flush: bounds the replay after a crash.",
    )
    max_event_bytes: int = _setting(
        "MAX_EVENT_BYTES",
        "8192",
        _int,
        "Largest accepted event (message value and POST /v1/events body), in bytes; larger is",
        "`oversized`.",
    )
    fate_retention_days: int = _setting(
        "FATE_RETENTION_DAYS",
        "7",
        _int,
        "Days the fate of each submitted event stays answerable at GET /v1/events/{org}/{id}",
        "(Redis: about 150 bytes an event); older ids answer 404 `unknown_event`.",
    )
    max_batch_events: int = _setting(
        "MAX_BATCH_EVENTS",
        "500",
        _int,
        "Most events in one POST /v1/events:batch (its body may be this many times max_event_bytes).",
    )
    session_timeout_ms: int = _setting(
        "SESSION_TIMEOUT_MS",
        "6000",
        _int,
        "Consumer-group session timeout (Tansu delays a join by half of it).",
    )
    heartbeat_ms: int = _setting("HEARTBEAT_MS", "1000", _int, "Consumer-group heartbeat interval.")
    kafka_security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _str,
        "Kafka security passes straight through to aiokafka for real clusters.",
    )
    kafka_sasl_mechanism: str | None = _setting(
        "KAFKA_SASL_MECHANISM",
        None,
        _optional,
        "SASL mechanism for a real cluster (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).",
    )
    kafka_sasl_username: str | None = _setting("KAFKA_SASL_USERNAME", None, _optional, "SASL user name.")
    kafka_sasl_password: Secret | None = _setting(  # noqa: RUF009 - a dataclasses.field
        "KAFKA_SASL_PASSWORD", None, _secret, "SASL password (a secret: never printed)."
    )
    kafka_ssl_cafile: str | None = _setting(
        "KAFKA_SSL_CAFILE",
        None,
        _optional,
        "TLS for real clusters: a private CA and, for mutual TLS, a client certificate and key.",
    )
    kafka_ssl_certfile: str | None = _setting(
        "KAFKA_SSL_CERTFILE", None, _optional, "Client certificate for mutual TLS."
    )
    kafka_ssl_keyfile: str | None = _setting(
        "KAFKA_SSL_KEYFILE", None, _optional, "Client key for mutual TLS."
    )
    token_cache_seconds: float = _setting(
        "TOKEN_CACHE_SECONDS",
        "2",
        _float,
        "How long an API process trusts a token lookup: the longest a revocation takes to bite.",
    )
    log_level: str = _setting("LOG_LEVEL", "INFO", _str, "Log level (DEBUG, INFO, WARNING, ERROR).")
    max_streams_per_token: int = _setting(
        "MAX_STREAMS_PER_TOKEN",
        "8",
        _int,
        'API limits (docs/access.md, "Limits"). Open live streams per token, per API process.',
    )
    max_body_bytes: int = _setting(
        "MAX_BODY_BYTES",
        "16384",
        _int,
        "Request bodies of every endpoint but POST /v1/events (whose limit is max_event_bytes).",
    )
    max_header_bytes: int = _setting(
        "MAX_HEADER_BYTES", "16384", _int, "The request line and headers together."
    )
    header_timeout_seconds: float = _setting(
        "HEADER_TIMEOUT_SECONDS",
        "10",
        _float,
        "A request's line and headers must arrive within this long of its first byte (or of the",
        "connection opening); its body within body_timeout_seconds of the headers.",
    )
    body_timeout_seconds: float = _setting(
        "BODY_TIMEOUT_SECONDS",
        "15",
        _float,
        "A request body must arrive within this long of its headers (else 408).",
    )
    keep_alive_seconds: int = _setting(
        "KEEP_ALIVE_SECONDS", "5", _int, "An idle keep-alive connection is closed after this many seconds."
    )
    api_max_connections: int = _setting(
        "API_MAX_CONNECTIONS",
        "10000",
        _int,
        "Open connections (streams included) per API process; beyond it new requests get 503.",
    )
    api_processes: int = _setting(
        "API_PROCESSES",
        "0",
        _int,
        "API processes `cashpos api` runs on CASHPOS_API_PORT (SO_REUSEPORT), each with its own "
        "live hub; 0: one per core.",
    )

    def kafka_client_args(self) -> dict[str, object]:
        """Connection arguments shared by every aiokafka client."""
        args: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            args.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=(self.kafka_sasl_password.reveal() if self.kafka_sasl_password else None),
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            ctx = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                ctx.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
            args["ssl_context"] = ctx
        return args


def load() -> Settings:
    """The settings of this process; warns about CASHPOS_ variables nothing reads."""
    known = {f.metadata["env"] for f in fields(Settings)} | set(OTHER_VARIABLES)
    for name in sorted(set(os.environ) - known):
        if name.startswith(PREFIX):
            log.warning("unknown setting %s is ignored (docs/configuration.md lists them)", name)
    return Settings()


def configuration_markdown() -> str:
    """docs/configuration.md, generated from the fields of Settings."""
    out = [
        "# Configuration",
        "",
        "Every setting is an environment variable. This page is generated from",
        "`cashpos/settings.py` (`python -m cashpos.settings > docs/configuration.md`); a test fails",
        "when they differ. A value that does not parse stops the process with a message naming",
        "the variable; an unknown `CASHPOS_` variable is reported at start.",
        "",
        "| variable | expects | default | what it does |",
        "|---|---|---|---|",
    ]
    for f in fields(Settings):
        m = f.metadata
        default = "(unset)" if m["default"] is None else f"`{m['default']}`"
        out.append(f"| `{m['env']}` | {m['expects']} | {default} | {m['doc']} |")
    out += [
        "",
        "Read outside the settings object, by the one component that needs each:",
        "",
        "| variable | what it does |",
        "|---|---|",
    ]
    out += [f"| `{k}` | {v} |" for k, v in sorted(OTHER_VARIABLES.items())]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(configuration_markdown(), end="")
