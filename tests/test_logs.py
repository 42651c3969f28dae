"""Log lines cannot be forged: every formatted message is one line (elephant/logs.py)."""

import logging

from elephant.logs import OneLineFormatter, log_safe


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("fleet.views", logging.INFO, __file__, 1, message, args, exc_info)


def test_the_configured_formatter_keeps_each_message_on_one_line():
    formatter = logging.getLogger().handlers[0].formatter
    assert isinstance(formatter, OneLineFormatter)
    line = formatter.format(record("refused for %s", "i-0\nINFO forged\u2028line\u202eevil\x1b[31m"))
    assert "\n" not in line and line.isprintable()
    assert line.endswith("refused for i-0\\nINFO forged\\u2028line\\u202eevil\\x1b[31m")


def test_a_traceback_still_follows_on_its_own_lines():
    try:
        raise ValueError("boom")
    except ValueError as exc:
        line = OneLineFormatter("%(message)s").format(record("failed: %s", "a\nb", exc_info=(type(exc), exc, None)))
    assert line.splitlines() == ["failed: a\\nb", "ValueError: boom"]


def test_log_safe_cuts_long_values():
    assert log_safe("x" * 250, limit=10) == "x" * 10 + "…(240 more)"
    assert log_safe("Zoë 🐘 203.0.113.9") == "Zoë 🐘 203.0.113.9"
