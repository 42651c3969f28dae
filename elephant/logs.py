"""Log lines that cannot be forged.

A value a client sent (an address, a path segment, a header) may hold a line feed followed by what
looks like a log line of its own. ``log_safe`` makes such a value one printable line before it is
logged; ``OneLineFormatter`` (the ``LOGGING`` formatter in settings) does the same to every formatted
message, for the values no call site thought of. A traceback stays as it is: it is appended after
the message and comes from the code, not from a client.
"""

import logging
import unicodedata

# Line breaks, escape sequences and other controls (Cc), and invisible formatting (Cf: bidi
# overrides that reorder how a line reads, zero-width characters); also the Unicode line and
# paragraph separators (Zl, Zp), which some log viewers break lines on.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
    return ch


def one_line(text: str) -> str:
    """``text`` with every control, formatting and line-separator character escaped (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text  # the common case, without a look at each character
    return "".join(_escape_char(ch) for ch in text)


def log_safe(value: object, limit: int = 200) -> str:
    """An untrusted value for a log line: escaped to one line and cut to ``limit`` characters."""
    text = one_line(str(value))
    return text if len(text) <= limit else f"{text[:limit]}…({len(text) - limit} more)"


class OneLineFormatter(logging.Formatter):
    """``logging.Formatter`` whose message part is always one line (tracebacks follow unchanged)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))
