"""Domain vocabulary in both languages (layer names, field labels, legend text).

The web app's own UI strings live with the web app; what the map builder and the
exports need is here so ``gis`` stays usable without Flask.
"""

from __future__ import annotations

LABELS: dict[str, tuple[str, str]] = {
    "street": ("街道", "Street"),
    "community": ("社区", "Community"),
    "compound": ("小区", "Compound"),
    "grid": ("网格", "Grid"),
    "cases": ("案件", "Cases"),
    "code": ("编码", "Code"),
    "name": ("名称", "Name"),
    "open": ("未结案件", "Open cases"),
    "total": ("案件总数", "All cases"),
    "households": ("户数", "Households"),
    "category": ("类别", "Category"),
    "status": ("状态", "Status"),
    "age": ("已过", "Age"),
    "days": ("天", "days"),
    "title": ("标题", "Title"),
    "details": ("详情", "Details"),
    "no_data": ("无数据", "No data"),
    "fewer_better": ("越少越好", "lower is better"),
    "higher_better": ("越高越好", "higher is better"),
    "heatmap": ("案件热力图", "Case heat map"),
    "shown": ("显示 {n} / {total} 件（请放大）", "showing {n} of {total} (zoom in)"),
    "choropleth_open": ("网格未结案件数", "Open cases per grid"),
}


def label(key: str, locale: str = "zh") -> str:
    """``key`` in ``locale`` (zh unless it starts with en); the key itself if unknown."""
    zh, en = LABELS.get(key, (key, key))
    return en if locale.startswith("en") else zh
