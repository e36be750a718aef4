"""How fast the command line answers: `--help` and `status` against `mailmerge --help`, whole processes.

Interleaved runs on a small database (100 recipients), median wall and CPU time of each, and the
ratio (mailmerge's time / ours: 1 or more means we answer no slower). `run` on an empty database
(a dry run with nothing to send) shows the start-up every cron run pays.

    python benchmarks/bench_cli.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if not (BIN / "mailmerge").exists():
        raise SystemExit("mailmerge is not installed in this environment: pip install mailmerge")
    ea = str(BIN / "email-automation")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        commands = {"email-automation --help": [ea, "--help"], "email-automation status": [ea, "status"],
                    "email-automation status --json": [ea, "status", "--json"],
                    "email-automation run (empty db)": [ea, "run", "--db", str(folder / "empty.db")],
                    "mailmerge --help": [str(BIN / "mailmerge"), "--help"]}
        # As a user runs it: byte-code cached (an install compiles it; an editable one writes it on
        # the warm-up round), not compiled again by every process.
        env = {**os.environ, "DB_PATH": str(folder / "cli.db"), "TIMEZONE": "UTC"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        (folder / "r.csv").write_text("email,first_name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(100)))
        for step in (["init"], ["import", "r.csv"], ["init", "--db", str(folder / "empty.db")]):
            subprocess.run([ea, *step], env=env, cwd=folder, check=True, capture_output=True)
        for cmd in commands.values():  # warm-up, not counted
            timed(cmd, env, folder)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, env, folder))
    base = statistics.median(t for t, _ in times["mailmerge --help"])
    print(f"{args.runs} interleaved runs each (median)")
    for name, runs in times.items():
        wall = statistics.median(t for t, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {name:<32} {wall:6.3f} s  CPU {cpu:6.3f} s  ratio (mailmerge --help / this): {base / wall:5.2f}x")


if __name__ == "__main__":
    main()
