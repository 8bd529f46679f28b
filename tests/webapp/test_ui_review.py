"""The reviewer's findings from using the product in Chromium (zh and en, desktop and a
phone), checked through HTTP: the language switch keeps the page, the report forms name
every missing field in the page's language only, the history words an evaluation as one
(and the resident in the reader's language), the admin page's labels and confirmations,
named chart links, the overview's collapsible legend and localized map controls, and error
pages whose English detail is folded away on a Chinese page.

What only a browser can show (heights on a 360 px phone, Leaflet's controls once drawn)
is in tests/browser/test_ui_review_phone.py."""

from __future__ import annotations

import html as htmllib
import io
import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.webapp.test_accounts import logged_in
from tests.webapp.test_field import csrf, grid_point
from tests.webapp.test_resident import COMPOUND, csrf_token
from tests.webapp.test_resident_eval import evaluate, resolved_case


def lang_link(html: str) -> str:
    """The language switch's href (unescaped)."""
    m = re.search(r'<a class="lang" href="([^"]*)"', html)
    assert m, html[:500]
    return htmllib.unescape(m.group(1))


def query_of(href: str) -> list[tuple[str, str]]:
    assert href.startswith("?"), href  # relative: the browser keeps the page's path
    return parse_qsl(href[1:])


def text(resp) -> str:
    return resp.get_data(as_text=True)


# -- 1. the language switch keeps the page's state -------------------------------------------


def test_the_language_switch_keeps_the_overview_metric_and_period(public_client):
    page = text(public_client.get("/?metric=overdue&period=90d"))
    assert query_of(lang_link(page)) == [("lang", "en"), ("metric", "overdue"),
                                         ("period", "90d")]
    # Followed: the same map, in English, and the way back keeps it too.
    en = text(public_client.get("/" + lang_link(page)))
    assert '<html lang="en">' in en and 'value="overdue" selected' in en
    assert 'value="90d" selected' in en
    assert query_of(lang_link(en)) == [("lang", "zh"), ("metric", "overdue"),
                                       ("period", "90d")]


def test_the_language_switch_keeps_the_search_and_replaces_lang(public_client):
    page = text(public_client.get("/search?q=江南"))
    assert ("q", "江南") in query_of(lang_link(page))
    en = public_client.get("/search" + lang_link(page))
    assert en.status_code == 200 and "Search results: 江南" in text(en)
    # lang is replaced, never doubled.
    again = query_of(lang_link(text(en)))
    assert [k for k, _ in again].count("lang") == 1 and ("lang", "zh") in again


def test_the_language_switch_keeps_the_planners_filters(app):
    client, _token = logged_in(app, "planner")
    page = text(client.get("/planner?period=90d&metric=overdue&level=community"))
    q = dict(query_of(lang_link(page)))
    assert q == {"lang": "en", "period": "90d", "metric": "overdue", "level": "community"}


def test_the_cached_overview_shows_each_visitor_their_own_account_links(app, public_client):
    """The overview is cached: a page rendered for an anonymous visitor must not be
    served to a logged-in one (nor the other way round)."""
    assert ">登录</a>" in text(public_client.get("/"))
    client, _token = logged_in(app, "gw")
    page = text(client.get("/"))
    assert ">工作台</a>" in page and ">登录</a>" not in page
    assert ">工作台</a>" not in text(public_client.get("/"))


# -- 2. the report forms: every missing field, in the page's language only ------------------


def _field_report(client, point, **fields):
    data = {"csrf_token": csrf(client, "/m/report"), "lon": point[0], "lat": point[1],
            "category": "", "description": "", **fields}
    return client.post("/m/report", data=data, content_type="multipart/form-data")


def _errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'<p data-field="([^"]+)">([^<]*)</p>', html))


def test_the_field_report_names_every_missing_field_in_chinese_only(web, hemei, people):
    client = web("gw")
    point = grid_point(hemei, people["grids"]["gw"][0])
    r = _field_report(client, point)
    assert r.status_code == 400
    errors = _errors(text(r))
    assert errors == {"category": "请选择问题类别", "description": "请填写问题描述"}, errors
    assert "unknown category" not in text(r) and "expected one of" not in text(r)
    # No location either: three at once.
    r = _field_report(client, ("", ""))
    assert set(_errors(text(r))) == {"lon", "category", "description"}


def test_the_field_report_in_english_has_no_internal_message(web, hemei, people):
    client = web("gw")
    client.get("/?lang=en")
    point = grid_point(hemei, people["grids"]["gw"][0])
    r = _field_report(client, point, category="no_such_thing", description="Broken")
    assert r.status_code == 400
    assert _errors(text(r)) == {"category": "Please choose the type of problem"}
    assert "unknown category" not in text(r) and "expected one of" not in text(r)


