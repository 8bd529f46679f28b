"""The residents' forms through HTTP, the tester's defects: one evaluation per resolution
(also with two at the same moment), refusals in the page's language, a clear message for an
over-long description, phone numbers checked, and a rate limit that keeps the form."""

from __future__ import annotations

import re
import threading

import pytest

from gis.errors import Conflict
from tests.webapp.test_resident import (
    COMPOUND,
    PHONE,
    _walk,
    case_count,
    csrf_token,
    submit,
    tracking_code,
)

ALREADY_ZH = "您已评价过本次处理结果"
ALREADY_EN = "You have already evaluated this result"


def resolved_case(app, people, auth, client) -> tuple[str, int]:
    """A resident's report (through ``client``) moved filed → in progress → resolved."""
    h = app.extensions["hemei"]
    code = tracking_code(submit(client))
    cid = h.store.find_by_tracking_code(code).id
    resolve(app, auth, cid, ["filed", "in_progress", "resolved"])
    return code, cid


def resolve(app, auth, cid, steps):
    _walk(app.test_client(), auth, cid, [("gw", {"to": to, "note": "处理"}) for to in steps])


def evaluate(client, code, **data):
    token = csrf_token(client.get(f"/r/{COMPOUND}"))
    return client.post(f"/t/{code}", data={"csrf_token": token, **data})


def evaluations(hemei, cid) -> list[str]:
    return [e["data"]["verdict"] for e in hemei.store.get_case(cid).history
            if e["kind"] == "evaluation"]


def alert(resp) -> str:
    m = re.search(r'class="error-message" role="alert">([^<]*)<', resp.get_data(as_text=True))
    assert m, resp.get_data(as_text=True)[:800]
    return m.group(1)


# ------------------------------------------------------------- 1. one evaluation each


def test_a_resolution_is_evaluated_once(app, people, auth, public_client, hemei):
    code, cid = resolved_case(app, people, auth, public_client)
    assert 'name="verdict"' in public_client.get(f"/t/{code}").get_data(as_text=True)
    assert evaluate(public_client, code, verdict="satisfied").status_code == 302
    before = hemei.store.get_case(cid)

    # The page shows the verdict given, not the form again.
    html = public_client.get(f"/t/{code}").get_data(as_text=True)
    assert 'name="verdict"' not in html and "请评价处理结果" not in html
    given = re.search(r'id="evaluation-given">.*?</section>', html, re.S).group(0)
    assert "您的评价" in given and 'data-verdict="satisfied">满意<' in given

    # Again, either way: 409 in Chinese, and nothing changes.
    for data in ({"verdict": "satisfied"},
                 {"verdict": "not_satisfied", "comment": "其实还是不亮"}):
        r = evaluate(public_client, code, **data)
        assert r.status_code == 409
        assert ALREADY_ZH in alert(r) and "（满意）" in alert(r)
        assert 'name="verdict"' not in r.get_data(as_text=True)
    after = hemei.store.get_case(cid)
    assert evaluations(hemei, cid) == ["satisfied"]
    assert (after.status, after.rework_count, after.row_version, len(after.history)) == (
        "resolved", 0, before.row_version, len(before.history))


def test_the_refusal_is_in_english_on_the_english_page(app, people, auth, public_client):
    code, _ = resolved_case(app, people, auth, public_client)
    public_client.get(f"/t/{code}?lang=en")  # the switch, remembered in a cookie
    assert evaluate(public_client, code, verdict="satisfied").status_code == 302
    r = evaluate(public_client, code, verdict="satisfied")
    assert r.status_code == 409
    assert alert(r).startswith(f"{ALREADY_EN} (Satisfied).")
    assert not re.search(r"[\u4e00-\u9fff]", alert(r))


@pytest.mark.backends("sqlite", "postgis")
def test_the_rule_is_the_services_not_only_the_pages(app, people, auth, public_client,
                                                     hemei):
    code, cid = resolved_case(app, people, auth, public_client)
    hemei.evaluate(code, "satisfied")
    with pytest.raises(Conflict) as refused:
        hemei.evaluate(code, "not_satisfied", "还是坏的")
    assert refused.value.details["reason"] == "already_evaluated"
    assert refused.value.details["verdict"] == "satisfied"
    assert evaluations(hemei, cid) == ["satisfied"]


@pytest.mark.parametrize("first", ["not_satisfied", "satisfied"])
def test_a_reworked_case_is_evaluated_once_more(app, people, auth, public_client, hemei,
                                                first):
    """Not satisfied → rework → resolved again; or satisfied, and the grid worker's check
    sends it back anyway: the new resolution may be evaluated, once."""
    code, cid = resolved_case(app, people, auth, public_client)
    data = {"verdict": first, "comment": "灯还是不亮" if first == "not_satisfied" else ""}
    assert evaluate(public_client, code, **data).status_code == 302
    if first == "satisfied":
        resolve(app, auth, cid, ["reopened"])
    html = public_client.get(f"/t/{code}").get_data(as_text=True)
    assert hemei.store.get_case(cid).status == "reopened" and 'name="verdict"' not in html
    r = evaluate(public_client, code, verdict="satisfied")  # not resolved yet
    assert r.status_code == 409 and "问题处置完毕后才能评价处理结果" in alert(r)

    resolve(app, auth, cid, ["in_progress", "resolved"])
    assert 'name="verdict"' in public_client.get(f"/t/{code}").get_data(as_text=True)
    assert evaluate(public_client, code, verdict="satisfied").status_code == 302
    r = evaluate(public_client, code, verdict="satisfied")
    assert r.status_code == 409 and ALREADY_ZH in alert(r)
    assert evaluations(hemei, cid) == [first, "satisfied"]
    assert hemei.store.get_case(cid).rework_count == 1


