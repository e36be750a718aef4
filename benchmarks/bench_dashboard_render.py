"""The dashboard's cold first render in headless Chromium, against Streamlit's own floor.

    python benchmarks/bench_dashboard_render.py                 # 1,000,000 send_log rows
    python benchmarks/bench_dashboard_render.py --rows 200000 --rounds 3

Fills a database as bench_dashboard.py does (send_log over a year, a follow-up step, a quarter
of the sends follow-ups) plus replies in the inbox, then, round after round, starts a fresh
server and opens the page in a fresh Chromium page, alternating between:

- ours: `dashboard.py` on that database, with the command line `email-automation dashboard` uses;
- floor: a Streamlit page with the same widgets as ours on a first view and no data at all (the
  page settings, title, sidebar filters, metrics, tabs of which only the open one runs, the
  Activity tab's chart, tables and pager, and the template editor ours draws whichever tab is
  open), each drawn by the same Streamlit call as ours (the chart by st.vega_lite_chart, which
  does not import Altair as st.bar_chart does): what Streamlit itself costs for such a page. Its
  other tabs hold one empty table each, so the figure after a click on them is an upper bound of
  what our data costs there.

A render counts from `goto` until the page's script has finished (`stApp`'s script state
`notRunning`) with all ten metrics shown. Then each other tab is clicked in turn, and counted from
the message the click makes the page send until the server says the run it asked for finished.
Prints the median of each, the difference (the goal: within 0.5 s of the floor) and each
server's peak RSS. Needs chromium on PATH and playwright.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dashboard import NOW, fill  # noqa: E402
from email_automation.cli.dashboard import DASHBOARD_SCRIPT, streamlit_command  # noqa: E402
from email_automation.database import iso  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DONE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TABS = ["Activity", "Recipients", "Replies", "Deliverability", "Admin", "Campaigns"]

FLOOR_PAGE = '''
import datetime
import pandas as pd
import streamlit as st

st.set_page_config(page_title="Email automation", page_icon=":email:", layout="wide")
st.title("Email automation")
with st.sidebar:
    st.header("Filters")
    st.date_input("Batch days", value=(datetime.date(2026, 10, 26), datetime.date(2026, 11, 25)))
    st.selectbox("Campaign", ["All campaigns"])
    st.selectbox("Status", ["All statuses"])
    st.text_input("Email contains")
    st.divider()
    st.toggle("Auto-refresh", value=False)
    st.number_input("Every (seconds)", min_value=5, max_value=3600, value=15, step=5, disabled=True)
st.caption("Batch days")
for labels in (["Sent", "Failed", "Deferred", "Unique recipients", "Dry-run (not sent)"],
               ["Bounce rate", "Complaint rate", "Pending", "Unknown", "Daily limit used"]):
    for column, label in zip(st.columns(5), labels):
        column.metric(label, "0", border=True)
empty = pd.DataFrame({"day": pd.to_datetime([]), "sent": []})
tabs = dict(zip(TABS, st.tabs(TABS, key="tab", on_change="rerun")))
for name, tab in tabs.items():
    if tab.open and name == "Activity":  # what the Activity tab draws, without data
        with tab:
            chart, breakdown = st.columns([3, 1])
            with chart:
                st.subheader("Sent, failed and deferred per day")
                st.vega_lite_chart({"data": {"values": []}, "mark": "bar", "height": 260, "encoding": {
                    "x": {"field": "day", "type": "ordinal"}, "y": {"field": "sent", "type": "quantitative"}}},
                    width="stretch")
            with breakdown:
                st.subheader("By status")
                st.dataframe(empty, hide_index=True)
                st.subheader("Sent by step")
                st.dataframe(empty, hide_index=True)
            st.subheader("Send log")
            size_col, page_col, info_col, csv_col = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
            size_col.selectbox("Rows per page", (25, 50, 100, 250), index=1)
            page_col.number_input("Page", min_value=1, value=1, step=1)
            info_col.caption("Page 1 of 1")
            csv_col.download_button("Download CSV", data="", on_click="ignore")
            st.dataframe(empty, hide_index=True)
    elif tab.open:  # the other tabs: a table
        with tab:
            st.dataframe(empty, hide_index=True)
with tabs["Campaigns"]:  # the template editor, drawn whichever tab is open (as ours)
    st.info("Read-only")
    with st.container(border=True):
        st.markdown("**New campaign**")
        st.text_input("Name")
        st.button("Create")
    st.selectbox("Campaign", ["outreach"], key="campaign")
    with st.container(border=True):
        st.markdown("**Templates**")
        st.selectbox("Step", [1, 2])
        st.selectbox("Template", ["(the campaign's own)"])
        st.selectbox("Preview for", ["person@example.com"])
        with st.form("editor", border=False):
            st.text_area("Subject", height=80)
            st.text_area("HTML body", height=260)
            st.text_area("Text body", height=120)
            left, right = st.columns(2)
            left.form_submit_button("Preview (Ctrl+Enter)")
            right.form_submit_button("Save template")
'''


def add_replies(path: Path, *, count: int, seed: int = 11) -> None:
    """Answers in the inbox (replies, out-of-office, bounces by mail), each tied to a sent message."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    sent = [row for row in conn.execute(
        "SELECT id, recipient_id FROM send_log WHERE status = 'sent' ORDER BY id DESC LIMIT ?", (count * 4,))]
    kinds = ["reply"] * 6 + ["auto_reply"] * 3 + ["bounce"]
    with conn:
        conn.executemany(
            "INSERT INTO inbox_messages (dedupe_key, mailbox, uidvalidity, uid, kind, recipient_id, send_log_id,"
            " from_email, subject, snippet, message_id, dated_at, read_at) VALUES (?, 'INBOX', 1, ?, ?, ?, ?, ?,"
            " 'Re: Interested in joining Acme', 'Thanks for reaching out, let us talk next week.', ?, ?, ?)",
            ((f"bench-{n}", n + 1, rng.choice(kinds), recipient, log_id, f"person{recipient}@example.com",
              f"<reply-{n}@example.com>", iso(NOW), iso(NOW)) for n, (log_id, recipient) in enumerate(sent[:count])))
    conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(script: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = streamlit_command(address="127.0.0.1", port=port)
    command[command.index(str(DASHBOARD_SCRIPT))] = str(script)
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"{script.name}: the server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{script.name}: the server did not answer within 60 s:\n{log.read_text()}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Messages:
    """The page's websocket traffic as Playwright sees it: when the page last asked for a run, and
    whether and when a run has finished since (Streamlit's `script_finished` message). A quick
    run can end without the page ever marking it running, so the page's own state is no sign."""

    def __init__(self, page) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._forward = ForwardMsg
        self._page = page
        self.armed = False  # nothing is read during the first render: it is timed on its own
        self.asked: float | None = None
        self.finished: float | None = None
        page.on("websocket", self._watch)

    def _watch(self, socket) -> None:
        socket.on("framesent", self._sent)
        socket.on("framereceived", self._received)

    def _sent(self, payload) -> None:
        if self.armed and self.asked is None:
            self.asked = time.perf_counter()

    def _received(self, payload) -> None:
        if not self.armed or isinstance(payload, str) or self.asked is None or self.finished is not None:
            return
        message = self._forward()
        message.ParseFromString(payload)
        if (message.WhichOneof("type") == "script_finished"
                and message.script_finished != self._forward.FINISHED_EARLY_FOR_RERUN):
            self.finished = time.perf_counter()

    def run_after(self, click) -> float:
        """Seconds from the message `click()` makes the page send to the end of the run it asks for."""
        self.asked = self.finished = None
        self.armed = True
        click()
        deadline = time.monotonic() + 120
        while self.finished is None:
            if time.monotonic() > deadline:
                raise SystemExit("no run finished within two minutes of a click on a tab")
            self._page.wait_for_timeout(5)  # Playwright delivers the page's events meanwhile
        return self.finished - self.asked


def render(browser, url: str) -> dict[str, float]:
    """Seconds to the first render, then to the end of each other tab's run after a click on it."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        messages = Messages(page)
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(DONE, timeout=120_000)
        page.get_by_test_id("stMetric").nth(9).wait_for(timeout=120_000)
        page.wait_for_selector(DONE, timeout=120_000)
        times = {"first render": time.perf_counter() - started}
        for name in TABS[1:]:
            times[name] = messages.run_after(page.get_by_role("tab", name=name).click)
        return times
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--replies", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("needs chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("needs playwright (pip install playwright; the browser is the system's chromium)") from None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "bench.db"
        started = time.perf_counter()
        fill(db, rows=args.rows, recipients=args.recipients, days=365)
        add_replies(db, count=args.replies)
        print(f"filled {args.rows:,} send_log rows, {args.recipients:,} recipients, {args.replies:,} replies "
              f"in {time.perf_counter() - started:.1f}s")
        floor = folder / "floor.py"
        floor.write_text(f"TABS = {TABS!r}\n{FLOOR_PAGE}", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_PATH": str(db), "TIMEZONE": "Europe/Berlin",
               "DAILY_LIMIT": "80", "SENDER_EMAIL": "bench@example.com"}
        times: dict[str, list[dict[str, float]]] = {"ours": [], "floor": []}
        peaks: dict[str, list[float]] = {"ours": [], "floor": []}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for r in range(args.rounds):
                    for name in ("ours", "floor") if r % 2 == 0 else ("floor", "ours"):
                        script = DASHBOARD_SCRIPT if name == "ours" else floor
                        server, url = start(script, env, folder / f"{name}.log")
                        try:
                            times[name].append(render(browser, url))
                            peaks[name].append(peak_rss_mib(server.pid))
                        finally:
                            server.terminate()
                            server.wait(30)
            finally:
                browser.close()
    first = {name: [run["first render"] for run in times[name]] for name in times}
    print(f"cold first render in Chromium, {args.rounds} rounds each, a fresh server each time (median):")
    for name in ("ours", "floor"):
        print(f"  {name:<6} {statistics.median(first[name]):6.2f} s  server peak RSS {max(peaks[name]):6.1f} MiB"
              f"  (runs: {', '.join(f'{t:.2f}' for t in first[name])})")
    gap = statistics.median(first["ours"]) - statistics.median(first["floor"])
    # Each round renders both pages one after the other: their difference within a round moves
    # less with the VM's speed from one minute to the next than the two medians apart do.
    paired = statistics.median(o - f for o, f in zip(first["ours"], first["floor"]))
    print(f"  ours - floor: {gap:+.2f} s; median of the rounds' own differences {paired:+.2f} s (goal: within 0.5 s)")
    print("then a click on each tab, until its script has finished (median; ours, floor, difference):")
    for tab in TABS[1:]:
        ours, floor_time = (statistics.median(run[tab] for run in times[name]) for name in ("ours", "floor"))
        print(f"  {tab:<15} {ours:6.2f} s  {floor_time:6.2f} s  {ours - floor_time:+.2f} s")


if __name__ == "__main__":
    main()
