"""The read-only queries behind `status` and the dashboard, on a database filled by real runs."""

from __future__ import annotations

import csv
import io
import itertools
import random
from contextlib import closing
from datetime import date, datetime, timedelta, timezone

import pytest

from email_automation import admin
from email_automation.config import SecretStr
from email_automation.database import connect, init_db
from email_automation.errors import AmbiguousSendError, NotFoundError, PermanentSendError, TransientSendError
from email_automation.events import DeliveryEvent, EventKind, apply_events
from email_automation.dashboard_data import AdminLockedError, Reports
from email_automation.deliverability import (
    Reputation,
    SuppressionRow,
    event_counts,
    event_page,
    reputation,
    suppression_count,
    suppression_page,
)
from email_automation.reports import LOG_COLUMNS, LogFilter, csv_lines, csv_safe, status_summary
from email_automation.run_daily import pending_batch, run_daily
from email_automation.transports.dry_run import DryRunTransport

from .fakes import RecordingSleep, ScriptedTransport

# Scripted provider answers: each address's errors, raised in order before it is accepted.
SCRIPT = {
    # A hostile error text: it must reach a spreadsheet as text, never as a formula.
    "person01@example.com": [PermanentSendError("=cmd|' /C calc'!A0")],
    "person03@example.com": [AmbiguousSendError("read timeout after the request left")],
    "person05@example.com": [PermanentSendError("mailbox does not exist", code="550")],
    # Throttled on every in-run retry: logged deferred, the recipient goes back to pending.
    "spring1@example.org": [TransientSendError("throttled", code="Throttling")] * 4,
}


def add_recipient(conn, email: str, campaign: str = "default", first_name: str = "") -> None:
    conn.execute(
        "INSERT INTO recipients (campaign_id, email, first_name, company, created_at)"
        " VALUES ((SELECT id FROM campaigns WHERE name = ?), ?, ?, 'Acme', '2026-01-01T00:00:00.000000Z')",
        (campaign, email, first_name),
    )


def fill_database(settings, today: datetime) -> dict[str, date]:
    """Five runs (one a dry run) over seven weeks up to `today`, some failing; returns the run days.

    Everything goes through run_daily with a scripted transport, exactly as a cron job would.
    """
    conn = init_db(settings.db_path)
    conn.execute("INSERT INTO campaigns (name, subject_template, html_template, created_at)"
                 " SELECT 'spring', subject_template, html_template, created_at FROM campaigns")
    for i in range(8):
        add_recipient(conn, f"person{i:02d}@example.com", first_name=f"P{i}")
    for i in range(4):  # in the middle of the queue order
        add_recipient(conn, f"spring{i}@example.org", "spring")
    for i in range(8, 16):
        add_recipient(conn, f"person{i:02d}@example.com", first_name=f"P{i}")
    transport = ScriptedTransport(SCRIPT)
    runs = {"old": (today - timedelta(days=46), transport, 4), "earlier": (today - timedelta(days=23), transport, 4),
            "dry": (today - timedelta(days=10), DryRunTransport(settings), 3),
            "yesterday": (today - timedelta(days=1), transport, 4), "today": (today, transport, 2)}
    for moment, sender, limit in runs.values():
        run_daily(settings.model_copy(update={"daily_limit": 4}), conn, sender, now=lambda m=moment: m,
                  sleep=RecordingSleep(), limit=limit, rng=random.Random(1))
    conn.close()
    return {name: moment.astimezone(settings.tz).date() for name, (moment, _, _) in runs.items()}


@pytest.fixture
def filled(settings, clock, filled_db):
    """(Reports over a filled database, run days); the dashboard's clock is the test clock."""
    return Reports(settings.db_path, settings, now=clock), filled_db


def with_password(settings, password: str):
    return settings.model_copy(update={"dashboard_password": SecretStr(password)})


def counts_in_db(db_path, where: str = "1", args=()) -> dict[str, int]:
    """The truth, straight from send_log, to hold the page's figures against."""
    with connect(db_path, readonly=True) as conn:
        rows = conn.execute(
            "SELECT l.status, count(*) FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            f" JOIN campaigns c ON c.id = r.campaign_id WHERE {where} GROUP BY l.status", args,
        ).fetchall()
    return dict(rows)


_event_keys = itertools.count(1)


def ses_event(kind: EventKind, email: str | None, attempt_id: str | None = None, detail: str | None = None) -> DeliveryEvent:
    """One normalized SES event, as events.parse_notification would give it."""
    return DeliveryEvent(kind, email, f"ses-{attempt_id or email}", attempt_id, None, detail, f"test:{next(_event_keys)}")


