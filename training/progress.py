"""Progress for long loops: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm


class Progress:
    def __init__(
        self, description: str, *, total: int | None = None, log: logging.Logger, every: float = 10.0
    ) -> None:
        self.description = description
        self.log = log
        self.every = every
        self.count = 0
        self._last_log = time.monotonic()
        self._bar = tqdm(total=total, desc=description, unit="item") if sys.stderr.isatty() else None

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_log >= self.every:
            self._last_log = time.monotonic()
            self.log.info("%s: %d so far", self.description, self.count)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.close()
