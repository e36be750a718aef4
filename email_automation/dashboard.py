"""The Streamlit dashboard: watch the daily batches, and (with DASHBOARD_PASSWORD) act on them.

`render(reports)` is the whole page for one data source (`dashboard_data.Reports`); `main()` builds the
real one from the settings when Streamlit runs this file as a script, which is why the imports
are absolute. Every figure comes from an SQL aggregate on a read-only connection, cached for a few
seconds; the cache is cleared after each admin action.
"""

from __future__ import annotations

import sqlite3

import time
from datetime import date, timedelta

import streamlit as st

from email_automation.database import LOG_STATUSES
from email_automation.errors import EmailAutomationError
from email_automation.dashboard_campaigns import (ATTACH_UPLOAD, CSV_UPLOAD, FORM_FIELDS, NOT_SURE, campaigns_page,
                                                  keep_values)
from email_automation.markdown_text import literal
from email_automation.dashboard_data import Reports
from email_automation.deliverability import (
    BOUNCE_REVIEW_RATE,
    COMPLAINT_REVIEW_RATE,
    EVENT_COLUMNS,
    SUPPRESSION_COLUMNS,
    Reputation,
)
from email_automation.reports import LOG_COLUMNS, LogFilter

CACHE_TTL_SECONDS = 5
TAB_KEY = "tab"  # the open tab's name in st.session_state
ALWAYS_DRAWN_TABS = frozenset({"Campaigns"})
PAGE_SIZES = (25, 50, 100, 250)
SHOWN_RECIPIENTS = 200
ALL_CAMPAIGNS = "All campaigns"
ALL_STATUSES = "All statuses"
PAGE_KEYS = ("page", "events_page", "suppressions_page")  # one pager each: log, SES events, suppressions
UNLOCKED = "admin_unlocked"
FAILED_UNLOCK_DELAY = 1.0  # seconds: slows down guessing the password


def render(reports: "Reports") -> None:
    """The page: sidebar filters, metrics, then Activity / Recipients / Replies / Deliverability / Admin /
    Campaigns tabs."""
    import streamlit as st

    from email_automation import dashboard as ui
    from email_automation.errors import EmailAutomationError
    from email_automation.markdown_text import literal

    st.set_page_config(page_title="Email automation", page_icon=":email:", layout="wide")
    st.title("Email automation")
    try:
        log_filter, refresh_seconds = ui.sidebar(reports)
    except EmailAutomationError as err:  # no database yet, or one this version cannot read
        st.error(literal(str(err)))
        return

    def live() -> None:
        try:
            ui.body(reports, log_filter)
        except EmailAutomationError as err:
            st.error(literal(str(err)))

    # A fragment reruns on its own timer, so a run can be watched without touching the page.
    (st.fragment(live, run_every=refresh_seconds) if refresh_seconds else live)()


def main() -> None:
    """Entry point of `streamlit run email_automation/dashboard.py`: settings from env and .env."""
    from email_automation.config import load_settings

    try:
        settings = load_settings()
    except EmailAutomationError as err:
        st.error(f"Configuration error: {literal(str(err))}")
        return
    render(Reports(settings.db_path, settings))


# --- data, cached briefly so reruns from widget clicks do not query again -----------------------


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def _query(_reports: Reports, cache_key: str, method: str, args: tuple, kwargs: tuple):
    return getattr(_reports, method)(*args, **dict(kwargs))


def fetch(reports: Reports, method: str, *args, **kwargs):
    """`reports.<method>(...)`, cached per database for CACHE_TTL_SECONDS."""
    return _query(reports, reports.cache_key, method, args, tuple(sorted(kwargs.items())))


def clear_cache() -> None:
    _query.clear()


# --- sidebar ----------------------------------------------------------------------------------


def _first_page(*keys: str) -> None:
    """New filters start every pager (or those of `keys`) again at page 1. Set, not dropped: a
    widget's default does not reach the browser, which would go on showing the old page."""
    for key in keys or PAGE_KEYS:
        st.session_state[key] = 1


def _date_range(picked, fallback: LogFilter) -> tuple[date, date]:
    """The picker gives a 1-tuple while the user is between the two clicks of a range."""
    if isinstance(picked, date):
        return picked, picked
    picked = tuple(picked or ())
    if not picked:
        return fallback.start, fallback.end
    return picked[0], picked[-1]