def record_events(db_path, at: datetime, *events: DeliveryEvent) -> None:
    """Store events as `email-automation events` does, received at `at` (suppressing as it goes)."""
    with closing(connect(db_path)) as conn:
        apply_events(conn, events, now=at)


def sent_attempts(db_path, first: date, last: date) -> list[tuple[str, str]]:
    """(attempt_id, email) of the sends SES accepted on batch days first..last, oldest first."""
    with connect(db_path, readonly=True) as conn:
        return [tuple(row) for row in conn.execute(
            "SELECT l.attempt_id, r.email FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            " WHERE l.status = 'sent' AND l.batch_date BETWEEN ? AND ? ORDER BY l.id",
            (first.isoformat(), last.isoformat()))]


def test_the_fill_produced_every_kind_of_row(filled):
    reports, _ = filled
    assert set(counts_in_db(reports.db_path)) == {"sent", "failed", "deferred", "unknown", "dry_run"}


@pytest.mark.parametrize("make_filter, where, args", [
    (lambda d: LogFilter(d["old"], d["today"]), "1", ()),
    (lambda d: LogFilter(d["earlier"], d["today"]), "l.batch_date >= ?", ("earlier",)),
    (lambda d: LogFilter(d["old"], d["old"]), "l.batch_date = ?", ("old",)),
    (lambda d: LogFilter(d["old"], d["today"], campaign="spring"), "c.name = 'spring'", ()),
    (lambda d: LogFilter(d["old"], d["today"], status="failed"), "l.status = 'failed'", ()),
    (lambda d: LogFilter(d["old"], d["today"], email="PERSON0"), "r.email LIKE 'person0%'", ()),
])
def test_summary_matches_the_database_for_each_filter(filled, make_filter, where, args):
    reports, days = filled
    expected = counts_in_db(reports.db_path, where, tuple(days[a].isoformat() for a in args))
    summary = reports.summary(make_filter(days))
    assert {k: v for k, v in summary.counts.items() if v} == expected
    assert summary.sent == expected.get("sent", 0) and summary.failed == expected.get("failed", 0)
    shown = reports.log_page(make_filter(days), page=1, page_size=1000)
    assert len(shown) == sum(expected.values()), "the log page lists the same rows"
    assert sum(day.sent + day.failed + day.dry_run + day.deferred for day in reports.daily(make_filter(days))) == \
        sum(expected.get(status, 0) for status in ("sent", "failed", "dry_run", "deferred")), "and the days count them"


def test_dry_run_rows_are_apart_and_never_unique_recipients(filled):
    reports, days = filled
    summary = reports.summary(LogFilter(days["dry"], days["dry"], status="dry_run"))
    assert summary.dry_run == 3 and summary.sent == 0 and summary.unique_recipients == 0
    with connect(reports.db_path, readonly=True) as conn:
        real = conn.execute("SELECT count(DISTINCT recipient_id) FROM send_log WHERE status != 'dry_run'").fetchone()[0]
    assert reports.summary(LogFilter(days["old"], days["today"])).unique_recipients == real


def test_the_default_filter_is_the_last_30_days_in_the_users_time_zone(settings, filled):
    reports, days = filled
    f = reports.default_filter()
    assert (f.end, f.end - f.start) == (days["today"], timedelta(days=29))
    assert days["earlier"] >= f.start > days["old"]


def test_daily_counts_are_per_batch_day(filled):
    reports, days = filled
    per_day = {d.day: (d.sent, d.failed, d.dry_run) for d in reports.daily(LogFilter(days["old"], days["today"]))}
    assert list(per_day) == sorted(per_day)
    assert per_day[days["old"]] == (2, 1, 0)  # one sent-or-not is `unknown`: neither bar
    assert per_day[days["today"]][0] == 2
    assert per_day[days["dry"]] == (0, 0, 3)


def test_log_page_is_newest_first_with_local_times_and_pages_do_not_overlap(filled):
    reports, days = filled
    f = LogFilter(days["old"], days["today"])
    first = reports.log_page(f, page=1, page_size=5)
    second = reports.log_page(f, page=2, page_size=5)
    assert len(first) == 5 and first[0].batch_date == days["today"].isoformat()
    assert first[0].time == "08:00:00"  # 07:00 UTC is 08:00 in Berlin
    moments = [(r.batch_date, r.time) for r in first + second]
    assert moments == sorted(moments, reverse=True)
    assert len({(r.batch_date, r.email, r.status) for r in first + second}) == 10
    everything = reports.log_page(f, page=1, page_size=1000)
    assert len(everything) == reports.summary(f).total


