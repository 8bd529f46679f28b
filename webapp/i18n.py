"""UI language: zh-CN by default, English by a switch (``?lang=en`` sets a cookie)."""

from __future__ import annotations

from flask import current_app, g, request

UI: dict[str, tuple[str, str]] = {
    "app_name": ("和美网格", "Hemei Grid"),
    "overview": ("总览", "Overview"),
    "grid": ("网格", "Grid"),
    "case": ("案件", "Case"),
    "cases": ("案件", "Cases"),
    "open_cases": ("未结案件", "Open cases"),
    "all_cases": ("全部案件", "All cases"),
    "compounds": ("小区", "Compounds"),
    "community": ("社区", "Community"),
    "households": ("户数", "Households"),
    "category": ("类别", "Category"),
    "status": ("状态", "Status"),
    "reported_at": ("上报时间", "Reported"),
    "due_at": ("办理时限", "Due"),
    "title": ("标题", "Title"),
    "description": ("描述", "Description"),
    "history": ("办理记录", "History"),
    "location": ("位置", "Location"),
    "overdue": ("已超期", "Overdue"),
    "none": ("无", "None"),
    "no_cases": ("暂无案件", "No cases"),
    "error": ("出错了", "Error"),
    "back": ("返回总览", "Back to overview"),
    "lang_switch": ("English", "中文"),
    "grids": ("网格数", "Grids"),
    "metric": ("指标", "Metric"),
    "period": ("时段", "Period"),
    "classes": ("分级", "Classes"),
    "natural_breaks": ("自然断点", "Natural breaks"),
    "quantiles": ("分位数", "Quantiles"),
    "7d": ("近7天", "Last 7 days"),
    "30d": ("近30天", "Last 30 days"),
    "90d": ("近90天", "Last 90 days"),
    "365d": ("近一年", "Last year"),
    "show": ("显示", "Show"),
    "search": ("搜索网格编码或小区名称", "Search grid code or compound name"),
    "search_results": ("搜索结果", "Search results"),
    "no_results": ("没有找到", "Nothing found"),
    "cases_in_view": ("视图内案件", "Cases in view"),
    "compound": ("小区", "Compound"),
    "grids_straddled": ("所在网格", "Grids"),
    "overdue_by": ("超期", "Overdue by"),
    "days": ("天", "days"),
    "due_in": ("剩余", "Due in"),
    "open_only": ("仅显示未结案件，按超期程度排序", "Open cases only, most overdue first"),
    "total_open": ("未结案件总数", "Open cases in total"),
}


def get_locale() -> str:
    """The request's UI language: ``?lang=``, then the ``lang`` cookie, then the default."""
    if "locale" in g:
        return g.locale
    lang = request.args.get("lang") or request.cookies.get("lang") or str(
        current_app.config["HEMEI"].get("LOCALE") or "zh")
    g.locale = "en" if lang.startswith("en") else "zh"
    return g.locale


def t(key: str) -> str:
    """Translate a UI string into the request's language."""
    zh, en = UI.get(key, (key, key))
    return en if get_locale() == "en" else zh
