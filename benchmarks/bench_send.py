"""Whole processes, side by side: `email-automation run` against mailmerge on the same loopback sink.

Both send N messages to tests/smtp_sink.py (a separate process that writes each message to a
file, as a relay queueing to disk does) with no delay, into one folder kept for the whole set. Rounds are interleaved so a loaded machine
slows both alike. Prints seconds, messages/s, peak RSS of each process, and the ratio
(mailmerge's time / ours: above 1 means we are faster).

    python benchmarks/bench_send.py [--messages 600] [--latency 0] [--concurrency 1] [--rounds 3] [--relay-core]

`--latency 0.05` makes the sink take 50 ms per message (a provider's round trip, such as SES's
API from EC2); `--concurrency 8` sets SEND_CONCURRENCY for our run. `--relay-core` keeps the sink
on the last CPU and both senders on the others, as a relay on its own machine would be (on a
2-CPU machine the scheduler otherwise puts them on one core now and then): a diagnostic, not the
goal's method. mailmerge must be installed (`pip install mailmerge`; a benchmark dependency only).
"""

from __future__ import annotations

import argparse
import compileall
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SUBJECT = "Quick question about {{ company }}"
HTML = ("<p>Hi {{ first_name }},</p>\n<p>I saw the work {{ company }} does on data platforms and would like to"
        " ask you a short question about it. Would you have ten minutes next week?</p>\n<p>Best regards,<br>"
        "Bench Sender</p>\n")
MAILMERGE_TEMPLATE = """TO: {{email}}
SUBJECT: Quick question about {{company}}
FROM: Bench Sender <bench@example.com>
CONTENT-TYPE: text/html

<p>Hi {{first_name}},</p>
<p>I saw the work {{company}} does on data platforms and would like to ask you a short question about it. Would you have ten minutes next week?</p>
<p>Best regards,<br>Bench Sender</p>
"""


SENDER_CPUS: set[int] | None = None  # with --relay-core: the CPUs both senders may run on


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of one process, its output discarded."""
    started = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, SENDER_CPUS)) if SENDER_CPUS else None
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


class Sink:
    """tests/smtp_sink.py in its own process, so its CPU is not counted against either sender."""

    def __init__(self, folder: Path, latency: float, cpu: int | None = None) -> None:
        self.folder = folder
        ready = folder / "port.txt"
        cmd = [sys.executable, str(ROOT / "tests" / "smtp_sink.py"), "--ready-file", str(ready),
               "--message-dir", str(folder / "messages"), "--stall-after-data", str(latency)]
        (folder / "messages").mkdir()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the SMTP sink did not start")
            time.sleep(0.05)
        self.port = int(ready.read_text())

    def cpu(self) -> float:
        """CPU seconds the sink has used so far (Linux /proc), to see which side is the bottleneck."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def received(self) -> int:
        return len(list((self.folder / "messages").iterdir()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def file_cost(folder: Path, files: int = 200) -> float:
    """Microseconds of CPU to create and write one message-sized file in `folder`, as the sink does
    for each message (the files are removed again). On this benchmark's VM it was 25 us in one
    directory and 250-700 us in another, steadily: it depends on where the directory was made, and
    the sink's share of a run with it."""
    paths = [folder / f"probe-{i}.tmp" for i in range(files)]
    started = time.process_time()
    for path in paths:
        path.write_bytes(b"x" * 1200)
    spent = time.process_time() - started
    for path in paths:
        path.unlink()
    return spent / files * 1e6


def write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "first_name", "company"])
        for i in range(n):
            writer.writerow([f"person{i}@example.com", f"Person{i}", f"Company {i % 97}"])


def ours(folder: Path, csv_path: Path, port: int, n: int, concurrency: int) -> tuple[float, float, float]:
    env = {**os.environ, "DB_PATH": str(folder / "ours.db"), "DRY_RUN": "false", "TRANSPORT": "smtp",
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_STARTTLS": "false",
           "SENDER_EMAIL": "bench@example.com", "SENDER_NAME": "Bench Sender", "DELAY_SECONDS": "0",
           "DAILY_LIMIT": str(n), "TIMEZONE": "UTC", "SEND_CONCURRENCY": str(concurrency),
           "PHYSICAL_ADDRESS": "1 Bench Street, Berlin",
           # Whatever the hour and day, and every recipient at once: mailmerge has no such limits.
           "SEND_DAYS": "mon-sun", "SEND_HOURS": "00:00-24:00",
           "MAX_NEW_PER_COMPANY_PER_DAY": str(n), "MAX_CONTACTS_PER_COMPANY": str(n)}
    ea = str(BIN / "email-automation")
    (folder / "body.html").write_text(HTML, encoding="utf-8")
    for step in (["init"], ["import", str(csv_path)], ["template", "set", "--subject", SUBJECT, "--html", "body.html"]):
        subprocess.run([ea, *step], cwd=folder, env=env, check=True, capture_output=True)
    return timed([ea, "run"], cwd=folder, env=env)