@pytest.mark.parametrize("zone, local_times", [
    ("Pacific/Kiritimati", ["00:00:00", "23:59:59"]),  # UTC+14: the day starts the day before in UTC
    ("Pacific/Pago_Pago", ["00:00:00", "23:59:59"]),  # UTC-11: it ends the day after
])
def test_a_log_page_of_one_day_holds_its_first_and_last_second_in_any_time_zone(settings, zone, local_times):
    """The page narrows its search by attempted_at (UTC); a batch day is a day of TIMEZONE, up to
    14 hours away from UTC: the day's first and last sends are on its page, its neighbours' are not."""
    from zoneinfo import ZoneInfo

    from email_automation import ledger

    settings = settings.model_copy(update={"timezone": zone})
    tz = ZoneInfo(zone)
    conn = init_db(settings.db_path)  # with its campaign `default`
    day = date(2026, 3, 10)
    moments = {f"{label}@example.com": datetime.combine(on, datetime.strptime(at, "%H:%M:%S").time(), tz)
               for label, on, at in [("before", day - timedelta(days=1), "23:59:59"), ("first", day, local_times[0]),
                                     ("last", day, local_times[1]), ("after", day + timedelta(days=1), "00:00:00")]}
    for email, moment in moments.items():
        add_recipient(conn, email)
        recipient_id = conn.execute("SELECT id FROM recipients WHERE email = ?", (email,)).fetchone()[0]
        ledger.claim(conn, recipient_id, now=moment, tz=tz, daily_limit=10, subject="s", transport="ses")
    conn.close()
    reports = Reports(settings.db_path, settings)
    shown = [(row.email, row.batch_date, row.time) for row in reports.log_page(LogFilter(day, day), page=1, page_size=10)]
    assert shown == [("last@example.com", "2026-03-10", "23:59:59"), ("first@example.com", "2026-03-10", "00:00:00")]


def test_today_counts_what_may_have_reached_a_mailbox(filled):
    reports, days = filled
    today = reports.today()
    assert (today.day, today.counted, today.daily_limit) == (days["today"], 2, reports.settings.daily_limit)


def test_recipient_counts_and_lists(filled):
    reports, _ = filled
    counts = reports.recipient_counts()
    assert counts["unknown"] == 1 and [r["email"] for r in reports.unknown()] == ["person03@example.com"]
    assert reports.recipient_counts("spring")["unknown"] == 0
    failed = {r["email"]: r["last_error"] for r in reports.failed()}
    assert failed == {"person01@example.com": "=cmd|' /C calc'!A0",
                      "person05@example.com": "550: mailbox does not exist"}


def test_pending_queue_is_the_order_run_daily_will_send_in(filled, settings):
    reports, _ = filled
    reports.settings = with_password(settings, "pw")
    reports.pause("spring")
    reports.suppress("person15@example.com")
    size, queue = reports.pending_queue(limit=100)
    with connect(reports.db_path) as conn:
        expected = [row["email"] for row in pending_batch(conn, 100)]
    assert [r["email"] for r in queue] == expected and size == len(expected) > 0
    assert [r["position"] for r in queue] == list(range(1, size + 1))
    assert not any(r["campaign"] == "spring" for r in queue)
    _, tail = reports.pending_queue(limit=100, offset=1)
    assert tail == [dict(r, position=r["position"]) for r in queue[1:]]


def test_status_summary_is_shared_with_the_cli(filled, settings, clock):
    reports, _ = filled
    with connect(reports.db_path) as conn:
        direct = status_summary(conn, now=clock(), tz=settings.tz, daily_limit=settings.daily_limit)
    assert reports.status_summary() == direct


def test_views_read_through_read_only_connections(filled):
    reports, _ = filled
    with reports._read() as conn, pytest.raises(Exception, match="readonly"):
        conn.execute("DELETE FROM send_log")


# --- CSV export --------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, shown", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("+1", "'+1"),
    ("-2", "'-2"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("a=b", "a=b"),  # only a leading trigger is dangerous
    ("person@example.com", "person@example.com"),
    (None, ""),
])
def test_csv_safe_escapes_leading_formula_triggers(cell, shown):
    assert csv_safe(cell) == shown


def test_csv_lines_escape_every_cell_and_read_back_as_text():
    rows = [("2026-11-25", "08:00:00", "failed", "=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1,2)")]
    text = "".join(csv_lines(rows))
    header, row = list(csv.reader(io.StringIO(text)))
    assert header == list(LOG_COLUMNS)
    assert row == ["2026-11-25", "08:00:00", "failed", "'=cmd|' /C calc'!A0", "'+1", "'-2", "'@SUM(1,2)"]
    assert text.startswith('"batch_date","time"') and text.endswith("\r\n")


