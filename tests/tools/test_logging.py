"""The array's log never raises into the code that logs (tools/logging.py): a full disk under the log
file loses lines, counted and said once the log takes lines again."""
from __future__ import annotations

import errno
import io
import json

from sanlab.tools.logging import SturdyLogger


class FullDisk(io.StringIO):
    """A log file whose writes fail with ENOSPC while ``full`` is set."""

    full = False

    def write(self, s: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(s)


def test_a_line_the_log_cannot_take_is_dropped_counted_and_said_later() -> None:
    f = FullDisk()
    log = SturdyLogger(f, "json")
    log.info('{"event": "one"}')
    f.full = True
    log.error('{"event": "two"}')  # raises nothing into the caller
    log.warning('{"event": "three"}')
    assert log.dropped == 2
    f.full = False
    log.info('{"event": "four"}')
    lines = [json.loads(line) for line in f.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["one", "log_lines_dropped", "four"]
    assert lines[1]["lines"] == 2 and log.dropped == 0


def test_a_closed_log_file_is_not_an_error_either() -> None:
    f = io.StringIO()
    log = SturdyLogger(f, "console")
    f.close()
    log.info("after close")
    assert log.dropped == 1
