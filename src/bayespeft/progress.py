"""Progress of every long loop: a tqdm bar on a terminal, plain lines with the elapsed time and an ETA elsewhere.

Off a terminal (``nohup``, CI, a cluster job's log file) a bar would print nothing useful (tqdm disables itself) or
fill the log with carriage returns, so each loop prints lines instead::

    epochs 3/25 train_loss=0.412 val_loss=0.52 | elapsed 12.3s | ETA 1:30
    Laplace fit (kfac) 120/352 | elapsed 10.0s | ETA 19.3s

one per item for stage-level loops (``every_s=0``: training epochs) and at most one every :data:`LINE_INTERVAL_S`
seconds inside long stages (batches of a Laplace fit, prior-tuning steps, sampler steps), plus a last line when the
loop took that long. ETA = (elapsed / items done in this run) x items left.

Which one (``enabled`` is e.g. ``train.progress``; the environment variable ``BAYESPEFT_PROGRESS`` applies when it is
None): ``False`` / ``BAYESPEFT_PROGRESS=0`` -> nothing; ``None`` / ``True`` / ``BAYESPEFT_PROGRESS=1`` -> a bar on a
terminal, lines elsewhere; ``BAYESPEFT_PROGRESS=bar`` or ``lines`` forces one of them. Output goes to stderr.
Every mode iterates the wrapped iterable exactly as a bare ``for`` loop would (one ``iter()``), so what is shown
never changes what is computed (the batch order of a seeded DataLoader).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal, TypeVar

# the plain tqdm: ``tqdm.auto`` is the asyncio variant, whose constructor calls ``iter(iterable)`` and throws the
# iterator away -- for a DataLoader that draws from its generator (another batch order than an unwrapped loop, so
# results depended on whether progress was shown) and starts worker processes twice.
from tqdm import tqdm

T = TypeVar("T")
Mode = Literal["off", "bar", "lines"]

#: Seconds between two lines of a long loop off a terminal (stage-level loops pass ``every_s=0``).
LINE_INTERVAL_S = 10.0
_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_mode(enabled: bool | None, file: IO[str] | None = None) -> Mode:
    """``"off"``, ``"bar"`` or ``"lines"`` for a loop writing to ``file`` (default stderr); see the module docstring."""
    file = sys.stderr if file is None else file
    if enabled is None:
        env = os.environ.get("BAYESPEFT_PROGRESS", "").strip().lower()
        if env in _OFF:
            return "off"
        if env in ("bar", "lines"):
            return env  # type: ignore[return-value]
        if env not in _ON:
            raise ValueError(f"BAYESPEFT_PROGRESS={env!r}: use 0 (off), 1 (bar on a terminal, lines elsewhere), bar or lines")
    elif not enabled:
        return "off"
    return "bar" if _isatty(file) else "lines"


def format_seconds(s: float) -> str:
    """``12.3s`` under a minute, else ``m:ss`` / ``h:mm:ss``."""
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class LineProgress:
    """Iterate ``iterable`` and print ``desc done/total [postfix] | elapsed .. | ETA ..`` lines to ``file``.

    ``initial`` items were done before (a resumed run): they count in ``done`` but not in the rate. Call
    :meth:`set_postfix` inside the loop body to add values (losses) to the line printed after that item, and
    :meth:`close` after a loop left with ``break`` to print the line of its last item (``every_s=0``).
    """

    def __init__(self, iterable: Iterable[T], desc: str, total: int | None, file: IO[str], every_s: float, initial: int = 0) -> None:
        self.iterable, self.desc, self.total, self.file = iterable, desc, total, file
        self.every_s, self.initial, self.postfix = every_s, initial, ""
        self._t0: float | None = None
        self._yielded = self._printed = 0

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """After ``break``: the line of the last item handed out, if a line per item is due and it was not printed."""
        if self.every_s == 0 and self._t0 is not None and self._yielded > self._printed:
            self._print(self._yielded, time.perf_counter() - self._t0)

    def _print(self, done: int, elapsed: float) -> None:
        print(self._line(done, elapsed), file=self.file, flush=True)
        self._printed = done

    def _line(self, done: int, elapsed: float) -> str:
        n = self.initial + done
        count = f"{n}/{self.total}" if self.total is not None else f"{n}"
        post = f" {self.postfix}" if self.postfix else ""
        line = f"{self.desc} {count}{post} | elapsed {format_seconds(elapsed)}"
        if self.total is not None:
            line += f" | ETA {format_seconds(elapsed / done * max(self.total - n, 0))}"
        return line

    def __iter__(self) -> Iterator[T]:
        t0 = last = self._t0 = time.perf_counter()
        done = 0
        for item in self.iterable:
            self._yielded = done + 1
            yield item
            done += 1
            now = time.perf_counter()
            final = self.total is not None and self.initial + done >= self.total
            if now - last >= self.every_s or (final and now - t0 >= self.every_s):
                self._print(done, now - t0)
                last = now


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    enabled: bool | None = None,
    leave: bool = False,
    *,
    initial: int = 0,
    every_s: float | None = None,
    file: IO[str] | None = None,
) -> Iterable[T]:
    """Wrap ``iterable``: a tqdm bar, :class:`LineProgress` lines or nothing (:func:`progress_mode`).

    ``every_s``: seconds between lines off a terminal (default :data:`LINE_INTERVAL_S`; 0 = a line per item, for
    stage-level loops such as training epochs). ``initial``: items already done (resumed runs). Output: ``file``,
    default stderr.
    """
    file = sys.stderr if file is None else file
    if total is None and hasattr(iterable, "__len__"):
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    mode = progress_mode(enabled, file)
    if mode == "lines":
        return LineProgress(iterable, desc, total, file, LINE_INTERVAL_S if every_s is None else every_s, initial)
    return tqdm(iterable, desc=desc, total=total, initial=initial, disable=mode == "off", leave=leave,
                dynamic_ncols=True, file=file)