def test_the_exported_log_is_the_whole_filter_and_formula_safe(filled):
    reports, days = filled
    f = LogFilter(days["old"], days["today"])
    data = reports.log_csv(f).decode("utf-8-sig")
    header, *rows = list(csv.reader(io.StringIO(data)))
    assert header == list(LOG_COLUMNS) and len(rows) == reports.summary(f).total
    errors = [row[LOG_COLUMNS.index("error")] for row in rows]
    assert "'=cmd|' /C calc'!A0" in errors and "=cmd|' /C calc'!A0" not in errors
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


# --- admin hooks ---------------------------------------------------------------------------------


def test_admin_hooks_refuse_without_a_password_and_write_nothing(filled):
    reports, _ = filled
    with pytest.raises(AdminLockedError, match="DASHBOARD_PASSWORD"):
        reports.pause("default")
    with connect(reports.db_path, readonly=True) as conn:
        assert conn.execute("SELECT count(*) FROM admin_log").fetchone()[0] == 0


def test_password_check_is_exact(settings, filled):
    reports, _ = filled
    assert not reports.check_password("")
    reports.settings = with_password(settings, "s3cret")
    assert reports.check_password("s3cret") and not reports.check_password("s3cret ") and not reports.check_password("")


def test_admin_hooks_call_the_library_as_the_dashboard(filled, settings):
    reports, _ = filled
    reports.settings = with_password(settings, "pw")
    assert reports.resolve("person03@example.com", "pending") == 1
    assert reports.retry_failed() == 2  # person01 and person05; throttled spring1 went back to pending
    with connect(reports.db_path, readonly=True) as conn:
        audit = conn.execute("SELECT actor, action FROM admin_log ORDER BY id").fetchall()
    assert [tuple(a) for a in audit] == [("dashboard", "resolve-pending"), ("dashboard", "retry-failed")]


def test_admin_errors_are_library_errors(filled, settings):
    reports, _ = filled
    reports.settings = with_password(settings, "pw")
    with pytest.raises(NotFoundError, match="no pending or failed recipient"):
        reports.skip("nobody@example.com")


# --- deliverability: rates, SES events, suppressions ---------------------------------------------


def test_rates_count_each_real_send_ses_reported_as_bounced_or_complained_about_once(filled, clock):
    reports, days = filled
    recent = LogFilter(days["yesterday"], days["today"])
    sends = sent_attempts(reports.db_path, recent.start, recent.end)
    (a, a_email), (b, b_email), (c, c_email), (d, d_email), *_ = sends
    (old, old_email), *_ = sent_attempts(reports.db_path, days["old"], days["old"])
    record_events(
        reports.db_path, clock(),
        ses_event(EventKind.BOUNCED_PERMANENT, a_email, a),
        ses_event(EventKind.BOUNCED_PERMANENT, a_email, a),  # reported twice: still one bounced send
        ses_event(EventKind.SENT, b_email, b), ses_event(EventKind.COMPLAINED, b_email, b),
        ses_event(EventKind.BOUNCED_TRANSIENT, c_email, c),  # a soft bounce is not in the bounce rate
        ses_event(EventKind.DELIVERED, d_email, d),
        ses_event(EventKind.BOUNCED_PERMANENT, old_email, old),  # a send outside these days
        ses_event(EventKind.COMPLAINED, "stranger@example.com"),  # no attempt_id tag: matches no send
    )
    rep = reports.reputation(recent)
    assert rep == Reputation(sent=reports.summary(recent).sent, bounced=1, complained=1, events_seen=True)
    assert rep.sent >= 4 and (rep.bounce_rate, rep.complaint_rate) == (1 / rep.sent, 1 / rep.sent)
    everything = LogFilter(days["old"], days["today"])
    assert reports.reputation(everything) == Reputation(reports.summary(everything).sent, 2, 1, True)


def test_rates_follow_the_campaign_address_and_status_filters(filled, clock):
    reports, days = filled
    everything = LogFilter(days["old"], days["today"])
    (a, a_email), *_ = sent_attempts(reports.db_path, days["yesterday"], days["today"])
    record_events(reports.db_path, clock(), ses_event(EventKind.BOUNCED_PERMANENT, a_email, a))
    one_address = LogFilter(everything.start, everything.end, email=a_email.upper())
    assert reports.reputation(one_address) == Reputation(reports.summary(one_address).sent, 1, 0, True)
    assert a_email == "spring0@example.org"  # so the bounce is spring's, and default has none
    for campaign, bounced in (("spring", 1), ("default", 0)):
        f = LogFilter(everything.start, everything.end, campaign=campaign)
        assert reports.reputation(f) == Reputation(reports.summary(f).sent, bounced, 0, True)
    nothing_sent = reports.reputation(LogFilter(everything.start, everything.end, status="failed"))
    assert nothing_sent == Reputation(0, 0, 0, True) and nothing_sent.bounce_rate is nothing_sent.complaint_rate is None