def test_the_residents_form_names_a_missing_category_with_the_description(public_client):
    page = public_client.get(f"/r/{COMPOUND}")
    r = public_client.post(f"/r/{COMPOUND}", data={
        "csrf_token": csrf_token(page), "category": "", "description": ""},
        content_type="multipart/form-data")
    assert r.status_code == 400
    errors = _errors(text(r))
    assert errors == {"category": "请选择问题类别", "description": "请填写问题描述"}, errors


# -- 3 and 4. the history: an evaluation is an evaluation, the resident is named ------------


@pytest.fixture
def evaluated(app, people, auth, public_client):
    """A resident's report, resolved and judged "not satisfied" (so reopened)."""
    code, cid = resolved_case(app, people, auth, public_client)
    r = evaluate(public_client, code, verdict="not_satisfied", comment="还是不亮")
    assert r.status_code == 302, text(r)[:500]
    return code, cid


def _history(html: str, list_id: str | None = None) -> str:
    pattern = (rf'<ol[^>]*id="{list_id}"[^>]*>(.*?)</ol>' if list_id
               else r'<ol class="history"[^>]*>(.*?)</ol>')
    m = re.search(pattern, html, re.S)
    assert m, html[:800]
    return re.sub(r"\s+", " ", m.group(1))


SELF_MOVES = ("已处置 → 已处置", "Resolved → Resolved")


def test_the_public_case_page_shows_the_evaluation_as_one(evaluated, public_client):
    _code, cid = evaluated
    zh = _history(text(public_client.get(f"/cases/{cid}")))
    assert "居民评价：不满意 — 还是不亮" in zh
    assert not any(s in zh for s in SELF_MOVES), zh
    en = _history(text(public_client.get(f"/cases/{cid}?lang=en")))
    assert "Residents&#39; evaluation: Not satisfied" in en or \
        "Residents' evaluation: Not satisfied" in en
    assert not any(s in en for s in SELF_MOVES), en


def test_the_tracking_page_and_the_field_case_page_show_the_evaluation(evaluated, web,
                                                                      public_client):
    code, cid = evaluated
    track = _history(text(public_client.get(f"/t/{code}")), "public-history")
    assert "居民评价：不满意" in track and not any(s in track for s in SELF_MOVES)
    field = _history(text(web("gw").get(f"/m/cases/{cid}")), "history")
    assert "<b>居民评价：不满意</b>" in field, field
    assert not any(s in field for s in SELF_MOVES), field


def test_the_resident_as_actor_is_shown_in_the_readers_language(evaluated, web):
    _code, cid = evaluated
    client = web("gw")
    zh = _history(text(client.get(f"/m/cases/{cid}")), "history")
    assert " · 居民" in zh
    en = _history(text(client.get(f"/m/cases/{cid}?lang=en")), "history")
    assert " · Resident" in en and " · 居民" not in en, en


def test_the_stored_actor_stays_as_it_was(evaluated, hemei):
    _code, cid = evaluated
    actors = {e["actor"] for e in hemei.store.get_case(cid).history}
    assert "居民" in actors and "Resident" not in actors


# -- 5. the admin page: labelled controls, confirmations, the logout message ----------------


class _Names(HTMLParser):
    """Each <select>'s accessible name: aria-label, a <label for>, or the text of the
    <label> it is in."""

    def __init__(self):
        super().__init__()
        self.labels_for: dict[str, str] = {}
        self.open_labels: list[list[str]] = []
        self.selects: list[dict] = []
        self._for: str | None = None
        self._in_select = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.open_labels.append([])
            self._for = a.get("for")
        elif tag == "select":
            self._in_select += 1
            self.selects.append({
                "name": a.get("name"), "id": a.get("id"), "aria": a.get("aria-label"),
                "wrapped": list(self.open_labels[-1]) if self.open_labels else None})

    def handle_endtag(self, tag):
        if tag == "label" and self.open_labels:
            words = "".join(self.open_labels.pop()).strip()
            if self._for:
                self.labels_for[self._for] = words
            self._for = None
        elif tag == "select":
            self._in_select -= 1

    def handle_data(self, data):
        if self.open_labels and not self._in_select:
            self.open_labels[-1].append(data)

    def names(self) -> list[tuple[str, str]]:
        out = []
        for s in self.selects:
            name = s["aria"] or self.labels_for.get(s["id"] or "") or (
                "".join(s["wrapped"]).strip() if s["wrapped"] is not None else "")
            out.append((s["name"], name))
        return out


