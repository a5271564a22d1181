"""Structured logs: one JSON object per line on stderr, level from CASHPOS_LOG_LEVEL.

Every line has ``ts`` (:func:`cashpos.calendar.utc_stamp`), ``level``, ``logger`` and ``msg``;
a record's extra attributes (``log.info("...", extra={"audit": {...}})``) are further fields, a
traceback is ``exc``. Third-party loggers go through the same handler: Faust and mode
(``agents/worker.py`` hands :func:`dict_config` to Faust, which applies it instead of its
colour handler), aiokafka, uvicorn (its access lines with their parts as an ``http`` field,
emitted at INFO: CASHPOS_LOG_LEVEL=WARNING silences them) and Python warnings
(``logging.captureWarnings``). :func:`capture_std_streams` makes a service process's stray
writes to stdout/stderr (a library's ``print``, an uncaught traceback) JSON lines too.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import sys
import threading
from types import TracebackType
from typing import Any, TextIO

import orjson

from cashpos.calendar import utc_stamp

NOISY = ("aiokafka", "faust", "mode")  # chatty at INFO: shown from WARNING unless DEBUG
ACCESS_LOGGER = "uvicorn.access"

# Attributes every LogRecord has (and uvicorn's duplicate of the message): not extra fields.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
_BASE = ("ts", "level", "logger", "msg")


def _access_fields(record: logging.LogRecord) -> dict[str, object]:
    """uvicorn's access line ``'%s - "%s %s HTTP/%s" %d'`` as fields."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 5:
        client, method, path, version, status = args
        return {
            "http": {"client": client, "method": method, "path": path, "version": version, "status": status}
        }
    return {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": utc_stamp(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in _BASE and not key.startswith("_"):
                out[key] = value
        if record.name == ACCESS_LOGGER:
            out.update(_access_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # e.g. an int beyond 64 bits, which orjson refuses
            return json.dumps(out, default=str, ensure_ascii=False)


def _real(stream: TextIO) -> TextIO:
    """The stream under a :class:`LogStream` (the handler must never write into one)."""
    return stream.original if isinstance(stream, LogStream) else stream


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else _real(sys.stderr))
    handler.setFormatter(JsonFormatter())
    return handler


def level_name() -> str:
    return os.environ.get("CASHPOS_LOG_LEVEL", "INFO").upper()


def _noisy_level(level: str) -> str:
    return (
        level
        if logging.getLevelName(level) <= logging.DEBUG
        else max(level, "WARNING", key=logging.getLevelName)
    )


def dict_config(level: str | None = None) -> dict[str, Any]:
    """The logging configuration as a :func:`logging.config.dictConfig` mapping (what Faust's
    ``logging_config`` setting takes): the JSON handler on stderr at the root."""
    level = level or level_name()
    return {
        "version": 1,
        "disable_existing_loggers": False,  # loggers made at import time keep logging
        "handlers": {"json": {"()": json_handler}},
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {name: {"level": _noisy_level(level)} for name in NOISY},
    }


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("cashpos").critical("uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("cashpos").critical(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def setup_logging() -> None:
    logging.config.dictConfig(dict_config())
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread


class LogStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr: each complete line written becomes a log record of
    ``logger`` (``original`` is the stream it replaced; the JSON handler writes there)."""

    def __init__(self, original: TextIO, logger: str, level: int) -> None:
        super().__init__()
        self.original = original
        self.log = logging.getLogger(logger)
        self.level = level
        self._partial = ""
        self._busy = threading.local()  # a record about a write must not write again

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares it read-only
        return getattr(self.original, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.original.fileno()

    def write(self, s: str) -> int:
        if getattr(self._busy, "on", False):
            return self.original.write(s)
        self._busy.on = True
        try:
            *lines, self._partial = (self._partial + s).split("\n")
            for line in lines:
                if line.strip():
                    self.log.log(self.level, line.rstrip())
        finally:
            self._busy.on = False
        return len(s)

    def flush(self) -> None:
        if self._partial.strip():
            self.write("\n")
        self._partial = ""
        self.original.flush()


def capture_std_streams() -> None:
    """Route what a service process writes to stdout (INFO, logger ``stdout``) and stderr
    (WARNING, logger ``stderr``) through the JSON handler. For long-running processes whose
    output is a log, not for commands whose stdout is their result (``cashpos token``)."""
    if not isinstance(sys.stdout, LogStream):
        sys.stdout = LogStream(sys.stdout, "stdout", logging.INFO)
    if not isinstance(sys.stderr, LogStream):
        sys.stderr = LogStream(sys.stderr, "stderr", logging.WARNING)