def test_without_ses_events_the_bounce_rate_is_what_the_mail_told(filled, clock):
    """An SMTP user saw `n/a` for ever, while the circuit breaker paused them on the SMTP refusals
    and the bounce reports the inbox read."""
    from email_automation import bounces

    reports, days = filled
    f = LogFilter(days["old"], days["today"])
    (sent_id, sent_email), *_ = sent_attempts(reports.db_path, f.start, f.end)
    with connect(reports.db_path, readonly=True) as conn:
        failed_id, failed_email = conn.execute(
            "SELECT l.attempt_id, r.email FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
            " WHERE l.status = 'failed' AND l.batch_date BETWEEN ? AND ? LIMIT 1",
            (f.start.isoformat(), f.end.isoformat())).fetchone()
    with closing(connect(reports.db_path)) as conn:
        bounces.record_bounce(conn, sent_email, kind="hard", source="inbox", attempt_id=sent_id, now=clock())
        bounces.record_bounce(conn, failed_email, kind="hard", source="smtp", attempt_id=failed_id, now=clock())
        bounces.record_bounce(conn, "x@example.com", kind="soft", source="inbox", now=clock())  # not a hard bounce
    rep = reports.reputation(f)
    sent = reports.summary(f).sent
    assert rep == Reputation(sent, 2, 0, False, refused=1, from_mail=True)
    assert (rep.bounce_rate, rep.complaint_rate) == (2 / (sent + 1), None)


def test_without_any_event_from_ses_the_rates_are_unknown_not_zero(filled, clock):
    """No queue set up (or SMTP): no bounce was reported, but none could have been."""
    reports, days = filled
    f = LogFilter(days["old"], days["today"])
    assert reports.reputation(f) == Reputation(reports.summary(f).sent, 0, 0, events_seen=False)
    # A queue that only ever delivered what nobody could read proves nothing either.
    record_events(reports.db_path, clock(), ses_event(EventKind.UNKNOWN, None, detail="SNS asks to confirm"))
    assert reports.reputation(f).bounce_rate is None and not reports.reputation(f).known
    record_events(reports.db_path, clock(), ses_event(EventKind.DELIVERED, "person02@example.com"))
    assert reports.reputation(f).bounce_rate == 0.0 and reports.reputation(f).known


def test_the_rates_are_read_from_indexes_the_bad_news_first(filled, clock):
    """The sends are counted in the batch-day index alone; the bounces start from the few events
    that are bad news and find each send by its attempt_id (a year of 1M sends: 1.9 s -> 0.1 s)."""
    reports, days = filled
    (a, a_email), *_ = sent_attempts(reports.db_path, days["old"], days["old"])
    record_events(reports.db_path, clock(), ses_event(EventKind.BOUNCED_PERMANENT, a_email, a))
    statements = []
    with reports._read() as conn:
        conn.set_trace_callback(statements.append)
        reputation(conn, LogFilter(days["old"], days["today"], campaign="default"))
        conn.set_trace_callback(None)
        sent, bad = (" | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
                     for sql in statements if "send_log" in sql)
    assert "COVERING INDEX send_log_daily_step" in sent and "SCAN l" not in sent, sent
    assert bad.index("INDEX ses_events_bad_news") < bad.index("INDEX sqlite_autoindex_send_log_1 (attempt_id=?)"), bad
    assert "SCAN" not in bad.replace("SCAN recipients", ""), bad


UTC = timezone.utc


