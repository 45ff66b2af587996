"""Progress reporting: a tqdm bar on a terminal, plain log lines when output is redirected.

Plain lines ("step 120/1000 (12%) 85.3 it/s, ETA 0:00:10") keep redirected logs readable,
where tqdm's carriage returns would not.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

from tqdm import tqdm


class Progress:
    """`update(n)` / `set_postfix(**kv)` / `close()`; same calls whatever the output is."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        logger: logging.Logger | None = None,
        every_s: float = 10.0,
        initial: int = 0,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = initial
        self._log = logger or logging.getLogger(__name__)
        self._every = every_s
        self._t0 = time.perf_counter()
        self._n0 = initial
        self._last = self._t0
        self._postfix = ""
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True)
            if sys.stderr.isatty()
            else None
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self._every or self.n >= self.total:
            self._last = now
            self._log.info(self.line())

    def line(self) -> str:
        elapsed = time.perf_counter() - self._t0
        rate = (self.n - self._n0) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta_s = str(timedelta(seconds=int(eta))) if eta != float("inf") else "?"
        pct = 100 * self.n / self.total if self.total else 100.0
        return f"{self.desc} {self.n}/{self.total} ({pct:.0f}%) {rate:.1f} {self.unit}/s, ETA {eta_s} {self._postfix}".rstrip()

    def set_postfix(self, **kv: object) -> None:
        self._postfix = " ".join(f"{k}={v}" for k, v in kv.items())
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
