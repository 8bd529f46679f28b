"""JSON responses encoded by orjson.

Every API answer is JSON, and on the busiest ones (a report's 201, a map's bounding-box
query of thousands of cases) the standard library's encoder was a visible share of the
request (bench/intake.py, bench/map_page.py). orjson writes the same JSON several times
faster. What Flask's provider decides stays Flask's: dates go through its ``default``
(HTTP dates, as before), as does anything orjson does not know; key order is kept
unless ``sort_keys`` is set, and debug mode still indents.

One difference is deliberate: a float that is NaN or infinite becomes ``null`` (valid
JSON) where the standard library wrote the invalid ``NaN``.
"""

from __future__ import annotations

import orjson
from flask.json.provider import DefaultJSONProvider

_BASE = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson doing the encoding (``app.json``)."""

    ensure_ascii = False  # orjson always writes UTF-8
    sort_keys = False

    def _option(self, indent: bool = False) -> int:
        opt = _BASE
        if self.sort_keys:
            opt |= orjson.OPT_SORT_KEYS
        if indent:
            opt |= orjson.OPT_INDENT_2
        return opt

    def dumps(self, obj, **kwargs) -> str:
        if kwargs.keys() - {"default"}:  # indent, separators …: the standard encoder
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=kwargs.get("default", self.default),
                            option=self._option()).decode()

    def body(self, obj) -> bytes:
        """The bytes :meth:`response` sends for ``obj`` (UTF-8, a newline at the end)."""
        indent = self.compact is False or (self.compact is None and self._app.debug)
        return orjson.dumps(obj, default=self.default, option=self._option(indent)) + b"\n"

    def response(self, *args, **kwargs):
        """Like Flask's: one argument (or keyword arguments) as the JSON body."""
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.body(obj), mimetype=self.mimetype)
