"""Every recipient has every CSV column its templates read: `template set/add` and `step add/set`
check it against the recipients who may still get the template, an import against each file."""

from __future__ import annotations

import sqlite3
import textwrap

import pytest

from tests.cli_helpers import cli
from tests.test_template_variants import send_all

PLAIN = "<p>Hi {{ first_name }}</p>"


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    monkeypatch.setenv("DELAY_SECONDS", "0")
    path = str(tmp_path / "cols.db")
    assert cli("init", "--db", path).exit_code == 0
    return path


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def saved(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


# --- before any recipient: accepted, with a note -------------------------------------------------

def test_a_segment_with_its_own_column_is_added_before_its_csv_and_the_csv_then_imports(db, tmp_path, monkeypatch):
    """A deadlock: import refused rows naming `startup` (no such template yet) and `template add
    startup` refused {{ role }} (no CSV with it imported yet)."""
    html = write(tmp_path, "s.html", "<p>Hi {{ first_name }}, a {{ role }} at {{ company }}?</p>")

    added = cli("template", "add", "startup", "--subject", "Hi {{ role }}", "--html", html, "--db", db)

    assert (added.exit_code, added.stdout) == (0, (
        "Template 'startup' of campaign 'default' added.\n"
        "Note: 'role' is not a column of any recipient waiting for template 'startup' yet: import refuses rows for it "
        "without that column.\n"))
    csv = write(tmp_path, "r.csv", "email,first_name,company,role,template\n"
                                   "a@x.example,Ann,Acme,CTO,startup\nb@y.example,Bob,Bank,,startup\n")
    imported = cli("import", csv, "--db", db)
    assert imported.stdout.startswith(f"{csv}: 2 added to campaign 'default', 0 duplicate(s) skipped, 0 invalid.")
    received = send_all(db, monkeypatch)
    assert (str(received["a@x.example"]["Subject"]), str(received["b@y.example"]["Subject"])) == ("Hi CTO", "Hi")


def test_template_set_on_a_new_campaign_before_its_import(db, tmp_path):
    result = cli("template", "set", "--subject", "For {{ role }} and {{ team }}", "--campaign", "autumn", "--db", db)

    assert (result.exit_code, result.stdout) == (0, (
        "Templates of campaign 'autumn' updated.\n"
        "Note: 'role', 'team' are not columns of any recipient waiting for the campaign's own template yet: import "
        "refuses rows for it without those columns.\n"))
    csv = write(tmp_path, "r.csv", "email,first_name,role,team\na@x.example,Ann,CTO,Core\n")
    assert f"{csv}: 1 added" in cli("import", csv, "--campaign", "autumn", "--db", db).stdout
    assert "Subject: For CTO and Core\n" in cli("preview", "--campaign", "autumn", "--db", db).stdout


def test_a_name_no_csv_column_can_have_is_refused_even_before_any_import(db):
    result = cli("template", "set", "--subject", "Hi {{ Role }}", "--campaign", "autumn", "--db", db)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: campaign 'autumn': subject template line 1: unknown variable 'Role': not a recipient field (email, "
        "first_name, last_name, company), a built-in (fields, sender_email, sender_name, campaign, unsubscribe_url, "
        "physical_address) or a name a CSV column can have (a column `Job Title` is {{ job_title }})\n")


# --- with recipients: each one who may still get it has the column -----------------------------------

def test_a_column_only_some_waiting_recipients_have_is_refused_naming_one_who_lacks_it(db, tmp_path):
    cli("import", write(tmp_path, "r1.csv", "email,first_name,role\na@x.example,Ann,CTO\n"), "--db", db)
    cli("import", write(tmp_path, "r2.csv", "email,first_name\nb@y.example,Bob\n"), "--db", db)
    before = saved(db, "SELECT subject_template FROM campaigns")

    result = cli("template", "set", "--subject", "Hi {{ role }}", "--db", db)

    assert (result.exit_code, result.stderr) == (2, (
        "Error: campaign 'default': subject template line 1 reads {{ role }}, but b@y.example (pending), who may "
        "still get this template, has no 'role' column; write {{ role | default('') }} to make it optional, "
        "or skip that recipient\n"))
    assert saved(db, "SELECT subject_template FROM campaigns") == before
    optional = cli("template", "set", "--subject", "Hi {{ role | default('there') }}", "--db", db)
    assert (optional.exit_code, optional.stdout) == (0, "Templates of campaign 'default' updated.\n")


def test_recipients_already_sent_without_a_column_do_not_hold_a_new_template_back(db, tmp_path):
    cli("import", write(tmp_path, "r1.csv", "email,first_name\nold@x.example,Old\n"), "--db", db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recipients SET status = 'sent', sent_at = '2024-01-02T08:00:00+00:00'")
    cli("import", write(tmp_path, "r2.csv", "email,first_name,role\nnew@x.example,New,CTO\n"), "--db", db)

    result = cli("template", "set", "--subject", "Hi {{ role }}", "--db", db)

    assert (result.exit_code, result.stdout) == (0, "Templates of campaign 'default' updated.\n")


def test_a_follow_up_reading_a_column_a_sent_recipient_lacks_is_refused(db, tmp_path):
    cli("import", write(tmp_path, "r1.csv", "email,first_name\nold@x.example,Old\n"), "--db", db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recipients SET status = 'sent', sent_at = '2024-01-02T08:00:00+00:00'")
    html = write(tmp_path, "f.html", "<p>Any news about the {{ role }} job?</p>")

    result = cli("step", "add", "--after-days", "3", "--html", html, "--db", db)

    assert (result.exit_code, result.stderr) == (2, (
        "Error: campaign 'default', step 2: HTML body template line 1 reads {{ role }}, but old@x.example (sent), who "
        "may still get this template, has no 'role' column; write {{ role | default('') }} to make it optional, "
        "or skip that recipient\n"))
    assert saved(db, "SELECT count(*) FROM campaign_steps") == [(0,)]


def test_step_set_for_a_segment_notes_and_its_import_rejects_rows_without_the_column(db, tmp_path):
    bank = write(tmp_path, "bank.html", PLAIN)
    assert cli("template", "add", "bank", "--subject", "Hi", "--html", bank, "--db", db).exit_code == 0
    assert cli("step", "add", "--after-days", "3", "--html", bank, "--db", db).exit_code == 0
    desk = write(tmp_path, "desk.html", "<p>How is the {{ desk }} desk?</p>")

    result = cli("step", "set", "2", "--template", "bank", "--html", desk, "--db", db, "--json")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        '{"campaign": "default", "step": 2, "template": "bank", "result": "added", "after_days": null, "notes": '
        '["Note: \'desk\' is not a column of any recipient waiting for step 2 of template \'bank\' yet: import '
        'refuses rows for it without that column."]}\n')
    csv = write(tmp_path, "r.csv", "email,first_name,template\na@x.example,Ann,bank\nb@y.example,Bob,\n")
    imported = cli("import", csv, "--db", db)
    assert imported.stdout.splitlines()[:2] == [
        f"{csv}: 1 added to campaign 'default', 0 duplicate(s) skipped, 1 invalid.",
        f"  {csv}:2: 'desk': step 2 of template 'bank' reads {{{{ desk }}}} and this file has no 'desk' column; add "
        "the column (an empty cell is fine) or change the template"]


# --- import: per file --------------------------------------------------------------------------

def test_a_file_lacking_a_column_the_template_reads_is_refused_and_the_run_sends_the_rest(db, tmp_path, monkeypatch):
    """r2's rows were accepted, and the next run held the whole campaign back: 'role' is undefined.
    With no `template` column every row gets the campaign's own template: one line for the file
    (exit 2), not a rejects file as long as the file."""
    cli("import", write(tmp_path, "r1.csv", "email,first_name,company,role\na@x.example,Ann,Acme,CTO\n"), "--db", db)
    assert cli("template", "set", "--subject", "Hi {{ role }}", "--db", db).exit_code == 0
    r2 = write(tmp_path, "r2.csv", "email,first_name,company\nb@y.example,Bob,Bank\nc@z.example,Cy,Corp\n")

    imported = cli("import", r2, "--db", db)

    assert (imported.exit_code, imported.stderr) == (2, (
        f"Error: {r2}: the campaign's own template reads {{{{ role }}}} and this file has no 'role' column, so no row "
        "of it can be sent; add the column (an empty cell is fine) or change the template\n"))
    assert not (tmp_path / "r2.rejects.csv").exists()
    assert list(send_all(db, monkeypatch)) == ["a@x.example"]


def test_each_row_is_checked_against_its_own_template(db, tmp_path):
    html = write(tmp_path, "s.html", "<p>{{ stage }}</p>")
    assert cli("template", "add", "startup", "--subject", "Hi", "--html", html, "--db", db).exit_code == 0
    csv = write(tmp_path, "r.csv", "email,first_name,template\na@x.example,Ann,startup\nb@y.example,Bob,\n"
                                   "c@z.example,Cy,default\n")

    imported = cli("import", csv, "--db", db)

    assert imported.stdout.splitlines()[:2] == [
        f"{csv}: 2 added to campaign 'default', 0 duplicate(s) skipped, 1 invalid.",
        f"  {csv}:2: 'stage': template 'startup' reads {{{{ stage }}}} and this file has no 'stage' column; add the "
        "column (an empty cell is fine) or change the template"]


def test_a_column_read_only_through_default_or_where_defined_is_optional_at_import(db, tmp_path, monkeypatch):
    """README: a variable read in `{% if role is defined %}` is optional; such rows were refused."""
    assert cli("template", "set", "--subject", "Hi {{ role | default('there') }}{% if team is defined %} "
               "({{ team }}){% endif %}", "--db", db).exit_code == 0
    csv = write(tmp_path, "r.csv", "email,first_name,team\na@x.example,Ann,Core\n")
    assert f"{csv}: 1 added" in cli("import", csv, "--db", db).stdout
    no_team = write(tmp_path, "r2.csv", "email,first_name\nb@x.example,Bob\n")
    assert f"{no_team}: 1 added" in cli("import", no_team, "--db", db).stdout
    monkeypatch.setenv("SENDER_EMAIL", "jane@example.com")
    shown = cli("preview", "b@x.example", "--db", db)
    assert shown.exit_code == 0 and "Subject: Hi there\n" in shown.stdout, shown.output
    both = cli("template", "set", "--subject", "Hi {% if team is defined %}{{ team }}{% endif %}{{ team }}", "--db", db)
    assert both.exit_code == 2 and "has no 'team' column" in both.stderr  # a plain read outside the branch


def test_a_column_read_through_fields_is_required_like_a_variable(db, tmp_path, monkeypatch):
    """`{{ fields.role }}` fails for a recipient without `role` as `{{ role }}` does; it was not
    counted, so the file lacking it was accepted and the next run held the campaign back."""
    cli("import", write(tmp_path, "r1.csv", "email,first_name,role\na@x.example,Ann,CTO\n"), "--db", db)
    assert cli("template", "set", "--subject", "Hi {{ fields.role }}", "--db", db).exit_code == 0
    r2 = write(tmp_path, "r2.csv", "email,first_name\nb@y.example,Bob\n")

    imported = cli("import", r2, "--db", db)

    assert imported.exit_code == 2 and "the campaign's own template reads {{ role }}" in imported.stderr
    team = cli("template", "set", "--subject", "Hi {{ fields['team'] }}", "--db", db)
    assert team.exit_code == 2 and "a@x.example (pending), who may still get this template, has no 'team'" in team.stderr
    optional = "Hi {{ fields.get('team', 'all') }}{% if fields.team is defined %}{{ fields.team }}{% endif %}"
    assert cli("template", "set", "--subject", optional, "--db", db).exit_code == 0
    assert str(send_all(db, monkeypatch)["a@x.example"]["Subject"]) == "Hi all"


def test_a_fields_key_no_csv_column_can_have_is_refused(db):
    result = cli("template", "set", "--subject", "Hi {{ fields['Job Title'] }}", "--db", db)

    assert result.exit_code == 2 and "unknown variable 'Job Title'" in result.stderr
    assert "a column `Job Title` is {{ job_title }}" in result.stderr


def test_template_remove_refuses_when_a_failed_recipient_would_lack_a_column_of_the_campaigns_own(db, tmp_path):
    assert cli("template", "set", "--subject", "Hi {{ role }}", "--db", db).exit_code == 0
    html = write(tmp_path, "s.html", PLAIN)
    assert cli("template", "add", "startup", "--subject", "Hi", "--html", html, "--db", db).exit_code == 0
    cli("import", write(tmp_path, "r.csv", "email,first_name,template\na@x.example,Ann,startup\n"), "--db", db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recipients SET status = 'failed'")

    result = cli("template", "remove", "startup", "--db", db)

    assert (result.exit_code, result.stderr) == (2, (
        "Error: campaign 'default': template 'startup' cannot be removed: a@x.example (failed) would get the "
        "campaign's own template, whose subject template line 1 reads {{ role }}, and has no 'role' column; write "
        "{{ role | default('') }} to make it optional, or skip that recipient\n"))
    assert saved(db, "SELECT name FROM templates") == [("startup",)]


def test_removing_a_segments_version_of_a_step_refuses_when_its_recipient_lacks_a_column_of_the_steps_own(db, tmp_path):
    own = write(tmp_path, "own.html", "<p>Any news about the {{ role }} job?</p>")
    bank = write(tmp_path, "bank.html", PLAIN)
    assert cli("template", "add", "bank", "--subject", "Hi", "--html", bank, "--db", db).exit_code == 0
    assert cli("step", "add", "--after-days", "3", "--html", own, "--db", db).exit_code == 0
    assert cli("step", "set", "2", "--template", "bank", "--html", bank, "--db", db).exit_code == 0
    csv = write(tmp_path, "r.csv", "email,first_name,template\na@x.example,Ann,bank\n")
    assert f"{csv}: 1 added" in cli("import", csv, "--db", db).stdout  # bank's own version reads no column

    result = cli("step", "remove", "2", "--template", "bank", "--db", db)

    assert (result.exit_code, result.stderr) == (2, (
        "Error: campaign 'default', step 2, template 'bank': cannot be removed: a@x.example (pending) would get the "
        "step's own version, whose HTML body template line 1 reads {{ role }}, and has no 'role' column; write "
        "{{ role | default('') }} to make it optional, or skip that recipient\n"))
    assert saved(db, "SELECT name FROM step_templates") == [("bank",)]


# --- reading a template's columns without Jinja ------------------------------------------------

@pytest.mark.parametrize("source", [
    "Hi {{ first_name }}", "{% if company %}At {{ company }}{% else %}Hello{% endif %}",
    "{{ role }}\n{{ team or 'the team' }}\r\n{%- if desk -%}{{ desk }}{%+ endif %}", "{{ 'it''s' ~ role }}",
    "{{ a if b else c }}, {{ not d }}, {{ e in f }}, {{ g, h }}", "{{ 1e5 }} {{ 3 * n }}", "{{ subject }}",
    "{% elif x %}{{ '}}' ~ y }}", '{{ "%}" }}{% if z %}{% endif %}', "{{ x|upper }}", "{{ x.y }}", "{{ range(3) }}",
    "{% for w in ws %}{{ w }}{% endfor %}", "{% set s = 1 %}{{ s }}", "{# {{ c }} #}", "{% raw %}{{ r }}{% endraw %}",
    "{{ x is defined }}", "{{ loop }}", "{{ {'a': k} }}", "{{ 'open", "{{ x", "{% if %}", "{{ Über }}",
])
def test_a_template_is_read_without_jinja_only_when_that_gives_jinjas_answer(source):
    from email_automation.email_templates import column_reads
    from email_automation.template_columns import _plain_reads

    from jinja2 import TemplateSyntaxError

    for part in ("subject", "html"):
        plain = _plain_reads(part, source)
        try:
            jinja = column_reads(part, source)
        except TemplateSyntaxError:  # never stored: `template set` compiles every template
            continue
        assert plain is None or plain == jinja, (part, source)


def test_the_shipped_template_and_simple_ones_are_read_without_jinja():
    from email_automation.database import default_templates
    from email_automation.template_columns import _plain_reads

    subject, html = default_templates()
    assert (_plain_reads("subject", subject), _plain_reads("html", html)) == ({}, {})
    assert _plain_reads("html", "<p>{{ role }},\n{% if team %}{{ team }}{% endif %}</p>") == {"role": 1, "team": 2}


def test_jinjas_own_names_are_left_to_jinja():
    from email_automation.template_columns import _JINJA_NAMES
    from email_automation.template_limits import BoundedSandboxedEnvironment

    assert set(BoundedSandboxedEnvironment().globals) <= _JINJA_NAMES


def test_an_import_into_a_campaign_with_simple_templates_does_not_load_jinja(tmp_path):
    """Loading Jinja was 5% of a 200,000-row import (benchmarks/bench_import.py)."""
    import subprocess
    import sys

    script = textwrap.dedent(f"""
        import sys
        from email_automation.database import init_db
        from email_automation.import_csv import import_csv
        conn = init_db({str(tmp_path / 'j.db')!r})
        open({str(tmp_path / 'j.csv')!r}, 'w').write('email,first_name\\na@x.example,Ann\\n')
        assert import_csv(conn, {str(tmp_path / 'j.csv')!r}).inserted == 1
        print('jinja2' in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout == "False\n"


def test_a_skipped_recipient_who_can_come_back_counts_for_a_template_change(db, tmp_path, monkeypatch):
    """b, suppressed and skipped, was left out: {{ role }} was accepted with a note, and after
    `unsuppress b` the next run held back the whole campaign ("'role' is undefined")."""
    cli("import", write(tmp_path, "r.csv", "email,first_name\na@x.example,Ann\nb@y.example,Bob\n"), "--db", db)
    assert cli("suppress", "b@y.example", "--db", db).exit_code == 0
    send_all(db, monkeypatch)  # a is sent, b skipped

    refused = cli("template", "set", "--subject", "Hi {{ role }}", "--db", db)

    assert refused.exit_code == 2
    assert "but b@y.example (skipped), who may still get this template, has no 'role' column" in refused.stderr


def test_a_recipient_skipped_by_hand_does_not_block_a_template_change(db, tmp_path):
    """The error said "or skip that recipient", and after `skip` it still named them: nothing brings
    back a recipient skipped by hand."""
    cli("import", write(tmp_path, "r.csv", "email,first_name,role\na@x.example,Ann,CTO\nb@y.example,Bob,\n"), "--db", db)
    cli("import", write(tmp_path, "r2.csv", "email,first_name\nc@z.example,Cy\n"), "--db", db)
    refused = cli("template", "set", "--subject", "Hi {{ role }}", "--db", db)
    assert refused.exit_code == 2 and "c@z.example (pending)" in refused.stderr and "or skip that recipient" in refused.stderr
    assert cli("skip", "c@z.example", "--db", db).exit_code == 0
    assert cli("template", "set", "--subject", "Hi {{ role }}", "--db", db).exit_code == 0