def sidebar(reports: Reports) -> tuple[LogFilter, int | None]:
    """The filters, and the auto-refresh interval in seconds (None when off)."""
    default = reports.default_filter()
    campaigns = [name for name, _ in fetch(reports, "campaigns")]
    with st.sidebar:
        st.header("Filters")
        picked = st.date_input("Batch days", value=(default.start, default.end), key="dates",
                               help="Days in TIMEZONE, start and end included.", on_change=_first_page)
        start, end = _date_range(picked, default)
        campaign = st.selectbox("Campaign", [ALL_CAMPAIGNS, *campaigns], key="campaign", on_change=_first_page)
        status = st.selectbox("Status", [ALL_STATUSES, *LOG_STATUSES], key="status", on_change=_first_page)
        email = st.text_input("Email contains", key="email_search", on_change=_first_page)
        st.divider()
        live = st.toggle("Auto-refresh", value=False, key="auto_refresh",
                         help="Reload the figures on a timer to watch a run live.")
        seconds = st.number_input("Every (seconds)", min_value=5, max_value=3600, value=15, step=5,
                                  key="refresh_seconds", disabled=not live)
    log_filter = LogFilter(start, end, None if campaign == ALL_CAMPAIGNS else campaign,
                           None if status == ALL_STATUSES else status, email.strip())
    return log_filter, int(seconds) if live else None


# --- main area --------------------------------------------------------------------------------


# Widgets whose value Streamlit does not let the page set (buttons, uploads, downloads), and
# those of the sidebar, drawn on every run before the body.
UNSETTABLE_KEYS = frozenset({"download_csv", "unlock", "lock", CSV_UPLOAD, ATTACH_UPLOAD, "ws_rejects_file"})
SIDEBAR_KEYS = frozenset({"dates", "campaign", "status", "email_search", "auto_refresh", "refresh_seconds"})


def keep_closed_tabs_values() -> None:
    """Only the open tab runs: without this, a look at another tab would reset a pager or a filter.

    Not the template editor's fields: the form of the one picked is drawn in every run, and the
    editor keeps the other forms' values itself (`keep_other_drafts`)."""
    keep_values(lambda key: (key not in UNSETTABLE_KEYS and key not in SIDEBAR_KEYS and key != TAB_KEY
                             and not key.startswith(FORM_FIELDS) and not key.endswith("_go")))


def body(reports: Reports, log_filter: LogFilter) -> None:
    keep_closed_tabs_values()
    for line in fetch(reports, "pauses"):
        st.error(f"Paused: {literal(line)}")
    summary = fetch(reports, "summary", log_filter)
    metrics(reports, log_filter, summary)
    sections = {"Activity": lambda shown: activity(reports, log_filter, summary),
                "Recipients": lambda shown: recipients(reports, log_filter.campaign), "Replies": lambda shown: replies(reports),
                "Deliverability": lambda shown: deliverability(reports, log_filter),
                "Admin": lambda shown: admin_panel(reports),
                "Campaigns": lambda shown: campaigns_page(reports, shown=shown)}
    # Only the open tab runs (https://docs.streamlit.io/develop/api-reference/layout/st.tabs): on a
    # million sends the other tabs cost a first view about a second of queries and imports. The
    # template editor's widgets are drawn whichever tab is open (not its preview): what is typed
    # in its form and not yet previewed lives only in the browser, and a tab not drawn loses it.
    for (name, section), tab in zip(sections.items(), st.tabs(list(sections), key=TAB_KEY, on_change="rerun")):
        if tab.open or name in ALWAYS_DRAWN_TABS:
            with tab:
                section(bool(tab.open))


def metrics(reports: Reports, log_filter: LogFilter, summary) -> None:
    today = fetch(reports, "today")
    counts = fetch(reports, "recipient_counts", log_filter.campaign)
    st.caption(f"Batch days {log_filter.start} to {log_filter.end} ({reports.settings.tz}); "
               f"database {reports.db_path}")
    sent, failed, deferred, unique, dry = st.columns(5)
    sent.metric("Sent", f"{summary.sent:,}", border=True)
    failed.metric("Failed", f"{summary.failed:,}", border=True,
                  help="Attempts on the filter's days that left their recipient failed: a recipient retried and "
                       "refused again counts once per attempt. `status` counts the recipients failed now.")
    deferred.metric("Deferred", f"{summary.deferred:,}", border=True,
                    help="Attempts refused for now (throttling, a temporary 4xx refusal, a paused account) or "
                         "settled as not sent: the recipient stays in the queue and is tried again. Not counted "
                         "toward the daily limit.")
    unique.metric("Unique recipients", f"{summary.unique_recipients:,}", border=True,
                  help="Distinct recipients with a real send attempt in the filter (dry runs left out).")
    dry.metric("Dry-run (not sent)", f"{summary.dry_run:,}", border=True,
               help="Messages rendered by DRY_RUN: written to the outbox, never sent, never counted.")
    # The rates open the second row, under the sends they are a share of; six bordered metrics
    # in one row cut the labels short on a 1400-pixel screen.
    # The summary has counted the filter's sends: counting them again cost a year's view 0.1-0.3 s.
    reputation = fetch(reports, "reputation", log_filter, sent=summary.sent)
    bounces, complaints, pending, unknown, sent_today = st.columns([1, 1, 1, 1, 1.6])
    bounces.metric("Bounce rate", percent(reputation.bounce_rate), help=_bounce_help(reputation))
    complaints.metric("Complaint rate", percent(reputation.complaint_rate), help=_complaint_help(reputation))
    pending.metric("Pending", f"{counts['pending']:,}", help="Recipients with status pending in the campaign filter (now, whatever the dates), paused "
                        "campaigns included; the Recipients tab lists the queue the next runs will send.")
    unknown.metric("Unknown", f"{counts['unknown']:,}", help="May or may not have gone out: see Recipients.")
    sent_today.metric(f"Daily limit used ({today.day})", f"{today.counted:,} / {today.daily_limit:,}",
                      help="Attempts that may have reached a mailbox today (sent + sending + unknown) "
                           "against DAILY_LIMIT.")
    reputation_warnings(reputation)


