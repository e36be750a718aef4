"""How fast `import_csv` is against the bare minimum, and that its memory stays flat.

    python benchmarks/bench_import.py              # 1,000,000 rows
    python benchmarks/bench_import.py --rows 50000
    python benchmarks/bench_import.py --rows 200000 --repeat 3   # interleaved: b s o b s o b s o

Generates a CSV (a few thousand repeating domains, ~0.5% case/space duplicates, ~0.2% invalid
addresses), then imports it three ways, each in a fresh child process so peak RSS is its own:

- baseline: `csv.reader` + `executemany(INSERT OR IGNORE)` into a WAL table with UNIQUE(email),
  no validation, one transaction;
- schema: the same bare loop into the real `recipients` table (no validation, one transaction,
  the import's page cache): what its six indexes and wider rows cost before any work of ours;
- ours: `import_csv` into a fresh database from `init_db`.

With `--repeat N` the three run in turn N times (so a burst of load on a shared machine hits all
three alike) and each figure is the median of its N runs. The target is ours >= 0.5x the
baseline's rows/s. CPU seconds are shown next to wall time because they hold still on a busy
machine. Peak RSS far below the file size shows that the import streams.

It also prints the longest single write transaction of ours: the longest a run recording a send
could have to wait for the write lock during the import (the baseline holds it for its whole time).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

# Run from a checkout: import this tree's package, not whatever an install points at.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIRST = ["Anna", "Ben", "Chloé", "David", "Eva", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
LAST = ["Müller", "Smith", "Nguyen", "García", "Okafor", "Kowalski", "Schmidt", "Rossi", "Dubois", "Larsen"]
ROLES = ["Recruiter", "HR Manager", "Talent Partner", "Head of People", "Technical Recruiter"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A realistic export: repeating company domains, a few near-duplicates and bad addresses."""
    rng = random.Random(seed)
    domains = [f"company{n}.example.com" for n in range(3000)]
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Email", "First Name", "Last Name", "Company", "Role"])
        prev = ""
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            domain = rng.choice(domains)
            email = f"{first[0].lower()}.{last.lower().encode('ascii', 'ignore').decode()}{n}@{domain}"
            dice = rng.random()
            if dice < 0.005 and prev:
                email = f" {prev.upper()} "  # the previous row again, as people re-type it
            elif dice < 0.007:
                email = email.replace("@", " at ")
            prev = email.strip()
            out.writerow([email, first, last, f"Company {domain.split('.')[0]}", rng.choice(ROLES)])


def run_baseline(csv_path: Path, db_path: Path) -> int:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (email TEXT NOT NULL UNIQUE, first_name TEXT, last_name TEXT, company TEXT, role TEXT)")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR IGNORE INTO t VALUES (?, ?, ?, ?, ?)", reader)
        conn.execute("COMMIT")
    return conn.execute("SELECT count(*) FROM t").fetchone()[0]


def run_schema(csv_path: Path, db_path: Path) -> int:
    """The baseline's bare loop, but into the real `recipients` table: the ceiling its indexes allow
    (with the import's page cache and no foreign-key check, as the import has)."""
    from email_automation.database import init_db
    from email_automation.import_csv import PAGE_CACHE_MIB

    conn = init_db(db_path)
    conn.execute(f"PRAGMA cache_size = {-PAGE_CACHE_MIB * 1024}")
    conn.execute("PRAGMA foreign_keys = OFF")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO recipients (campaign_id, email, first_name, last_name, company, created_at)"
            " VALUES (1, ?, ?, ?, ?, '2026-01-01T00:00:00.000000Z')",
            (row[:4] for row in reader),
        )
        conn.execute("COMMIT")
    return conn.execute("SELECT count(*) FROM recipients").fetchone()[0]


