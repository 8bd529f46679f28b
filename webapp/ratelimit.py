"""A per-client limit for public forms (residents' reports and evaluations).

In-process and per worker: enough to stop one client flooding a street office's
instance; behind several workers put the same limit in the reverse proxy too.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from flask import request

from gis.errors import TooManyRequests


class RateLimiter:
    """At most ``limit`` hits per ``window`` seconds per (client, bucket)."""

    def __init__(self, limit: int = 5, window: float = 600.0):
        self.limit, self.window = limit, window
        self._hits: dict = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, bucket: str) -> None:
        """Count a hit for the requesting client; ``TooManyRequests`` over the limit,
        with ``details["retry_after"]``: the seconds until a hit would be counted again."""
        key = (request.remote_addr or "?", bucket)
        now = time.monotonic()
        with self._lock:
            q = self._hits[key]
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                # Whole seconds until the oldest hit leaves the window: the Retry-After
                # a page sends, and what it tells the resident (details["retry_after"]).
                wait = int(q[0] + self.window - now) + 1
                raise TooManyRequests(f"too many submissions from your device; try again in "
                                      f"{wait} s (请稍后再试)",
                                      details={"retry_after": wait})
            q.append(now)