def test_events_are_counted_by_kind_on_the_day_they_were_received_in_the_time_zone(settings, db):
    # 22:30 UTC on the 24th is 23:30 in Berlin, still the 24th; 23:30 UTC is 00:30 on the 25th there.
    record_events(settings.db_path, datetime(2026, 11, 24, 22, 30, tzinfo=UTC),
                  ses_event(EventKind.DELIVERED, "ann@example.com"),
                  ses_event(EventKind.BOUNCED_PERMANENT, "bob@example.com"))
    record_events(settings.db_path, datetime(2026, 11, 24, 23, 30, tzinfo=UTC),
                  ses_event(EventKind.COMPLAINED, "cy@example.com"), ses_event(EventKind.DELIVERED, "dee@example.com"),
                  ses_event(EventKind.UNKNOWN, None, detail="unrecognised SES event type 'Nope'"),
                  ses_event(EventKind.DELIVERED, "ann@example.com"))
    record_events(settings.db_path, datetime(2026, 11, 25, 23, 0, tzinfo=UTC),  # the 26th in Berlin
                  ses_event(EventKind.DELIVERED, "ann@example.com"))
    tz, d24, d25 = settings.tz, date(2026, 11, 24), date(2026, 11, 25)
    assert event_counts(db, LogFilter(d24, d24), tz=tz) == {"DELIVERED": 1, "BOUNCED_PERMANENT": 1}
    on_25th = event_counts(db, LogFilter(d25, d25), tz=tz)
    assert on_25th == {"DELIVERED": 2, "COMPLAINED": 1, "UNKNOWN": 1}
    assert list(on_25th) == ["DELIVERED", "COMPLAINED", "UNKNOWN"]  # EventKind's order, not the count's
    assert event_counts(db, LogFilter(d24, d25, email=" ANN@example "), tz=tz) == {"DELIVERED": 2}
    assert event_counts(db, LogFilter(d25 + timedelta(days=2), d25 + timedelta(days=9)), tz=tz) == {}


def test_event_pages_are_newest_first_in_local_time_and_do_not_overlap(settings, db):
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    for n in range(6):
        record_events(settings.db_path, start + timedelta(minutes=n),
                      ses_event(EventKind.DELIVERED, f"p{n}@example.com", f"attempt-{n}", "250 OK"))
    # Stored together, so received at the same instant: the one stored last comes first.
    record_events(settings.db_path, start + timedelta(minutes=9),
                  ses_event(EventKind.SENT, "q@example.com"), ses_event(EventKind.BOUNCED_PERMANENT, "q@example.com"))
    f, tz = LogFilter(date(2026, 11, 25), date(2026, 11, 25)), settings.tz
    pages = [event_page(db, f, tz=tz, limit=3, offset=offset) for offset in (0, 3, 6)]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [(r.kind, r.email) for r in pages[0]] == [
        ("BOUNCED_PERMANENT", "q@example.com"), ("SENT", "q@example.com"), ("DELIVERED", "p5@example.com")]
    assert [r.email for r in pages[1] + pages[2]] == [f"p{n}@example.com" for n in (4, 3, 2, 1, 0)]
    assert pages[2][-1].cells() == ("2026-11-25 09:00:00", "DELIVERED", "p0@example.com", "250 OK", "ses-attempt-0")
    assert event_page(db, LogFilter(f.start, f.end, email="p3@"), tz=tz, limit=10)[0].email == "p3@example.com"


def test_the_suppression_list_is_newest_first_paged_and_searchable(settings, db):
    start = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    for n, (email, reason) in enumerate([("old@example.com", "manual"), ("b@example.org", "bounce"),
                                          ("c@example.com", "complaint"), ("d@example.com", "unsubscribe")]):
        admin.suppress(db, email, reason=reason, source="ses-event" if reason != "manual" else "cli",
                       now=start + timedelta(days=n))
    tz = settings.tz
    assert suppression_count(db) == 4 and suppression_count(db, "EXAMPLE.COM") == 3
    first, second = suppression_page(db, tz=tz, limit=3), suppression_page(db, tz=tz, limit=3, offset=3)
    assert [r.email for r in first + second] == ["d@example.com", "c@example.com", "b@example.org", "old@example.com"]
    assert second == [SuppressionRow("old@example.com", "manual", "cli", "2026-11-20 10:30:00")]
    assert [r.email for r in suppression_page(db, tz=tz, email="example.org", limit=10)] == ["b@example.org"]
    assert suppression_page(db, tz=tz, email="nobody", limit=10) == [] and suppression_count(db, "nobody") == 0


def test_reports_give_the_dashboard_pages_and_counts(filled, clock):
    reports, days = filled
    record_events(reports.db_path, clock(), ses_event(EventKind.COMPLAINED, "person02@example.com"),
                  ses_event(EventKind.DELIVERED, "person04@example.com"))
    today = LogFilter(days["today"], days["today"])
    assert reports.event_counts(today) == {"DELIVERED": 1, "COMPLAINED": 1}
    assert [r.kind for r in reports.event_page(today, page=1, page_size=1)] == ["DELIVERED"]
    assert [r.kind for r in reports.event_page(today, page=2, page_size=1)] == ["COMPLAINED"]
    assert reports.suppression_counts() == (1, 1) and reports.suppression_counts("nobody") == (1, 0)
    (row,) = reports.suppression_page(page=1, page_size=10)
    assert row == SuppressionRow("person02@example.com", "complaint", "ses-event", "2026-11-25 08:00:00")


