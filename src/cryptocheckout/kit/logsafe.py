"""Logging that an outage cannot flood and a request cannot forge.

- `escape_control` makes any value safe to put in a log line: control characters (a `%0A`
  in a path) become visible escapes, so one record stays one line.
- `SafeFormatter` applies it to every record's message and indents traceback lines, so no
  text from outside can start a line that looks like a record of its own.
- `FailureLog` writes one line per failure and the traceback once per cause per interval:
  an outage that fails every request says so once a minute, not once per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\x{ord(char):02x}"


def escape_control(value: object) -> str:
    """`value` as text with control characters escaped (`\\n`, `\\x1b`, `\\u2028` as `\\x2028`)."""
    return _CONTROL.sub(_escape_one, str(value))


class SafeFormatter(logging.Formatter):
    """A formatter whose every record is one line, its traceback (if any) indented below it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return "\n".join("    " + escape_control(line) for line in text.splitlines())

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("    " + escape_control(line) for line in stack_info.splitlines())


def _cause(exc: BaseException) -> tuple[str, str, int]:
    """What failed, as the exception's type and the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1] if frames else None
    return (
        f"{type(exc).__module__}.{type(exc).__qualname__}",
        where.filename if where else "",
        (where.lineno or 0) if where else 0,
    )


class FailureLog:
    """One line per failure; the traceback once per cause (type and raising line) per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_causes: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_causes = max_causes
        self._clock = clock
        self._last: OrderedDict[tuple[str, str, int], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def failure(self, exc: BaseException, message: str, *args: object) -> None:
        """Logs `message % args` with the exception's type and text, at ERROR."""
        cause = _cause(exc)
        now = self._clock()
        with self._lock:
            last = self._last.get(cause)
            if last is None or now - last[0] >= self.interval:
                quiet = last[1] if last is not None else 0
                self._last[cause] = (now, 0)
                with_trace = True
            else:
                quiet = 0
                self._last[cause] = (last[0], last[1] + 1)
                with_trace = False
            self._last.move_to_end(cause)
            while len(self._last) > self.max_causes:
                self._last.popitem(last=False)
        suffix = ": %s: %s"
        extra_args: tuple[object, ...] = (type(exc).__name__, exc)
        if with_trace and quiet:
            suffix += " (%d more like it without traceback since the last one)"
            extra_args += (quiet,)
        elif not with_trace:
            suffix += " (traceback logged once per %gs)"
            extra_args += (self.interval,)
        self.logger.error(
            message + suffix, *args, *extra_args, exc_info=exc if with_trace else None
        )
