"""UI language through Flask-Babel: complete catalogs, compiled .mo files in step with the
.po files, Chinese by default, English by ``?lang=en`` and then by the cookie."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from flask import render_template_string
from flask_babel import gettext

from webapp import create_app
from webapp.i18n import _OLD_KEYS, LOCALES, TRANSLATIONS, t

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "webapp" / "templates"
CATALOGS = {loc: TRANSLATIONS / loc / "LC_MESSAGES" / "messages.po" for loc in LOCALES.values()}


def _po(path: Path):
    with path.open("rb") as f:
        return read_po(f)


def _keys(catalog) -> set[tuple[str | None, str]]:
    """(context, msgid) of every message, the singular msgid for plurals; no header."""
    return {(m.context, m.id[0] if m.pluralizable else m.id) for m in catalog if m.id}


def _strings(m) -> tuple[str, ...]:
    return tuple(m.string) if m.pluralizable else (m.string,)


def _extracted() -> set[tuple[str | None, str]]:
    """What ``pybabel extract -F babel.cfg`` finds in the sources now."""
    with (REPO / "babel.cfg").open(encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f, "babel.cfg")
    found = set()
    for _file, _line, msg, _comments, context in extract_from_dir(
            REPO, method_map, options_map):
        found.add((context, msg[0] if isinstance(msg, tuple) else msg))
    return found


# -- the catalogs ---------------------------------------------------------------------------

def test_there_is_a_catalog_for_each_language_and_chinese_is_the_default(app):
    assert set(LOCALES) == {"zh", "en"}
    for path in CATALOGS.values():
        assert path.exists() and path.with_suffix(".mo").exists(), path
    assert app.config["BABEL_DEFAULT_LOCALE"] == "zh_Hans_CN"
    assert _po(CATALOGS["zh_Hans_CN"]).num_plurals == 1


@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_every_message_is_translated(locale):
    catalog = _po(CATALOGS[locale])
    assert str(catalog.locale) == locale
    messages = [m for m in catalog if m.id]
    assert len(messages) >= 30
    untranslated = [m.id for m in messages if not all(s.strip() for s in _strings(m))]
    fuzzy = [m.id for m in messages if m.fuzzy]
    assert not untranslated, f"{locale}: no translation for {untranslated}"
    assert not fuzzy, f"{locale}: fuzzy (not compiled) {fuzzy}"
    for m in messages:
        # The placeholders survive translation, or the page raises or shows %(num)d.
        want = set(re.findall(r"%\(\w+\)\w", m.id[-1] if m.pluralizable else m.id))
        for s in _strings(m):
            assert set(re.findall(r"%\(\w+\)\w", s)) == want, (locale, m.id, s)


def test_chinese_catalog_is_chinese_and_english_catalog_is_english():
    zh, en = (_po(CATALOGS["zh_Hans_CN"]), _po(CATALOGS["en"]))
    assert _keys(zh) == _keys(en)
    for m in zh:
        if m.id:
            assert all(re.search(r"[\u4e00-\u9fff]", s) for s in _strings(m)), m.id
    for m in en:
        if m.id:
            assert all(not re.search(r"[\u4e00-\u9fff]", s) for s in _strings(m)), m.id


def test_catalogs_and_template_match_the_sources():
    # A _() added without `pybabel extract` + `update` shows untranslated; a removed one
    # leaves a dead message behind.
    found = _extracted()
    assert ((None, "Open cases") in found and (None, "Hemei Grid") in found)
    with (TRANSLATIONS / "messages.pot").open("rb") as f:
        assert _keys(read_po(f)) == found, "run pybabel extract (see webapp/i18n.py)"
    for locale, path in CATALOGS.items():
        assert _keys(_po(path)) == found, f"run pybabel update for {locale}"


@pytest.mark.parametrize("locale", sorted(CATALOGS))
def test_committed_mo_files_are_compiled_from_the_po_files(locale):
    po = CATALOGS[locale]
    fresh = io.BytesIO()
    write_mo(fresh, _po(po))
    fresh.seek(0)
    with po.with_suffix(".mo").open("rb") as f:
        committed = read_mo(f)
    compiled = read_mo(fresh)

    def table(cat):
        return {(m.context, m.id if isinstance(m.id, str) else tuple(m.id)): m.string
                for m in cat if m.id}

    assert table(committed) == table(compiled), f"run pybabel compile ({locale})"
    assert committed.plural_forms == compiled.plural_forms


# -- the pages ------------------------------------------------------------------------------

ZH_OVERVIEW = ("和美网格", "指标", "时段", "分级", "近30天", "自然断点", "未结案件总数",
               "搜索网格编码或小区名称")
EN_OVERVIEW = ("Hemei Grid", "Metric", "Period", "Classes", "Last 30 days", "Natural breaks",
               "Open cases in total", "Search grid code or compound name")


def test_pages_are_chinese_by_default(client):
    r = client.get("/")
    html = r.get_data(as_text=True)
    assert '<html lang="zh-CN">' in html
    for s in ZH_OVERVIEW:
        assert s in html, s
    for s in EN_OVERVIEW[1:]:
        assert s not in html, s
    assert 'href="?lang=en"' in html and ">English</a>" in html
    assert "lang=" not in r.headers.get("Set-Cookie", "")


def test_lang_en_switches_to_english_and_the_cookie_keeps_it(client):
    r = client.get("/?lang=en")
    assert "lang=en" in r.headers["Set-Cookie"]
    html = r.get_data(as_text=True)
    assert '<html lang="en">' in html
    for s in EN_OVERVIEW:
        assert s in html, s
    for s in ZH_OVERVIEW[1:]:
        assert s not in html, s
    assert 'href="?lang=zh"' in html and ">中文</a>" in html
    # No ?lang= now: the cookie decides, on every page.
    assert '<html lang="en">' in client.get("/").get_data(as_text=True)
    code = client.get("/api/v1/layers/grid").get_json()["features"][0]["properties"]["code"]
    grid = client.get(f"/grids/{code}").get_data(as_text=True)
    assert "Open cases only, most overdue first" in grid and "Compounds" in grid
    case = client.get("/cases/1").get_data(as_text=True)
    assert "History" in case and "Location" in case and "办理记录" not in case
    missing = client.get("/grids/000")
    assert missing.status_code == 404 and "Back to overview" in missing.get_data(as_text=True)
    # And back.
    r = client.get("/?lang=zh")
    assert "lang=zh" in r.headers["Set-Cookie"]
    assert "未结案件总数" in client.get("/").get_data(as_text=True)


def test_other_pages_in_chinese(client):
    code = client.get("/api/v1/layers/grid").get_json()["features"][0]["properties"]["code"]
    grid = client.get(f"/grids/{code}").get_data(as_text=True)
    assert "仅显示未结案件，按超期程度排序" in grid and "小区" in grid and "Compounds" not in grid
    case = client.get("/cases/1").get_data(as_text=True)
    assert "办理记录" in case and "位置" in case
    missing = client.get("/grids/000").get_data(as_text=True)
    assert "出错了" in missing and "返回总览" in missing
    assert "没有找到" in client.get("/search?q=zzzz-no-such-place").get_data(as_text=True)


def test_plural_messages(app):
    tpl = "{{ ngettext('Overdue by %(num)d day', 'Overdue by %(num)d days', n) }}"
    with app.test_request_context("/?lang=en"):
        assert render_template_string(tpl, n=1) == "Overdue by 1 day"
        assert render_template_string(tpl, n=3) == "Overdue by 3 days"
    with app.test_request_context("/"):
        assert render_template_string(tpl, n=3) == "超期 3 天"


def test_gettext_outside_a_request_uses_the_default_and_t_is_gettext(app):
    with app.app_context():
        assert gettext("Open cases") == "未结案件"
    with app.test_request_context("/?lang=en"):
        assert t("Open cases") == "Open cases"


def test_the_deprecated_old_keys_still_translate(app):
    known = _keys(_po(CATALOGS["en"]))
    assert all((None, msgid) in known for msgid in _OLD_KEYS.values())
    with app.test_request_context("/"):
        assert t("app_name") == "和美网格" and t("open_cases") == "未结案件"
    with app.test_request_context("/?lang=en"):
        assert t("app_name") == "Hemei Grid"


def test_hemei_locale_en_makes_english_the_default(instance):
    app = create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none",
                      "LOCALE": "en"})
    assert app.config["BABEL_DEFAULT_LOCALE"] == "en"
    client = app.test_client()
    assert "Open cases in total" in client.get("/").get_data(as_text=True)
    assert "未结案件总数" in client.get("/?lang=zh").get_data(as_text=True)


# -- the templates --------------------------------------------------------------------------

#: Shown as they are on purpose: the language switch names each language in itself.
ENDONYMS = {"English"}
VISIBLE_ATTRS = ("placeholder", "title", "alt", "aria-label", "label")


def _visible_text(source: str) -> str:
    """A template's text a user would see, Jinja removed: text between tags and the
    visible attributes. Whatever ``_()`` produces was inside ``{{ }}`` and is gone."""
    s = re.sub(r"\{#.*?#\}", " ", source, flags=re.S)
    # Blocks that fill in an attribute, e.g. {% block main_class %}fullmap{% endblock %}.
    s = re.sub(r"\{%-?\s*block\s+\w*_class\b.*?\{%-?\s*endblock\b.*?%\}", " ", s, flags=re.S)
    s = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", s, flags=re.S)
    attrs = re.findall(rf'\b(?:{"|".join(VISIBLE_ATTRS)})\s*=\s*"([^"]*)"', s)
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S | re.I)
    return " ".join([re.sub(r"<[^>]*>", " ", s), *attrs])


def test_templates_show_no_english_outside_gettext():
    offenders = {}
    for path in sorted(TEMPLATES.rglob("*.html")):
        words = set(re.findall(r"[A-Za-z]{2,}", _visible_text(path.read_text("utf-8"))))
        words -= ENDONYMS
        if words:
            offenders[str(path.relative_to(TEMPLATES))] = sorted(words)
    assert not offenders, f"wrap these in _(): {offenders}"


def test_templates_do_not_use_the_old_t_keys():
    for path in sorted(TEMPLATES.rglob("*.html")):
        assert not re.search(r"\bt\(", path.read_text("utf-8")), (
            f"{path.relative_to(TEMPLATES)}: use _('English text'), not t('key')")


def test_the_heuristic_catches_english():
    assert re.findall(r"[A-Za-z]{2,}", _visible_text(
        '{% block main_class %}wide{% endblock %}{# a comment #}'
        '<p>{{ _("Fine") }} Oops</p><input placeholder="Type here" value="{{ x }}">')) == [
        "Oops", "Type", "here"]
