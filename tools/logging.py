"""structlog setup for the `sanlab` command (ARCHITECTURE.md convention 8)."""
from __future__ import annotations

import json
import logging
import sys
import threading
from typing import TextIO

import structlog


class SturdyLogger:
    """structlog's PrintLogger, except that a line that cannot be written (the log's filesystem
    full, a closed pipe) is dropped instead of raising into the code that logged it.  An array on
    a full disk must still answer its hosts and management requests with the precise error, never
    die halfway through a request or a completion callback because its log could not take a line.
    Dropped lines are counted and reported by the first line that gets through again."""

    def __init__(self, file: TextIO, fmt: str = "json") -> None:
        self._file = file
        self._fmt = fmt
        self._lock = threading.Lock()  # the I/O pool's threads log too
        self.dropped = 0
        """Lines lost since the last one written."""

    def msg(self, message: str) -> None:
        """Write one rendered line (all of structlog's level methods come here)."""
        with self._lock:
            try:
                if self.dropped:
                    note = {"event": "log_lines_dropped", "lines": self.dropped, "level": "warning",
                            "reason": "the log could not be written"}
                    self._file.write((json.dumps(note) if self._fmt == "json"
                                      else f"log_lines_dropped lines={self.dropped}") + "\n")
                self._file.write(message + "\n")
                self._file.flush()
                self.dropped = 0
            except (OSError, ValueError):  # ValueError: the file was closed
                self.dropped += 1

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


def setup_logging(fmt: str = "console", level: str = "info") -> None:
    """Route structlog (and stdlib logging) to stderr as JSON lines or console text."""
    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        raise ValueError(f"unknown log format {fmt!r} (json or console)")
    logger = SturdyLogger(sys.stderr, fmt)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=lambda *_args: logger,
        cache_logger_on_first_use=True,
    )
