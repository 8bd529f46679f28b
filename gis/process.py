"""This process's id, kept up to date across forks.

Per-process state (a store's kept connection and lock-file descriptor, the PostGIS accounts
listener, the access log's ``pid``) is checked on every request, and ``os.getpid()`` is a
system call each time; gunicorn forks its workers after these modules are imported.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """The id of the calling process (as ``os.getpid()``, without the system call)."""
    return _pid