def mailmerge(folder: Path, csv_path: Path, port: int, n: int) -> tuple[float, float, float]:
    (folder / "mailmerge_template.txt").write_text(MAILMERGE_TEMPLATE, encoding="utf-8")
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\n", encoding="utf-8")
    shutil.copy(csv_path, folder / "mailmerge_database.csv")
    return timed([str(BIN / "mailmerge"), "--no-dry-run", "--no-limit", "--output-format", "raw"], cwd=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the sink takes per message")
    parser.add_argument("--concurrency", type=int, default=1, help="SEND_CONCURRENCY for our run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relay-core", action="store_true", help="the sink on the last CPU, the senders on the others")
    args = parser.parse_args()
    global SENDER_CPUS
    relay_cpu = None
    if args.relay_core:
        if not hasattr(os, "sched_getaffinity"):
            raise SystemExit("--relay-core needs Linux (os.sched_setaffinity)")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--relay-core needs two CPUs or more")
        relay_cpu, SENDER_CPUS = cpus[-1], set(cpus[:-1])
    if not (BIN / "mailmerge").exists():
        raise SystemExit("mailmerge is not installed in this environment: pip install mailmerge")
    n = args.messages
    # As installed: pip compiles a package's modules when it installs it (mailmerge's are), an
    # editable checkout compiles them at its first import, unless PYTHONDONTWRITEBYTECODE is set;
    # then every run would compile ours from source again (about 0.1-0.2 s of CPU).
    compileall.compile_dir(ROOT / "email_automation", quiet=1)
    results: dict[str, list[tuple[float, float, float]]] = {"ours": [], "mailmerge": []}
    sink_cpus: dict[str, list[float]] = {"ours": [], "mailmerge": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_csv(root / "recipients.csv", n)
        (root / "sink").mkdir()
        sink = Sink(root / "sink", args.latency, relay_cpu)
        # One folder for the whole set, the messages of every run left in it until the end: a
        # folder made again for each run could land where creating a file costs ten times as much
        # (file_cost), for one sender and not the other.
        disk = [file_cost(root / "sink" / "messages")]
        try:
            for r in range(args.rounds):
                # The order alternates from round to round: on a small VM the second of two runs
                # in a row can be slower (two identical copies of our run: 7% in twelve rounds),
                # so neither sender always has the first place.
                for name in ("ours", "mailmerge") if r % 2 == 0 else ("mailmerge", "ours"):
                    folder = root / f"{name}-{r}"
                    folder.mkdir()
                    before = sink.received()
                    sink_cpu = sink.cpu()
                    if name == "ours":
                        result = ours(folder, root / "recipients.csv", sink.port, n, args.concurrency)
                    else:
                        result = mailmerge(folder, root / "recipients.csv", sink.port, n)
                    if sink.received() - before != n:
                        raise SystemExit(f"{name}: the sink received {sink.received() - before} messages, not {n}")
                    results[name].append(result)
                    sink_cpus[name].append(sink.cpu() - sink_cpu)
            disk.append(file_cost(root / "sink" / "messages"))
        finally:
            sink.stop()
    print(f"messages: {n}, sink latency {args.latency * 1000:g} ms, SEND_CONCURRENCY {args.concurrency}, "
          f"{args.rounds} interleaved rounds (median){', the sink on a CPU of its own' if args.relay_core else ''}")
    print(f"  creating a message file in the sink's folder: {disk[0]:.0f} us of CPU before the rounds,"
          f" {disk[-1]:.0f} us after")
    medians = {}
    for name, runs in results.items():
        seconds = statistics.median(t for t, _, _ in runs)
        rss = max(m for _, m, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        medians[name] = seconds
        print(f"  {name:<10} {seconds:7.2f} s  {n / seconds:8.1f} msg/s  CPU {cpu:6.2f} s (sink's {statistics.median(sink_cpus[name]):5.2f} s)"
              f"  peak RSS {rss:6.1f} MiB  (runs: {', '.join(f'{t:.2f}' for t, _, _ in runs)})")
    print(f"  ratio (mailmerge time / ours): {medians['mailmerge'] / medians['ours']:.2f}x")
    # Each round's two runs are next to each other in time: when the machine's speed drifts during
    # the set, the ratio within a round is steadier than the ratio of the two medians.
    paired = [m[0] / o[0] for m, o in zip(results["mailmerge"], results["ours"])]
    print(f"  median of the rounds' own ratios: {statistics.median(paired):.2f}x"
          f" ({min(paired):.2f}-{max(paired):.2f}x)")


if __name__ == "__main__":
    main()
