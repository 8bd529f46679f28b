"""UI language through Flask-Babel: zh-CN by default, English by a switch.

``?lang=en`` / ``?lang=zh`` choose the language and set a ``lang`` cookie (see
``pages.remember_language``); without either, ``HEMEI_LOCALE`` decides (``zh`` by default).

Messages: the source text is **English** (the gettext convention: English msgids in the
templates and code, ``_("Open cases")``), translated by two catalogs:

    webapp/translations/zh_Hans_CN/LC_MESSAGES/messages.po   简体中文, the default locale
    webapp/translations/en/LC_MESSAGES/messages.po           English (msgstr = msgid, mostly)

Both catalogs must translate every message (``tests/webapp/test_i18n.py`` checks), and the
compiled ``.mo`` files are committed next to them so an install needs no build step.
After changing or adding a ``_()`` / ``ngettext()`` / ``pgettext()`` call, from the repo root:

    .venv/bin/pybabel extract -F babel.cfg --add-comments=Translators: --no-wrap \
        --project="Hemei Grid" --version=0.1 --copyright-holder="Hemei Grid contributors" \
        -o webapp/translations/messages.pot .
    .venv/bin/pybabel update -i webapp/translations/messages.pot -d webapp/translations \
        --no-fuzzy-matching --ignore-obsolete --no-wrap
    # fill in the empty msgstr of the new messages in both messages.po files, then
    .venv/bin/pybabel compile -d webapp/translations --statistics

and commit the .pot, both .po and both .mo files. A new language: ``pybabel init -i
webapp/translations/messages.pot -d webapp/translations -l <locale>`` and a ``LOCALES`` entry.

Domain words the map builder needs (legend, layer names) live in ``gis/i18n.py``, which
cannot import Flask; they are not part of these catalogs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from flask import Flask, current_app, g, has_request_context, request
from flask_babel import Babel, gettext

# Every page shows Beijing time (UTC+8: China has one time zone and no daylight saving);
# everything is stored as naive UTC. The clock is gis.localtime's (the periods, charts,
# exports and reports of ``gis`` use the same); BEIJING is re-exported for callers here.
from gis.localtime import BEIJING as BEIJING
from gis.localtime import format_beijing

TRANSLATIONS = Path(__file__).resolve().parent / "translations"

#: The app's short language codes (``?lang=``, the cookie, ``locale`` in templates and in
#: ``gis``) and the Babel locale whose catalog each one uses.
LOCALES: dict[str, str] = {"zh": "zh_Hans_CN", "en": "en"}


def local_time(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored time (naive UTC) on the street office's clock, Beijing time; "—" for
    none. The ``local`` filter in templates: ``{{ ev.at|local }}``,
    ``{{ c.created_at|local('%Y-%m-%d') }}``."""
    return format_beijing(dt, fmt)


def _short(lang: str | None) -> str:
    return "en" if (lang or "").lower().startswith("en") else "zh"


def default_locale() -> str:
    """The configured default language (``HEMEI_LOCALE``), ``zh`` or ``en``."""
    return _short(str(current_app.config["HEMEI"].get("LOCALE") or "zh"))


def get_locale() -> str:
    """The request's UI language, ``zh`` or ``en``: ``?lang=``, then the ``lang`` cookie,
    then the default. Outside a request: the default."""
    if not has_request_context():
        return default_locale()
    if "locale" in g:
        return g.locale
    lang = request.args.get("lang") or request.cookies.get("lang")
    g.locale = _short(lang) if lang else default_locale()
    return g.locale


#: Actors the system itself writes into a case's history (stored as they are, in
#: Chinese): the English message each is shown as, translated by the catalogs.
def N_(message: str) -> str:
    """Mark ``message`` for ``pybabel extract`` without translating it (yet)."""
    return message


SYSTEM_ACTORS: dict[str, str] = {
    # Translators: who made a step of a case's history: a resident (no account).
    "居民": N_("Resident"),
}


def actor_label(actor: str | None) -> str:
    """Who made a step of a case's history, for display: a system actor (the resident,
    stored as "居民") in the page's language, a person's name as it is. The stored data
    keep the stored actor. The ``actor`` filter in templates."""
    if actor in SYSTEM_ACTORS:
        return gettext(SYSTEM_ACTORS[actor])
    return actor or ""


def babel_locale() -> str:
    """Flask-Babel's locale selector: the Babel locale of :func:`get_locale`."""
    return LOCALES[get_locale()]


def init_app(app: Flask) -> None:
    """Set up Flask-Babel on ``app``: ``_``, ``gettext``, ``ngettext``, ``pgettext`` in
    templates, the catalogs in ``webapp/translations``, Chinese unless configured."""
    default = _short(str(app.config["HEMEI"].get("LOCALE") or "zh"))
    app.config.setdefault("BABEL_DEFAULT_LOCALE", LOCALES[default])
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    Babel(app, locale_selector=babel_locale)
    app.jinja_env.filters["local"] = local_time
    app.jinja_env.filters["actor"] = actor_label


#: Deprecated: the old ``t('key')`` keys and the English message each one became. Only for
#: templates written against the old dict that have not moved to ``_()`` yet.
_OLD_KEYS: dict[str, str] = {
    "app_name": "Hemei Grid", "overview": "Overview", "grid": "Grid",
    "open_cases": "Open cases", "all_cases": "All cases", "compounds": "Compounds",
    "community": "Community", "households": "Households", "category": "Category",
    "status": "Status", "reported_at": "Reported", "due_at": "Due", "title": "Title",
    "history": "History", "location": "Location", "overdue": "Overdue", "none": "None",
    "no_cases": "No cases", "error": "Error", "back": "Back to overview", "metric": "Metric",
    "period": "Period", "classes": "Classes", "show": "Show", "search_results": "Search results",
    "no_results": "Nothing found", "cases_in_view": "Cases in view",
    "total_open": "Open cases in total",
}


def t(message: str) -> str:
    """Deprecated: ``gettext`` under its old name, kept only because ``pages.inject_i18n``
    still puts ``t`` into the template context. Use ``_('English text')``; an old key
    (``t('app_name')``) still translates meanwhile, and ``tests/webapp/test_i18n.py``
    fails on every template that calls ``t(``."""
    return gettext(_OLD_KEYS.get(message, message))
