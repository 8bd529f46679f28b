"""The case category catalogue.

Cities change their catalogues, so it is data (``catalogue.json``), not code: each
category has a code, zh and en names, a major class, a kind (部件 component or 事件
event) and a default time limit in working days or hours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gis.errors import InvalidInput

_CATALOGUE = Path(__file__).with_name("catalogue.json")


@dataclass(frozen=True)
class Category:
    """One minor class of the catalogue."""

    code: str
    zh: str
    en: str
    major: str
    major_zh: str
    major_en: str
    kind: str
    limit_value: int
    limit_unit: str  # "working_days" or "hours"
    keywords: tuple[str, ...] = ()

    def label(self, locale: str = "zh") -> str:
        """The name in ``locale`` (``zh`` unless it starts with ``en``)."""
        return self.en if locale.startswith("en") else self.zh

    def to_dict(self) -> dict:
        """A JSON-able description (API responses)."""
        return {
            "code": self.code,
            "name_zh": self.zh,
            "name_en": self.en,
            "major": self.major,
            "kind": self.kind,
            "time_limit": {"value": self.limit_value, "unit": self.limit_unit},
        }


@lru_cache(maxsize=4)
def load_catalogue(path: str | None = None) -> dict[str, Category]:
    """Read the catalogue file (default: the one shipped with ``gis``), keyed by code."""
    raw = json.loads(Path(path or _CATALOGUE).read_text(encoding="utf-8"))
    out: dict[str, Category] = {}
    for c in raw["categories"]:
        out[c["code"]] = Category(
            code=c["code"],
            zh=c["zh"],
            en=c["en"],
            major=c["major"],
            major_zh=c["major_zh"],
            major_en=c["major_en"],
            kind=c["kind"],
            limit_value=int(c["time_limit"]["value"]),
            limit_unit=c["time_limit"]["unit"],
            keywords=tuple(c.get("keywords", ())),
        )
    return out


def get_category(code: object) -> Category:
    """Return the category ``code`` or raise ``InvalidInput`` naming the known codes."""
    cats = load_catalogue()
    if not isinstance(code, str) or code not in cats:
        raise InvalidInput(
            f"unknown category {code!r}; expected one of: {', '.join(cats)}", field="category"
        )
    return cats[code]
