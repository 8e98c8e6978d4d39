"""Log lines: JSON for collectors by default, short coloured lines for a person."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from shared.logging import ConsoleFormatter, JsonFormatter, configure_logging, wants_console


def record(message: str = "GET /v1/orders 200", **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "access", "levelno": logging.INFO, "levelname": "INFO", "msg": message}
    )
    made.__dict__.update(extra)
    return made


class TestConsoleLines:
    def test_one_short_line_with_the_service_and_the_extra_fields(self) -> None:
        line = ConsoleFormatter("order_service", colour=False).format(
            record(status=200, duration_ms=3.1, request_id="abc", color_message="x")
        )
        assert "\n" not in line
        assert " INFO  order_service " in line
        assert line.endswith("GET /v1/orders 200  status=200 duration_ms=3.1")
        assert "request_id" not in line  # kept in JSON, noise on a terminal

    def test_colours_on_a_terminal(self) -> None:
        line = ConsoleFormatter("order_service").format(record())
        assert "\x1b[32mINFO " in line  # the level in green
        assert line.count("\x1b[0m") >= 3  # time, level and service each reset

    def test_an_exception_follows_its_line(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            failed = record("failed", exc_info=sys.exc_info())
        text = ConsoleFormatter("user_service", colour=False).format(failed)
        assert text.splitlines()[0].endswith("failed")
        assert "ValueError: boom" in text


class TestChoice:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    @pytest.mark.parametrize(
        ("setting", "tty", "console"),
        [
            ("json", True, False),
            ("json", False, False),
            ("auto", True, True),
            ("auto", False, False),
            ("console", False, True),
        ],
    )
    def test_json_unless_asked_or_on_a_terminal(
        self, setting: str, tty: bool, console: bool
    ) -> None:
        stream = self.Tty() if tty else io.StringIO()
        assert wants_console(setting, stream) is console

    def test_json_is_the_default(self, capsys: pytest.CaptureFixture[str]) -> None:
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        try:
            configure_logging("product_service")
            assert isinstance(root.handlers[0].formatter, JsonFormatter)
            logging.getLogger("x").warning("hello", extra={"n": 1})
            entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert (entry["service"], entry["message"], entry["n"]) == (
                "product_service",
                "hello",
                1,
            )
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)
