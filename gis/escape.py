"""Escaping user text for map popups, tooltips and pages.

Folium inserts popup and tooltip text as raw HTML inside JavaScript template literals
(`` `...` ``), and ``GeoJsonTooltip``/``GeoJsonPopup`` concatenate property values into
HTML in the browser. HTML escaping alone is not enough there: a backtick ends the
literal, ``${...}`` is evaluated, and a backslash starts an escape. So on top of
``html.escape`` those characters become numeric character references, which the
browser shows as the same characters but which mean nothing to JavaScript.
"""

from __future__ import annotations

import html

_EXTRA = str.maketrans({"`": "&#96;", "$": "&#36;", "\\": "&#92;", "{": "&#123;",
                        "}": "&#125;"})


def html_text(value: object) -> str:
    """Escape ``value`` for HTML that may sit inside a JS template literal."""
    if value is None:
        return ""
    return html.escape(str(value), quote=True).translate(_EXTRA)
