"""A small in-process cache of rendered pages with ETags and gzip.

A rendered overview map depends only on (metric, period, classification, language, tile
source, data version): the data version changes on every write, so an entry is never
stale, and an old entry simply stops being asked for. Each worker keeps its own cache;
nothing is shared, so workers stay stateless.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict

from flask import Response, request


def page_entry(html: str) -> tuple[str, bytes, bytes]:
    """A rendered page as the cache keeps it (and :func:`respond` takes it): ``(etag, raw
    bytes, gzip bytes)``."""
    raw = html.encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:32], raw, gzip.compress(raw, 6)


class PageCache:
    """LRU of ``key → (etag, raw bytes, gzip bytes)``."""

    def __init__(self, size: int = 64):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_render(self, key: tuple, render) -> tuple[str, bytes, bytes]:
        """The cached entry for ``key``, rendering (``render() -> str``) on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
        entry = page_entry(render())
        with self._lock:
            self.misses += 1
            self._data[key] = entry
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return entry


def respond(entry: tuple[str, bytes, bytes], mimetype: str = "text/html") -> Response:
    """A response for a cached entry: 304 if the client's ETag matches, gzip if accepted."""
    etag, raw, gz = entry
    if request.if_none_match.contains(etag):
        resp = Response(status=304)
    elif "gzip" in (request.headers.get("Accept-Encoding") or ""):
        resp = Response(gz, mimetype=mimetype)
        resp.headers["Content-Encoding"] = "gzip"
    else:
        resp = Response(raw, mimetype=mimetype)
    if mimetype.startswith("text/"):
        resp.charset = "utf-8"
    resp.set_etag(etag)
    resp.headers["Vary"] = "Accept-Encoding, Cookie"
    resp.headers["Cache-Control"] = "no-cache"  # revalidate with the ETag every time
    return resp


def compress_json(resp: Response) -> Response:
    """Gzip a JSON/GeoJSON response over 1 KB when the client accepts it (an after-request
    hook: intranet deployments often have no reverse proxy to do it). A case list of
    5,000 points shrinks about 4.5×."""
    if (resp.status_code != 200 or resp.direct_passthrough or "Content-Encoding" in resp.headers
            or resp.mimetype not in ("application/json", "application/geo+json")
            or "gzip" not in (request.headers.get("Accept-Encoding") or "")):
        return resp
    data = resp.get_data()
    if len(data) < 1024:
        return resp
    resp.set_data(gzip.compress(data, 5))
    resp.headers["Content-Encoding"] = "gzip"
    tag, weak = resp.get_etag()
    if tag and not weak:
        resp.set_etag(tag, weak=True)  # same content, other bytes
    resp.vary.add("Accept-Encoding")  # added to what the view said it varies on
    return resp