def percent(rate: float | None) -> str:
    """A rate for a metric: `n/a` without sends, and never `0.00%` for a rate that is not zero."""
    if rate is None:
        return "n/a"
    if 0 < rate < 0.0001:
        return "<0.01%"
    return f"{rate:.2%}"


def _rate_source(r: Reputation) -> str:
    if not r.sent and not r.refused:
        return "n/a: nothing was sent in the filter."
    if r.from_mail:
        return ("No SES event has reached this database: counted from the SMTP servers' refusals for good (5.1.x) "
                "and the bounce reports the inbox read (the hard bounces the circuit breaker counts), so at least "
                "this many: a report the inbox has not read is not in it.")
    if not r.events_seen:
        return ("n/a: no SES event has reached this database yet, so bounces and complaints are unknown "
                "(see the Deliverability tab).")
    return ("Matched to each send by the attempt_id tag SES repeats in its events, which arrive through "
            "`email-automation events` (see the Deliverability tab).")


def _bounce_help(r: Reputation) -> str:
    if r.from_mail:
        return (f"Real send attempts in the filter that hard-bounced: {r.bounced:,} of {r.sent + r.refused:,} (sent, "
                f"or refused at once by the receiving server). Mailbox providers and SES treat {BOUNCE_REVIEW_RATE * 100:g}%"
                f" or more as a problem. {_rate_source(r)}")
    return (f"Real sends in the filter that SES reported as a hard (permanent) bounce: {r.bounced:,} of "
            f"{r.sent:,}. SES reviews an account whose bounce rate is {BOUNCE_REVIEW_RATE * 100:g}% or more. "
            f"{_rate_source(r)}")


def _complaint_help(r: Reputation) -> str:
    if r.from_mail:
        return "n/a: spam complaints reach this database only as SES events (see the Deliverability tab)."
    return (f"Real sends in the filter whose recipient marked them as spam (an SES complaint): {r.complained:,} "
            f"of {r.sent:,}. SES reviews an account whose complaint rate is {COMPLAINT_REVIEW_RATE * 100:g}% or "
            f"more. {_rate_source(r)}")


def reputation_warnings(r: Reputation) -> None:
    """Say so when the filter's sends reach a rate at which SES reviews the account."""
    for name, count, rate, limit in (("Bounce", r.bounced, r.bounce_rate, BOUNCE_REVIEW_RATE),
                                     ("Complaint", r.complained, r.complaint_rate, COMPLAINT_REVIEW_RATE)):
        if rate is not None and rate >= limit:
            st.warning(f"{name} rate {percent(rate)} ({count:,} of {r.sent + r.refused:,} sends) is at or above the "
                       f"{limit * 100:g}% at which SES reviews an account.")


def step_label(step: int) -> str:
    return "step 1 (first contact)" if step == 1 else f"step {step} (follow-up)"


def per_day_counts(days, log_filter: LogFilter) -> tuple[list[str], dict[str, list[int]]]:
    """The chart's series (sent, split per step once a follow-up was sent, failed, deferred) and
    each batch day's counts in that order, the days without sends as zeros (up to a year shown)."""
    steps = sorted({step for d in days for step in d.sent_per_step})
    split = any(step > 1 for step in steps)
    series = ([f"sent: {step_label(step)}" for step in steps] if split else ["sent"]) + ["failed", "deferred"]
    by_day = {d.day: ([d.sent_per_step.get(step, 0) for step in steps] if split else [d.sent]) + [d.failed, d.deferred]
              for d in days}
    span = (log_filter.end - log_filter.start).days + 1
    axis = ([log_filter.start + timedelta(days=i) for i in range(span)] if span <= 366 else sorted(by_day))
    return series, {day.isoformat(): by_day.get(day, [0] * len(series)) for day in axis}