def run_ours(csv_path: Path, db_path: Path) -> int:
    from email_automation.database import init_db
    from email_automation.import_csv import import_csv

    conn = init_db(db_path)
    with timed_transactions() as longest:
        report = import_csv(conn, csv_path, rejects_path=db_path.with_suffix(".rejects.csv"))
    RESULT["longest_transaction"] = longest[0]
    return report.inserted


RESULT: dict = {}


@contextmanager
def timed_transactions():
    """Time every write transaction the import opens, BEGIN IMMEDIATE to COMMIT returned; yields [longest]."""
    from email_automation import import_csv, imports

    real, longest = import_csv.transaction, [0.0]

    @contextmanager
    def timed(conn):
        started = time.perf_counter()
        with real(conn):
            yield conn
        longest[0] = max(longest[0], time.perf_counter() - started)

    import_csv.transaction = imports.transaction = timed
    try:
        yield longest
    finally:
        import_csv.transaction = imports.transaction = real


def child(phase: str, csv_path: Path, db_path: Path, rows: int) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    if phase != "baseline":  # module import time is not import speed
        import email_automation.database  # noqa: F401
        import email_automation.import_csv  # noqa: F401
    started, cpu_started = time.perf_counter(), time.process_time()
    inserted = PHASES[phase](csv_path, db_path)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"phase": phase, "seconds": seconds, "cpu_seconds": cpu, "inserted": inserted,
                      "peak_rss_mib": peak_kib / 1024, **RESULT}))


PHASES = {"baseline": run_baseline, "schema": run_schema, "ours": run_ours}


def measure(phase: str, csv_path: Path, db_path: Path, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--csv", str(csv_path), "--db", str(db_path), "--rows", str(rows)],
        capture_output=True, text=True,
    )
    if out.returncode:
        sys.exit(f"{phase} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """Each figure of `runs` as its median (the runs of one phase differ only by the machine's load)."""
    return {key: statistics.median(r[key] for r in runs) if isinstance(runs[0][key], float) else runs[0][key]
            for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="run the three in turn this many times; show medians")
    parser.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        child(args.phase, args.csv, args.db, args.rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv_path = folder / "recipients.csv"
        generate(csv_path, args.rows)
        size_mib = csv_path.stat().st_size / 2**20
        runs: dict[str, list[dict]] = {phase: [] for phase in PHASES}
        for _ in range(args.repeat):
            for phase in PHASES:
                for stale in folder.glob(f"{phase}.*"):
                    stale.unlink()  # each run into a fresh database
                runs[phase].append(measure(phase, csv_path, folder / f"{phase}.db", args.rows))
        results = {phase: median_run(found) for phase, found in runs.items()}
        if args.repeat > 1:
            for phase, found in runs.items():
                print(f"{phase:>9} wall: " + " ".join(f"{r['seconds']:6.2f}s" for r in found))
    print(f"rows: {args.rows:,}   file: {size_mib:.1f} MiB   "
          f"python {sys.version.split()[0]}   sqlite {sqlite3.sqlite_version}")
    print(f"{'':>9}  {'rows/s':>9} {'wall':>7}  {'rows/CPU-s':>10} {'CPU':>7}  {'inserted':>9}  peak RSS")
    for phase, r in results.items():
        print(f"{phase:>9}: {args.rows / r['seconds']:>9,.0f} {r['seconds']:6.2f}s  {args.rows / r['cpu_seconds']:>10,.0f} "
              f"{r['cpu_seconds']:6.2f}s  {r['inserted']:>9,}  {r['peak_rss_mib']:5.1f} MiB")
    base, schema, ours = (results[p] for p in PHASES)
    print(f"ours / baseline: {base['seconds'] / ours['seconds']:.2f}x wall, "
          f"{base['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU (target >= 0.50x)")
    print(f"ours / schema ceiling: {schema['seconds'] / ours['seconds']:.2f}x wall, "
          f"{schema['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU")
    print(f"longest write transaction, ours: {ours['longest_transaction'] * 1000:.0f} ms "
          f"(baseline: the whole import, {base['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
