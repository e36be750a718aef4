"""import_csv: real-world CSV exports in, recipients out, all or nothing.

Rejects name the physical line of the file on which their record starts (the header is line 1).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from textwrap import dedent

import jinja2
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings as hypothesis_settings, strategies as st

from typer.testing import CliRunner

from email_automation import attachments, import_csv as import_module, imports, reports
from email_automation.cli import app
from email_automation.database import connect, ensure_campaign
from email_automation.errors import CsvImportError, InvalidInputError
from email_automation.import_csv import MAX_REJECTS_IN_MEMORY, Reject, import_csv, normalize_email

DATA = Path(__file__).parent / "data" / "csv"
LIMIT = csv.field_size_limit()


def write(folder: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(dedent(text).lstrip("\n").encode(encoding))
    return path


def recipients(db, campaign: str = "default") -> list[dict]:
    rows = db.execute(
        "SELECT r.* FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ? ORDER BY r.id",
        (campaign,),
    )
    return [dict(row) for row in rows]


def snapshot(db) -> dict[str, list[tuple]]:
    """Every row of every table but the log of imports: what 'the database is unchanged' means."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'imports'"
                                       " ORDER BY name")]
    return {t: [tuple(row) for row in db.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}


def imports_log(db) -> list[tuple]:
    """(state, inserted, error) of every import, oldest first."""
    return [tuple(r) for r in db.execute("SELECT state, inserted, error FROM imports ORDER BY id")]


def read_rejects(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


# --- encodings and dialects -------------------------------------------------------------------

def test_utf8_with_bom_reads_the_first_header(db, tmp_path):
    # Excel's "CSV UTF-8" puts a BOM before the first header: it must not hide the email column.
    path = write(tmp_path, "bom.csv", "\ufeffEmail,First Name\nzoe@example.com,Zoë\n")

    report = import_csv(db, path)

    assert report.inserted == 1
    assert [(r["email"], r["first_name"]) for r in recipients(db)] == [("zoe@example.com", "Zoë")]


def test_windows_1252_export_round_trips_accents_and_smart_quotes(db, tmp_path):
    # Excel on Windows saves "CSV" as cp1252: ë/ü are Latin-1, the dash and curly quotes are cp1252 only.
    path = write(tmp_path, "win.csv", """
        email,first_name,last_name,company
        zoe@example.com,Zoë,Müller,“Grün & Söhne” – Berlin
    """, encoding="cp1252")

    import_csv(db, path)

    (row,) = recipients(db)
    assert (row["first_name"], row["last_name"], row["company"]) == ("Zoë", "Müller", "“Grün & Söhne” – Berlin")


def test_latin1_file_with_bytes_cp1252_lacks_still_imports(db, tmp_path):
    # 0x81 is undefined in cp1252; only Latin-1 can decode such a file. The byte is a C1 control,
    # which no recipient may carry: that one row is refused, the file is not.
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,first_name,notes\nzoe@example.com,Zoë,ok\nann@example.com,Ann,x\x81y\n".encode("latin-1"))

    report = import_csv(db, path)

    (row,) = recipients(db)
    assert row["first_name"] == "Zoë"
    assert report.rejects == [Reject(3, "notes", "contains control character U+0081")]


def test_cp1252_byte_far_down_the_file_is_not_a_late_failure(db, tmp_path):
    # The encoding is decided from the whole file, not its first kilobytes: one Windows-typed name
    # after 20,000 plain rows still imports, and correctly.
    rows = "".join(f"r{n}@example.com,Plain\n" for n in range(20_000))
    path = tmp_path / "late-accent.csv"
    path.write_bytes(b"email,first_name\n" + rows.encode() + "zoe@example.com,Zoë\n".encode("cp1252"))

    report = import_csv(db, path)

    assert report.inserted == 20_001
    assert recipients(db)[-1]["first_name"] == "Zoë"


def test_utf8_character_split_across_read_chunks_stays_utf8(db, tmp_path):
    head = b"email,first_name\n"
    filler = b"".join(b"r%07d@example.com,Plain\n" % n for n in range(((1 << 20) - 1000) // 27))
    line = "zoe@example.com,Zoë\n".encode()
    # Pad one cell so that the two bytes of "ë" sit on either side of the 1 MiB read boundary.
    before_pad = head + filler + b"x@example.com,"
    pad = (1 << 20) - 1 - len(before_pad) - 1 - line.index("ë".encode())
    data = before_pad + b"p" * pad + b"\n" + line
    assert data[(1 << 20) - 1:(1 << 20) + 1] == "ë".encode()
    path = tmp_path / "split.csv"
    path.write_bytes(data)

    import_csv(db, path)

    assert recipients(db)[-1]["first_name"] == "Zoë"


def test_excel_unicode_text_export_utf16_tabs(db, tmp_path):
    # Excel's "Unicode Text": UTF-16 with a BOM, tab-separated.
    path = write(tmp_path, "unicode.txt", "Email\tFirst Name\nzoe@example.com\tZoë\n", encoding="utf-16")

    report = import_csv(db, path)

    assert report.inserted == 1
    assert recipients(db)[0]["first_name"] == "Zoë"


def test_a_stray_latin1_byte_in_a_utf8_file_rejects_its_row_not_every_name(db, tmp_path):
    # One name typed in a Latin-1 tool and pasted into a UTF-8 export: read as Windows-1252, every
    # other name would become "ZoÃ«". The file stays UTF-8; the one row is refused, by line.
    path = tmp_path / "mixed.csv"
    path.write_bytes("email,first_name\nzoe@example.com,Zoë\nann@example.com,Ann\n".encode()
                     + "jurgen@example.com,Jürgen\n".encode("latin-1") + "cem@example.com,Çem\n".encode())

    report = import_csv(db, path, rejects_path=tmp_path / "rejects.csv")

    assert [r["first_name"] for r in recipients(db)] == ["Zoë", "Ann", "Çem"]
    assert report.rejects == [Reject(4, "first_name", "byte 0xFC is not UTF-8, unlike the rest of the file (fix its encoding)")]
    # The rejects file shows the byte as Windows-1252, the likeliest intent, for the user to fix.
    assert read_rejects(tmp_path / "rejects.csv")[1][:2] == ["jurgen@example.com", "Jürgen"]


def test_a_utf8_row_in_a_windows_1252_file_is_refused_not_garbled(db, tmp_path):
    path = tmp_path / "win.csv"
    path.write_bytes("email,first_name\nzoe@example.com,Zoë\nann@example.com,Müller\n".encode("cp1252")
                     + "jurgen@example.com,Jürgen\n".encode())

    report = import_csv(db, path, rejects_path=tmp_path / "rejects.csv")

    assert [r["first_name"] for r in recipients(db)] == ["Zoë", "Müller"]
    assert report.rejects == [Reject(4, "first_name", "holds UTF-8 text, unlike the rest of the file"
                                                      " (read as Windows-1252): fix its encoding")]
    assert read_rejects(tmp_path / "rejects.csv")[1][:2] == ["jurgen@example.com", "Jürgen"]  # not "JÃ¼rgen"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiter_is_detected(db, tmp_path, delimiter):
    # The company holds a comma, so a `;`/tab file read as `,` would split it.
    d = delimiter
    path = write(tmp_path, "people.csv",
                 f'email{d}first_name{d}company\nann@example.com{d}Ann{d}"Acme, Inc."\nbo@example.org{d}Bo{d}Initech\n')

    report = import_csv(db, path)

    assert report.inserted == 2
    assert [(r["first_name"], r["company"]) for r in recipients(db)] == [("Ann", "Acme, Inc."), ("Bo", "Initech")]


def test_quoted_field_with_newline_and_comma_counts_as_one_row(db, tmp_path):
    path = write(tmp_path, "multi.csv", '''
        email,first_name,company
        ann@example.com,Ann,"Acme, Inc.
        Berlin office"
        not-an-address,Bo,Initech
    ''')

    report = import_csv(db, path)

    assert recipients(db)[0]["company"] == "Acme, Inc.\nBerlin office"
    # Record 3, but physical line 4: the line a text editor jumps to.
    assert report.rejects == [Reject(4, "email", "An email address must have an @-sign.")]


# --- headers --------------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("Email,First Name,Last Name,Company", ("Ann", "Lee", "Acme")),
    (" E-Mail , first_name , LAST-NAME , company ", ("Ann", "Lee", "Acme")),
    ("Email Address,Given name,Surname,Organization", ("Ann", "Lee", "Acme")),
    ("Mail,Forename,Family Name,Employer", ("Ann", "Lee", "Acme")),
    ("email_address,FIRSTNAME,lastname,Organisation", ("Ann", "Lee", "Acme")),
])
def test_header_aliases_case_and_spacing(db, tmp_path, header, expected):
    path = write(tmp_path, "h.csv", f"{header}\nann@example.com,Ann,Lee,Acme\n")

    import_csv(db, path)

    (row,) = recipients(db)
    assert (row["first_name"], row["last_name"], row["company"]) == expected


def test_a_file_with_thousands_of_columns_imports(db, tmp_path):
    """The row function written for a file's columns stays flat however wide the file is."""
    names = [f"c{n}" for n in range(5_000)]
    path = write(tmp_path, "wide.csv", ",".join(["email", *names]) + "\n"
                 + ",".join(["ann@example.com", *(f"v{n}" for n in range(5_000))]) + "\n")

    import_csv(db, path)

    fields = json.loads(recipients(db)[0]["fields"])
    assert len(fields) == 5_000 and fields["c0"] == "v0" and fields["c4999"] == "v4999"


def test_extra_columns_become_template_fields(db, tmp_path):
    path = write(tmp_path, "extra.csv", """
        Email,First Name,Role,Referral Source,Job-Title,2nd Contact,In
        ann@example.com,Ann,Recruiter,Meetup Berlin,Head of Talent,bo@example.com,yes
    """)

    import_csv(db, path)

    fields = json.loads(recipients(db)[0]["fields"])
    assert fields == {"role": "Recruiter", "referral_source": "Meetup Berlin", "job_title": "Head of Talent",
                      "_2nd_contact": "bo@example.com", "in_": "yes"}
    # The point of the normalisation: every key is usable as a Jinja variable.
    template = " ".join("{{ %s }}" % key for key in fields)
    assert jinja2.Environment().from_string(template).render(**fields) == \
        "Recruiter Meetup Berlin Head of Talent bo@example.com yes"


def test_custom_subject_and_body_are_stored(db, tmp_path):
    path = write(tmp_path, "custom.csv", '''
        email,Custom Subject,custom_body
        ann@example.com,Quick question about the Berlin role,"Hi Ann,

        a friend pointed me to you."
        bo@example.org,,
    ''')

    import_csv(db, path)

    ann, bo = recipients(db)
    assert ann["custom_subject"] == "Quick question about the Berlin role"
    assert ann["custom_body"] == "Hi Ann,\n\na friend pointed me to you."
    assert (bo["custom_subject"], bo["custom_body"]) == (None, None)  # empty cell: use the campaign's


def test_control_characters_anywhere_in_the_file_reject_their_row(db, tmp_path):
    # Past the first 64 KiB, where the binary check looks: a NUL or ESC would reach a mail header.
    filler = "".join(f"r{n}@example.com,Plain,,\n" for n in range(4000))
    path = write(tmp_path, "ctl.csv", "email,first_name,custom_subject,custom_body\n" + filler
                 + "esc@example.com,Esc,Hello \x1b[31mthere,\n"
                 + "nul@example.com,Nu\x00l,,\n"
                 + "del@example.com,Del\x7f,,\n"
                 + "nel@example.com,Nel,,Next\x85line\n"  # a C1 control, two bytes in UTF-8
                 + 'body@example.com,Body,Tab\tok,"Line one\r\nline two"\n')
    assert path.stat().st_size > 64 * 1024

    report = import_csv(db, path)

    assert report.rejects == [
        Reject(4002, "custom_subject", "contains control character U+001B"),
        Reject(4003, "first_name", "contains control character U+0000"),
        Reject(4004, "first_name", "contains control character U+007F"),
        Reject(4005, "custom_body", "contains control character U+0085"),
    ]
    body = recipients(db)[-1]
    assert (body["custom_subject"], body["custom_body"]) == ("Tab\tok", "Line one\r\nline two")  # tab and line breaks are text


@pytest.mark.parametrize("control", ["\x1b", "\x7f", "\x85", "\x9f"])
def test_a_single_control_character_is_found_by_the_file_scan(db, tmp_path, control):
    # A file the first scan finds clean skips the check per row: the scan must see each kind.
    path = write(tmp_path, "one.csv", f"email,first_name\nann@example.com,Ann\nbo@example.com,B{control}o\n")

    report = import_csv(db, path)

    assert report.rejects == [Reject(3, "first_name", f"contains control character U+{ord(control):04X}")]


def test_rejects_file_is_formula_safe_and_keeps_the_row(db, tmp_path):
    path = write(tmp_path, "evil.csv", """
        email,first_name,=cmd
        "=HYPERLINK(""http://evil.example"",""click"")",+Ann,@SUM(A1)
        -bob,Bob,plain
    """)

    report = import_csv(db, path)

    assert read_rejects(report.rejects_file) == [
        ["email", "first_name", "'=cmd", "line", "field", "reason"],
        ["'=HYPERLINK(\"http://evil.example\",\"click\")", "'+Ann", "'@SUM(A1)", "2", "email",
         "An email address must have an @-sign."],
        ["'-bob", "Bob", "plain", "3", "email", "An email address must have an @-sign."],
    ]


# --- duplicates -----------------------------------------------------------------------------

def test_duplicates_by_case_and_spaces_within_the_file(db, tmp_path):
    path = write(tmp_path, "dups.csv", """
        email,first_name
        ann@example.com,Ann
         ANN@Example.COM ,Ann again
        bo@example.org,Bo
    """)

    report = import_csv(db, path)

    assert (report.inserted, report.duplicates, report.invalid) == (2, 1, 0)
    assert [(r["email"], r["first_name"]) for r in recipients(db)] == [("ann@example.com", "Ann"), ("bo@example.org", "Bo")]


def test_duplicates_against_an_earlier_import_same_campaign_only(db, tmp_path):
    import_csv(db, write(tmp_path, "first.csv", "email\nann@example.com\n"))

    report = import_csv(db, write(tmp_path, "second.csv", "email\n Ann@EXAMPLE.com\ncy@example.net\n"))
    other = import_csv(db, write(tmp_path, "third.csv", "email\nann@example.com\n"), campaign="spring")

    assert (report.inserted, report.duplicates) == (1, 1)
    assert (other.inserted, other.duplicates, other.campaign) == (1, 0, "spring")
    assert [r["email"] for r in recipients(db, "spring")] == ["ann@example.com"]


def test_crm_export_fixture(db, tmp_path):
    # BOM, `;`, CRLF, alias headers, a case/space duplicate, a multi-line note and a bad address.
    report = import_csv(db, DATA / "recruiters.csv", rejects_path=tmp_path / "rejects.csv")

    assert (report.inserted, report.duplicates, report.invalid) == (3, 1, 1)
    no_period = "The part after the @-sign is not valid. It should have a period."
    assert report.rejects == [Reject(6, "E-Mail Address", no_period)]  # the multi-line note spans lines 4-5
    sarah, james, zoe = recipients(db)
    assert (sarah["email"], sarah["first_name"], sarah["last_name"], sarah["company"]) == \
        ("sarah.klein@example.com", "Sarah", "Klein", "Northwind Analytics")
    assert json.loads(james["fields"]) == {"job_title": "Head of Talent", "notes": "met at the meetup,\r\nfollow up in May"}
    assert (zoe["first_name"], zoe["last_name"]) == ("Zoë", "Müller")
    # The rejects file keeps the input's `;`, so Excel in the same locale opens it in columns.
    assert (tmp_path / "rejects.csv").read_text(encoding="utf-8-sig").splitlines()[0] == \
        "E-Mail Address;Given name;Surname;Organization;Job Title;Notes;line;field;reason"


def test_reimporting_the_same_file_adds_nothing(db, tmp_path):
    first = import_csv(db, DATA / "recruiters.csv", rejects_path=tmp_path / "r1.csv")
    before = snapshot(db)["recipients"]

    again = import_csv(db, DATA / "recruiters.csv", rejects_path=tmp_path / "r2.csv")

    assert (again.inserted, again.duplicates, again.invalid) == (0, first.inserted + first.duplicates, first.invalid)
    assert snapshot(db)["recipients"] == before


# --- invalid rows and the rejects file ------------------------------------------------------

def test_invalid_rows_are_counted_listed_and_written_to_the_rejects_file(db, tmp_path):
    path = write(tmp_path, "leads.csv", """
        email,first_name,company
        ann@example.com,Ann,Acme
        bob.example.com,Bob,Initech
        ,Carla,Globex
        dan@localhost,Dan,Umbrella
        eve@example.org,Eve,Hooli
    """)

    report = import_csv(db, path)

    assert (report.inserted, report.duplicates, report.invalid) == (2, 0, 3)
    assert report.rejects == [
        Reject(3, "email", "An email address must have an @-sign."),
        Reject(4, "email", "empty email"),
        Reject(5, "email", "The part after the @-sign is not valid. It should have a period."),
    ]
    assert report.rejects_file == tmp_path / "leads.rejects.csv"
    assert read_rejects(report.rejects_file) == [
        ["email", "first_name", "company", "line", "field", "reason"],
        ["bob.example.com", "Bob", "Initech", "3", "email", "An email address must have an @-sign."],
        ["", "Carla", "Globex", "4", "email", "empty email"],
        ["dan@localhost", "Dan", "Umbrella", "5", "email", "The part after the @-sign is not valid. It should have a period."],
    ]
    assert report.as_dict() == {"inserted": 2, "duplicates": 0, "invalid": 3,
                                "rejects_file": str(tmp_path / "leads.rejects.csv")}


def test_no_rejects_file_when_every_row_is_valid(db, tmp_path):
    path = write(tmp_path, "clean.csv", "email\nann@example.com\n")

    report = import_csv(db, path)

    assert report.rejects_file is None
    assert report.as_dict()["rejects_file"] is None
    assert not (tmp_path / "clean.rejects.csv").exists()


def test_rejects_path_overrides_the_default(db, tmp_path):
    path = write(tmp_path, "in.csv", "email\nnope\n")

    report = import_csv(db, path, rejects_path=tmp_path / "bad-rows.csv")

    assert report.rejects_file == tmp_path / "bad-rows.csv"
    assert read_rejects(tmp_path / "bad-rows.csv")[1] == ["nope", "2", "email", "An email address must have an @-sign."]
    assert not (tmp_path / "in.rejects.csv").exists()


def test_unwritable_rejects_path_refuses_the_import(db, tmp_path):
    path = write(tmp_path, "in.csv", "email\nann@example.com\nnope\n")
    target = tmp_path / "no-such-folder" / "bad.csv"
    before = snapshot(db)

    with pytest.raises(CsvImportError) as raised:
        import_csv(db, path, rejects_path=target)

    assert str(raised.value) == f"{target}: cannot write rejects file: No such file or directory"
    assert snapshot(db) == before


def test_rejects_go_to_the_working_directory_when_the_input_folder_is_read_only(db, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = write(inbox, "leads.csv", "email\nnope\n")
    inbox.chmod(0o555)
    try:
        if os.access(inbox, os.W_OK):  # root ignores the mode bits: make the folder look read-only
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != inbox and real_access(p, mode, **kw))
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)

        report = import_csv(db, path)

        assert report.rejects_file == work / "leads.rejects.csv"
        assert report.rejects_file.exists()
        assert not (inbox / "leads.rejects.csv").exists()
    finally:
        inbox.chmod(0o755)


def test_rejects_in_memory_are_capped_but_counts_and_file_are_complete(db, tmp_path):
    bad = MAX_REJECTS_IN_MEMORY + 5
    path = write(tmp_path, "many.csv", "email\n" + "no-at-sign\n" * bad + "ok@example.com\n")

    report = import_csv(db, path)

    assert (report.inserted, report.invalid) == (1, bad)
    assert len(report.rejects) == MAX_REJECTS_IN_MEMORY
    assert report.rejects[-1].line == MAX_REJECTS_IN_MEMORY + 1
    assert len(read_rejects(report.rejects_file)) == bad + 1  # + header


@pytest.mark.parametrize("delimiter, named", [(",", "a comma"), (";", "a semicolon"), ("\t", "a tab")])
def test_a_row_with_more_cells_than_the_header_is_rejected_not_cut(db, tmp_path, delimiter, named):
    # An unquoted delimiter in a value shifts the rest of the row: it was stored as company=Acme,
    # role=Inc, and CTO was dropped.
    path = write(tmp_path, "c.csv", "\n".join(delimiter.join(row) for row in [
        ["email", "first_name", "company", "role"],
        ["ann@example.com", "Ann", "Acme", " Inc", "CTO"],
        ["bob@example.com", "Bob", "Initech", "CEO", ""],  # a trailing delimiter loses nothing
    ]) + "\n")

    report = import_csv(db, path)

    assert (report.inserted, report.duplicates, report.invalid) == (1, 0, 1)
    reason = f"5 cells for 4 columns: a value with {named} must be in double quotes"
    assert report.rejects == [Reject(2, "column 5", reason)]
    assert report.rejects[0].message(path) == f"{path}:2: 'column 5': {reason}"
    assert [r["email"] for r in recipients(db)] == ["bob@example.com"]
    with open(report.rejects_file, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    assert rows == [["email", "first_name", "company", "role", "line", "field", "reason"],
                    ["ann@example.com", "Ann", "Acme", " Inc", "2", "column 5", reason, "CTO"]]  # nothing lost


def test_a_row_with_fewer_cells_keeps_line_field_and_reason_under_their_headers(db, tmp_path):
    path = write(tmp_path, "short.csv", "email,first_name,company\nnope\n")

    report = import_csv(db, path)

    assert read_rejects(report.rejects_file) == [["email", "first_name", "company", "line", "field", "reason"],
                                                 ["nope", "", "", "2", "email", "An email address must have an @-sign."]]


@pytest.mark.parametrize("campaign", ["", "  "])
def test_a_blank_campaign_name_is_refused_and_nothing_is_written(db, tmp_path, campaign):
    path = write(tmp_path, "leads.csv", "email\nann@example.com\nnope\n")
    before = snapshot(db)

    with pytest.raises(InvalidInputError) as raised:
        import_csv(db, path, campaign=campaign)
    with pytest.raises(InvalidInputError):
        ensure_campaign(db, campaign)

    assert str(raised.value) == f"campaign name {campaign!r} is blank: give the campaign a name"
    assert snapshot(db) == before
    assert not (tmp_path / "leads.rejects.csv").exists()


def test_blank_rows_are_skipped_not_counted(db, tmp_path):
    # Excel leaves rows of bare delimiters after deleted lines.
    path = write(tmp_path, "blank.csv", "email,first_name\n\nann@example.com,Ann\n,\n  ,  \n")

    report = import_csv(db, path)

    assert (report.inserted, report.duplicates, report.invalid) == (1, 0, 0)


# --- addresses ------------------------------------------------------------------------------

def test_internationalised_domain_is_stored_in_ascii_for_ses(db, tmp_path):
    path = write(tmp_path, "idn.csv", "email\nInfo@Bücher.example\n")

    import_csv(db, path)

    assert [r["email"] for r in recipients(db)] == ["info@xn--bcher-kva.example"]


def test_non_ascii_before_the_at_sign_is_refused_with_the_reason(db, tmp_path):
    # SES takes no SMTPUTF8 address: stored, it would sit in the queue and fail at every run.
    path = write(tmp_path, "idn.csv", "email\nüser@example.com\nzoë@bücher.example\nann@example.com\n")

    report = import_csv(db, path)

    assert [r["email"] for r in recipients(db)] == ["ann@example.com"]
    reason = ("non-ASCII characters before the @-sign ({}) need SMTPUTF8 (RFC 6531),"
              " which Amazon SES does not support: it can never be sent")
    assert report.rejects == [Reject(2, "email", reason.format("ü")), Reject(3, "email", reason.format("ë"))]


@pytest.mark.parametrize("address", [
    "ann@example.com", " Ann.Lee+jobs@Example.COM ", "o'brien@example.ie", "a@b.co", "postmaster@example.com",
    "x@xn--bcher-kva.example", "Info@Bücher.example", "zoë@example.com", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 50 + ".com",
    "bob.example.com", "bob@", "@example.com", "bob@localhost", "bob smith@example.com", "bob@example..com",
    ".bob@example.com", "bob.@example.com", "bob@example.test", '"bob"@example.com', "Bob <bob@example.com>",
    "a@[1.2.3.4]", "a@b@example.com", "bob@-example.com", "bob@example.com.", "bob@exa_mple.com", "ann@例え.jp",
])
def test_addresses_follow_email_validator_exactly(address):
    # The per-domain cache is a shortcut, never a different rule: same verdict, same reason, same form.
    try:
        expected = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as err:
        with pytest.raises(EmailNotValidError) as raised:
            normalize_email(address)
        assert str(raised.value) == str(err)
    else:
        assert normalize_email(address) == (expected.ascii_email or expected.normalized).lower()


# --- the row function written for the file's columns ---------------------------------------

# Headers from every family: the recipient fields under their aliases, the looked-up ones
# (template, attachments, time zone), a second email column, and extra columns whose names need
# JSON escaping or renaming.
_HEADERS = st.lists(st.sampled_from(["Email", "E-mail", "First Name", "Surname", "Company", "Subject", "Body",
                                     "Template", "Attachments", "Time zone", "Role", 'Say "hi"', "naïve\\x",
                                     "if", ""]), min_size=1, max_size=7)
_CELLS = st.one_of(
    st.sampled_from(["ann@example.com", " Bob.Lee+x@Example.COM ", "zoë@example.com", "x@bücher.example", "bob@",
                     "a@b@example.com", "no-mx@bad.example", "", "  ", "default", "spring", "autumn",
                     "brochure.pdf", "missing.pdf", "Europe/Berlin", "Mars/Olympus", 'He said "hi"\\', "tab\there",
                     "Ünïcode", "x" * 70 + "@example.com"]),
    st.text(alphabet="ab @.é\"\\\t-", max_size=8))


def _files(cell: str) -> str | None:
    if "missing" in cell:
        raise attachments.AttachmentError(f"{cell}: no such file")
    return json.dumps(["/abs/" + cell.strip()])


@hypothesis_settings(max_examples=150, deadline=None, derandomize=True)
@given(st.data())
def test_the_row_function_written_for_the_file_matches_the_general_path(data):
    # Every row gives the same stored values, or is refused with the same column and reason, either way.
    header = data.draw(_HEADERS)
    if not any(h.lower().replace("-", "") == "email" for h in header):
        header = [*header, "Email"]
    columns = import_module.map_header(header)
    checks = import_module._RowChecks(data.draw(st.sampled_from([None, lambda d: "no MX" if "bad" in d else None])),
                                      _files, "spring-campaign", frozenset({"spring"}))
    general = import_module._row_function(columns, "utf-8", checks)  # the file scan found cells to check
    fast = import_module._row_function(columns, None, checks)
    assert fast is not general  # the written one
    for values in data.draw(st.lists(st.lists(_CELLS, min_size=len(header) - 1, max_size=len(header) + 1),
                                     min_size=1, max_size=5)):
        if columns.email < len(values) and data.draw(st.booleans()):
            values[columns.email] = "ann@example.com"  # a plain address: the rest of the row decides
        assert _outcome(fast, values) == _outcome(general, values)


def _outcome(build, values: list[str]):
    try:
        return build(values)
    except import_module.InvalidRow as err:
        return err.column, str(err)


# --- files that cannot be imported: one line, nothing written -------------------------------

@pytest.fixture
def populated(db, tmp_path):
    """A database with an earlier import, so 'unchanged' also means 'nothing lost'."""
    import_csv(db, write(tmp_path, "earlier.csv", "email\nold@example.com\n"))
    return db


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", b"", "file is empty"),
    ("blank.csv", b"\xef\xbb\xbf\r\n  \r\n", "file is empty"),
    ("commas.csv", b",,,\n,,,\n", "file is empty"),
    ("photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a text file (binary content)"),
    ("leads.xlsx", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "not a text file (binary content)"),
    ("names.csv", b"Name;Company;Phone\nAnn Lee;Acme;123\n", "no email column (found: Name, Company, Phone)"),
    ("esc.csv", b"Name;\x1b[2JCompany\nAnn Lee;Acme\n", "no email column (found: Name, ?[2JCompany)"),
])
def test_unusable_file_is_refused_and_database_unchanged(populated, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    before = snapshot(populated)

    with pytest.raises(CsvImportError) as raised:
        import_csv(populated, path, campaign="new-campaign")

    assert str(raised.value) == f"{path}: {message}"
    assert raised.value.exit_code == 2
    assert snapshot(populated) == before  # no recipients, and the campaign was not created


def test_missing_file_is_refused(db, tmp_path):
    path = tmp_path / "nope.csv"

    with pytest.raises(CsvImportError) as raised:
        import_csv(db, path)

    assert str(raised.value) == f"{path}: cannot read file: No such file or directory"


@pytest.mark.parametrize("last_row, message", [
    # An unclosed quote would otherwise swallow the rest of the file into one cell, silently.
    ('zed@example.com,"Zed', "5: malformed CSV: unexpected end of data"),
    # A cell over csv's 128 KiB limit: what an unclosed quote early in a big file turns into.
    ("zed@example.com," + "x" * (LIMIT + 1), f"5: malformed CSV: field larger than field limit ({LIMIT})"),
])
def test_failure_on_the_last_row_rolls_back_everything(populated, tmp_path, last_row, message):
    rows = "email,first_name\nann@example.com,Ann\nnot-valid,Bo\nbo@example.org,Bo\n"
    path = write(tmp_path, "late.csv", rows + last_row + "\n")
    before = snapshot(populated)

    with pytest.raises(CsvImportError) as raised:
        import_csv(populated, path, campaign="new-campaign", chunk_rows=1)  # rows written before the failure

    assert str(raised.value) == f"{path}:{message}"
    assert snapshot(populated) == before
    assert imports_log(populated)[-1] == ("failed", None, str(raised.value))
    # The invalid row 3 was written to a rejects file on the way; a failed import leaves none behind.
    assert [p.name for p in tmp_path.iterdir() if "rejects" in p.name] == []


def test_database_error_mid_import_rolls_back_everything(populated, tmp_path):
    # A trigger stands in for any failure inside SQLite (disk full, I/O error) on the last row.
    populated.execute("CREATE TRIGGER boom BEFORE INSERT ON recipients WHEN NEW.email = 'last@example.com'"
                      " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    rows = "".join(f"r{n}@example.com\n" for n in range(2500))  # several INSERT chunks before the last
    path = write(tmp_path, "big.csv", "email\n" + rows + "last@example.com\n")
    before = snapshot(populated)

    with pytest.raises(sqlite3.DatabaseError, match="disk I/O error"):
        import_csv(populated, path, campaign="new-campaign", chunk_rows=1000)

    assert snapshot(populated) == before
    assert imports_log(populated)[-1] == ("failed", None, "disk I/O error")


# --- the bundled example and progress -------------------------------------------------------

def test_bundled_example_imports_cleanly(db):
    example = Path(__file__).parents[1] / "examples" / "recipients.csv"

    report = import_csv(db, example)

    assert (report.duplicates, report.invalid) == (0, 0)
    assert report.inserted >= 15
    rows = recipients(db)
    assert all(r["email"].endswith(("@example.com", "@example.org")) for r in rows)
    assert {"role", "referral"} <= set(json.loads(rows[0]["fields"]))
    assert any(r["custom_subject"] for r in rows)


def test_progress_reports_bytes_that_add_up_to_the_file_size(db, tmp_path):
    path = write(tmp_path, "p.csv", "email\n" + "".join(f"r{n}@example.com\n" for n in range(3000)))
    calls: list[int] = []

    import_csv(db, path, progress=calls.append, chunk_rows=1000)

    assert len(calls) > 1  # the bar moves during the import, not only at the end
    assert all(n > 0 for n in calls)
    assert sum(calls) == path.stat().st_size


# --- chunked import: short write transactions, all or nothing ------------------------------

def long_file(folder: Path, rows: int, name: str = "long.csv") -> Path:
    """Rows wide enough that each 100-row chunk reads past the 8 KiB text buffer (progress moves per chunk)."""
    pad = "x" * 200
    return write(folder, name, "email,notes\n" + "".join(f"r{n}@example.com,{pad}\n" for n in range(rows)))


def test_another_writer_gets_the_lock_between_chunks_and_sees_no_half_import(db, settings, tmp_path):
    other = connect(settings.db_path)
    other.execute("PRAGMA busy_timeout = 0")  # a writer held off by the import would fail at once
    seen = []

    def meanwhile(_bytes):
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT OR REPLACE INTO suppressions VALUES ('x@example.com', 'test', 'test', '2026-01-01')")
        other.execute("COMMIT")
        pending = reports.status_summary(other, now=datetime.now(timezone.utc), tz=timezone.utc, daily_limit=1)
        seen.append((pending.campaigns[0].counts["pending"], reports.pending_queue_size(other)))

    report = import_csv(db, long_file(tmp_path, 1000), progress=meanwhile, chunk_rows=100)

    assert report.inserted == 1000
    assert len(seen) >= 9  # a write between every two chunks went through with no wait at all
    assert set(seen[:-1]) == {(0, 0)}  # while running, the import's rows are in no count and no queue
    assert reports.pending_queue_size(other) == 1000
    assert imports_log(db) == [("done", 1000, None)]


def test_duplicates_across_chunks_and_earlier_imports_are_counted_exactly(db, tmp_path):
    import_csv(db, write(tmp_path, "first.csv", "email\nr3@example.com\n"))
    rows = [f"r{n}@example.com" for n in range(10)] + ["R1@Example.com", "r9@example.com", " r3@example.com"]

    report = import_csv(db, write(tmp_path, "second.csv", "email\n" + "\n".join(rows) + "\n"), chunk_rows=3)

    assert (report.inserted, report.duplicates) == (9, 4)
    assert len(recipients(db)) == 10


def test_a_big_import_commits_every_20000_rows_not_every_few_thousand(db, tmp_path):
    # Each commit rewrites in the log every index page its chunk touched, and random addresses
    # touch a page per row: at 1M rows, chunks of 5,000 made the import 1.4x slower (bench_import.py).
    path = write(tmp_path, "big.csv", "email\n" + "".join(f"r{n}@example.com\n" for n in range(20_001)))
    statements = []
    db.set_trace_callback(statements.append)

    report = import_csv(db, path)

    db.set_trace_callback(None)
    assert report.inserted == 20_001
    # begin, two chunks (20,000 + 1), finish
    assert statements.count("BEGIN IMMEDIATE") == 4


def test_each_row_costs_sqlite_a_bounded_number_of_instructions(db, tmp_path):
    """SQLite's own work per imported row, counted in its virtual machine's instructions (the same on
    any machine, https://sqlite.org/opcode.html): the row, its unique address, the queue and segment
    indexes, and the conditions of the partial ones. A fresh row settles the odd-company index on
    its status (migration 15): the pattern matches over company and address took 14 more a row."""
    def instructions(rows: int, campaign: str) -> int:
        path = write(tmp_path, f"{campaign}.csv", "email,first name,company\n" + "".join(
            f"p{n}@example{n % 7}.com,Ann,Acme {n % 3}\n" for n in range(rows)))
        count = [0]
        db.set_progress_handler(lambda: count.__setitem__(0, count[0] + 1), 1)
        try:
            assert import_csv(db, path, campaign=campaign).inserted == rows
        finally:
            db.set_progress_handler(None, 1)
        return count[0]

    per_row = (instructions(1100, "long") - instructions(100, "short")) / 1000  # the import's fixed cost cancels

    assert per_row <= 80, per_row


def test_empty_and_absent_cells_are_stored_without_binding_a_none(db, tmp_path):
    """Python's sqlite3 looks for an adapter for every None it binds: 0.6 µs each, more than the
    rest of the row. An empty subject is bound as "" and stored as NULL by the INSERT, and a
    column the file lacks is left to the table's default."""
    nones = []
    sqlite3.register_adapter(type(None), lambda value: nones.append(value))  # sees every None bound
    try:
        import_csv(db, write(tmp_path, "in.csv", """\
            email,first name,subject
            ann@example.com,Ann,
            bob@example.com,,Hello
            """))
    finally:
        del sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)]

    assert [(r["first_name"], r["custom_subject"], r["custom_body"], r["template"], r["fields"], r["timezone"])
            for r in recipients(db)] == [("Ann", None, None, None, "{}", ""), ("", "Hello", None, None, "{}", "")]
    assert nones == []


