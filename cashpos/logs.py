"""Structured (JSON lines) logs on stderr, level from CASHPOS_LOG_LEVEL."""

from __future__ import annotations

import logging
import os

import orjson

from cashpos.calendar import utc_stamp


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": utc_stamp(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    return handler


def setup_logging() -> None:
    level = os.environ.get("CASHPOS_LOG_LEVEL", "INFO").upper()
    handler = json_handler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