@pytest.mark.parametrize(("lang", "grids", "org"), [
    ("zh", "网格", "单位"), ("en", "Grids", "Organisation")])
def test_every_select_of_the_admin_page_has_a_name_in_the_page_language(app, lang, grids,
                                                                        org):
    client, _token = logged_in(app, "admin")
    p = _Names()
    p.feed(text(client.get(f"/admin/?lang={lang}")))
    names = p.names()
    assert len(names) > 6
    unnamed = [n for n, label in names if not label]
    assert unnamed == [], unnamed
    for name, label in names:
        if name == "grids":
            assert grids in label, (name, label)
        if name == "org_id":
            assert org in label, (name, label)


def test_adding_an_account_or_an_organisation_says_so(app):
    client, token = logged_in(app, "admin")
    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "江南物业",
                                         "kind": "property"}, follow_redirects=True)
    assert "已添加单位：江南物业。" in text(r)
    r = client.post("/admin/users", data={"csrf_token": token, "username": "newbie",
                                          "role": "planner", "password": "long-enough-1",
                                          "area_code": "451102003"}, follow_redirects=True)
    assert r.status_code == 200 and "已添加账号：newbie。" in text(r)
    # Shown once.
    assert "已添加账号" not in text(client.get("/admin/"))


@pytest.mark.parametrize(("lang", "words"), [("zh", "您已退出登录。"),
                                             ("en", "You have logged out.")])
def test_logging_out_says_so_on_the_next_page(app, lang, words):
    client, token = logged_in(app, "gw")
    client.get(f"/?lang={lang}")
    r = client.post("/logout", data={"csrf_token": token}, follow_redirects=True)
    assert r.status_code == 200 and words in text(r)
    assert "logged_out" not in text(r)
    # Once, and never from the page cache to someone else.
    assert words not in text(client.get("/"))
    assert words not in text(app.test_client().get(f"/?lang={lang}"))


# -- 6. the planner's charts: every link has a name -----------------------------------------


def test_every_chart_link_has_a_name(app):
    client, _token = logged_in(app, "planner")
    html = text(client.get("/planner"))
    links = []
    for chart in ("chart-trend", "chart-categories", "chart-close"):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', html, re.S).group(0)
        links += [(chart, m) for m in re.findall(r'<a href="/planner/cases[^"]*"[^>]*>', svg)]
    assert len(links) > 20
    unnamed = [a for _c, a in links if "aria-label=" not in a]
    assert unnamed == [], unnamed[:3]
    labels = {c: [htmllib.unescape(re.search(r'aria-label="([^"]*)"', a).group(1))
                  for cc, a in links if cc == c] for c in ("chart-trend", "chart-categories",
                                                           "chart-close")}
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d 当周新上报：\d+", t) for t in labels["chart-trend"])
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\d 当周结案：\d+", t) for t in labels["chart-trend"])
    assert all("上报案件：" in t for t in labels["chart-categories"]), labels
    assert all(re.search(r"天内结案：\d+ 件$", t) for t in labels["chart-close"]), labels
    # The tooltip says the same.
    assert "<title>" in re.search(r'<svg id="chart-trend".*?</svg>', html, re.S).group(0)
    en = text(client.get("/planner?lang=en"))
    assert re.search(r'aria-label="New reports, week of \d{4}-\d\d-\d\d: \d+"', en)


# -- 7. the overview on a phone: a legend that folds, a placeholder that fits --------------


def test_the_legend_is_a_disclosure_that_folds_on_narrow_screens(public_client):
    html = text(public_client.get("/"))
    m = re.search(r'<details id="map-legend" class="map-legend"[^>]*open>'
                  r'<summary class="legend-title">([^<]+)</summary>', html)
    assert m and m.group(1) == "未结案件"
    assert "getElementById(\"map-legend\")" in html and "max-width: 600px" in html


def test_the_english_search_placeholder_is_short_and_the_name_complete(public_client):
    html = text(public_client.get("/?lang=en"))
    m = re.search(r'<input type="search" name="q"[^>]*placeholder="([^"]*)"'
                  r'[^>]*aria-label="([^"]*)"', html)
    assert m, html
    placeholder, name = m.groups()
    assert len(placeholder) <= 26, placeholder
    assert name == "Search grid code or compound name"


def test_the_map_controls_labels_stay_names_for_screen_readers(public_client):
    html = text(public_client.get("/"))
    for word in ("指标", "时段", "分级"):
        assert f'<span class="control-label">{word}</span>' in html


# -- 8. the map's controls in the page's language --------------------------------------------


def _js_has(html: str, words: str) -> bool:
    """``words`` in the page, as they are or \\u-escaped in a script."""
    return words in html or json.dumps(words)[1:-1] in html