def test_the_connection_is_left_as_it_was(db, tmp_path):
    # The import relaxes foreign keys, fsync per chunk, the cache and where temporary files go for
    # itself only: its statement journals stay in memory (a temporary file took a seventh of its time).
    names = ("foreign_keys", "synchronous", "cache_size", "temp_store")
    before = [db.execute(f"PRAGMA {name}").fetchone()[0] for name in names]
    during = []

    import_csv(db, write(tmp_path, "in.csv", "email\nann@example.com\nbob@example.com\n"), chunk_rows=1,
               progress=lambda _: during.append(db.execute("PRAGMA temp_store").fetchone()[0]))
    with pytest.raises(CsvImportError):
        import_csv(db, write(tmp_path, "bad.csv", 'email\nbo@example.com\n"unclosed\n'))

    assert [db.execute(f"PRAGMA {name}").fetchone()[0] for name in names] == before == [1, 2, -2000, 0]
    assert during[0] == 2  # MEMORY (https://www.sqlite.org/pragma.html#pragma_temp_store)


def test_ctrl_c_mid_import_leaves_nothing_behind(populated, tmp_path):
    path = long_file(tmp_path, 1000)
    path.write_text(path.read_text() + "not-an-address,x\n")
    before = snapshot(populated)
    calls = []

    def interrupt(_bytes):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_csv(populated, path, campaign="new-campaign", progress=interrupt, chunk_rows=100)

    assert snapshot(populated) == before  # rows of the first chunks deleted, the new campaign too
    assert imports_log(populated)[-1] == ("failed", None, "interrupted")
    assert [p.name for p in tmp_path.iterdir() if "rejects" in p.name] == []


