"""The suppression list: the first reason and date an address was suppressed are kept; every
later request, and every removal, is kept in `suppression_history`.

An unsubscribe is legally relevant (CAN-SPAM: https://www.ftc.gov/business-guidance/resources/can-spam-act-compliance-guide-business),
so a later `suppress X --reason manual`, or a bounce reported afterwards, must not overwrite when
and why the address first asked to be left alone. Called inside the caller's write transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from .database import iso


@dataclass(frozen=True)
class Suppression:
    """An address's entry on the list: the first reason, its source and date; `added` if new now."""

    email: str
    reason: str
    source: str
    since: str
    added: bool


def add(conn: sqlite3.Connection, address: str, *, reason: str, source: str, now: datetime) -> Suppression:
    """Put `address` on the list unless it is already there; the request goes to the history either way."""
    added = conn.execute(
        "INSERT INTO suppressions (email, reason, source, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (email) DO NOTHING",
        (address, reason, source, iso(now)),
    ).rowcount == 1
    _history(conn, address, "suppress", reason, source, now)
    row = conn.execute("SELECT reason, source, created_at FROM suppressions WHERE email = ?", (address,)).fetchone()
    return Suppression(address, row[0], row[1], row[2], added)


def remove(conn: sqlite3.Connection, address: str, *, source: str, now: datetime) -> str | None:
    """Take `address` off the list (the history keeps what it was); the reason it had (what its
    skipped recipients were marked with), None if it was not on it."""
    row = conn.execute("DELETE FROM suppressions WHERE email = ? RETURNING reason", (address,)).fetchone()
    if row is None:
        return None
    _history(conn, address, "unsuppress", f"was suppressed for: {row[0]}", source, now)
    return row[0]


def history(conn: sqlite3.Connection, address: str) -> list[sqlite3.Row]:
    """Every suppress and unsuppress of `address`, oldest first."""
    return conn.execute(
        "SELECT action, reason, source, at FROM suppression_history WHERE email = ? ORDER BY id", (address,)
    ).fetchall()


def _history(conn: sqlite3.Connection, address: str, action: str, reason: str | None, source: str,
             now: datetime) -> None:
    conn.execute("INSERT INTO suppression_history (email, action, reason, source, at) VALUES (?, ?, ?, ?, ?)",
                 (address, action, reason, source, iso(now)))
