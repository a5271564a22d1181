"""Settings from environment variables (CASHPOS_*), read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CASHPOS_{name}", default)


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = field(default_factory=lambda: _env("KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL", "redis://127.0.0.1:16379/0"))
    # Namespace for topic names, Redis keys and consumer groups, so several stacks can share
    # one broker / Redis (tests use a fresh prefix each).
    namespace: str = field(default_factory=lambda: _env("NAMESPACE", "cashpos"))
    partitions: int = field(default_factory=lambda: int(_env("PARTITIONS", "12")))
    replication_factor: int = field(default_factory=lambda: int(_env("REPLICATION_FACTOR", "1")))
    state_dir: Path = field(default_factory=lambda: Path(_env("STATE_DIR", "var/state")))
    worker_id: str = field(default_factory=lambda: _env("WORKER_ID", "worker-1"))
    worker_web_port: int = field(default_factory=lambda: int(_env("WORKER_WEB_PORT", "6066")))
    # The interface the worker's (Faust) web server binds to: the loopback unless asked.
    worker_web_bind: str = field(default_factory=lambda: _env("WORKER_WEB_BIND", "127.0.0.1"))
    # A worker that has had no partition assignment for this long while its topics have
    # partitions leaves the group and joins again as a new member (the assignment watchdog).
    rejoin_after_seconds: float = field(default_factory=lambda: float(_env("REJOIN_AFTER_SECONDS", "30")))
    # `cashpos run` restarts a worker or API that died: first after this delay, doubling up to
    # the maximum; the delay starts again from the first after a child ran this long.
    restart_delay_seconds: float = field(default_factory=lambda: float(_env("RESTART_DELAY_SECONDS", "1")))
    restart_delay_max_seconds: float = field(default_factory=lambda: float(_env("RESTART_DELAY_MAX_SECONDS", "60")))
    restart_reset_seconds: float = field(default_factory=lambda: float(_env("RESTART_RESET_SECONDS", "60")))
    api_host: str = field(default_factory=lambda: _env("API_HOST", "127.0.0.1"))
    api_port: int = field(default_factory=lambda: int(_env("API_PORT", "8000")))
    batch_max_records: int = field(default_factory=lambda: int(_env("BATCH_MAX_RECORDS", "20000")))
    batch_timeout_ms: int = field(default_factory=lambda: int(_env("BATCH_TIMEOUT_MS", "50")))
    state_flush_seconds: float = field(default_factory=lambda: float(_env("STATE_FLUSH_SECONDS", "5")))
    max_event_bytes: int = field(default_factory=lambda: int(_env("MAX_EVENT_BYTES", "8192")))
    session_timeout_ms: int = field(default_factory=lambda: int(_env("SESSION_TIMEOUT_MS", "6000")))
    heartbeat_ms: int = field(default_factory=lambda: int(_env("HEARTBEAT_MS", "1000")))
    # Kafka security passes straight through to aiokafka for real clusters.
    kafka_security_protocol: str = field(default_factory=lambda: _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
    kafka_sasl_mechanism: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SASL_MECHANISM"))
    kafka_sasl_username: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SASL_USERNAME"))
    kafka_sasl_password: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SASL_PASSWORD"))
    # TLS for real clusters: a private CA and, for mutual TLS, a client certificate and key.
    kafka_ssl_cafile: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SSL_CAFILE"))
    kafka_ssl_certfile: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SSL_CERTFILE"))
    kafka_ssl_keyfile: str | None = field(default_factory=lambda: os.environ.get("CASHPOS_KAFKA_SSL_KEYFILE"))
    # How long an API process trusts a token lookup: the longest a revocation takes to bite.
    token_cache_seconds: float = field(default_factory=lambda: float(_env("TOKEN_CACHE_SECONDS", "2")))
    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))
    # API limits (docs/access.md, "Limits"). Open live streams per token, per API process.
    max_streams_per_token: int = field(default_factory=lambda: int(_env("MAX_STREAMS_PER_TOKEN", "8")))
    # Request bodies of every endpoint but POST /v1/events (whose limit is max_event_bytes).
    max_body_bytes: int = field(default_factory=lambda: int(_env("MAX_BODY_BYTES", "16384")))
    # The request line and headers together.
    max_header_bytes: int = field(default_factory=lambda: int(_env("MAX_HEADER_BYTES", "16384")))
    # A request's line and headers must arrive within this long of its first byte (or of the
    # connection opening); its body within body_timeout_seconds of the headers.
    header_timeout_seconds: float = field(default_factory=lambda: float(_env("HEADER_TIMEOUT_SECONDS", "10")))
    body_timeout_seconds: float = field(default_factory=lambda: float(_env("BODY_TIMEOUT_SECONDS", "15")))
    # An idle keep-alive connection is closed after this many seconds.
    keep_alive_seconds: int = field(default_factory=lambda: int(_env("KEEP_ALIVE_SECONDS", "5")))
    # Open connections (streams included) per API process; beyond it new requests get 503.
    api_max_connections: int = field(default_factory=lambda: int(_env("API_MAX_CONNECTIONS", "10000")))

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
                sasl_plain_password=self.kafka_sasl_password,
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            ctx = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                ctx.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
            args["ssl_context"] = ctx
        return args


def load() -> Settings:
    return Settings()
