"""The crontab line for this install, and installing it without disturbing anything else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from email_automation import cron
from email_automation.cli import app
from email_automation.config import Settings, load_settings

runner = CliRunner()

FAKE_CRONTAB = """\
#!/bin/sh
# A stand-in for crontab(1) that keeps the table in $FAKE_CRONTAB_FILE.
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB_FILE" ]; then cat "$FAKE_CRONTAB_FILE"; else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$FAKE_CRONTAB_FILE" ;;
  *) echo "usage: crontab [-l | -]" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def crontab_file(tmp_path, monkeypatch) -> Path:
    """A fake `crontab` first on PATH; returns the file it stores the table in (absent = no crontab)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "crontab"
    script.write_text(FAKE_CRONTAB)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
    table = tmp_path / "crontab.txt"
    monkeypatch.setenv("FAKE_CRONTAB_FILE", str(table))
    return table


def ours(table: Path, marker: str) -> list[str]:
    return [line for line in table.read_text().splitlines() if line.endswith(marker)]


WORKDIR = Path("/home/ubuntu/email-automation")
COMMAND = ["/home/ubuntu/email-automation/.venv/bin/email-automation"]


def test_the_line_runs_this_install_at_the_given_time():
    line = cron.cron_line(time="07:45", workdir=WORKDIR, command=COMMAND,
                          env_file=WORKDIR / "env.sh", log_file=WORKDIR / "cron.log")
    assert line == (
        "45 7 * * * { cd /home/ubuntu/email-automation && . ./env.sh && "
        "/home/ubuntu/email-automation/.venv/bin/email-automation run; } "
        ">> /home/ubuntu/email-automation/cron.log 2>&1 # email-automation:/home/ubuntu/email-automation"
    )


def test_without_an_env_file_nothing_is_sourced():
    line = cron.cron_line(workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "cron.log")
    assert line.startswith("0 8 * * * { cd /home/ubuntu/email-automation && /home/ubuntu/")
    assert ". " not in line.split("#")[0]


def test_an_env_file_elsewhere_is_sourced_by_its_absolute_path():
    line = cron.cron_line(workdir=WORKDIR, command=COMMAND, env_file=Path("/etc/email-automation/env.sh"),
                          log_file=Path("/var/log/ea.log"))
    assert "&& . /etc/email-automation/env.sh &&" in line
    assert ">> /var/log/ea.log 2>&1" in line


def test_paths_with_spaces_are_quoted_and_percent_is_escaped_for_cron():
    workdir = Path("/home/u/my outreach 100%")
    line = cron.cron_line(workdir=workdir, command=[str(workdir / ".venv/bin/email-automation")],
                          env_file=workdir / "env.sh", log_file=workdir / "cron.log")
    assert "cd '/home/u/my outreach 100\\%'" in line
    assert "%" not in line.replace("\\%", "")  # every % escaped, or cron would cut the command there


@pytest.mark.parametrize("bad", ["8am", "24:00", "08:60", "8:5", "", "08:00:00"])
def test_invalid_times_are_refused(bad):
    with pytest.raises(cron.InvalidTimeError, match="expected HH:MM"):
        cron.cron_line(time=bad, workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "x.log")


def test_the_line_works_under_sh_as_cron_runs_it(tmp_path):
    """Run the line's command with /bin/sh in an empty environment, as cron would."""
    workdir = tmp_path / "my app 5%"
    workdir.mkdir()
    (workdir / "env.sh").write_text("export DAILY_LIMIT=7\nexport DRY_RUN=false\n")
    fake = workdir / "fake-ea"
    fake.write_text('#!/bin/sh\necho "args=$* pwd=$(pwd) limit=$DAILY_LIMIT dry=$DRY_RUN"\necho oops >&2\n')
    fake.chmod(0o755)
    log = workdir / "cron.log"
    line = cron.cron_line(time="08:00", workdir=workdir, command=[str(fake)], env_file=workdir / "env.sh", log_file=log)
    command = line.split(" ", 5)[5].replace("\\%", "%")  # what cron hands to /bin/sh
    for _ in range(2):
        subprocess.run(["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin"}, cwd="/", check=True)
    assert log.read_text().splitlines() == [f"args=run pwd={workdir} limit=7 dry=false", "oops"] * 2


def test_default_command_is_the_venvs_console_script(tmp_path, monkeypatch):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert cron.default_command() == [str(bin_dir / "python"), "-m", "email_automation"]
    (bin_dir / "email-automation").touch()
    assert cron.default_command() == [str(bin_dir / "email-automation")]


def test_clock_note_translates_to_the_users_time_zone():
    now = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
    note = cron.clock_note("08:00", ZoneInfo("Europe/Berlin"), now)
    assert "08:00 here is 09:00 in Europe/Berlin" in note
    assert "--time 07:00" in note
    assert cron.clock_note("08:00", None, now) == "cron uses this server's clock (UTC, now 09:00)."