@pytest.mark.parametrize("next_step", ["import", "init"])
def test_rows_of_a_crashed_import_stay_invisible_until_cleaned_up(populated, settings, tmp_path, monkeypatch, next_step):
    before = snapshot(populated)
    calls = []

    def die(_bytes):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    # A process killed mid-import runs no cleanup: its rows and its `running` import stay.
    with monkeypatch.context() as m:
        m.setattr(imports, "fail", lambda *a, **kw: (_ for _ in ()).throw(sqlite3.OperationalError("killed")))
        with pytest.raises(KeyboardInterrupt):
            import_csv(populated, long_file(tmp_path, 1000), campaign="spring", progress=die, chunk_rows=100)
    assert populated.execute("SELECT count(*) FROM recipients").fetchone()[0] > 1
    assert reports.pending_queue_size(populated) == 1  # only the earlier import's row
    assert reports.recipient_counts(populated)["pending"] == 1

    if next_step == "import":
        report = import_csv(populated, write(tmp_path, "next.csv", "email\nr5@example.com\n"), campaign="spring")
        assert (report.inserted, report.duplicates) == (1, 0)  # r5 of the dead import is no duplicate
    else:
        result = CliRunner().invoke(app, ["init", "--db", str(settings.db_path)], catch_exceptions=False)
        assert result.exit_code == 0
        assert result.stdout.splitlines() == ["Removed the rows of 1 interrupted import(s).",
                                              f"Database ready: {settings.db_path}"]
        assert snapshot(populated) == before
    assert imports_log(populated)[1] == (
        "failed", None, "interrupted: the process ended before the import finished; its rows were removed")