SENT_GREENS = ("#2e7d32", "#66bb6a", "#a5d6a7", "#1b5e20", "#c8e6c9")


def per_day_chart(series: list[str], counts: dict[str, list[int]]) -> dict:
    """Stacked bars per batch day as a Vega-Lite spec with its values inline
    (https://vega.github.io/vega-lite/docs/stack.html), for st.vega_lite_chart: st.bar_chart
    would import Altair first, a quarter of a second of a cold first view."""
    sent = len(series) - 2
    colors = [SENT_GREENS[i % len(SENT_GREENS)] for i in range(sent)] + ["#c62828", "#f9a825"]
    values = [{"batch day": day, "series": name, "order": n, "count": count}
              for day, row in counts.items() for n, (name, count) in enumerate(zip(series, row))]
    return {
        "data": {"values": values},
        "mark": {"type": "bar"},
        "height": 260,
        "encoding": {
            "x": {"field": "batch day", "type": "ordinal", "title": None, "axis": {"labelAngle": -90}},
            # Whole messages, "2,000" (https://d3js.org/d3-format), also when every bar is 0 (dry runs only).
            "y": {"field": "count", "type": "quantitative", "title": None, "axis": {"tickMinStep": 1, "format": ",d"}},
            "color": {"field": "series", "type": "nominal", "title": None,
                      "scale": {"domain": series, "range": colors}, "legend": {"orient": "bottom"}},
            "order": {"field": "order"},
            "tooltip": [{"field": "batch day"}, {"field": "series"}, {"field": "count", "type": "quantitative"}],
        },
    }


def activity(reports: Reports, log_filter: LogFilter, summary) -> None:
    from email_automation.reports import sent_per_step

    days = summary.days  # read with the summary, in the same pass over the index
    chart, breakdown = st.columns([3, 1])
    with chart:
        st.subheader("Sent, failed and deferred per day")
        if days:
            st.vega_lite_chart(per_day_chart(*per_day_counts(days, log_filter)), width="stretch")
        else:
            st.info("No sends in these days.")
    with breakdown:
        st.subheader("By status")
        rows = [{"status": s, "rows": n} for s, n in summary.counts.items() if n]
        st.dataframe(rows, hide_index=True, key="status_breakdown", width="stretch")
        if per_step := sent_per_step(days):
            st.subheader("Sent by step")
            st.dataframe([{"step": step_label(step), "sent": n} for step, n in per_step.items()], hide_index=True,
                         key="step_breakdown", width="stretch")
    send_log(reports, log_filter, summary.total)


def send_log(reports: Reports, log_filter: LogFilter, total: int) -> None:
    st.subheader("Send log")
    size_col, page_col, info_col, csv_col = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
    page, page_size = pager((size_col, page_col, info_col), total, prefix="")
    csv_col.download_button("Download CSV", data=lambda: reports.log_csv(log_filter), key="download_csv",
                            file_name=f"send_log_{log_filter.start}_{log_filter.end}.csv", mime="text/csv",
                            on_click="ignore", help="The whole filtered log, not only this page.")
    rows = fetch(reports, "log_page", log_filter, page=page, page_size=page_size)
    _rows_table(rows, LOG_COLUMNS, "log_table")