# --- install / remove against a fake crontab ---------------------------------------------------

OTHER = textwrap.dedent("""\
    MAILTO=ops@example.com
    30 2 * * * /usr/local/bin/nightly-report
    0 8 * * * { cd /srv/other && ./run; } >> /srv/other/cron.log 2>&1 # email-automation:/srv/other
""")


def test_install_twice_leaves_one_line_and_keeps_the_others(crontab_file):
    crontab_file.write_text(OTHER)
    marker = cron.marker_for(WORKDIR)
    line = cron.cron_line(workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "cron.log")
    assert cron.install(line, marker).action == "added"
    assert cron.install(line, marker).action == "unchanged"
    assert crontab_file.read_text() == OTHER + line + "\n"


def test_install_replaces_this_workdirs_line_in_place(crontab_file):
    marker = cron.marker_for(WORKDIR)
    old = cron.cron_line(time="08:00", workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "c.log")
    crontab_file.write_text(old + "\n" + OTHER)
    new = cron.cron_line(time="06:30", workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "c.log")
    assert cron.install(new, marker).action == "replaced"
    assert crontab_file.read_text() == new + "\n" + OTHER


def test_no_crontab_yet_is_an_empty_one(crontab_file):
    assert not crontab_file.exists()
    assert cron.read_crontab() == ""
    line = cron.cron_line(workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "cron.log")
    cron.install(line, cron.marker_for(WORKDIR))
    assert crontab_file.read_text() == line + "\n"


def test_remove_deletes_only_this_workdirs_line(crontab_file):
    marker = cron.marker_for(WORKDIR)
    line = cron.cron_line(workdir=WORKDIR, command=COMMAND, env_file=None, log_file=WORKDIR / "cron.log")
    crontab_file.write_text(OTHER + line + "\n")
    assert cron.remove(marker) == 1
    assert crontab_file.read_text() == OTHER
    assert cron.remove(marker) == 0
    assert crontab_file.read_text() == OTHER


