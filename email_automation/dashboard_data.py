"""The dashboard's data source: the read-only queries bound to one database file, plus admin hooks.

Each query runs on its own short-lived read-only connection (`mode=ro`, so a view can never take
the sender's write lock) inside one read transaction; the admin hooks delegate to `admin.py` on
a write connection of their own, only when DASHBOARD_PASSWORD is set.
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from . import applications, schedule, workspace
from .config import Settings
from .database import SCHEMA_VERSION, connect, schema_version, utc_now
from .deliverability import (
    EventRow,
    Reputation,
    SuppressionRow,
    event_counts,
    event_page,
    reputation,
    suppression_count,
    suppression_page,
)
from .errors import ConfigError, EmailAutomationError
from .ledger import batch_date, counted_today, remaining_today
from .warmup import limit_for
from .reports import (
    DayCount,
    Funnel,
    InboxMessage,
    LogFilter,
    LogRow,
    LogSummary,
    StatusSummary,
    VariantReplies,
    application_rows,
    csv_lines,
    daily_counts,
    failed_recipients,
    funnel,
    inbox_messages,
    iter_log,
    log_page,
    log_summary,
    pending_queue,
    pending_queue_size,
    recipient_counts,
    status_summary,
    stopped_by_replies,
    unknown_recipients,
    variant_replies,
)

if TYPE_CHECKING:
    from . import admin

ADMIN_ACTOR = "dashboard"


class AdminLockedError(EmailAutomationError):
    """An admin action was asked for while DASHBOARD_PASSWORD is not set."""


@dataclass(frozen=True)
class Today:
    day: date
    counted: int  # attempts that may have reached a mailbox: sending + sent + unknown
    daily_limit: int
    remaining: int  # ledger.remaining_today: the figure the run and `status` use


@dataclass
class Reports:
    """The dashboard's data source: read-only queries on `db_path`, plus the admin hooks."""

    db_path: Path
    settings: Settings
    now: Callable[[], datetime] = field(default=utc_now)

    @property
    def cache_key(self) -> str:
        """What makes two Reports answer differently (for the page's cache)."""
        return f"{Path(self.db_path).resolve()}|{self.settings.tz}|{self.settings.daily_limit}"

    def _connect_readonly(self) -> sqlite3.Connection:
        """Raises ConfigError for a missing or foreign file, or a schema this view cannot upgrade."""
        conn = connect(self.db_path, readonly=True)
        if schema_version(conn) < SCHEMA_VERSION:  # a read-only page cannot upgrade it, and would fail on it
            conn.close()
            raise ConfigError(f"{self.db_path}: the database is from an older version; run `email-automation init` "
                              "(or any command) to upgrade it, then reload")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection inside one short read transaction (a consistent snapshot)."""
        with closing(self._connect_readonly()) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def today(self) -> Today:
        now, limit = self.now(), self.settings.daily_limit
        day = batch_date(now, self.settings.tz)
        with self._read() as conn:
            limit = limit_for(conn, limit, self.settings.warmup_schedule, day).limit
            return Today(date.fromisoformat(day), counted_today(conn, day), limit,
                         remaining_today(conn, now=now, tz=self.settings.tz, daily_limit=limit))

    def default_filter(self, days: int = 30) -> LogFilter:
        """The last `days` batch days, today included, in TIMEZONE."""
        end = date.fromisoformat(batch_date(self.now(), self.settings.tz))
        return LogFilter(end - timedelta(days=days - 1), end)

    def campaigns(self) -> list[tuple[str, str]]:
        """(name, active|paused) of every campaign, oldest first."""
        with self._read() as conn:
            return [tuple(row) for row in conn.execute("SELECT name, status FROM campaigns ORDER BY id")]

    def pauses(self) -> list[str]:
        """The circuit breaker's open pauses, each saying why and how to lift it."""
        from .circuit_breaker import open_pauses

        with self._read() as conn:
            return [p.line() for p in open_pauses(conn)]

    def summary(self, f: LogFilter) -> LogSummary:
        with self._read() as conn:
            return log_summary(conn, f)

    def daily(self, f: LogFilter) -> list[DayCount]:
        with self._read() as conn:
            return daily_counts(conn, f)

    def log_page(self, f: LogFilter, *, page: int, page_size: int) -> list[LogRow]:
        with self._read() as conn:
            return log_page(conn, f, tz=self.settings.tz, limit=page_size, offset=(page - 1) * page_size)

    def log_csv(self, f: LogFilter) -> bytes:
        """The whole filtered log as CSV (UTF-8 with BOM so Excel reads accents), formula-safe."""
        with closing(self._connect_readonly()) as conn:
            return ("\ufeff" + "".join(csv_lines(iter_log(conn, f, tz=self.settings.tz)))).encode("utf-8")

    def recipient_counts(self, campaign: str | None = None) -> dict[str, int]:
        with self._read() as conn:
            return recipient_counts(conn, campaign)

    def pending_queue(self, *, limit: int = 200, offset: int = 0, campaign: str | None = None) -> tuple[int, list[dict]]:
        """(queue length, the first `limit` recipients from `offset`) in send order, of `campaign` or of all."""
        with self._read() as conn:
            stop = self.settings.stop_company_on_reply
            return (pending_queue_size(conn, campaign, stop_company=stop),
                    pending_queue(conn, limit=limit, offset=offset, campaign=campaign, stop_company=stop))

    def stopped_by_replies(self, campaign: str | None = None) -> int:
        """Pending recipients a reply stops, whom the queue leaves out and the next run skips."""
        with self._read() as conn:
            return stopped_by_replies(conn, campaign, stop_company=self.settings.stop_company_on_reply)

    def closed_zones(self) -> dict[str, str]:
        """{zone: why} for the pending recipients' time zones ("" is TIMEZONE's) whose send window
        (SEND_DAYS, SEND_HOURS) is closed now: a run started now sends none of them (`run --plan`)."""
        with self._read() as conn:
            zones = [row[0] for row in conn.execute("SELECT DISTINCT timezone FROM recipients WHERE status = 'pending'")]
        return schedule.closed_zones(zones, self.now(), self.settings.tz, *self.settings.send_window)

    def unknown(self, campaign: str | None = None) -> list[dict]:
        with self._read() as conn:
            return [dict(row) for row in unknown_recipients(conn, campaign)]

    def failed(self, *, limit: int = 200, campaign: str | None = None) -> list[dict]:
        with self._read() as conn:
            return failed_recipients(conn, limit=limit, campaign=campaign)

    def status_summary(self) -> StatusSummary:
        with self._read() as conn:
            return status_summary(conn, now=self.now(), tz=self.settings.tz, daily_limit=self.settings.daily_limit,
                                  warmup_schedule=self.settings.warmup_schedule)

    def reputation(self, f: LogFilter, *, sent: int | None = None) -> Reputation:
        """`sent`: the filter's sent attempts, when the caller has them (`summary(f).sent`)."""
        with self._read() as conn:
            return reputation(conn, f, sent=sent)

    def event_counts(self, f: LogFilter) -> dict[str, int]:
        with self._read() as conn:
            return event_counts(conn, f, tz=self.settings.tz)

    def event_page(self, f: LogFilter, *, page: int, page_size: int) -> list[EventRow]:
        with self._read() as conn:
            return event_page(conn, f, tz=self.settings.tz, limit=page_size, offset=(page - 1) * page_size)

    def suppression_counts(self, email: str = "") -> tuple[int, int]:
        """(addresses on the suppression list, those containing `email`)."""
        with self._read() as conn:
            total = suppression_count(conn)
            return total, suppression_count(conn, email) if email else total

    def suppression_page(self, email: str = "", *, page: int, page_size: int) -> list[SuppressionRow]:
        with self._read() as conn:
            return suppression_page(conn, tz=self.settings.tz, email=email, limit=page_size,
                                    offset=(page - 1) * page_size)

    def funnel(self) -> list[Funnel]:
        with self._read() as conn:
            return funnel(conn)

    def variant_replies(self) -> list[VariantReplies]:
        with self._read() as conn:
            return variant_replies(conn)

    def inbox_messages(self, kinds: tuple[str, ...] | None = None, *, limit: int = 200) -> list[InboxMessage]:
        with self._read() as conn:
            return inbox_messages(conn, kinds=kinds, limit=limit)

    def sequences(self, *, limit: int = 200, campaign: str | None = None) -> list[dict]:
        from .sequences import sequence_rows

        with self._read() as conn:
            return sequence_rows(conn, now=self.now(), tz=self.settings.tz, holidays=self.settings.holiday_dates,
                                 stop_company=self.settings.stop_company_on_reply, limit=limit, campaign=campaign)

    def step_counts(self) -> list[dict]:
        from .sequences import step_summary

        with self._read() as conn:
            summary = step_summary(conn, now=self.now(), tz=self.settings.tz, holidays=self.settings.holiday_dates,
                                   stop_company=self.settings.stop_company_on_reply)
        return [{"campaign": name, "step": int(step), **counts} for name, steps in summary.items()
                for step, counts in steps.items()]

    def applications(self, *, limit: int = 200) -> list[dict]:
        with self._read() as conn:
            return application_rows(conn, tz=self.settings.tz, limit=limit)

    # --- admin hooks: the CLI's library calls, audited as actor "dashboard" -----------------

    @property
    def admin_enabled(self) -> bool:
        return bool(self.settings.dashboard_password.get_secret_value())

    def check_password(self, given: str) -> bool:
        """True only when DASHBOARD_PASSWORD is set and `given` equals it (constant time)."""
        secret = self.settings.dashboard_password.get_secret_value()
        return bool(secret) and hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))

    def _admin(self, action: str, *args, **kwargs):
        """`admin.<action>(conn, *args, actor=..., now=..., **kwargs)` through `_write` (an audited
        admin call). admin.py, with the address checks' email-validator, loads at the first one,
        not with the page."""
        from . import admin

        act = getattr(admin, action)
        return self._write(lambda conn: act(conn, *args, actor=ADMIN_ACTOR, now=self.now(), **kwargs))

    def pause(self, campaign: str) -> None:
        self._admin("set_campaign_status", campaign, "paused")

    def resume(self, campaign: str) -> None:
        self._admin("set_campaign_status", campaign, "active")

    def skip(self, email: str, *, campaign: str | None = None) -> int:
        return self._admin("skip_recipient", email, campaign=campaign)

    def retry_failed(self, *, campaign: str | None = None) -> int:
        return self._admin("retry_failed", campaign=campaign)

    def suppress(self, email: str, *, reason: str = "manual") -> admin.Suppressed:
        return self._admin("suppress", email, reason=reason, source=ADMIN_ACTOR)

    def unsuppress(self, email: str) -> admin.Unsuppressed:
        return self._admin("unsuppress", email)

    def resolve(self, email: str, outcome: Literal["sent", "pending"], *, campaign: str | None = None) -> int:
        return self._admin("resolve_unknown", email, outcome, campaign=campaign)

    def mark(self, email: str, status: str, *, note: str | None = None, campaign: str | None = None) -> applications.Marked:
        return self._write(lambda conn: applications.mark(conn, email, status, actor=ADMIN_ACTOR, now=self.now(),
                                                          note=note, campaign=campaign))

    # --- the Campaigns page: workspace.py's calls, reads on a read-only connection ------------

    def drafts(self, campaign: str) -> list[workspace.TemplateDraft]:
        with self._read() as conn:
            return workspace.drafts(conn, campaign)

    def recipient_emails(self, campaign: str) -> list[str]:
        with self._read() as conn:
            return workspace.recipient_emails(conn, campaign)

    def attached_files(self, campaign: str) -> list[str]:
        with self._read() as conn:
            return list(workspace.attached_files(conn, campaign))

    def message_files(self, campaign: str, email: str) -> list[tuple[str, int | None]]:
        with self._read() as conn:
            return workspace.message_files(conn, campaign, email)

    def next_run(self, campaign: str) -> workspace.RunPlan:
        with self._read() as conn:
            return workspace.next_run(conn, self.settings, campaign, now=self.now())

    def steps(self, campaign: str) -> dict[int, int | None]:
        with self._read() as conn:
            return workspace.steps(conn, campaign)

    def step_drafts(self, campaign: str, number: int) -> dict[str | None, workspace.TemplateDraft]:
        with self._read() as conn:
            return workspace.step_drafts(conn, campaign, number)

    def preview_draft(self, campaign: str, email: str, draft: workspace.TemplateDraft) -> workspace.DraftPreview:
        """The draft rendered for `email`, as it would be sent; nothing is written."""
        with self._read() as conn:
            return workspace.render_draft(conn, self.settings, campaign, email, draft)

    def _write(self, action: Callable, *args):
        if not self.admin_enabled:
            raise AdminLockedError("admin actions are disabled: set DASHBOARD_PASSWORD to enable them")
        with closing(connect(self.db_path)) as conn:
            return action(conn, *args)

    def create_campaign(self, name: str) -> bool:
        return self._write(workspace.create_campaign, name)

    def import_upload(self, campaign: str, filename: str, data: bytes):
        return self._write(lambda conn: workspace.import_upload(conn, self.settings, campaign, filename, data))

    def save_draft(self, campaign: str, draft: workspace.TemplateDraft) -> list[str]:
        return self._write(lambda conn: workspace.save_draft(conn, self.settings, campaign, draft))

    def add_step(self, campaign: str, after_days: int, draft: workspace.TemplateDraft) -> tuple[int, list[str]]:
        return self._write(lambda conn: workspace.add_step(conn, campaign, after_days, draft))

    def set_wait(self, campaign: str, number: int, after_days: int) -> None:
        self._write(lambda conn: workspace.set_wait(conn, campaign, number, after_days))

    def remove_step(self, campaign: str, number: int, template: str | None = None) -> None:
        self._write(lambda conn: workspace.remove_step(conn, campaign, number, template))

    def detach_all(self, campaign: str) -> None:
        self._write(lambda conn: workspace.detach_all(conn, self.settings, campaign))

    def attach_upload(self, campaign: str, filename: str, data: bytes) -> Path:
        return self._write(lambda conn: workspace.attach_upload(conn, self.settings, campaign, filename, data))
