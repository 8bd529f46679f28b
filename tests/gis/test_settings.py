"""Settings are checked once, where they are read (``gis.settings.read_settings``): numbers
are numbers in range, yes/no settings take only the usual spellings, the language is one
the app has, the database URL is one SQLAlchemy can use, a named demo-cases file exists.
A bad value is a SettingsError naming the variable (or the config file's key)."""

from __future__ import annotations

import pytest

from gis.settings import SETTINGS, SettingsError, mask_url, read_settings


def settings(tmp_path, **env):
    return read_settings(env={f"HEMEI_{k}": v for k, v in env.items()},
                         INSTANCE=str(tmp_path / "inst"))


@pytest.mark.parametrize("name, value, says", [
    ("MAX_PHOTO_MB", "abc", "a number from 0.01 to 100"),
    ("MAX_PHOTO_MB", "-5", "a number from 0.01 to 100"),
    ("MAX_PHOTO_MB", "0", "a number from 0.01 to 100"),
    ("MAX_PHOTO_MB", "1000", "a number from 0.01 to 100"),
    ("MAX_PHOTO_MB", "nan", "a number from 0.01 to 100"),
    ("PUBLIC_FORM_LIMIT", "x", "a whole number from 1 to 10000"),
    ("PUBLIC_FORM_LIMIT", "0", "a whole number from 1 to 10000"),
    ("PUBLIC_FORM_LIMIT", "2.5", "a whole number from 1 to 10000"),
    ("LOGIN_LIMIT", "ten", "a whole number from 0 to 10000"),
    ("LOGIN_LIMIT", "-1", "a whole number from 0 to 10000"),
    ("AUTO_MIGRATE", "flase", "must be one of 1, true, yes, on, 0, false, no, off"),
    ("AUTO_MIGRATE", "2", "must be one of"),
    ("SECURE_COOKIES", "yess", "must be one of"),
    ("LOCALE", "fr", "must be zh (简体中文) or en"),
    ("LOCALE", "english", "must be zh (简体中文) or en"),
    ("DATABASE_URL", "garbage", "is not a database URL"),
    ("DATABASE_URL", "nosuchdb://u:p@h/d", "SQLAlchemy cannot use"),
    ("DEMO_CASES", "/nonexist.csv", "/nonexist.csv, which is not a file"),
    ("HOLIDAYS", "2026-10-01,bad", "holiday 'bad' is not a date like 2026-10-01"),
    # Printed at the start of every QR code's link: phones cannot open these.
    ("PUBLIC_URL", "not a url", "an address such as https://grid.example.gov.cn"),
    ("PUBLIC_URL", "grid.example.gov.cn", "an address such as https://"),
    ("PUBLIC_URL", "ftp://grid.example.gov.cn", "an address such as https://"),
    ("TRUSTED_PROXIES", "nginx", "IP addresses or networks separated by commas"),
])
def test_a_bad_value_is_refused_naming_the_variable(tmp_path, name, value, says):
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, **{name: value})
    assert err.value.message.startswith((f"HEMEI_{name} ", f"HEMEI_{name}: "))
    assert says in err.value.message
    assert err.value.field == name
    assert "\n" not in err.value.message  # one line for the CLI


@pytest.mark.parametrize("value, canonical", [
    ("1", "1"), ("true", "1"), ("Yes", "1"), (" on ", "1"), ("TRUE", "1"),
    ("0", "0"), ("false", "0"), ("No", "0"), ("off", "0"),
])
def test_yes_no_settings_take_the_usual_spellings(tmp_path, value, canonical):
    # Canonical "1"/"0": what gis.service and webapp read.
    s = settings(tmp_path, AUTO_MIGRATE=value, SECURE_COOKIES=value)
    assert s["AUTO_MIGRATE"] == canonical and s["SECURE_COOKIES"] == canonical


def test_good_values_are_kept_and_empty_means_the_default(tmp_path):
    s = settings(tmp_path, MAX_PHOTO_MB="0.5", PUBLIC_FORM_LIMIT="3", LOGIN_LIMIT="0",
                 LOCALE="en-GB")
    assert (s["MAX_PHOTO_MB"], s["PUBLIC_FORM_LIMIT"], s["LOGIN_LIMIT"], s["LOCALE"]) == \
        ("0.5", "3", "0", "en")
    # HEMEI_X= (empty, as a unit file may set it) is the same as unset.
    s = settings(tmp_path, MAX_PHOTO_MB="", AUTO_MIGRATE="", LOCALE="", DATABASE_URL="")
    assert (s["MAX_PHOTO_MB"], s["AUTO_MIGRATE"], s["LOCALE"]) == ("10", "1", "zh")
    assert s["DATABASE_URL"] == f"sqlite:///{tmp_path / 'inst' / 'hemei.sqlite3'}"
    # An empty demo-cases setting still means: no demo cases.
    assert settings(tmp_path, DEMO_CASES="")["DEMO_CASES"] == ""


def test_an_empty_variable_lets_the_config_files_value_count(tmp_path):
    # HEMEI_DATABASE_URL= in a unit file hid the config file's database: the service
    # quietly used the instance's default SQLite file instead.
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "hemei.toml").write_text(
        f'database_url = "sqlite:///{tmp_path}/elsewhere.sqlite3"\nlocale = "en"\n'
        'demo_cases = ""\n', encoding="utf-8")
    s = settings(tmp_path, DATABASE_URL="", LOCALE=" ", DEMO_CASES="")
    assert s["DATABASE_URL"] == f"sqlite:///{tmp_path}/elsewhere.sqlite3"
    assert s["LOCALE"] == "en"
    assert s["DEMO_CASES"] == ""  # empty in the environment still means none


def test_the_defaults_pass_their_own_checks(tmp_path):
    s = read_settings(env={}, INSTANCE=str(tmp_path))
    for setting in SETTINGS:
        if setting.check and setting.default is not None:
            assert setting.check(str(setting.default), setting.env) == s[setting.name]


def test_a_bad_value_in_the_config_file_names_the_files_key(tmp_path):
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "hemei.toml").write_text("max_photo_mb = -5\nauto_migrate = true\n",
                                     encoding="utf-8")
    with pytest.raises(SettingsError, match=r"max_photo_mb in .*hemei\.toml must be"):
        read_settings(env={}, INSTANCE=str(inst))
    # The environment wins, and is what is checked.
    s = read_settings(env={"HEMEI_MAX_PHOTO_MB": "4"}, INSTANCE=str(inst))
    assert s["MAX_PHOTO_MB"] == "4" and s["AUTO_MIGRATE"] == "1"


def test_a_refused_database_url_does_not_show_its_password(tmp_path):
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, DATABASE_URL="nosuchdb://hemei:s3cret@db/hemei")
    assert "s3cret" not in err.value.message and "nosuchdb" in err.value.message
    with pytest.raises(SettingsError) as err:  # not even parseable: still masked
        settings(tmp_path, DATABASE_URL="postgres ql://hemei:s3cret@db/hemei")
    assert "s3cret" not in err.value.message and "hemei:***@db" in err.value.message
    assert mask_url("postgresql+psycopg://hemei:s3cret@db:5432/x") == \
        "postgresql+psycopg://hemei:***@db:5432/x"
    assert "s3cret" not in mask_url("not a url://hemei:s3cret@db")
