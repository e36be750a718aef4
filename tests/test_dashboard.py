"""The dashboard page, driven by Streamlit's AppTest over a database filled by real runs.

Every assertion is about what the user sees: metric values, table columns, messages.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest

from email_automation import admin, dashboard
from email_automation.cli import dashboard as cli_dashboard
from email_automation.database import connect, init_db
from email_automation.events import EventKind
from email_automation.dashboard_data import Reports
from email_automation.deliverability import EVENT_COLUMNS, SUPPRESSION_COLUMNS
from email_automation.reports import LOG_COLUMNS

from .conftest import CLOCK_START
from .test_reports import counts_in_db, record_events, sent_attempts, ses_event, with_password

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    """The page cache is process-wide; a test must never see another test's figures."""
    dashboard.clear_cache()
    monkeypatch.setattr(dashboard, "FAILED_UNLOCK_DELAY", 0)
    yield
    dashboard.clear_cache()


@pytest.fixture
def days(filled_db):
    return filled_db


def page(settings, clock, *, password: str = "", tab: str = "Activity", unlocked: bool = False) -> AppTest:
    """The page as a first view shows it with `tab` open (only the open tab runs); with `unlocked`,
    the session holds what the Admin tab's Unlock sets once the password is right."""
    reports = Reports(settings.db_path, with_password(settings, password), now=clock)
    at = AppTest.from_function(dashboard.render, args=(reports,), default_timeout=30)
    at.session_state[dashboard.TAB_KEY] = tab
    if unlocked and reports.check_password(password):
        at.session_state[dashboard.UNLOCKED] = True
    return at.run()