def test_a_second_import_into_the_same_database_waits_its_turn(db, settings, tmp_path):
    path = write(tmp_path, "in.csv", "email\nann@example.com\n")
    other = connect(settings.db_path)

    with imports.import_lock(other) as held:  # another process importing right now
        assert held
        result = CliRunner().invoke(app, ["import", str(path), "--db", str(settings.db_path)], catch_exceptions=False)

    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}: another import into this database is running;"
                             " import this file when it has finished\n")
    assert recipients(db) == []


# --- through the CLI ------------------------------------------------------------------------

def test_cli_import_prints_one_line_per_reject_and_exits_0(db, settings, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(
        "email,first_name,custom_subject\n".encode()
        + 'ann@example.com,Ann,"Hi\nthere"\n'.encode()
        + "bob@example.com,Bob,Hi \x1b[2J\n".encode()
        + "cy@example.com,Cy".encode() + b"\xe9" + b",Hello\n"
        + "üser@example.com,Ü,Hello\n".encode()
        + '"=HYPERLINK(""http://x.example"")",Eve,Hello\n'.encode()
        + "zoë@example.com,Zoë,Hello\n".encode()
    )

    result = CliRunner().invoke(app, ["import", str(path), "--db", str(settings.db_path)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path}: 1 added to campaign 'default', 0 duplicate(s) skipped, 5 invalid.",
        f"  {path}:4: 'custom_subject': contains control character U+001B",
        f"  {path}:5: 'first_name': byte 0xE9 is not UTF-8, unlike the rest of the file (fix its encoding)",
        f"  {path}:6: 'email': non-ASCII characters before the @-sign (ü) need SMTPUTF8 (RFC 6531),"
        " which Amazon SES does not support: it can never be sent",
        f"  {path}:7: 'email': An email address must have an @-sign.",
        f"  {path}:8: 'email': non-ASCII characters before the @-sign (ë) need SMTPUTF8 (RFC 6531),"
        " which Amazon SES does not support: it can never be sent",
        f"Invalid rows written to {tmp_path / 'leads.rejects.csv'}",
    ]
    rejected = read_rejects(tmp_path / "leads.rejects.csv")
    assert [row[0] for row in rejected[1:]] == [
        "bob@example.com", "cy@example.com", "üser@example.com", "'=HYPERLINK(\"http://x.example\")", "zoë@example.com"]


def test_cli_import_reports_a_row_with_an_unquoted_comma_and_stores_none_of_it(db, settings, tmp_path):
    path = write(tmp_path, "c.csv", "email,first_name,company,role\nann@example.com,Ann,Acme, Inc,CTO\n")

    result = CliRunner().invoke(app, ["import", str(path), "--db", str(settings.db_path)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{path}: 0 added to campaign 'default', 0 duplicate(s) skipped, 1 invalid.",
        f"  {path}:2: 'column 5': 5 cells for 4 columns: a value with a comma must be in double quotes",
        f"Invalid rows written to {tmp_path / 'c.rejects.csv'}",
    ]
    assert recipients(db) == []


def test_cli_import_of_a_malformed_file_exits_2_naming_the_line_and_adds_nobody(db, settings, tmp_path):
    path = write(tmp_path, "broken.csv", 'email,first_name\nann@example.com,Ann\nbo@example.com,"Bo\n\ncy@example.com,Cy\n')

    result = CliRunner().invoke(app, ["import", str(path), "--db", str(settings.db_path), "--json"],
                                catch_exceptions=False)

    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": f"{path}:3: malformed CSV: unexpected end of data"}
    assert recipients(db) == []