# --- the year-long views' query shapes give what plain queries give ------------------------------


def _plain(conn, f: LogFilter, select: str, tail: str = "") -> list[tuple]:
    """`select` over the filter's rows by the most direct query: every row joined to its recipient."""
    clauses, args = ["l.batch_date BETWEEN ? AND ?"], [f.start.isoformat(), f.end.isoformat()]
    for clause, value in (("c.name = ?", f.campaign), ("instr(r.email, ?) > 0", f.email), ("l.status = ?", f.status)):
        if value:
            clauses.append(clause)
            args.append(value)
    return [tuple(row) for row in conn.execute(
        f"SELECT {select} FROM send_log l JOIN recipients r ON r.id = l.recipient_id"
        f" JOIN campaigns c ON c.id = r.campaign_id WHERE {' AND '.join(clauses)} {tail}", args)]


def _every_filter(days) -> list[LogFilter]:
    ranges = [(days["old"], days["today"]), (days["earlier"], days["today"]), (days["old"], days["old"])]
    return [LogFilter(start, end, campaign, status, email) for start, end in ranges
            for campaign in (None, "spring", "default") for status in (None, "sent", "failed", "unknown", "dry_run")
            for email in ("", "person0", "example", "spring1")]


@pytest.mark.parametrize("ask_each_from", [4, 0], ids=["distinct-in-a-b-tree", "distinct-per-recipient"])
def test_summary_days_and_rates_are_what_plain_queries_give_for_every_filter(filled, clock, monkeypatch, ask_each_from):
    from email_automation import reports as module

    monkeypatch.setattr(module, "ATTEMPTS_PER_RECIPIENT_TO_ASK_EACH", ask_each_from)
    reports, days = filled
    with closing(connect(reports.db_path)) as conn:  # a dry run of someone never really attempted: no unique recipient
        conn.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
                     " SELECT id, 'dry-only', ?, ?, 'dry_run', 'dry-run' FROM recipients r WHERE NOT EXISTS"
                     " (SELECT 1 FROM send_log l WHERE l.recipient_id = r.id) ORDER BY id LIMIT 1",
                     (days["today"].isoformat(), clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")))
        # and a later real attempt, so that the dry run's id lies among the day's counted ones
        conn.execute("INSERT INTO send_log (recipient_id, attempt_id, batch_date, attempted_at, status, transport)"
                     " SELECT l.recipient_id, 'after-it', l.batch_date, l.attempted_at, 'failed', 'ses' FROM send_log l"
                     " WHERE l.status = 'sent' ORDER BY l.id LIMIT 1")
        assert conn.total_changes == 2
    sends = sent_attempts(reports.db_path, days["old"], days["today"])
    record_events(reports.db_path, clock(), *[ses_event(EventKind.BOUNCED_PERMANENT, email, attempt)
                                              for attempt, email in sends[::3]],
                  ses_event(EventKind.BOUNCED_PERMANENT, *reversed(sends[0])),  # twice: one bounced send
                  *[ses_event(EventKind.COMPLAINED, email, attempt) for attempt, email in sends[1::4]])
    with connect(reports.db_path, readonly=True) as conn:
        for f in _every_filter(days):
            summary = reports.summary(f)
            assert {s: n for s, n in summary.counts.items() if n} == dict(_plain(conn, f, "l.status, count(*)",
                                                                               "GROUP BY l.status")), f
            assert summary.unique_recipients == _plain(
                conn, f, "count(DISTINCT l.recipient_id) FILTER (WHERE l.status != 'dry_run')")[0][0], f
            per_day = [(d.day.isoformat(), d.sent, d.failed, d.dry_run, d.deferred, d.sent_per_step)
                       for d in summary.days]
            expected = {}
            for day, step, status, n in _plain(conn, f, "l.batch_date, l.step, l.status, count(*)", "GROUP BY 1, 2, 3"):
                sent, failed, dry, deferred, steps = expected.setdefault(day, (0, 0, 0, 0, {}))
                expected[day] = (sent + n * (status == "sent"), failed + n * (status == "failed"),
                                 dry + n * (status == "dry_run"), deferred + n * (status == "deferred"),
                                 {**steps, **({step: n} if status == "sent" else {})})
            assert per_day == [(day, *counts) for day, counts in sorted(expected.items())], f
            assert reports.daily(f) == list(summary.days)
            sent, bounced, complained = _rates(conn, f)
            assert reports.reputation(f) == reports.reputation(f, sent=summary.sent) == \
                Reputation(sent, bounced, complained, True), f
    assert any(reports.reputation(f).bounced for f in _every_filter(days))


def _rates(conn, f: LogFilter) -> tuple[int, int, int]:
    """The rates' figures as the dashboard counted them before: each send's events looked up."""
    clauses, args = ["l.batch_date BETWEEN ? AND ?", "l.status = 'sent'"], [f.start.isoformat(), f.end.isoformat()]
    for clause, value in (("c.name = ?", f.campaign), ("instr(r.email, ?) > 0", f.email), ("l.status = ?", f.status)):
        if value:
            clauses.append(clause)
            args.append(value)
    return tuple(conn.execute(
        "SELECT count(DISTINCT l.id), count(DISTINCT CASE WHEN e.kind = 'BOUNCED_PERMANENT' THEN l.id END),"
        " count(DISTINCT CASE WHEN e.kind = 'COMPLAINED' THEN l.id END) FROM send_log l"
        " JOIN recipients r ON r.id = l.recipient_id JOIN campaigns c ON c.id = r.campaign_id"
        " LEFT JOIN ses_events e ON e.attempt_id = l.attempt_id AND e.kind IN ('BOUNCED_PERMANENT', 'COMPLAINED')"
        f" WHERE {' AND '.join(clauses)}", args).fetchone())


@pytest.mark.parametrize("deep_offset, walk_rows", [(5_000, 20), (0, 20), (0, 1), (5_000, 1), (3, 2)])
def test_every_way_of_reading_a_log_page_gives_the_plain_querys_pages(filled, monkeypatch, deep_offset, walk_rows):
    """A page is found by walking back, walking forward from the oldest end, or sorting the filter's
    rows, chosen by counts; whichever is taken, the pages are the plain query's, in its order."""
    from email_automation import reports as module

    monkeypatch.setattr(module, "DEEP_OFFSET", deep_offset)
    monkeypatch.setattr(module, "WALK_ROWS_PER_PAGE_ROW", walk_rows)
    reports, days = filled
    tz = reports.settings.tz
    with connect(reports.db_path, readonly=True) as conn:
        for f in _every_filter(days):
            plain = [(day, datetime.fromisoformat(at).astimezone(tz).strftime("%H:%M:%S"), *rest) for day, at, *rest in
                     _plain(conn, f, "l.batch_date, l.attempted_at, l.status, r.email, c.name, l.message_id, l.subject, l.error",
                            "ORDER BY l.attempted_at DESC, l.id DESC")]
            for size in (1, 3, 50):
                pages = [[row.cells() for row in reports.log_page(f, page=n, page_size=size)]
                         for n in range(1, len(plain) // size + 3)]
                assert pages == [plain[i:i + size] for i in range(0, len(plain) + 2 * size, size)][:len(pages)], (f, size)


def test_events_per_kind_and_their_pages_are_what_plain_queries_give(filled, clock, settings):
    reports, days = filled
    sends = sent_attempts(reports.db_path, days["old"], days["today"])
    for n, (attempt, email) in enumerate(sends):
        record_events(reports.db_path, clock() - timedelta(days=n), ses_event(EventKind.DELIVERED, email, attempt),
                      *([ses_event(EventKind.BOUNCED_PERMANENT, email, attempt)] if n % 3 == 0 else []))
    record_events(reports.db_path, clock(), ses_event(EventKind.UNKNOWN, None, detail="?"))
    with connect(reports.db_path, readonly=True) as conn:
        for f in _every_filter(days):
            start, end = (datetime.combine(day, datetime.min.time(), tzinfo=settings.tz) for day in
                          (f.start, f.end + timedelta(days=1)))
            where = "received_at >= ? AND received_at < ? AND (? = '' OR instr(email, ?) > 0)"
            args = (start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), f.email, f.email)
            plain = dict(conn.execute(f"SELECT kind, count(*) FROM ses_events WHERE {where} GROUP BY kind", args))
            assert reports.event_counts(f) == plain, f
            # stored together, a send's delivery and bounce share received_at: the later one first
            listed = [(kind, email) for kind, email in conn.execute(
                f"SELECT kind, email FROM ses_events WHERE {where} ORDER BY received_at DESC, rowid DESC", args)]
            pages = [[(row.kind, row.email) for row in reports.event_page(f, page=n, page_size=2)]
                     for n in range(1, len(listed) // 2 + 3)]
            assert pages == [listed[i:i + 2] for i in range(0, len(listed) + 4, 2)][:len(pages)], f
