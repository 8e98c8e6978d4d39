"""One JSON object per log line, carrying the request id of the request being served;
or, for a person at a terminal (`LOG_FORMAT=console`, or `auto` on a TTY), one short
coloured line.

A small formatter instead of a logging framework: the standard library already does the
routing and levels, all that is missing is the JSON shape and the context variables.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from shared.tracing import current_span_id, current_trace_id

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and is kept.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
            span_id = current_span_id()
            if span_id:
                entry["span_id"] = span_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


#: ANSI colours: levels by severity, services each their own (by a stable hash).
_LEVEL_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_SERVICE_COLOURS = ("\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[33m", "\x1b[32m", "\x1b[96m")
_DIM, _RESET = "\x1b[2m", "\x1b[0m"
#: Extra fields not worth a person's attention on a terminal line.
_CONSOLE_SKIP = frozenset({"color_message", "request_id", "trace_id", "span_id", "service"})


class ConsoleFormatter(logging.Formatter):
    """`12:00:01.234 INFO  order_service  GET /v1/orders 200  status=200 duration_ms=3.1`:
    the time, the level and the service in colour, the message, then the extra fields."""

    def __init__(self, service: str, *, colour: bool = True) -> None:
        super().__init__()
        self.colour = colour
        tint = _SERVICE_COLOURS[sum(service.encode()) % len(_SERVICE_COLOURS)]
        self.service = self._paint(f"{service:<20}", tint)

    def _paint(self, text: str, colour: str) -> str:
        return f"{colour}{text}{_RESET}" if self.colour else text

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        level = self._paint(f"{record.levelname:<5}", _LEVEL_COLOURS.get(record.levelname, ""))
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _RESERVED and key not in _CONSOLE_SKIP and not key.startswith("_")
        )
        line = f"{self._paint(moment, _DIM)} {level} {self.service} {record.getMessage()}"
        if extras:
            line += "  " + self._paint(extras, _DIM)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_console(log_format: str, stream: Any = None) -> bool:
    """Whether `LOG_FORMAT` asks for console lines: `console`, or `auto` on a terminal."""
    if log_format == "console":
        return True
    stream = sys.stdout if stream is None else stream
    return log_format == "auto" and bool(getattr(stream, "isatty", lambda: False)())


def configure_logging(service: str, level: str = "INFO", log_format: str = "json") -> None:
    """Send every logger, uvicorn's included, through one handler on stdout: JSON lines,
    or console lines for a person (`log_format`: `json`, `console`, or `auto`)."""
    handler = logging.StreamHandler(sys.stdout)
    if wants_console(log_format):
        handler.setFormatter(ConsoleFormatter(service, colour=sys.stdout.isatty()))
    else:
        handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The gateway's access lines come from our own middleware, with the request id.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request it sends at INFO: a second access log, and a slow one.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