@pytest.mark.parametrize("url", ["/", "/cases/1", "/grids/451102003001001"])
def test_the_map_controls_speak_chinese_on_a_chinese_page(public_client, url):
    html = text(public_client.get(url))
    for words in ("放大", "缩小", "全屏", "定位我的位置", "图层", "位置标记"):
        assert _js_has(html, words), (url, words)
    assert "Locate me" not in html and '"Full Screen"' not in html
    assert "imperial: false" in html and 'setPrefix("Leaflet")' in html
    assert "L.control.scale()" not in html  # the default has miles too


def test_the_map_controls_speak_english_on_an_english_page(public_client):
    html = text(public_client.get("/?lang=en"))
    for words in ("Zoom in", "Zoom out", "Full screen", "Show my location", "Layers"):
        assert _js_has(html, words), words
    assert not _js_has(html, "放大") and "定位" not in html


def test_the_field_maps_zoom_buttons_and_marker_are_localized(web, public_client):
    page = text(web("gw").get("/m/report"))
    messages = json.loads(re.search(r'<script id="field-i18n" type="application/json">'
                                    r"(.*?)</script>", page, re.S).group(1))
    assert messages["zoomIn"] == "放大" and messages["markerAlt"] == "位置标记"
    script = text(public_client.get("/static/js/field.js"))
    assert 'zoomInTitle = msg("zoomIn")' in script
    assert 'L.Marker.prototype.options.alt = msg("markerAlt")' in script


# -- 9. error pages: the headline in the page's language, the English detail folded -----------


def _technical(html: str):
    return re.search(r'<details class="error-technical"><summary>([^<]*)</summary>'
                     r'<div lang="en"><p class="error-message">(.*?)</p></div></details>',
                     html, re.S)


def test_a_chinese_404_folds_the_english_detail_away(public_client):
    r = public_client.get("/grids/000")
    html = text(r)
    assert r.status_code == 404 and "页面或条目不存在。" in html
    folded = _technical(html)
    assert folded and folded.group(1) == "技术信息" and "no grid with code 000" in folded.group(2)
    # Outside the fold, no English sentence.
    assert "no grid with code" not in html.replace(folded.group(0), "")


def test_an_english_404_shows_the_detail(public_client):
    html = text(public_client.get("/grids/000?lang=en"))
    assert _technical(html) is None
    assert '<p class="error-message">no grid with code 000</p>' in html


def test_a_chinese_403_folds_the_role_message(app):
    client, _token = logged_in(app, "planner")
    html = text(client.get("/admin/"))
    folded = _technical(html)
    assert folded and "this page is for admin" in folded.group(2)
    assert "you are planner" not in html.replace(folded.group(0), "")


def test_a_message_already_in_chinese_is_not_folded(public_client):
    r = public_client.post(f"/r/{COMPOUND}", data={"description": "x"})  # no CSRF token
    html = text(r)
    assert r.status_code == 400 and "表单已过期" in html and _technical(html) is None


@pytest.fixture
def small_uploads(instance_maker, tmp_path):
    app = instance_maker.new_app(tmp_path / "small", MAX_PHOTO_MB="1")
    yield app
    instance_maker.close(app)


@pytest.mark.parametrize(("lang", "headline"), [
    ("zh", "上传内容过大：最多 3 张照片，每张不超过 1 MB"),
    ("en", "The upload is too large: at most 3 photos, each at most 1 MB.")])
def test_the_413_page_says_the_limits_in_the_page_language(small_uploads, lang, headline):
    client = small_uploads.test_client()
    client.get(f"/?lang={lang}")
    big = io.BytesIO(b"\xff" * (5 * 1024 * 1024))
    r = client.post(f"/r/{COMPOUND}", data={"photos": (big, "big.jpg")},
                    content_type="multipart/form-data")
    html = text(r)
    assert r.status_code == 413
    assert f'<p class="error-headline">{headline}</p>' in html, html[:1500]
    folded = _technical(html)
    if lang == "zh":
        assert folded and "send at most 3 photos" in folded.group(2)
        assert "MB each" not in html.replace(folded.group(0), "")
    else:
        assert folded is None and "send at most 3 photos of at most 1 MB each" in html


def test_api_errors_stay_json(public_client):
    r = public_client.get("/api/v1/issues/999999")
    assert r.status_code == 404 and r.is_json


def test_lang_link_is_relative(public_client):
    href = lang_link(text(public_client.get("/grids/000?x=1")))
    assert urlsplit(href).path == "" and query_of(href) == [("lang", "en"), ("x", "1")]
