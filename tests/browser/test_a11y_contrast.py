"""Accessibility on a phone (360 px wide) in a real Chromium, in Chinese and in English:
text contrast (WCAG 2.x SC 1.4.3), tap-target size, and the language of the API page.

Contrast: every visible piece of text (text nodes, the chosen option of a select, an
input's value or placeholder, text drawn by ::before/::after) against the colour behind
it, found by walking up the ancestors and compositing each semi-transparent background
colour until an opaque one; the text colour's alpha and the ancestors' opacity count too.
The ratio is WCAG's ((L1 + 0.05) / (L2 + 0.05), relative luminance of sRGB) and must be at
least 4.5, or 3 for large text (at least 24 px, or 18.66 px and bold). Exempt, as WCAG
says: disabled controls, text nobody sees (display none, visibility hidden, closed
details, the 1 px visually-hidden labels), and text over a background image (there is no
single colour to compare with; counted, and asserted to be rare).

Tap targets: at most 600 px wide (here 360 px) every control a thumb aims at is at least
44 CSS px high (the 44 px of WCAG 2.5.5 and of Apple's and Android's guidelines; the
stricter of the two WCAG target rules). Measured as the area that takes the tap: the
element's box, or, where it is a small box whose ::before reaches further (the folded map
legend, which must stay small), the run of points straight above and below its centre
that ``elementFromPoint`` gives back to it. The controls: every link, button, select and
input of the header; every field and button of a form in the page; the legend's toggle;
the links of the case tables and of link lists (a ``li`` holding just a link); Leaflet's
zoom, full-screen and locate buttons. Links inside a sentence or a paragraph of text are
exempt (WCAG 2.5.8's "inline" exception): none of the selectors above reaches them.
"""

from __future__ import annotations

import pytest

from tests.browser.test_planner import _log_in

pytestmark = pytest.mark.browser
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
COMPOUND = "451102003001C01"  # 厦良新村小区: open cases, one overdue

CONTRAST_JS = r"""() => {
  const parse = s => {
    const m = /rgba?\(([^)]+)\)/.exec(s || '');
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3]))
                                        .concat([1]);
  const lin = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = c => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  const ratio = (a, b) => {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  };
  const hex = c => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0'))
                          .join('');
  // The colour behind el: its own and its ancestors' background colours composited, top
  // down, over white (the canvas); null if a background image comes first.
  function behind(el) {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const cs = getComputedStyle(e);
      const bg = parse(cs.backgroundColor);
      if (bg && bg[3] > 0) layers.push(bg);
      if (bg && bg[3] >= 1) break;
      if (cs.backgroundImage !== 'none') return null;
    }
    let c = [255, 255, 255, 1];
    for (const l of layers.reverse()) c = over(l, c);
    return c;
  }
  function opacity(el) {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  }
  function shown(el) {
    if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return false;
    const r = el.getBoundingClientRect();
    return r.width > 1 && r.height > 1;
  }
  const out = {checked: 0, imaged: 0, failures: []};
  function check(el, text, cs, where) {
    if (el.closest(':disabled, [aria-disabled=true]')) return;
    const bg = behind(el);
    if (!bg) { out.imaged++; return; }
    const fg = parse(cs.color);
    if (!fg) return;
    const col = over([fg[0], fg[1], fg[2], fg[3] * opacity(el)], bg);
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    const r = ratio(col, bg);
    out.checked++;
    if (r < need) out.failures.push(
      `${r.toFixed(2)} < ${need}: ${hex(col)} on ${hex(bg)} ${size}px ${where} `
      + `<${el.tagName.toLowerCase()} class="${el.className}"> ${text.trim().slice(0, 30)}`);
  }
  for (const el of document.body.querySelectorAll('*')) {
    if (!(el instanceof HTMLElement) || el.closest('svg, option, datalist')) continue;
    if (!shown(el)) continue;
    const cs = getComputedStyle(el);
    let text = '';
    if (el.tagName === 'SELECT') text = el.selectedOptions.length ? el.selectedOptions[0].text : '';
    else if (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') {
      if (el.value) text = el.value;
      else if (el.placeholder) check(el, el.placeholder, getComputedStyle(el, '::placeholder'),
                                     'placeholder');
    } else for (const n of el.childNodes)
      if (n.nodeType === Node.TEXT_NODE) text += n.textContent;
    if (text.trim()) check(el, text, cs, '');
    for (const pseudo of ['::before', '::after']) {
      const ps = getComputedStyle(el, pseudo);
      const m = /^"(.*)"$/.exec(ps.content);
      if (m && m[1].trim() && ps.display !== 'none') check(el, m[1], ps, pseudo);
    }
  }
  return out;
}"""