def as_read(markdown: str) -> str:
    """What a reader sees of an element's Markdown: its backslash escapes undone
    (https://spec.commonmark.org/0.31.2/#backslash-escapes)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def open_tab(at: AppTest, tab: str) -> AppTest:
    """A click on `tab`: the page runs again with it open."""
    at.session_state[dashboard.TAB_KEY] = tab
    return at.run()


def shown(at: AppTest) -> dict[str, str]:
    assert not at.exception, at.exception
    return {m.label: m.value for m in at.metric}


def number(text: str) -> int:
    return int(text.replace(",", ""))


# AppTest does not expose a display-only dataframe's key: tell the tables apart by a column.
TABLE_COLUMN = {"log_table": "subject", "queue_table": "position", "unknown_table": "last_error",
                "failed_table": "attempts", "event_kinds_table": "events", "events_table": "received_at",
                "suppressions_table": "source"}


def frame(at: AppTest, column: str, *, without: str | None = None):
    """The first table on the page with a `column` (and no column `without`)."""
    frames = [f.value for f in at.dataframe if column in f.value.columns and without not in f.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


def table(at: AppTest, key: str):
    return frame(at, TABLE_COLUMN[key], without="attempts" if key == "unknown_table" else None)


def snapshot(settings) -> list:
    """Everything an admin action could change."""
    with connect(settings.db_path, readonly=True) as conn:
        return [conn.execute(sql).fetchall() for sql in (
            "SELECT id, status, attempts FROM recipients ORDER BY id", "SELECT name, status FROM campaigns",
            "SELECT * FROM suppressions", "SELECT id, status FROM send_log ORDER BY id")]


def audit(settings) -> list[tuple]:
    with connect(settings.db_path, readonly=True) as conn:
        return [tuple(row) for row in conn.execute("SELECT actor, action, target FROM admin_log ORDER BY id")]


def test_metrics_equal_the_database_for_the_default_30_days(settings, clock, days):
    at = page(settings, clock)
    start = (days["today"] - timedelta(days=29)).isoformat()
    truth = counts_in_db(settings.db_path, "l.batch_date >= ?", (start,))
    metrics = shown(at)
    assert number(metrics["Sent"]) == truth["sent"]
    assert number(metrics["Failed"]) == truth["failed"]
    assert number(metrics["Deferred"]) == truth["deferred"]
    assert number(metrics["Dry-run (not sent)"]) == truth["dry_run"] == 3
    with connect(settings.db_path, readonly=True) as conn:
        unique = conn.execute("SELECT count(DISTINCT recipient_id) FROM send_log WHERE batch_date >= ?"
                              " AND status != 'dry_run'", (start,)).fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM recipients WHERE status = 'pending'").fetchone()[0]
    assert number(metrics["Unique recipients"]) == unique
    assert (number(metrics["Pending"]), metrics["Unknown"]) == (pending, "1")
    assert metrics[f"Daily limit used ({days['today']})"] == f"2 / {settings.daily_limit}"


def test_the_date_filter_changes_the_figures(settings, clock, days):
    at = page(settings, clock)
    recent = shown(at)
    at.date_input(key="dates").set_value((days["old"], days["old"])).run()
    old_day = shown(at)
    truth = counts_in_db(settings.db_path, "l.batch_date = ?", (days["old"].isoformat(),))
    assert (number(old_day["Sent"]), number(old_day["Failed"])) == (truth["sent"], truth["failed"]) == (2, 1)
    assert old_day["Sent"] != recent["Sent"]
    assert old_day["Dry-run (not sent)"] == "0"
    assert set(table(at, "log_table")["batch_date"]) == {days["old"].isoformat()}
    # Current state does not depend on the dates.
    assert (old_day["Pending"], old_day["Unknown"]) == (recent["Pending"], recent["Unknown"])


@pytest.mark.parametrize("widget, value, where", [
    ("campaign", "spring", "c.name = 'spring'"),
    ("status", "failed", "l.status = 'failed'"),
    ("email_search", "Person0", "r.email LIKE 'person0%'"),
])
def test_each_filter_narrows_the_metrics_like_the_database(settings, clock, days, widget, value, where):
    at = page(settings, clock)
    at.date_input(key="dates").set_value((days["old"], days["today"]))
    if widget == "email_search":
        at.text_input(key=widget).input(value)
    else:
        at.selectbox(key=widget).set_value(value)
    metrics = shown(at.run())
    truth = counts_in_db(settings.db_path, where)
    assert (number(metrics["Sent"]), number(metrics["Failed"])) == (truth.get("sent", 0), truth.get("failed", 0))
    assert len(table(at, "log_table")) == sum(truth.values())


def test_the_log_table_has_the_columns_newest_first_and_pages(settings, clock, days):
    at = page(settings, clock)
    log = table(at, "log_table")
    assert list(log.columns) == list(LOG_COLUMNS)
    assert log["batch_date"].iloc[0] == days["today"].isoformat() and log["time"].iloc[0] == "08:00:00"
    assert list(log["batch_date"]) == sorted(log["batch_date"], reverse=True)
    assert "Page 1 of 1" in " ".join(c.value for c in at.caption)
    at.number_input(key="page").set_value(7).run()  # past the end: the last page is shown
    assert "Page 1 of 1" in " ".join(c.value for c in at.caption)
    assert at.get("download_button")[0].proto.label == "Download CSV"


def test_recipient_tabs_show_queue_unknown_and_failed(settings, clock, days):
    at = page(settings, clock, tab="Recipients")
    assert [t.label for t in at.tabs] == ["Activity", "Recipients", "Replies", "Deliverability", "Admin", "Campaigns"]
    queue = table(at, "queue_table")
    assert list(queue["position"]) == list(range(1, len(queue) + 1)) and len(queue) == 7
    assert list(table(at, "unknown_table")["email"]) == ["person03@example.com"]
    failed = table(at, "failed_table")
    assert set(failed["email"]) == {"person01@example.com", "person05@example.com"}
    assert "550: mailbox does not exist" in set(failed["last_error"])


def test_the_recipients_tab_follows_the_campaign_filter_as_the_metrics_do(settings, clock, days, tmp_path):
    from email_automation.import_csv import import_csv

    (tmp_path / "autumn.csv").write_text("email,first_name\nann@example.org,Ann\nbea@example.org,Bea\n")
    with closing(connect(settings.db_path)) as conn:
        import_csv(conn, tmp_path / "autumn.csv", campaign="autumn")
    at = page(settings, clock, tab="Recipients")
    at.selectbox(key="campaign").set_value("autumn").run()
    assert shown(at)["Pending"] == "2"
    assert list(table(at, "queue_table")["email"]) == ["ann@example.org", "bea@example.org"]
    assert not [f for f in at.dataframe if "last_error" in f.value.columns]  # nobody of autumn is unknown or failed
    assert "Nobody needs a decision." in [c.value for c in at.caption]
    assert "No failed recipients." in [c.value for c in at.caption]


def test_an_empty_queue_of_the_filtered_campaign_is_not_said_to_be_held_by_the_send_window(settings, clock, days):
    from email_automation.database import ensure_campaign

    with closing(connect(settings.db_path)) as conn:
        ensure_campaign(conn, "autumn")
        conn.commit()
    office = settings.model_copy(update={"send_hours": "09:00-17:00"})  # 08:00 in Berlin: outside it
    at = page(office, clock, tab="Recipients")
    at.selectbox(key="campaign").set_value("autumn").run()
    assert "Nobody is waiting to be sent." in [c.value for c in at.caption]
    assert not [c.value for c in at.caption if "Outside the send window" in c.value]


def test_auto_refresh_is_off_by_default_and_can_be_switched_on(settings, clock, days):
    at = page(settings, clock)
    assert at.toggle(key="auto_refresh").value is False
    at.toggle(key="auto_refresh").set_value(True).run()
    assert shown(at)["Sent"] == shown(page(settings, clock))["Sent"]


def test_without_a_password_the_dashboard_says_it_is_read_only(settings, clock, days):
    at = page(settings, clock, tab="Admin")
    assert any("Read-only dashboard" in i.value for i in at.info)
    assert at.button(key="act_campaign_go").disabled
    assert not [b for b in at.button if b.key == "unlock"]


def unlock(at: AppTest, password: str = PASSWORD) -> AppTest:
    """Unlock in the Admin tab, then back to the tab that was open."""
    was = at.session_state[dashboard.TAB_KEY]
    open_tab(at, "Admin")
    at.text_input(key="admin_password").input(password)
    at.button(key="unlock").click().run()
    return open_tab(at, was) if was != "Admin" else at


def test_a_wrong_password_keeps_admin_locked(settings, clock, days):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"), "guess")
    assert [e.value for e in at.error] == ["Wrong password: admin actions stay locked."]
    assert at.button(key="act_retry_go").disabled
    assert "admin_unlocked" not in at.session_state


# Each admin action: widget values to set, the message shown, the audit row, and a check on the DB.
ACTIONS = {
    "campaign": ({"act_campaign_name": "spring", "act_campaign_op": "pause"}, "Campaign 'spring' paused.",
                 ("dashboard", "pause", "spring"), "SELECT status FROM campaigns WHERE name = 'spring'", "paused"),
    "skip": ({"act_skip_email": "Person14@Example.com"}, "1 recipient(s) skipped.",
             ("dashboard", "skip", "person14@example.com"),
             "SELECT status FROM recipients WHERE email = 'person14@example.com'", "skipped"),
    "retry": ({}, "2 failed recipient(s) are pending again.", ("dashboard", "retry-failed", "(all campaigns)"),
              "SELECT count(*) FROM recipients WHERE status = 'failed'", 0),
    "suppress": ({"act_suppress_email": "person15@example.com", "act_suppress_reason": "complaint"},
                 "person15@example.com suppressed (complaint); 1 pending recipient(s) skipped.",
                 ("dashboard", "suppress", "person15@example.com"),
                 "SELECT reason FROM suppressions WHERE email = 'person15@example.com'", "complaint"),
    "resolve": ({"act_resolve_email": "person03@example.com", "act_resolve_outcome": "sent"},
                "1 recipient(s) marked sent.", ("dashboard", "resolve-sent", "person03@example.com"),
                "SELECT status FROM recipients WHERE email = 'person03@example.com'", "sent"),
}


def set_widgets(at: AppTest, values: dict) -> None:
    for key, value in values.items():
        widget = at.get("text_input") + at.get("selectbox") + at.get("radio")
        match = [w for w in widget if w.key == key]
        assert match, key
        match[0].set_value(value)


@pytest.mark.parametrize("name", ACTIONS)
def test_each_admin_action_works_once_unlocked_and_confirmed(settings, clock, days, name):
    values, message, audit_row, check_sql, expected = ACTIONS[name]
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"))
    assert any("Admin actions enabled" in s.value for s in at.success)
    set_widgets(at, values)
    at.button(key=f"act_{name}_go").click().run()  # not confirmed yet: nothing happens
    assert [w.value for w in at.warning] == ["Nothing changed: tick 'I am sure' first."]
    assert audit(settings) == []
    at.checkbox(key=f"act_{name}_sure").check()
    at.button(key=f"act_{name}_go").click().run()
    assert [s.value for s in at.success][-1] == message
    assert audit(settings) == [audit_row]
    with connect(settings.db_path, readonly=True) as conn:
        assert conn.execute(check_sql).fetchone()[0] == expected
    assert at.checkbox(key=f"act_{name}_sure").value is False  # the next action needs a new tick


def test_the_page_shows_the_change_right_after_an_action(settings, clock, days):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"))
    assert shown(at)["Unknown"] == "1"
    set_widgets(at, ACTIONS["resolve"][0])
    at.checkbox(key="act_resolve_sure").check()
    at.button(key="act_resolve_go").click().run()
    assert shown(at)["Unknown"] == "0"  # the cache was cleared before the rerun drew the metrics
    assert "Needs a decision (0)" in [h.value for h in open_tab(at, "Recipients").subheader]


def forged(widget):
    """The widget as a crafted websocket message would send it (AppTest otherwise refuses to
    touch a disabled widget); Streamlit >= 1.5x drops such values server-side."""
    widget.proto.disabled = False
    return widget


@pytest.mark.parametrize("password", ["", PASSWORD], ids=["no-password-set", "password-not-entered"])
@pytest.mark.parametrize("name", ACTIONS)
def test_each_admin_action_is_refused_while_locked(settings, clock, days, name, password):
    values, *_ = ACTIONS[name]
    before = snapshot(settings)
    at = page(settings, clock, password=password, tab="Admin")
    assert at.button(key=f"act_{name}_go").disabled and at.checkbox(key=f"act_{name}_sure").disabled
    for widget in at.get("text_input") + at.get("selectbox") + at.get("radio"):
        if widget.key in values:
            forged(widget).set_value(values[widget.key])
    forged(at.checkbox(key=f"act_{name}_sure")).check()
    forged(at.button(key=f"act_{name}_go")).click().run()
    assert not at.success and not at.exception
    assert audit(settings) == []
    assert snapshot(settings) == before


def test_an_unlocked_session_is_refused_once_the_password_is_removed(settings, clock, days):
    reports = Reports(settings.db_path, with_password(settings, PASSWORD), now=clock)
    at = AppTest.from_function(dashboard.render, args=(reports,), default_timeout=30)
    unlock(open_tab(at, "Admin"))
    at.checkbox(key="act_retry_sure").check()
    reports.settings = with_password(settings, "")  # DASHBOARD_PASSWORD unset; the session still says unlocked
    at.button(key="act_retry_go").click().run()
    assert [e.value for e in at.error][0].startswith("Refused: admin actions are locked.")
    assert audit(settings) == []


def test_an_admin_error_is_shown_not_raised(settings, clock, days):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"))
    set_widgets(at, {"act_skip_email": "nobody@example.com"})
    at.checkbox(key="act_skip_sure").check()
    at.button(key="act_skip_go").click().run()
    assert [e.value for e in at.error] == ["nobody@example.com: no pending or failed recipient with that address"]


@pytest.mark.parametrize("name", ["skip", "suppress", "unsuppress", "mark"])
def test_an_action_without_an_address_asks_for_one(settings, clock, days, name):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Replies" if name == "mark" else "Admin"))
    set_widgets(at, {f"act_{name}_email": "  "})
    at.checkbox(key=f"act_{name}_sure").check()
    at.button(key=f"act_{name}_go").click().run()
    assert [e.value for e in at.error] == ["Nothing changed: enter an email address first."]
    assert audit(settings) == []


def test_a_fresh_database_shows_zeros_and_an_empty_log(settings, clock, db):
    at = page(settings, clock)
    assert shown(at) == {"Sent": "0", "Failed": "0", "Deferred": "0", "Bounce rate": "n/a", "Complaint rate": "n/a",
                         "Unique recipients": "0", "Dry-run (not sent)": "0", "Pending": "0", "Unknown": "0",
                         "Daily limit used (2026-11-25)": f"0 / {settings.daily_limit}"}
    assert [i.value for i in at.info][0] == "No sends in these days."
    assert table(at, "log_table").empty and list(table(at, "log_table").columns) == list(LOG_COLUMNS)


def test_a_missing_database_is_one_clear_error(settings, clock):
    at = page(settings, clock)
    assert not at.exception
    assert [as_read(e.value) for e in at.error] == [f"{settings.db_path}: no database yet; run `email-automation init` first"]


def test_the_script_reads_db_path_from_the_environment(settings, clock, days, monkeypatch):
    """`streamlit run dashboard.py` builds its Reports from DB_PATH, like every command."""
    monkeypatch.setenv("DB_PATH", str(settings.db_path))
    monkeypatch.setenv("TIMEZONE", "Europe/Berlin")
    at = open_tab(AppTest.from_file(dashboard.__file__, default_timeout=30), "Admin")
    assert not at.exception and len(at.metric) == 10
    assert "Read-only dashboard" in " ".join(i.value for i in at.info)


def test_the_command_runs_streamlit_on_loopback_by_default():
    command = cli_dashboard.streamlit_command(address="127.0.0.1", port=8501)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4] == str(dashboard.__file__)
    assert command[5:] == ["--server.address", "127.0.0.1", "--server.port", "8501", "--server.headless", "true",
                           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
                           "--global.disableWidgetStateDuplicationWarning", "true"]


def test_the_command_passes_db_and_port_and_warns_about_public_addresses(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from email_automation.cli import app

    calls = []
    monkeypatch.setattr(cli_dashboard, "_run_until_stopped", lambda command, env: calls.append((command, env)) or 0)
    init_db(tmp_path / "x.db").close()
    result = CliRunner().invoke(app, ["dashboard", "--db", "x.db", "--port", "9999", "--address", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    command, env = calls[0]
    assert command[command.index("--server.port") + 1] == "9999"
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert env["DB_PATH"] == str(tmp_path / "x.db")
    assert result.output.splitlines() == [
        "Warning: listening on 0.0.0.0 exposes the dashboard to the network; prefer 127.0.0.1 and an SSH tunnel.",
        "Dashboard: http://127.0.0.1:9999 (database x.db; Ctrl+C to stop)",
    ]


def test_the_command_refuses_a_missing_database(tmp_path):
    from typer.testing import CliRunner

    from email_automation.cli import app

    result = CliRunner().invoke(app, ["dashboard", "--db", "missing.db"])
    assert (result.exit_code, result.output) == (2, "Error: missing.db: no database yet; run `email-automation init` first\n")


def test_dashboard_help_runs_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "email_automation", "dashboard", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--port" in result.stdout and "127.0.0.1" in result.stdout


def test_the_chart_has_a_bar_slot_for_every_day_of_the_filter(settings, clock, days):
    reports = Reports(settings.db_path, settings, now=clock)
    f = reports.default_filter()
    series, counts = dashboard.per_day_counts(reports.daily(f), f)
    assert len(counts) == 30 and series == ["sent", "failed", "deferred"]
    assert counts[days["today"].isoformat()] == [2, 0, 0]
    assert counts[(days["today"] - timedelta(days=3)).isoformat()] == [0, 0, 0]
    assert sum(row[0] for row in counts.values()) == reports.summary(f).sent
    assert sum(row[2] for row in counts.values()) == reports.summary(f).deferred
    spec = dashboard.per_day_chart(series, counts)
    drawn = {(v["batch day"], v["series"]): v["count"] for v in spec["data"]["values"]}
    assert drawn == {(day, name): n for day, row in counts.items() for name, n in zip(series, row)}, \
        "every day's bars, zeros included"
    assert spec["encoding"]["color"]["scale"] == {"domain": series, "range": ["#2e7d32", "#c62828", "#f9a825"]}
    at = page(settings, clock)
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")


def test_the_first_view_loads_neither_altair_nor_email_validator(settings, days):
    """A cold first view pays for every import before its first chart: the chart is drawn without
    Altair (st.bar_chart imports it) and the address checks load only for what needs them
    (an import, an admin action, a search by address). Checked in a fresh interpreter."""
    code = textwrap.dedent(f"""
        import sys
        from datetime import datetime, timezone
        from streamlit.testing.v1 import AppTest
        from email_automation import dashboard
        from email_automation.config import load_settings
        from email_automation.dashboard_data import Reports
        settings = load_settings(db_path={str(settings.db_path)!r}, timezone="Europe/Berlin")
        now = lambda: datetime.fromisoformat({CLOCK_START.isoformat()!r})
        at = AppTest.from_function(dashboard.render, args=(Reports(settings.db_path, settings, now=now),),
                                   default_timeout=60).run()
        assert not at.exception, at.exception
        assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart"), "the chart was drawn"
        print(sorted(name for name in ("altair", "email_validator") if name in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --- deliverability: rates, SES events, suppressions ---------------------------------------------


def helps(at: AppTest) -> dict[str, str]:
    return {m.label: m.proto.help for m in at.metric}


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_the_rates_show_hard_bounces_and_complaints_per_real_send(settings, clock, days):
    (a, a_email), (b, b_email), *_ = sent_attempts(settings.db_path, days["yesterday"], days["today"])
    record_events(settings.db_path, clock(), ses_event(EventKind.BOUNCED_PERMANENT, a_email, a),
                  ses_event(EventKind.BOUNCED_TRANSIENT, b_email, b),  # soft: left out of the rate
                  ses_event(EventKind.COMPLAINED, b_email, b))
    at = page(settings, clock)
    sent = number(shown(at)["Sent"])
    assert sent == counts_in_db(settings.db_path, "l.batch_date >= ?",
                                ((days["today"] - timedelta(days=29)).isoformat(),))["sent"]
    expected = f"{100 / sent:.2f}%"
    assert (shown(at)["Bounce rate"], shown(at)["Complaint rate"]) == (expected, expected)
    assert f"hard (permanent) bounce: 1 of {sent}. SES reviews an account whose bounce rate is 5% or more." \
        in helps(at)["Bounce rate"]
    assert "complaint rate is 0.1% or more" in helps(at)["Complaint rate"]
    # One send in a handful is far above both thresholds: the page says so.
    assert [w.value for w in at.warning] == [
        f"Bounce rate {expected} (1 of {sent} sends) is at or above the 5% at which SES reviews an account.",
        f"Complaint rate {expected} (1 of {sent} sends) is at or above the 0.1% at which SES reviews an account.",
    ]


def test_the_rates_are_n_a_when_nothing_was_sent(settings, clock, days):
    record_events(settings.db_path, clock(), ses_event(EventKind.DELIVERED, "person02@example.com"))
    at = page(settings, clock)
    at.date_input(key="dates").set_value((days["dry"], days["dry"])).run()  # only a dry run that day
    metrics = shown(at)
    assert (metrics["Sent"], metrics["Bounce rate"], metrics["Complaint rate"]) == ("0", "n/a", "n/a")
    assert helps(at)["Bounce rate"].endswith("n/a: nothing was sent in the filter.")
    assert not at.warning


def test_the_rates_are_n_a_while_ses_has_reported_nothing(settings, clock, days):
    """Sends but not one event (no queue set up): 0 bounces would be a guess, not a rate."""
    metrics = shown(page(settings, clock))
    assert number(metrics["Sent"]) > 0 and (metrics["Bounce rate"], metrics["Complaint rate"]) == ("n/a", "n/a")
    assert "n/a: no SES event has reached this database yet" in helps(page(settings, clock))["Complaint rate"]


def test_the_deliverability_tab_counts_ses_events_by_kind_for_the_dates(settings, clock, days):
    record_events(settings.db_path, clock() - timedelta(days=20),
                  ses_event(EventKind.DELIVERED, "person00@example.com"))
    record_events(settings.db_path, clock(), ses_event(EventKind.DELIVERED, "person02@example.com"),
                  ses_event(EventKind.DELAYED, "person04@example.com", detail="MailboxFull"),
                  ses_event(EventKind.BOUNCED_PERMANENT, "person06@example.com", detail="Permanent/General"))
    at = page(settings, clock, tab="Deliverability")
    kinds = table(at, "event_kinds_table")
    assert kinds.values.tolist() == [["DELIVERED", 2], ["BOUNCED_PERMANENT", 1], ["DELAYED", 1]]
    assert "by the day each event was received here (received_at in Europe/Berlin)" in captions(at)
    assert "They arrive when `email-automation events`, or a real run, reads the SQS queue" in captions(at)
    at.date_input(key="dates").set_value((days["today"], days["today"])).run()
    assert table(at, "event_kinds_table").values.tolist() == [
        ["DELIVERED", 1], ["BOUNCED_PERMANENT", 1], ["DELAYED", 1]]
    events = table(at, "events_table")
    assert list(events.columns) == list(EVENT_COLUMNS)
    assert events[["kind", "email", "detail"]].values.tolist() == [  # newest first: the last stored leads
        ["BOUNCED_PERMANENT", "person06@example.com", "Permanent/General"],
        ["DELAYED", "person04@example.com", "MailboxFull"], ["DELIVERED", "person02@example.com", ""]]
    assert set(events["received_at"]) == {"2026-11-25 08:00:00"}
    assert "Page 1 of 1 (3 events, newest first)" in captions(at)


@pytest.mark.parametrize("queue_url, message", [
    ("", "No SES events were received in these days: SES_EVENTS_QUEUE_URL is not set, so none can arrive. "
         'To have SES report bounces and complaints, follow the README section "Bounces and complaints".'),
    ("https://sqs.us-east-1.amazonaws.com/123456789012/ses-events",
     "No SES events were received in these days. `email-automation events` reads the queue now (every real run "
     'does too); if events never arrive, check the set-up in the README section "Bounces and complaints".'),
])
def test_without_events_the_tab_says_how_they_arrive(settings, clock, db, queue_url, message):
    at = page(settings.model_copy(update={"ses_events_queue_url": queue_url}), clock, tab="Deliverability")
    assert message in [i.value for i in at.info]
    assert not [f for f in at.dataframe if "received_at" in f.value.columns]
    assert "Suppression list (0)" in [h.value for h in at.subheader] and "Nobody is suppressed." in captions(at)


def test_an_address_without_events_is_not_mistaken_for_a_missing_setup(settings, clock, days):
    record_events(settings.db_path, clock(), ses_event(EventKind.DELIVERED, "person02@example.com"))
    at = page(settings, clock, tab="Deliverability")
    at.text_input(key="email_search").input("person09").run()
    message = "No SES events for addresses containing 'person09' were received in these days."
    assert message in [i.value for i in at.info]


def test_the_suppression_list_shows_its_rows_newest_first_its_count_and_pages(settings, clock, days):
    with closing(connect(settings.db_path)) as conn:
        conn.executemany("INSERT INTO suppressions (email, reason, source, created_at)"
                         " VALUES (?, 'bounce', 'ses-event', ?)",
                         [(f"gone{n:02d}@example.net", f"2026-10-01T00:{n:02d}:00.000000Z") for n in range(30)])
        admin.suppress(conn, "Person15@Example.com", reason="complaint", source="cli", now=clock())
    at = page(settings, clock, tab="Deliverability")
    assert "Suppression list (31)" in [h.value for h in at.subheader]
    rows = table(at, "suppressions_table")
    assert list(rows.columns) == list(SUPPRESSION_COLUMNS) and len(rows) == 31
    assert rows.iloc[0].tolist() == ["person15@example.com", "complaint", "cli", "2026-11-25 08:00:00"]
    assert rows.iloc[1].tolist() == ["gone29@example.net", "bounce", "ses-event", "2026-10-01 02:29:00"]
    at.selectbox(key="suppressions_page_size").set_value(25).run()
    at.number_input(key="suppressions_page").set_value(2).run()
    assert table(at, "suppressions_table")["email"].tolist() == [f"gone{n:02d}@example.net" for n in range(5, -1, -1)]
    assert "Page 2 of 2 (31 addresses, newest first)" in captions(at)
    at.text_input(key="email_search").input("GONE2").run()
    assert table(at, "suppressions_table")["email"].tolist() == [f"gone{n}@example.net" for n in range(29, 19, -1)]
    assert "10 of them contain 'GONE2'." in captions(at) and "Suppression list (31)" in [h.value for h in at.subheader]


def test_the_deliverability_figures_equal_the_reports(settings, clock, days):
    """What the tab shows is what the library says, for the same filter."""
    record_events(settings.db_path, clock(), ses_event(EventKind.COMPLAINED, "person02@example.com"))
    reports = Reports(settings.db_path, settings, now=clock)
    f = reports.default_filter()
    at = page(settings, clock, tab="Deliverability")
    assert dict(table(at, "event_kinds_table").values.tolist()) == reports.event_counts(f)
    total, _ = reports.suppression_counts()
    assert f"Suppression list ({total})" in [h.value for h in at.subheader]
    assert shown(at)["Complaint rate"] == "0.00%"  # an untagged complaint names no send of ours


def test_a_circuit_breaker_pause_is_shown_above_everything(settings, clock, db):
    from email_automation import bounces, circuit_breaker
    from email_automation.circuit_breaker import Thresholds

    for n in range(3):
        bounces.record_bounce(db, f"gone{n}@example.com", source="smtp", now=clock())
    pause = circuit_breaker.check(db, Thresholds.from_settings(settings), "default", now=clock())
    at = page(settings, clock)
    assert [as_read(e.value) for e in at.error] == [f"Paused: {pause.line()}"]
    assert "BOUNCE\\_PAUSE\\_RATE" in at.error[0].value  # not read as emphasis
    assert "all sending paused by the circuit breaker" in pause.line()


def test_only_the_open_tab_runs_and_a_click_on_another_runs_it(settings, clock, days):
    """On a big database the first view would otherwise pay for six tabs' queries."""
    def headings(at: AppTest) -> set[str]:
        return {h.value.split(" (")[0] for h in at.subheader}

    at = page(settings, clock)
    assert "Send log" in headings(at) and "Suppression list" not in headings(at)
    assert "Needs a decision" not in headings(at)  # Recipients
    open_tab(at, "Deliverability")
    assert "Suppression list" in headings(at) and "Send log" not in headings(at)
    previews = lambda: [m for m in at.markdown if m.value.startswith("**Subject:**")]  # noqa: E731
    assert [a for a in at.text_area if a.key.startswith("ws_html_")] and not previews(), \
        "the template editor is drawn in every tab, its preview only in its own"
    open_tab(at, "Campaigns")
    assert previews()
    assert not at.exception


def test_a_look_at_another_tab_keeps_the_pager_and_an_unsaved_template_edit(settings, clock, days):
    """Only the open tab runs, and Streamlit forgets the widgets it did not draw: the page keeps them."""
    with closing(connect(settings.db_path)) as conn:  # two pages of 25 (the log has 13 rows: one page)
        conn.executemany("INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, 'bounce', 'ses-event', ?)",
                         [(f"gone{n:02d}@example.net", f"2026-10-01T00:{n:02d}:00.000000Z") for n in range(30)])
    at = page(settings, clock, tab="Deliverability")
    at.selectbox(key="suppressions_page_size").set_value(25).run()
    at.number_input(key="suppressions_page").set_value(2).run()
    open_tab(at, "Replies")
    open_tab(at, "Deliverability")
    assert (at.selectbox(key="suppressions_page_size").value, at.number_input(key="suppressions_page").value) == (25, 2)
    assert "Page 2 of 2 (30 addresses, newest first)" in captions(at)
    # The editor runs whichever tab is open (so what is typed and not yet previewed stays in the browser).
    html = next(area for area in at.text_area if area.key.startswith("ws_html_"))
    html.input("<p>Half-written, {{ first_name }}</p>")
    at.button(key="ws_preview_go").click().run()
    open_tab(at, "Deliverability")
    open_tab(at, "Replies")
    assert next(a for a in at.text_area if a.key == html.key).value == "<p>Half-written, {{ first_name }}</p>"
    assert not at.exception and not at.warning


def test_unsuppress_lifts_an_address_suppressed_by_mistake_once_unlocked_and_confirmed(settings, clock, days):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"))
    set_widgets(at, ACTIONS["suppress"][0])
    at.checkbox(key="act_suppress_sure").check()
    at.button(key="act_suppress_go").click().run()
    set_widgets(at, {"act_unsuppress_email": "Person15@Example.com"})
    at.button(key="act_unsuppress_go").click().run()  # not confirmed yet: nothing happens
    assert "Nothing changed: tick 'I am sure' first." in [w.value for w in at.warning]
    at.checkbox(key="act_unsuppress_sure").check()
    at.button(key="act_unsuppress_go").click().run()
    assert [s.value for s in at.success][-1] == "person15@example.com may be mailed again; 1 recipient(s) back in the queue."
    assert audit(settings)[-1] == ("dashboard", "unsuppress", "person15@example.com")
    with connect(settings.db_path, readonly=True) as conn:
        assert conn.execute("SELECT count(*) FROM suppressions WHERE email = 'person15@example.com'").fetchone()[0] == 0
        assert conn.execute("SELECT status FROM recipients WHERE email = 'person15@example.com'").fetchone()[0] == "pending"
    assert at.checkbox(key="act_unsuppress_sure").value is False


def test_unsuppress_refuses_an_address_not_on_the_list(settings, clock, days):
    at = unlock(page(settings, clock, password=PASSWORD, tab="Admin"))
    set_widgets(at, {"act_unsuppress_email": "nobody@example.com"})
    at.checkbox(key="act_unsuppress_sure").check()
    at.button(key="act_unsuppress_go").click().run()
    assert [e.value for e in at.error] == ["nobody@example.com: not on the suppression list"]
    assert audit(settings) == []


@pytest.mark.parametrize("password", ["", PASSWORD], ids=["no-password-set", "password-not-entered"])
def test_unsuppress_is_refused_while_locked(settings, clock, days, password):
    with closing(connect(settings.db_path)) as conn:
        admin.suppress(conn, "person15@example.com", reason="manual")
    before = snapshot(settings)
    at = page(settings, clock, password=password, tab="Admin")
    assert at.button(key="act_unsuppress_go").disabled and at.checkbox(key="act_unsuppress_sure").disabled
    forged(at.text_input(key="act_unsuppress_email")).set_value("person15@example.com")
    forged(at.checkbox(key="act_unsuppress_sure")).check()
    forged(at.button(key="act_unsuppress_go")).click().run()
    assert not at.success and not at.exception
    assert snapshot(settings) == before


def browser_page(at: AppTest, key: str) -> float:
    """What the page box shows in the browser: the server's value only when the run sent it
    (`set_value`); otherwise the browser keeps what it showed."""
    box = at.number_input(key=key)
    assert box.proto.set_value, f"{key}: the browser keeps a stale page number"
    return box.proto.value


def test_the_page_box_shows_the_page_shown_after_a_filter_change_and_past_the_end(settings, clock, days):
    with closing(connect(settings.db_path)) as conn:
        conn.executemany("INSERT INTO suppressions (email, reason, source, created_at)"
                         " VALUES (?, 'bounce', 'ses-event', ?)",
                         [(f"{'bulk' if n < 60 else 'other'}{n:02d}@example.net",
                           f"2026-10-01T01:{n:02d}:00.000000Z") for n in range(80)])
    at = page(settings, clock, tab="Deliverability")
    at.selectbox(key="suppressions_page_size").set_value(25).run()
    at.number_input(key="suppressions_page").set_value(3).run()
    assert "Page 3 of 4 (80 addresses, newest first)" in captions(at)
    at.text_input(key="email_search").input("bulk").run()
    assert "Page 1 of 3 (60 addresses, newest first)" in captions(at)
    assert browser_page(at, "suppressions_page") == 1
    at.number_input(key="suppressions_page").increment().run()
    assert "Page 2 of 3 (60 addresses, newest first)" in captions(at)
    at.number_input(key="suppressions_page").set_value(99).run()
    assert "Page 3 of 3 (60 addresses, newest first)" in captions(at)
    assert browser_page(at, "suppressions_page") == 3
    at.selectbox(key="suppressions_page_size").set_value(50).run()  # a new page size starts again at 1
    assert "Page 1 of 2 (60 addresses, newest first)" in captions(at) and browser_page(at, "suppressions_page") == 1
    assert not at.exception


def test_the_queue_says_when_a_run_started_now_would_send_none_of_it(settings, clock, days):
    """At 08:00 in Berlin with SEND_HOURS 09:00-17:00 the queue is not promised to go out now, as
    `run --plan` says; inside the window it is, and nobody in it is held."""
    office = settings.model_copy(update={"send_hours": "09:00-17:00"})
    at = page(office, clock, tab="Recipients")
    caption = next(c.value for c in at.caption if "recipient(s)" in c.value)
    assert "will be sent" not in caption
    assert "Outside the send window now (08:00 is outside SEND_HOURS; SEND_DAYS mon-sun, SEND_HOURS 09:00-17:00, " \
           "TIMEZONE Europe/Berlin): a run started now sends none of them; the next run inside it sends them in " \
           "this order" in caption
    queue = table(at, "queue_table")
    assert set(queue["held now"]) == {"outside the send window (08:00 is outside SEND_HOURS)"}

    dashboard.clear_cache()
    clock.advance(3 * 3600)  # 11:00 in Berlin
    at = page(office, clock, tab="Recipients")
    caption = next(c.value for c in at.caption if "recipient(s)" in c.value)
    assert caption.startswith("7 recipient(s) will be sent in this order, within the daily and per-company limits")
    assert set(table(at, "queue_table")["held now"]) == {""}


def test_the_queue_leaves_out_whom_a_reply_stops_and_says_how_many(settings, clock, db):
    """It listed the colleagues of someone who answered as about to be sent ("17 recipient(s)"),
    where the run skips them (STOP_COMPANY_ON_REPLY)."""
    from email_automation import applications
    from email_automation.import_csv import import_csv

    from .cli_helpers import EXAMPLE

    import_csv(db, EXAMPLE, campaign="spring")
    for address, status in [("sarah.klein@example.com", "interview"), ("priya.nair@example.com", "replied"),
                            ("emma.dubois@example.com", "rejected")]:
        applications.mark(db, address, status, now=clock(), campaign="spring")
    at = page(settings, clock, tab="Recipients")
    assert [e.rpartition("@")[2] for e in table(at, "queue_table")["email"]] == ["example.org"] * 6
    caption = next(c.value for c in at.caption if "recipient(s)" in c.value)
    assert caption == (
        "6 recipient(s) will be sent in this order, within the daily and per-company limits (paused campaigns, "
        "suppressed addresses and recipients a reply stops left out). 14 more are stopped by a reply (their own, or "
        "with STOP_COMPANY_ON_REPLY a colleague's): the next run skips them; the Campaigns tab's Next run says why.")
    # Rows of an import still running are no more counted than queued (they were: "16 more").
    running = db.execute("INSERT INTO imports (campaign_id, created_campaign, file, state, first_recipient_id,"
                         " started_at) VALUES (1, 0, 'x.csv', 'running', 1000, 'x')").lastrowid
    db.execute("INSERT INTO recipients (campaign_id, email, company, import_id, created_at) SELECT id,"
               " 'colleague@example.com', '', ?, 'x' FROM campaigns WHERE name = 'spring'", (running,))
    dashboard.clear_cache()
    at = page(settings, clock, tab="Recipients")
    assert " 14 more are stopped by a reply" in next(c.value for c in at.caption if "recipient(s)" in c.value)