def test_a_failing_crontab_command_is_an_error(tmp_path):
    with pytest.raises(cron.CronError, match="no `no-such-crontab` command"):
        cron.read_crontab("no-such-crontab")
    broken = tmp_path / "broken-crontab"
    broken.write_text("#!/bin/sh\necho 'cron: permission denied' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(cron.CronError, match="permission denied"):
        cron.read_crontab(str(broken))


# --- the command -------------------------------------------------------------------------------


def test_cron_prints_the_line_with_absolute_paths(tmp_path):
    (tmp_path / "env.sh").write_text("export DRY_RUN=true\n")
    result = runner.invoke(app, ["cron", "--time", "07:15"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"15 7 * * * {{ cd {tmp_path} && . ./env.sh && {Path(sys.executable).parent}/")
    assert line.endswith(f">> {tmp_path}/cron.log 2>&1 # email-automation:{tmp_path}")
    assert result.stdout.splitlines()[-1] == "To install it: email-automation cron --install --time 07:15"


def test_cron_hourly_runs_every_hour_at_the_minute_of_time(tmp_path):
    (tmp_path / "env.sh").write_text("export DRY_RUN=true\n")
    result = runner.invoke(app, ["cron", "--hourly", "--time", "08:05"], catch_exceptions=False)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"5 * * * * {{ cd {tmp_path} && . ./env.sh && ")
    assert lines[1] == ("Note: runs every hour at minute 05: each recipient is mailed inside SEND_DAYS/SEND_HOURS "
                        "of their own time zone, and DAILY_LIMIT still holds per day")
    assert lines[-1] == "To install it: email-automation cron --install --hourly --time 08:05"


def test_cron_says_when_there_is_no_env_file(tmp_path):
    result = runner.invoke(app, ["cron"], catch_exceptions=False)
    assert f"Note: no {tmp_path}/env.sh, so the line sources no settings" in result.stdout
    assert ". ./env.sh" not in result.stdout


def test_cron_install_twice_then_remove(crontab_file, tmp_path):
    crontab_file.write_text(OTHER)
    first = runner.invoke(app, ["cron", "--install", "--log-file", "logs/run.log"], catch_exceptions=False)
    second = runner.invoke(app, ["cron", "--install", "--log-file", "logs/run.log"], catch_exceptions=False)
    assert first.stdout.startswith("Added to your crontab:\n")
    assert second.stdout.startswith("Already in your crontab:\n")
    [line] = ours(crontab_file, cron.marker_for(tmp_path))
    assert f">> {tmp_path}/logs/run.log 2>&1" in line
    removed = runner.invoke(app, ["cron", "--remove"], catch_exceptions=False)
    assert removed.stdout.strip() == f"Removed 1 line(s) for {tmp_path} from your crontab."
    assert crontab_file.read_text() == OTHER


def test_cron_refuses_a_bad_time_and_a_missing_env_file(tmp_path):
    bad_time = runner.invoke(app, ["cron", "--time", "8am"])
    assert bad_time.exit_code == 2
    assert bad_time.stderr.strip() == "Error: invalid time '8am': expected HH:MM between 00:00 and 23:59, such as 08:00"
    missing = runner.invoke(app, ["cron", "--env-file", "prod.env"])
    assert missing.exit_code == 2  # bad input, as the README's exit codes say of a file that does not exist
    assert missing.stderr.strip() == f"Error: {tmp_path}/prod.env: no such env file"


# --- the files a server install copies ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_env_sh_example_lists_every_setting_and_aws_region():
    text = (ROOT / "env.sh.example").read_text()
    for name in [*Settings.model_fields, "aws_region"]:
        assert re.search(rf"^(# )?export {name.upper()}=", text, re.MULTILINE), f"{name.upper()} missing"
    assert re.search(r"^export DRY_RUN=true$", text, re.MULTILINE)


def test_env_sh_example_sourced_by_sh_gives_the_defaults(monkeypatch):
    """The values it shows are the real defaults: sourcing it changes nothing."""
    for name in ("SEND_DAYS", "SEND_HOURS", "MAX_NEW_PER_COMPANY_PER_DAY", "MAX_CONTACTS_PER_COMPANY"):  # see conftest
        monkeypatch.delenv(name)
    dumped = subprocess.run(["/bin/sh", "-c", f". '{ROOT / 'env.sh.example'}' && env"], env={},
                            capture_output=True, text=True, check=True).stdout
    exported = dict(line.split("=", 1) for line in dumped.splitlines() if "=" in line)
    exported = {k: v for k, v in exported.items() if k.lower() in Settings.model_fields}
    assert len(exported) == len(Settings.model_fields) - 1  # all but the commented-out LOG_FILE
    defaults = load_settings().model_dump()
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    assert load_settings().model_dump() == defaults


def test_iam_policy_is_least_privilege():
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    statements = {s["Sid"]: s for s in policy["Statement"]}
    [send] = [s for s in statements.values() if "ses:SendEmail" in s["Action"]]
    assert sorted(send["Action"]) == ["ses:SendEmail", "ses:SendRawEmail"]
    assert all(":identity/" in r or ":configuration-set/" in r for r in send["Resource"])
    assert not any("*" in r for r in send["Resource"])
    assert send["Condition"]["StringEquals"]["ses:FromAddress"] == "jane@example.com"
    actions = {a for s in statements.values() for a in s["Action"]}
    suppression_list = {"ses:ListSuppressedDestinations", "ses:GetSuppressedDestination", "ses:PutSuppressedDestination"}
    assert actions == {"ses:SendEmail", "ses:SendRawEmail", "ses:GetEmailIdentity", "ses:GetAccount",
                       "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *suppression_list,
                       "ses:GetContact", "ses:CreateContact", "ses:GetContactList"}
    assert statements["ReadAndAddContactsOfTheContactList"]["Resource"] == "arn:aws:ses:REGION:ACCOUNT_ID:contact-list/outreach"
    assert statements["ReadTheSesEventsQueue"]["Resource"] == "arn:aws:sqs:REGION:ACCOUNT_ID:ses-events"
    wildcard = [s for s in statements.values() if s["Resource"] == "*"]
    # Neither GetAccount nor the account-level suppression list has a resource type.
    assert [set(s["Action"]) for s in wildcard] == [{"ses:GetAccount"}, suppression_list]


def test_systemd_timer_runs_daily_at_8_and_catches_up_after_boot():
    timer = (ROOT / "deploy" / "email-automation.timer").read_text()
    service = (ROOT / "deploy" / "email-automation.service").read_text()
    assert "\nOnCalendar=*-*-* 08:00:00\n" in timer
    assert "\nPersistent=true\n" in timer
    assert "\nWorkingDirectory=/home/ubuntu/email-automation\n" in service
    assert "\nExecStart=/bin/sh -c '. ./env.sh && exec .venv/bin/email-automation run'\n" in service


def test_a_crontab_command_that_hangs_is_a_clear_error(monkeypatch):
    from email_automation import cron

    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 30)

    monkeypatch.setattr(cron.subprocess, "run", hang)
    with pytest.raises(cron.CronError, match="did not answer within 30 s; nothing was changed"):
        cron.read_crontab("crontab")


def test_cron_install_hint_keeps_the_env_and_log_files_of_the_line_printed(tmp_path):
    """Following the hint must install the line shown, not one sourcing ./env.sh into ./cron.log."""
    (tmp_path / "prod env.sh").write_text("export DRY_RUN=false\n")
    result = runner.invoke(app, ["cron", "--env-file", "prod env.sh", "--log-file", "logs/run.log"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ". './prod env.sh' && " in result.stdout.splitlines()[0]
    assert result.stdout.splitlines()[-1] == ("To install it: email-automation cron --install "
                                              "--env-file 'prod env.sh' --log-file logs/run.log")