def pager(columns, total: int, *, prefix: str, noun: str = "rows") -> tuple[int, int]:
    """Rows per page and page number in the first two `columns`, "Page x of y" in the third.

    Widget keys are `{prefix}page_size` and `{prefix}page`; a page past the end shows the last.
    """
    size_col, page_col, info_col = columns
    page_size = size_col.selectbox("Rows per page", PAGE_SIZES, index=1, key=f"{prefix}page_size",
                                   on_change=_first_page, args=(f"{prefix}page",))
    pages = max(1, -(-total // page_size))
    key = f"{prefix}page"
    if st.session_state.get(key, 1) > pages:  # past the end: the box says the last page, the one shown
        st.session_state[key] = pages
    page = min(int(page_col.number_input("Page", min_value=1, value=1, step=1, key=key)), pages)
    info_col.caption(f"Page {page} of {pages} ({total:,} {noun}, newest first)")
    return page, page_size


def _rows_table(rows, columns: tuple[str, ...], key: str, column_config: dict | None = None) -> None:
    """Rows with `cells()` as a table with these column names, even when empty."""
    import pandas as pd

    table = [["" if cell is None else cell for cell in row.cells()] for row in rows]
    st.dataframe(pd.DataFrame(table, columns=list(columns)), hide_index=True, key=key, width="stretch",
                 column_config=column_config)


def _table_or_caption(rows: list[dict], key: str, empty: str) -> None:
    if rows:
        st.dataframe(rows, hide_index=True, key=key, width="stretch")
    else:
        st.caption(empty)


def _stopped_note(stopped: int) -> str:
    """The queue leaves out whom a reply stops: say how many, so its count is not read as all who wait."""
    if not stopped:
        return ""
    return (f" {stopped:,} more are stopped by a reply (their own, or with STOP_COMPANY_ON_REPLY a "
            "colleague's): the next run skips them; the Campaigns tab's Next run says why.")


def recipients(reports: Reports, campaign: str | None = None) -> None:
    """The queue, the unknown and failed recipients and the follow-ups, of the sidebar's campaign
    (the other filters are about sends, not recipients)."""
    if campaign:
        st.caption(f"Campaign '{literal(campaign)}' only (the sidebar's campaign filter).")
    total, queue = fetch(reports, "pending_queue", limit=SHOWN_RECIPIENTS, campaign=campaign)
    closed = fetch(reports, "closed_zones")
    st.subheader("Queue")
    shown = f"; the first {len(queue)} are shown" if total > len(queue) else ""
    settings = reports.settings
    held = sum(row["timezone"] in closed for row in queue)
    left_out = "paused campaigns, suppressed addresses and recipients a reply stops left out"
    if queue and "" in closed and held == len(queue) == total:  # beyond the rows shown, a zone may be open
        said = (f"{total:,} recipient(s) wait ({left_out}){shown}. Outside the send window now ({closed['']}; "
                f"SEND_DAYS {settings.send_days}, SEND_HOURS {settings.send_hours}, TIMEZONE {settings.tz}): a run "
                "started now sends none of them; the next run inside it sends them in this order, within the daily "
                "and per-company limits.")
    elif held:
        said = (f"{total:,} recipient(s) wait ({left_out}){shown}. The next runs send them in this order, within the "
                f"daily and per-company limits, each only inside the send window (SEND_DAYS {settings.send_days}, "
                f"SEND_HOURS {settings.send_hours}) of their time zone: a run started now sends none of those with a "
                "reason in 'held now'.")
    else:
        said = (f"{total:,} recipient(s) will be sent in this order, within the daily and per-company limits "
                f"({left_out}){shown}.")
    st.caption(said + _stopped_note(fetch(reports, "stopped_by_replies", campaign)))
    queue = [{**row, "held now": f"outside the send window ({closed[row['timezone']]})"
              if row["timezone"] in closed else ""} for row in queue]
    _table_or_caption(queue, "queue_table", "Nobody is waiting to be sent.")
    unknown = fetch(reports, "unknown", campaign)
    st.subheader(f"Needs a decision ({len(unknown)})")
    st.caption("The send may or may not have gone out (a timeout, or a run stopped mid-send). Check the "
               "provider's console, then resolve as sent or pending in the Admin tab or with "
               "`email-automation resolve`.")
    _table_or_caption(unknown, "unknown_table", "Nobody needs a decision.")
    failed = fetch(reports, "failed", limit=SHOWN_RECIPIENTS, campaign=campaign)
    st.subheader(f"Failed ({len(failed)}{'+' if len(failed) == SHOWN_RECIPIENTS else ''})")
    _table_or_caption(failed, "failed_table", "No failed recipients.")
    in_sequence = fetch(reports, "sequences", limit=SHOWN_RECIPIENTS, campaign=campaign)
    if in_sequence:
        st.subheader("Follow-ups")
        st.caption("Per step: messages sent (known to have gone out, as Sent counts them), sends whose outcome "
                   "is unknown (they may have gone out), follow-ups due now, sequences stopped before it (the "
                   "rows below that say stopped), and replies "
                   "that answered it (read from the inbox). Then each contacted recipient: the step they are at, "
                   "when the next one is due (in business days) or why none is, and their application status.")
        _table_or_caption([c for c in fetch(reports, "step_counts") if c["campaign"] == (campaign or c["campaign"])],
                          "step_counts_table", "")
        _table_or_caption(in_sequence, "sequence_table", "")


# --- replies --------------------------------------------------------------------------------

REPLY_COLUMNS = ("date", "from", "recipient", "company", "campaign", "subject", "snippet", "application")
OTHER_MAIL_COLUMNS = ("date", "kind", "from", "recipient", "subject", "detail")
FUNNEL_COLUMNS = ("campaign", "contacted", "replied", "reply rate", "interview", "offer", "rejected", "not interested",
                  "status, never mailed")
KIND_LABELS = {"auto_reply": "auto-reply", "bounce": "bounce", "unsubscribe": "unsubscribe"}


def replies(reports: Reports) -> None:
    """Who answered (newest first), the funnel per campaign, and the application status to update."""
    answers = fetch(reports, "inbox_messages", ("reply",), limit=SHOWN_RECIPIENTS)
    st.subheader(f"Replies ({len(answers)}{'+' if len(answers) == SHOWN_RECIPIENTS else ''})")
    tz = reports.settings.tz
    _table_or_caption([dict(zip(REPLY_COLUMNS, (m.when(tz), m.from_email, m.email, m.company,
                                                m.campaign, m.subject, m.snippet, m.application_status)))
                       for m in answers], "replies_table",
                      "No replies read from the inbox yet. `email-automation inbox` (or every run, with IMAP_HOST "
                      "set) reads them; an answer marked by hand (`mark`, or the application status below) counts "
                      "in the funnel, not here.")
    st.subheader("Funnel")
    st.caption("Each stage counts the recipients a message of ours went (or may have gone) out to; a status "
               "set by hand on someone never mailed is counted apart, in 'status, never mailed'.")
    _table_or_caption([dict(zip(FUNNEL_COLUMNS, (f.campaign, f.contacted, f.replied, percent(f.reply_rate if f.contacted else None),
                                                 f.interview, f.offer, f.rejected, f.not_interested, f.not_mailed)))
                       for f in fetch(reports, "funnel")], "funnel_table", "No campaigns yet.")
    if per_step := fetch(reports, "step_counts"):
        st.subheader("Replies per step")
        st.caption("Which message earned each reply: the step whose message the reply answered, "
                   "against the messages sent at that step.")
        _table_or_caption([{"campaign": c["campaign"], "step": step_label(c["step"]), "sent": c["sent"],
                            "replied": c["replied"], "reply rate": percent(c["replied"] / c["sent"] if c["sent"] else None)}
                           for c in per_step], "step_replies_table", "")
    if variants := fetch(reports, "variant_replies"):
        st.subheader("Replies per subject variant")
        _table_or_caption([{"campaign": v.campaign, "template": v.template or "(own)", "subject": v.subject,
                            "contacted": v.contacted, "replied": v.replied, "reply rate": percent(v.reply_rate)}
                           for v in variants], "variants_table", "")
    others = fetch(reports, "inbox_messages", tuple(KIND_LABELS), limit=SHOWN_RECIPIENTS)
    st.subheader(f"Auto-replies, bounces and unsubscribes ({len(others)})")
    st.caption("Shown apart: an auto-reply is not an answer; a hard bounce or an unsubscribe suppressed the address.")
    _table_or_caption([dict(zip(OTHER_MAIL_COLUMNS, (m.when(tz), KIND_LABELS[m.kind],
                                                     m.from_email, m.email, m.subject, m.detail)))
                       for m in others], "other_mail_table", "No auto-replies, bounces or unsubscribes.")
    application_editor(reports)


def application_editor(reports: Reports) -> None:
    """The application statuses, and (unlocked in the Admin tab) a form to change one."""
    from email_automation.database import APPLICATION_STATUSES

    locked = not (reports.admin_enabled and st.session_state.get(UNLOCKED))
    rows = fetch(reports, "applications", limit=SHOWN_RECIPIENTS)
    st.subheader(f"Applications ({len(rows)})")
    _table_or_caption(rows, "applications_table", "No application has moved beyond 'none' yet.")
    with st.container(border=True):
        st.markdown("**Update an application** (a status set here is never overwritten by the inbox)")
        if locked:
            st.caption("Locked: enter the dashboard password in the Admin tab first.")
        st.text_input("Email", key="act_mark_email", disabled=locked)
        st.selectbox("Status", APPLICATION_STATUSES, index=APPLICATION_STATUSES.index("interview"),
                     key="act_mark_status", disabled=locked)
        st.text_input("Note", key="act_mark_note", disabled=locked)
        _action_footer(reports, "mark", "Update status", locked)


# --- deliverability ---------------------------------------------------------------------------


def deliverability(reports: Reports, log_filter: LogFilter) -> None:
    ses_events(reports, log_filter)
    suppression_list(reports, log_filter.email)


def _containing(email: str) -> str:
    return f" containing '{literal(email)}'" if email else ""


def _no_events_message(reports: Reports, log_filter: LogFilter) -> str:
    if log_filter.email:
        return f"No SES events for addresses{_containing(log_filter.email)} were received in these days."
    if not reports.settings.ses_events_queue_url:
        return ("No SES events were received in these days: SES_EVENTS_QUEUE_URL is not set, so none can arrive. "
                'To have SES report bounces and complaints, follow the README section "Bounces and complaints".')
    return ("No SES events were received in these days. `email-automation events` reads the queue now (every "
            'real run does too); if events never arrive, check the set-up in the README section "Bounces and '
            'complaints".')


def ses_events(reports: Reports, log_filter: LogFilter) -> None:
    """Events received on the filter's days: how many of each kind, and the latest ones."""
    st.subheader("SES events")
    for_addresses = f", for addresses{_containing(log_filter.email)}" if log_filter.email else ""
    st.caption(f"What SES reported about your messages, by the day each event was received here (received_at in "
               f"{reports.settings.tz}): {log_filter.start} to {log_filter.end}{for_addresses}. The campaign and "
               "status filters do not apply to events. They arrive when `email-automation events`, or a real run, "
               "reads the SQS queue in SES_EVENTS_QUEUE_URL.")
    counts = fetch(reports, "event_counts", log_filter)
    if not counts:
        st.info(_no_events_message(reports, log_filter))
        return
    st.markdown("**By kind**")
    st.dataframe([{"kind": kind, "events": n} for kind, n in counts.items()], hide_index=True,
                 key="event_kinds_table", width="content")
    st.markdown("**Latest events**")
    page, page_size = pager(st.columns([1, 1, 3], vertical_alignment="bottom"), sum(counts.values()),
                            prefix="events_", noun="events")
    # The bounce's diagnostic is what a person reads: give it the room, let the message id scroll.
    _rows_table(fetch(reports, "event_page", log_filter, page=page, page_size=page_size), EVENT_COLUMNS,
                "events_table", column_config={"kind": st.column_config.TextColumn(width="medium"),
                                               "detail": st.column_config.TextColumn(width="large")})


def suppression_list(reports: Reports, email: str) -> None:
    """Every address never mailed again, newest first, narrowed by the sidebar's address search."""
    total, matching = fetch(reports, "suppression_counts", email)
    st.subheader(f"Suppression list ({total:,})")
    containing = f" {matching:,} of them contain '{literal(email)}'." if email else ""
    st.caption("Addresses never mailed again, in any campaign: hard bounces, complaints and unsubscribes SES "
               "reported (source ses-event), addresses an SMTP server refused for good (smtp), bounce reports "
               "and unsubscribe requests the inbox read (inbox), and addresses suppressed by hand; `since` is in "
               f"{reports.settings.tz}.{containing}")
    if not matching:
        st.caption(f"No suppressed address{_containing(email)}." if email else "Nobody is suppressed.")
        return
    page, page_size = pager(st.columns([1, 1, 3], vertical_alignment="bottom"), matching,
                            prefix="suppressions_", noun="addresses")
    _rows_table(fetch(reports, "suppression_page", email, page=page, page_size=page_size), SUPPRESSION_COLUMNS,
                "suppressions_table")


# --- admin ------------------------------------------------------------------------------------


def _unlock(reports: Reports) -> None:
    given = st.session_state.get("admin_password", "")
    st.session_state["admin_password"] = ""
    if reports.check_password(given):
        st.session_state[UNLOCKED] = True
        st.session_state.pop("unlock_error", None)
    else:
        time.sleep(FAILED_UNLOCK_DELAY)
        st.session_state["unlock_error"] = "Wrong password: admin actions stay locked."


def _lock() -> None:
    st.session_state[UNLOCKED] = False


def _campaign_or_none(value: str | None) -> str | None:
    return None if value in (None, "", ALL_CAMPAIGNS) else value


def _do_campaign(reports: Reports, state) -> str:
    name, op = state["act_campaign_name"], state["act_campaign_op"]
    (reports.pause if op == "pause" else reports.resume)(name)
    return f"Campaign '{name}' {'paused' if op == 'pause' else 'resumed'}."


def _address(state, name: str) -> str:
    """The address typed for action `name`; none typed is an error of its own (the library calls
    would name the empty address in theirs, as ": no pending or failed recipient ...")."""
    email = state[f"act_{name}_email"].strip()
    if not email:
        raise EmailAutomationError("Nothing changed: enter an email address first.")
    return email


def _do_skip(reports: Reports, state) -> str:
    count = reports.skip(_address(state, "skip"), campaign=_campaign_or_none(state["act_skip_campaign"]))
    return f"{count} recipient(s) skipped."


def _do_retry(reports: Reports, state) -> str:
    count = reports.retry_failed(campaign=_campaign_or_none(state["act_retry_campaign"]))
    return f"{count} failed recipient(s) are pending again."


def _do_suppress(reports: Reports, state) -> str:
    email, reason = _address(state, "suppress"), state["act_suppress_reason"].strip() or "manual"
    return reports.suppress(email, reason=reason).message()


def _do_unsuppress(reports: Reports, state) -> str:
    return reports.unsuppress(_address(state, "unsuppress")).message()


def _do_resolve(reports: Reports, state) -> str:
    email, outcome = state["act_resolve_email"], state["act_resolve_outcome"]
    if not email:
        raise EmailAutomationError("nobody is in the unknown state")
    return f"{reports.resolve(email, outcome)} recipient(s) marked {outcome}."


def _do_mark(reports: Reports, state) -> str:
    email, status = _address(state, "mark"), state["act_mark_status"]
    marked = reports.mark(email, status, note=state["act_mark_note"].strip() or None)
    return marked.line(email.lower(), status, skip="the Admin tab's 'Skip a pending or failed recipient'")


ACTIONS = {"campaign": _do_campaign, "skip": _do_skip, "retry": _do_retry,
           "suppress": _do_suppress, "unsuppress": _do_unsuppress, "resolve": _do_resolve, "mark": _do_mark}


def run_action(reports: Reports, name: str) -> None:
    """Button callback: refuse unless unlocked and confirmed, else act and clear the cache."""
    state = st.session_state
    if not (reports.admin_enabled and state.get(UNLOCKED)):
        result = ("error", "Refused: admin actions are locked. Set DASHBOARD_PASSWORD and enter it first.")
    elif not state.get(f"act_{name}_sure"):
        result = NOT_SURE
    else:
        try:
            result = ("success", ACTIONS[name](reports, state))
            state[f"act_{name}_sure"] = False
        except EmailAutomationError as err:
            result = ("error", str(err))
        except sqlite3.Error as err:  # e.g. locked past the busy timeout: say so, no traceback
            result = ("error", f"Database error, nothing changed: {err}")
        clear_cache()
    state[f"act_{name}_result"] = result


def _action_footer(reports: Reports, name: str, label: str, locked: bool) -> None:
    st.checkbox("I am sure", key=f"act_{name}_sure", disabled=locked)
    st.button(label, key=f"act_{name}_go", disabled=locked, on_click=run_action, args=(reports, name))
    kind, message = st.session_state.get(f"act_{name}_result", (None, None))
    if kind:
        getattr(st, kind)(literal(message))


def admin_panel(reports: Reports) -> None:
    locked = not (reports.admin_enabled and st.session_state.get(UNLOCKED))
    if not reports.admin_enabled:
        st.info("Read-only dashboard: set DASHBOARD_PASSWORD to enable admin actions.")
    elif locked:
        st.text_input("Dashboard password", type="password", key="admin_password")
        st.button("Unlock", key="unlock", on_click=_unlock, args=(reports,))
        if error := st.session_state.get("unlock_error"):
            st.error(literal(error))
        st.info("Read-only until the password is entered.")
    else:
        st.success("Admin actions enabled. Each one is recorded in admin_log as 'dashboard'.")
        st.button("Lock", key="lock", on_click=_lock)
    campaigns = [name for name, _ in fetch(reports, "campaigns")]
    unknown = [row["email"] for row in fetch(reports, "unknown")]
    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Pause or resume a campaign**")
        st.selectbox("Campaign", campaigns, key="act_campaign_name", disabled=locked)
        st.radio("Action", ["pause", "resume"], key="act_campaign_op", horizontal=True, disabled=locked)
        _action_footer(reports, "campaign", "Apply", locked)
    with right.container(border=True):
        st.markdown("**Retry failed recipients** (suppressed addresses stay failed)")
        st.selectbox("Campaign", [ALL_CAMPAIGNS, *campaigns], key="act_retry_campaign", disabled=locked)
        _action_footer(reports, "retry", "Retry failed", locked)
    with left.container(border=True):
        st.markdown("**Skip a pending or failed recipient**")
        st.text_input("Email", key="act_skip_email", disabled=locked)
        st.selectbox("Campaign", [ALL_CAMPAIGNS, *campaigns], key="act_skip_campaign", disabled=locked)
        _action_footer(reports, "skip", "Skip recipient", locked)
    with right.container(border=True):
        st.markdown("**Suppress an address** (never mailed again, in any campaign)")
        st.text_input("Email", key="act_suppress_email", disabled=locked)
        st.text_input("Reason", value="manual", key="act_suppress_reason", disabled=locked)
        _action_footer(reports, "suppress", "Suppress", locked)
    with right.container(border=True):
        st.markdown("**Unsuppress an address** (mail it again; recipients its suppression skipped are queued again)")
        st.text_input("Email", key="act_unsuppress_email", disabled=locked)
        _action_footer(reports, "unsuppress", "Unsuppress", locked)
    with left.container(border=True):
        st.markdown("**Resolve an unknown send**")
        st.selectbox("Recipient", unknown, key="act_resolve_email", disabled=locked)
        st.radio("It was", ["sent", "pending"], key="act_resolve_outcome", horizontal=True, disabled=locked,
                 format_func={"sent": "sent (it arrived)", "pending": "not sent (send again)"}.get)
        _action_footer(reports, "resolve", "Resolve", locked)


if __name__ == "__main__":
    main()
