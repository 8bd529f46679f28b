"""This process's id, kept up to date across forks, and values made once per process.

Per-process state (a store's kept connection and lock-file descriptor, the PostGIS accounts
listener: :class:`PerProcess`; the access log's ``pid``) is checked on every request, and
``os.getpid()`` is a system call each time; gunicorn forks its workers after these modules
are imported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """The id of the calling process (as ``os.getpid()``, without the system call)."""
    return _pid


class PerProcess(Generic[T]):
    """A value made on first use in each process, by ``make()``: a forked child makes its
    own, since a connection, a lock-file descriptor or a thread must not be shared with
    (or does not cross into) a child. One is made per process even when several threads
    ask at once."""

    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._value: T | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """This process's value, made now if it has none."""
        if self._pid != _pid:
            with self._lock:
                if self._pid != _pid:
                    self._value = self._make()
                    self._pid = _pid
        return self._value

    def peek(self) -> T | None:
        """This process's value if it has made one, else None."""
        return self._value if self._pid == _pid else None

    def take(self) -> T | None:
        """Forget this process's value and return it (for the caller to close); None if
        it has none (a parent's value is the parent's to close). The next :meth:`get`
        makes a new one."""
        with self._lock:
            value = self.peek()
            self._value = self._pid = None
        return value
