"""``hemei export`` and ``hemei report`` on bad and extreme input: one line on stderr and a
non-zero exit, never a traceback; and each command speaks one language (English)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest

CJK = re.compile(r"[\u4e00-\u9fff]")


def _run(args, instance):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "webapp.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(r, why: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines


def test_extreme_and_future_periods_are_one_line_errors(instance, tmp_path):
    out = tmp_path / "x.csv"
    for args, why in (
        # Was a traceback and exit 0 (OverflowError in Period.previous).
        (["export", "indicators", "--period", "0001-01", "--out", str(out)], "1900 to 2999"),
        (["export", "indicators", "--period", "0001-01-01..0001-01-31", "--out", str(out)],
         "1900 to 2999"),
        (["export", "indicators", "--period", "2030-01", "--out", str(out)],
         "starts after now"),
        (["export", "cases", "--period", "2030-01", "--out", str(out)], "starts after now"),
        (["export", "cases", "--period", "0001-02", "--out", str(out)], "1900 to 2999"),
        (["export", "indicators", "--period", "2026-10", "--category", "nothing",
          "--out", str(out)], "unknown category"),
    ):
        r = _run(args, instance)
        _one_line_error(r, why)
        assert not out.exists(), args


def test_export_messages_are_english_whatever_the_file_language(instance, tmp_path):
    out = tmp_path / "cases.csv"
    r = _run(["export", "cases", "--out", str(out), "--lang", "zh"], instance)
    assert r.returncode == 0, r.stderr
    assert "exporting cases" in r.stderr and "wrote" in r.stderr
    assert not CJK.search(r.stderr), r.stderr  # was "导出案件" then "wrote … cases"
    assert "类别" in out.read_text(encoding="utf-8-sig").splitlines()[0]  # the file: zh


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_export_indicators_by_category(instance, tmp_path, lang):
    every, leak = tmp_path / "all.csv", tmp_path / "leak.csv"
    for args, path in (([], every), (["--category", "roof_leak"], leak)):
        r = _run(["export", "indicators", "--level", "street", "--period", "90d",
                  "--lang", lang, "--out", str(path), *args], instance)
        assert r.returncode == 0, r.stderr
        assert not CJK.search(r.stderr), r.stderr
    col = "上报数" if lang == "zh" else "Reported"
    n_all = pd.read_csv(every, encoding="utf-8-sig")[col].sum()
    n_leak = pd.read_csv(leak, encoding="utf-8-sig")[col].sum()
    assert 0 < n_leak < n_all
