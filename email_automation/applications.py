"""Each recipient's application status, the one thing a job seeker tracks after a reply.

none -> replied (the inbox watcher, or by hand) -> interview -> offer | rejected | not_interested.
A status set by hand is never overwritten by the watcher. Any status beyond `none` stops later
messages to that address, and with STOP_COMPANY_ON_REPLY to everyone else at the same company
(same `company` value, or the same domain unless it is a free-mail domain).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from .database import APPLICATION_STATUSES, get_campaign, iso, transaction
from .errors import EmailAutomationError, NotFoundError

# Addresses at these domains are people, not companies: one person's reply says nothing of another.
FREE_MAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "live.com", "msn.com",
    "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com", "icloud.com", "me.com", "mac.com",
    "aol.com", "proton.me", "protonmail.com", "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de",
    "mail.com", "zoho.com", "yandex.com", "yandex.ru", "mail.ru", "orange.fr", "free.fr", "laposte.net",
    "libero.it", "fastmail.com", "hey.com", "qq.com", "163.com",
})
_DOMAIN_SQL = "substr({0}.email, instr({0}.email, '@') + 1)"


class ApplicationStatusError(EmailAutomationError):
    """A status name that is not one of APPLICATION_STATUSES."""

    exit_code = 2


def company_domain(email: str) -> str:
    """The domain that identifies an employer, or "" for a free-mail address."""
    domain = email.rpartition("@")[2].lower()
    return "" if domain in FREE_MAIL_DOMAINS else domain


@dataclass(frozen=True)
class Marked:
    """What `mark` changed: recipients marked, and with `none` what that reply had stopped and now
    goes on: sequences (`resumed`) and recipients skipped for it, back in the queue (`requeued`)."""

    count: int
    resumed: int = 0
    requeued: int = 0

    def line(self, email: str, status: str, *, skip: str = "`email-automation skip EMAIL`") -> str:
        """What a person reads after it, in the CLI and the dashboard (`skip`: how to skip there)."""
        said = f"{email}: application status {status!r} ({self.count} recipient(s))."
        if status != "none":
            return said
        if self.resumed or self.requeued:
            said += (f" That reply had stopped {self.resumed} sequence(s) and skipped {self.requeued} recipient(s): "
                     "they go on at the next run, unless something else stops them.")
        return said + f" A reply read later counts again; {skip} stops mail for good."


def mark(conn: sqlite3.Connection, email: str, status: str, *, now: datetime, note: str | None = None,
         campaign: str | None = None, actor: str = "cli") -> Marked:
    """Set the application status by hand (every campaign of the address, or one).

    `none` undoes a reply read by mistake: what that reply stopped goes on (`_undo_stops`).

    Raises:
        ApplicationStatusError: `status` is not a known status.
        NotFoundError: no recipient has this address (in this campaign).
    """
    if status not in APPLICATION_STATUSES:
        raise ApplicationStatusError(f"unknown status {status!r}: use one of {', '.join(APPLICATION_STATUSES)}")
    from .addresses import lookup_form  # email-validator, only here: the ledger imports this module

    address = lookup_form(email)
    sql = "SELECT r.id FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE r.email = ?"
    args = [address] + ([campaign] if campaign else [])
    with transaction(conn):
        if campaign:
            get_campaign(conn, campaign)  # a mistyped name is said to be one, not "no such recipient"
        ids = [row[0] for row in conn.execute(sql + (" AND c.name = ?" if campaign else ""), args)]
        if not ids:
            where = f" in campaign {campaign!r}" if campaign else ""
            raise NotFoundError(f"{address}: no recipient with that address{where}")
        for recipient_id in ids:
            _change(conn, recipient_id, status, note, "manual", now)
        conn.execute("INSERT INTO admin_log (at, actor, action, target, detail) VALUES (?, ?, 'mark', ?, ?)",
                     (iso(now), actor, address, status + (f": {note}" if note else "")))
        undone = _undo_stops(conn, address, now) if status == "none" and not _still_answered(conn, address) else (0, 0)
    return Marked(len(ids), *undone)


def _still_answered(conn: sqlite3.Connection, address: str) -> bool:
    """The address has a status beyond `none` in a campaign `mark --campaign` left alone."""
    return conn.execute("SELECT 1 FROM recipients WHERE email = ? AND application_status != 'none' LIMIT 1",
                        (address,)).fetchone() is not None


# How the run records what a reply stopped (a skip's last_error, a sequence's stop), for
# `_undo_stops` to find it again: keep the words as they are.
STOPPED_BY_REPLY = "stopped by a reply: "


def stopped_words(reason: str) -> str:
    """The words recorded for a recipient that `reason` (`stop_reason`'s) stops."""
    return STOPPED_BY_REPLY + reason


def _undo_stops(conn: sqlite3.Connection, address: str, now: datetime) -> tuple[int, int]:
    """Let go on what this address's reply stopped, by the words the run recorded (`skip_reason`,
    `stop_reason`): its own sequences and its colleagues' (STOP_COMPANY_ON_REPLY), and the pending
    recipients skipped for it, unless their step may have reached them already. Each is checked
    again when claimed, so any other cause (another colleague's reply, a suppression) still stops it."""
    own, colleague = stopped_words("application status "), stopped_words(f"{address} at ")
    of_this_reply = ("((email = ? AND substr({0}, 1, ?) = ?) OR substr({0}, 1, ?) = ?)")
    args = (address, len(own), own, len(colleague), colleague)
    resumed = conn.execute(
        f"UPDATE recipients SET sequence_stopped = NULL, updated_at = ? WHERE {of_this_reply.format('sequence_stopped')}",
        (iso(now), *args)).rowcount
    requeued = conn.execute(
        "UPDATE recipients SET status = 'pending', last_error = NULL, updated_at = ? WHERE status = 'skipped'"
        f" AND {of_this_reply.format('last_error')} AND NOT EXISTS (SELECT 1 FROM send_log l"
        " WHERE l.recipient_id = recipients.id AND l.step >= recipients.step AND l.status IN ('sending', 'sent', 'unknown'))",
        (iso(now), *args)).rowcount
    return resumed, requeued


def record_reply(conn: sqlite3.Connection, recipient_id: int, *, now: datetime, note: str) -> bool:
    """The watcher saw a reply: `none` becomes `replied`; any other status, by hand or not, stays.

    `none` set by hand too: it undoes a reply read by mistake (that message is never read again),
    and a reply that comes later must still stop the follow-ups. Runs inside the caller's
    transaction (the inbox read commits it with the message's mark).
    """
    row = conn.execute("SELECT application_status FROM recipients WHERE id = ?", (recipient_id,)).fetchone()
    if row is None or row[0] != "none":
        return False
    _change(conn, recipient_id, "replied", note, "inbox", now)
    return True


def _change(conn: sqlite3.Connection, recipient_id: int, status: str, note: str | None, source: str,
            now: datetime) -> None:
    conn.execute(
        "UPDATE recipients SET application_status = ?, application_note = COALESCE(?, application_note),"
        " application_source = ?, application_changed_at = ?, updated_at = ? WHERE id = ?",
        (status, note, source, iso(now), iso(now), recipient_id),
    )
    conn.execute(
        "INSERT INTO application_changes (recipient_id, status, note, source, changed_at) VALUES (?, ?, ?, ?, ?)",
        (recipient_id, status, note, source, iso(now)),
    )


def stop_reason(conn: sqlite3.Connection, email: str, company: str, *, stop_company: bool) -> str | None:
    """Why a reply (or a later status) stops mail to this address now, if it does."""
    own = conn.execute("SELECT application_status FROM recipients WHERE email = ? AND application_status != 'none'"
                       " ORDER BY id LIMIT 1", (email,)).fetchone()
    if own is not None:
        return f"application status is {own[0]!r}"
    if not stop_company:
        return None
    domain = company_domain(email)
    other = conn.execute(  # the same comparison as `stopped_pending`, so the sweep and the claim agree
        "SELECT o.email, o.application_status, trim(?) != '' AND lower(trim(o.company)) = lower(trim(?)) AS same"
        " FROM recipients o WHERE o.application_status != 'none'"
        " AND ((trim(?) != '' AND lower(trim(o.company)) = lower(trim(?)))"
        f"      OR (? != '' AND {_DOMAIN_SQL.format('o')} = ?)) ORDER BY same DESC, o.id LIMIT 1",
        (company, company, company, company, domain, domain),
    ).fetchone()
    if other is None:
        return None
    return _colleague_words(other[0], other[1], company, domain, same_company=bool(other[2]))


def _colleague_words(email: str, status: str, company: str, domain: str, *, same_company: bool) -> str:
    """`stop_reason`'s words for a colleague's answer; which one matched: the company's name, else
    the address's domain (that colleague's company may differ)."""
    where = f"the same company ({company.strip()})" if same_company else f"the same domain ({domain})"
    return f"{email} at {where} has application status {status!r} (STOP_COMPANY_ON_REPLY)"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _company_key(company: str | None) -> str:
    """SQL's lower(trim(company)) in `stop_reason`: trim takes spaces only, lower ASCII letters only
    (https://www.sqlite.org/lang_corefunc.html#lower)."""
    return (company or "").strip(" ").translate(_ASCII_LOWER)


class Answers:
    """Everyone with an application status, read once: `stop_reason` for many recipients without
    a query each, so `run --plan` can give each recipient a reply stops the run's own words. The
    set is small (the partial index recipients_application); the earliest row wins, as there."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.own: dict[str, str] = {}
        self.by_company: dict[str, tuple[str, str]] = {}
        self.by_domain: dict[str, tuple[str, str]] = {}
        for email, company, status in conn.execute(
                "SELECT email, company, application_status FROM recipients WHERE application_status != 'none'"
                " ORDER BY id"):
            self.own.setdefault(email, status)
            if key := _company_key(company):
                self.by_company.setdefault(key, (email, status))
            self.by_domain.setdefault(email.split("@", 1)[-1], (email, status))  # _DOMAIN_SQL

    def stop_reason(self, email: str, company: str | None, *, stop_company: bool) -> str | None:
        """What `stop_reason` says for this address, from the rows read."""
        if email in self.own:
            return f"application status is {self.own[email]!r}"
        if not stop_company:
            return None
        company = company or ""
        domain = company_domain(email)
        if (key := _company_key(company)) and key in self.by_company:
            return _colleague_words(*self.by_company[key], company, domain, same_company=True)
        if domain and domain in self.by_domain:
            return _colleague_words(*self.by_domain[domain], company, domain, same_company=False)
        return None


def stopped_condition(stop_company: bool) -> tuple[str, tuple[str, ...]]:
    """SQL over recipients `r` (and its parameters): true when a reply stops them, as `stop_reason` says.

    Each subquery is uncorrelated, so SQLite runs it once, through the partial index of
    recipients with a status: that set is small.
    """
    answered = "(SELECT {0} FROM recipients WHERE application_status != 'none')"
    condition = f"r.email IN {answered.format('email')}"
    if not stop_company:
        return f"({condition})", ()
    free = ",".join("?" * len(FREE_MAIL_DOMAINS))
    domain = _DOMAIN_SQL.format("r")
    condition += (
        f" OR (trim(r.company) != '' AND lower(trim(r.company)) IN {answered.format('lower(trim(company))')})"
        f" OR ({domain} IN {answered.format(_DOMAIN_SQL.format('recipients'))} AND {domain} NOT IN ({free}))"
    )
    return f"({condition})", tuple(sorted(FREE_MAIL_DOMAINS))


def stopped_pending(conn: sqlite3.Connection, *, stop_company: bool) -> list[sqlite3.Row]:
    """Pending recipients a reply stops (see `stop_reason`), for the run's sweep before it plans."""
    condition, args = stopped_condition(stop_company)
    return conn.execute(f"SELECT r.id, r.email, r.company FROM recipients r WHERE r.status = 'pending' AND {condition}",
                        args).fetchall()
