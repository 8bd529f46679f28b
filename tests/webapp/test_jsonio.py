"""JSON responses (webapp/jsonio.py): orjson does the encoding, Flask's provider still
decides dates, unknown types, key order and debug indentation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import pytest
from flask import jsonify


@dataclass
class Point:
    x: float
    y: float


def test_the_app_encodes_json_as_flask_would_only_faster(app):
    with app.test_request_context():
        body = {"名称": "路灯不亮", "b": 1, "a": [1.5, None, True], 3: "int key",
                "at": datetime(2026, 11, 26, 9, 30), "day": date(2026, 11, 26),
                "money": Decimal("12.50"), "pt": Point(111.57, 24.4),
                "bad": math.nan, "far": math.inf}
        resp = jsonify(body)
        raw = resp.get_data()
    text = raw.decode("utf-8")
    assert "路灯不亮" in text  # UTF-8, not \\u escapes
    got = json.loads(text)
    assert list(got) == ["名称", "b", "a", "3", "at", "day", "money", "pt", "bad", "far"]
    assert got["at"] == "Thu, 26 Nov 2026 09:30:00 GMT"  # Flask's HTTP date, as before
    assert got["day"] == "Thu, 26 Nov 2026 00:00:00 GMT"
    assert got["money"] == "12.50" and got["pt"] == {"x": 111.57, "y": 24.4}
    assert got["bad"] is None and got["far"] is None  # valid JSON, not NaN
    assert raw.endswith(b"\n") and resp.mimetype == "application/json"
    assert app.json.dumps({"k": "值"}) == '{"k":"值"}'


def test_unknown_types_still_fail_loudly(app):
    with app.test_request_context(), pytest.raises(TypeError):
        jsonify({"x": object()})


def test_sort_keys_and_debug_indentation_are_honoured(app):
    app.json.sort_keys = True
    app.debug = True
    try:
        with app.test_request_context():
            text = jsonify({"b": 1, "a": 2}).get_data(as_text=True)
    finally:
        app.json.sort_keys = False
        app.debug = False
    assert text == '{\n  "a": 2,\n  "b": 1\n}\n'