TARGETS = ", ".join([
    "header a", "header button", "header select", "header input:not([type=hidden])",
    "main form a", "main form button", "main form select", "main form textarea",
    "main form input:not([type=hidden]):not([type=checkbox]):not([type=radio])",
    "summary.legend-title", "table.cases td > a", "main li:has(> a:only-child) > a",
    ".leaflet-bar a",
])

TARGETS_JS = r"""(selector) => {
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.checkVisibility({checkVisibilityCSS: true}) || el.closest(':disabled')) continue;
    el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
    const r = el.getBoundingClientRect();
    if (r.width <= 1 || r.height <= 1) continue;
    let height = r.height;
    if (height < 44) {
      // The tap area: from the centre, up and down, as long as a tap still lands on el.
      const x = r.left + r.width / 2, y = r.top + r.height / 2;
      const mine = (yy) => { const hit = document.elementFromPoint(x, yy);
                             return hit !== null && (hit === el || el.contains(hit)); };
      let up = 0, down = 0;
      while (up < 30 && mine(y - up - 1)) up++;
      while (down < 30 && mine(y + down + 1)) down++;
      height = Math.max(height, up + down + 1);
    }
    if (height < 43.5) out.push(`${Math.round(height)}px: <${el.tagName.toLowerCase()} `
      + `class="${el.className}"> ${(el.textContent || el.name || '').trim().slice(0, 25)}`);
  }
  return out;
}"""


def _pages(page, base: str, lang: str):
    """(name, loaded page) for each public page, then the planner's page logged in."""
    page.goto(f"{base}/?lang={lang}", wait_until="networkidle")
    page.wait_for_selector(".folium-map[data-grids-loaded]")
    yield "overview"
    page.goto(f"{base}/compounds/{COMPOUND}?lang={lang}", wait_until="networkidle")
    case_href = page.locator("#open-cases tbody tr a").first.get_attribute("href")
    yield "compound"
    page.goto(f"{base}{case_href}?lang={lang}", wait_until="networkidle")
    yield "case"
    page.goto(f"{base}/login?lang={lang}", wait_until="networkidle")
    yield "login"
    page.goto(f"{base}/api/v1/docs?lang={lang}", wait_until="networkidle")
    page.wait_for_selector(".opblock-summary", timeout=20_000)
    yield "api docs"
    _log_in(page, base, f"/planner?lang={lang}")
    page.wait_for_selector(".folium-map path.leaflet-interactive")
    yield "planner"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_text_contrast_on_a_phone(page_factory, live_server, lang):
    base, _app = live_server
    page, watch = page_factory(**PHONE)
    failures = []
    for name in _pages(page, base, lang):
        res = page.evaluate(CONTRAST_JS)
        assert res["checked"] >= 5, (name, res)
        assert res["imaged"] <= res["checked"] // 10, (name, res)
        failures += [f"{name}: {f}" for f in res["failures"]]
    assert failures == [], "\n".join(failures)
    assert watch.errors == [], watch.errors


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_tap_targets_are_44px_high_on_a_phone(page_factory, live_server, lang):
    base, _app = live_server
    page, _watch = page_factory(**PHONE)
    small = []
    for name in _pages(page, base, lang):
        if name == "api docs":  # Swagger UI's own page: not ours to lay out
            continue
        small += [f"{name}: {s}" for s in page.evaluate(TARGETS_JS, TARGETS)]
    assert small == [], "\n".join(small)


def test_on_a_desktop_the_header_stays_compact(page_factory, live_server):
    """The phone rules stay on the phone: a desktop header is one line, as before."""
    base, _app = live_server
    page, _watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(f"{base}/compounds/{COMPOUND}", wait_until="networkidle")
    assert page.locator("header.topbar").bounding_box()["height"] < 50
    assert page.locator("header .lang").bounding_box()["height"] < 40


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_api_page_is_marked_english(page_factory, live_server, lang):
    """Swagger UI and the API description are English whatever the app's language; only
    the app's name in the bar above is in the visitor's language, and says so."""
    base, _app = live_server
    page, _watch = page_factory(**PHONE)
    page.goto(f"{base}/api/v1/docs?lang={lang}", wait_until="networkidle")
    page.wait_for_selector(".opblock-summary", timeout=20_000)
    langs = page.evaluate("""() => ({
        doc: document.documentElement.lang,
        ui: document.querySelector('#swagger-ui').closest('[lang]').lang,
        op: document.querySelector('.opblock-summary').closest('[lang]').lang,
        brand: document.querySelector('.hemei-apidoc-top a').closest('[lang]').lang})""")
    assert langs["doc"] == "en" and langs["ui"] == "en" and langs["op"] == "en", langs
    assert langs["brand"] == ("en" if lang == "en" else "zh-CN"), langs