@pytest.mark.backends("sqlite", "postgis")
@pytest.mark.parametrize("verdicts", [("satisfied", "satisfied"),
                                      ("satisfied", "not_satisfied")])
def test_two_evaluations_at_the_same_moment_count_once(backend, app, people, auth,
                                                       public_client, hemei, monkeypatch,
                                                       verdicts):
    """Two POSTs from two phones, both having read the case before either writes (a
    barrier after the read forces that order), against the instance's SQLite file (or
    PostGIS): one is recorded, the other is told in Chinese why not; nothing is
    half-written."""
    if backend == "sqlite":
        assert hemei.store.url.startswith("sqlite:///") and "memory" not in hemei.store.url
    code, cid = resolved_case(app, people, auth, public_client)
    before = hemei.store.get_case(cid)
    clients = [app.test_client() for _ in verdicts]
    tokens = [csrf_token(c.get(f"/r/{COMPOUND}")) for c in clients]

    barrier = threading.Barrier(len(verdicts), timeout=20)
    read_once = threading.local()
    original = hemei.store.find_by_tracking_code

    def read_then_wait(tracking):
        case = original(tracking)
        if not getattr(read_once, "done", False):
            read_once.done = True
            barrier.wait()  # both have read version N before either writes
        return case

    monkeypatch.setattr(hemei.store, "find_by_tracking_code", read_then_wait)
    results: list = [None] * len(verdicts)

    def run(i):
        try:
            r = clients[i].post(f"/t/{code}", data={
                "csrf_token": tokens[i], "verdict": verdicts[i], "comment": "同时提交"})
            results[i] = (r.status_code, r.get_data(as_text=True))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = (None, repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(verdicts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    monkeypatch.undo()

    assert sorted(code for code, _ in results) == [302, 409], results
    winner = next(i for i, (status, _) in enumerate(results) if status == 302)
    loser = results[1 - winner][1]
    # The loser re-read the case and was refused by the rule, not a bare "changed".
    assert ALREADY_ZH in loser or "问题处置完毕后才能评价处理结果" in loser, loser[:1500]
    after = hemei.store.get_case(cid)
    assert evaluations(hemei, cid) == [verdicts[winner]]
    assert after.row_version == before.row_version + 1
    assert after.rework_count == (1 if verdicts[winner] == "not_satisfied" else 0)


# ----------------------------------------------------- 2. refusals in the page's language


@pytest.mark.parametrize("lang, says, english", [
    ("zh", "问题处置完毕后才能评价处理结果", False),
    ("en", "The result can be evaluated once the case has been resolved", True),
])
def test_evaluating_an_unresolved_case_is_refused_in_the_pages_language(
        public_client, hemei, lang, says, english):
    code = tracking_code(submit(public_client))
    public_client.get(f"/t/{code}?lang={lang}")
    r = evaluate(public_client, code, verdict="satisfied")
    assert r.status_code == 409
    assert alert(r) == says
    assert "a case can be evaluated once" not in r.get_data(as_text=True)
    assert bool(re.search(r"[\u4e00-\u9fff]", alert(r))) is not english


@pytest.mark.parametrize("data, says", [
    ({"verdict": ""}, "请选择“满意”或“不满意”"),
    ({"verdict": "not_satisfied", "comment": "  "}, "请说明还有什么问题没有解决"),
    ({"verdict": "not_satisfied", "comment": "长" * 1001}, "最多 1000 个字"),
])
def test_a_bad_evaluation_is_told_in_chinese_and_keeps_the_comment(
        app, people, auth, public_client, data, says):
    code, _ = resolved_case(app, people, auth, public_client)
    r = evaluate(public_client, code, **data)
    assert r.status_code == 400
    assert says in alert(r) and not re.search(r"[A-Za-z]{3,}", alert(r))
    html = r.get_data(as_text=True)
    if data.get("comment", "").strip():
        assert f">{data['comment']}</textarea>" in html  # what was typed is kept
        assert 'value="not_satisfied" checked' in html


# ------------------------------------------------------- 3. an over-long description


@pytest.mark.parametrize("lang, parts", [
    ("zh", ("问题描述太长", "4001", "4000")),
    ("en", ("The description is too long", "4001", "4000")),
])
def test_an_over_long_description_says_so_and_the_limit(public_client, hemei, lang, parts):
    public_client.get(f"/r/{COMPOUND}?lang={lang}")
    n = case_count(hemei)
    r = submit(public_client, description="长" * 4001)
    assert r.status_code == 400
    m = re.search(r'<p data-field="description">([^<]*)</p>', r.get_data(as_text=True))
    assert m, r.get_data(as_text=True)[:800]
    for part in parts:
        assert part in m.group(1)
    assert "请填写问题描述" not in m.group(1) and "Please describe" not in m.group(1)
    assert case_count(hemei) == n


def test_an_empty_description_is_asked_for_in_chinese_only(public_client):
    r = submit(public_client, description="   ")
    m = re.search(r'<p data-field="description">([^<]*)</p>', r.get_data(as_text=True))
    assert r.status_code == 400 and m.group(1) == "请填写问题描述"


def test_line_breaks_count_once_as_the_browser_counts_them(public_client, hemei):
    # 4,000 characters as the textarea's maxlength counts them; the browser sends every
    # line break as CRLF, 4,039 characters on the wire.
    text = "\r\n".join(["灯" * 99] * 40) + "。"
    assert len(text.replace("\r\n", "\n")) == 4000 and len(text) == 4039
    code = tracking_code(submit(public_client, description=text))
    stored = hemei.store.find_by_tracking_code(code).description
    assert "\r" not in stored and len(stored) == 4000


# ------------------------------------------------------------------- 4. phone numbers


@pytest.mark.parametrize("phone", [
    "-----", "+86 ----", "12345", "call me maybe", "1380013800", "138001380001",
    "23800138000", "12800138000", "0774-123", "5123456", "0774-0123456", "(0774)",
    "+1 415 555 2671", "13800138000 or 13900139000",
])
def test_a_phone_number_that_is_not_one_is_refused(public_client, hemei, phone):
    n = case_count(hemei)
    r = submit(public_client, phone=phone)
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    m = re.search(r'<p data-field="phone">([^<]*)</p>', html)
    assert m, html[:800]
    assert "手机号码" in m.group(1) and "区号" in m.group(1)
    assert "楼下路灯一到晚上就不亮" in html  # the description is kept
    assert case_count(hemei) == n


@pytest.mark.parametrize("phone, stored", [
    ("13800138000", "13800138000"),
    ("138 0013 8000", "13800138000"),
    ("138-0013-8000", "13800138000"),
    ("+86 138 0013 8000", "13800138000"),
    ("+86-13800138000", "13800138000"),
    ("0086 13800138000", "13800138000"),
    ("１３８００１３８０００", "13800138000"),  # full-width digits from a Chinese keyboard
    ("19912345678", "19912345678"),
    ("0774-5123456", "0774-5123456"),
    ("(0774) 512 3456", "0774-5123456"),
    ("07745123456", "0774-5123456"),
    ("+86 774 5123456", "0774-5123456"),
    ("010-87654321", "010-87654321"),
    ("020 8765 4321", "020-87654321"),
    ("0755-28765432", "0755-28765432"),
    ("", None),
    ("   ", None),
])
def test_a_phone_number_is_accepted_and_stored_tidy(public_client, hemei, phone, stored):
    code = tracking_code(submit(public_client, phone=phone))
    assert hemei.store.find_by_tracking_code(code).reporter_phone == stored


def test_the_phone_message_is_english_on_the_english_page(public_client):
    public_client.get(f"/r/{COMPOUND}?lang=en")
    r = submit(public_client, phone="-----")
    m = re.search(r'<p data-field="phone">([^<]*)</p>', r.get_data(as_text=True))
    assert r.status_code == 400 and m.group(1).startswith("Please give a mobile number")


# --------------------------------------------------------------------- 5. rate limits


@pytest.mark.parametrize("lang, says", [
    ("zh", "请稍后再试：10 分钟后可以再次提交"),
    ("en", "Please try again later, in 10 minutes."),
])
def test_a_rate_limited_report_keeps_the_form_and_says_when(limited_app, lang, says):
    client = limited_app.test_client()
    client.get(f"/r/{COMPOUND}?lang={lang}")
    for _ in range(3):
        tracking_code(submit(client))
    n = case_count(limited_app.extensions["hemei"])
    r = submit(client, description="三楼楼道灯坏了好几天", name="刘阿姨", phone=PHONE,
               category="roof_leak")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 600
    html = r.get_data(as_text=True)
    assert says in html and 'id="resident-form"' in html
    # What was typed is still there to send again.
    assert ">三楼楼道灯坏了好几天</textarea>" in html
    assert 'value="刘阿姨"' in html and f'value="{PHONE}"' in html
    assert re.search(r'value="roof_leak"\s+selected', html)
    assert case_count(limited_app.extensions["hemei"]) == n


def test_a_rate_limited_evaluation_keeps_the_comment(limited_app):
    client = limited_app.test_client()
    h = limited_app.extensions["hemei"]
    code = tracking_code(submit(client))
    for _ in range(3):  # three refused evaluations use up the limit
        assert evaluate(client, code, verdict="satisfied").status_code == 409
    r = evaluate(client, code, verdict="not_satisfied", comment="灯还是不亮")
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 600
    assert "请稍后再试" in alert(r)
    assert not [e for e in h.store.find_by_tracking_code(code).history
                if e["kind"] == "evaluation"]
