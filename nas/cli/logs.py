"""What a command shows of the library's logging: `setup()`, called first by the commands'
runners (`nas.cli.common.run`, `checked_main` and every Hydra task's `hydra_task`).

The library logs through module loggers under `nas` and configures nothing; a command
gives those loggers one handler that writes the progress lines as they always were: the
bare message on stdout, and a warning or an error on stderr as `warning: ...`.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["Lines", "setup"]


class Lines(logging.Handler):
    """Each record as a plain line: below WARNING on stdout, from WARNING on on stderr with its
    level in front (`warning: ...`). A record logged with `extra={"end": ...}` is a progress
    meter: it is written after a carriage return and ends with `end` instead of a newline, so
    that the next reading overwrites it.

    The streams are looked up at every record, so a redirected `sys.stdout` is followed.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.WARNING:
                stream, text = sys.stderr, f"{record.levelname.lower()}: {text}"
            else:
                stream = sys.stdout
            end = getattr(record, "end", None)
            stream.write(text + "\n" if end is None else "\r" + text + end)
            stream.flush()
        except Exception:
            self.handleError(record)


def setup() -> None:
    """Show the `nas` loggers' INFO lines and above through one `Lines` handler, and only
    there: the handler Hydra's job logging puts on the root logger would print them a second
    time. Calling it again changes nothing."""
    logger = logging.getLogger("nas")
    if not any(isinstance(h, Lines) for h in logger.handlers):
        logger.addHandler(Lines())
    logger.setLevel(logging.INFO)
    logger.propagate = False
