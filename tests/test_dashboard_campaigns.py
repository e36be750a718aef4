"""The dashboard's Campaigns tab, driven by AppTest: each action once unlocked, none while locked."""

from __future__ import annotations

import base64
import sqlite3

import pytest
from streamlit.testing.v1 import AppTest

from email_automation.campaign_templates import set_templates
from email_automation.import_csv import import_csv

from .test_dashboard import _fresh_cache  # noqa: F401 - an autouse fixture: each test starts with an empty page cache
from .test_dashboard import page as dashboard_page

PASSWORD = "correct horse"
CSV = b"email,first_name,company\nada@example.org,Ada,Acme\nnot-an-address,Bob,Bank\n"


@pytest.fixture
def spring(db, settings, tmp_path):
    """A campaign 'spring' with one recipient, Ada at Acme."""
    (tmp_path / "spring.csv").write_text("email,first_name,company,role\nada@example.org,Ada,Acme,backend\n")
    import_csv(db, tmp_path / "spring.csv", campaign="spring")
    return db


def page(settings, clock, *, password: str = PASSWORD, unlocked: bool = True) -> AppTest:
    """The Campaigns tab open, unlocked unless `unlocked` is False (the Unlock flow itself has its
    own tests in test_dashboard.py)."""
    at = dashboard_page(settings, clock, password=password, tab="Campaigns", unlocked=unlocked)
    assert not at.exception, at.exception
    return at


def spring_page(settings, clock, **options) -> AppTest:
    """`page` with campaign 'spring' picked in the tab."""
    at = page(settings, clock, **options)
    widget(at, "ws_campaign").set_value("spring")
    at.run()
    assert not at.exception, at.exception
    return at


def widget(at: AppTest, key: str):
    found = [w for kind in ("text_input", "text_area", "selectbox", "file_uploader") for w in at.get(kind) if w.key == key]
    assert found, key
    return found[0]


def last_message(at: AppTest, kind: str) -> str:
    """The last message of that kind, as the reader sees it."""
    from .test_dashboard import as_read

    return as_read([m.value for m in getattr(at, kind)][-1])


def db_value(settings, sql: str):
    with sqlite3.connect(settings.db_path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_create_a_campaign(settings, clock, db):
    at = page(settings, clock)
    widget(at, "ws_new_name").input("autumn")
    at.button(key="ws_create_go").click().run()
    assert last_message(at, "success") == "Campaign 'autumn' created."
    assert db_value(settings, "SELECT count(*) FROM campaigns WHERE name = 'autumn'") == 1
    assert "autumn" in widget(at, "ws_campaign").options


def test_a_new_campaign_is_the_one_picked_so_the_next_import_goes_into_it(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_new_name").input(" autumn ")
    at.button(key="ws_create_go").click().run()
    assert widget(at, "ws_campaign").value == "autumn"
    widget(at, "ws_csv").set_value(("new.csv", CSV, "text/csv"))
    at.run()
    at.button(key="ws_import_go").click().run()
    assert last_message(at, "success").startswith("new.csv: 1 added to campaign 'autumn'")


def test_a_campaign_named_in_markdown_is_shown_as_named(settings, clock, db):
    """`*new* $y$` came out in italics and a formula in the message and the paused warning."""
    at = page(settings, clock)
    widget(at, "ws_new_name").input("*new* $y$ `code`")
    at.button(key="ws_create_go").click().run()
    assert last_message(at, "success") == "Campaign '*new* $y$ `code`' created."
    assert at.success[-1].value == "Campaign '\\*new\\* \\$y\\$ \\`code\\`' created."
    at.checkbox(key="ws_pause_sure_*new* $y$ `code`").check()
    at.button(key="ws_pause_go").click().run()
    assert last_message(at, "warning") == "Campaign '*new* $y$ `code`' is paused: the next run sends none of it."


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_campaign_name_is_asked_for_not_called_unprintable(settings, clock, db, name):
    at = page(settings, clock)
    widget(at, "ws_new_name").input(name)
    at.button(key="ws_create_go").click().run()
    assert last_message(at, "error") == f"campaign name {name!r} is blank: give the campaign a name"


def test_upload_a_csv_shows_counts_rejects_and_the_rejects_file(settings, clock, spring):
    at = page(settings, clock)
    widget(at, "ws_campaign").set_value("spring")
    widget(at, "ws_csv").set_value(("new.csv", CSV, "text/csv"))
    at.run()
    at.button(key="ws_import_go").click().run()

    assert last_message(at, "success") == "new.csv: 0 added to campaign 'spring', 1 duplicate(s) skipped, 1 invalid."
    assert [c.value for c in at.code] == ["new.csv:3: 'email': An email address must have an @-sign."]
    assert "Download the rejects file" in [d.proto.label for d in at.get("download_button")]


def test_a_template_edit_previews_live_and_saves(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_subjects_spring_(the campaign's own)").input("Backend at {{ company }}\nHi {{ first_name }}")
    widget(at, "ws_html_spring_(the campaign's own)").input("<p>Hello {{ first_name }}, {{ role }} role?</p>")
    at.button(key="ws_preview_go").click().run()

    assert "**Subject:** Backend at Acme" in [m.value for m in at.markdown]
    [frame] = at.get("iframe")
    html = base64.b64decode(frame.proto.src.split(",", 1)[1]).decode()
    assert "<p>Hello Ada, backend role?</p>" in html and "Content-Security-Policy" in html
    assert "Hello Ada, backend role?" in [t.value.strip() for t in at.text]

    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Template of 'spring' saved."
    assert db_value(settings, "SELECT subject_variants FROM campaigns WHERE name = 'spring'") == (
        '["Backend at {{ company }}", "Hi {{ first_name }}"]')


def test_an_unknown_variable_is_shown_and_nothing_is_saved(settings, clock, spring):
    before = db_value(settings, "SELECT subject_template FROM campaigns WHERE name = 'spring'")
    at = spring_page(settings, clock)
    widget(at, "ws_subjects_spring_(the campaign's own)").input("Hi {{ nickname }}")
    at.button(key="ws_preview_go").click().run()
    error = ("campaign 'spring': subject template line 1 reads {{ nickname }}, but ada@example.org (pending), who may "
             "still get this template, has no 'nickname' column")
    assert last_message(at, "error").startswith(error)
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "error").startswith(error)
    assert db_value(settings, "SELECT subject_template FROM campaigns WHERE name = 'spring'") == before


def test_a_new_named_template_is_saved(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_template_spring").set_value("+ new template")
    at.run()
    widget(at, "ws_new_template_spring").input("startup")
    widget(at, "ws_subjects_spring_+ new template").input("Joining {{ company }}?")
    widget(at, "ws_html_spring_+ new template").input("<p>Hi {{ first_name }}</p>")
    at.button(key="ws_preview_go").click().run()
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Template 'startup' saved."
    assert db_value(settings, "SELECT subject_template FROM templates WHERE name = 'startup'") == "Joining {{ company }}?"
    assert widget(at, "ws_template_spring").value == "startup"  # it stayed on "+ new template"
    assert widget(at, "ws_subjects_spring_startup").value == "Joining {{ company }}?"
    widget(at, "ws_template_spring").set_value("+ new template").run()
    assert (widget(at, "ws_new_template_spring").value, widget(at, "ws_subjects_spring_+ new template").value) == ("", "")


def test_a_new_template_with_the_name_of_one_that_exists_is_refused_not_written_over_it(settings, clock, follow_up):
    at = spring_page(settings, clock)
    assert "bank" in widget(at, "ws_template_spring").options
    before = db_value(settings, "SELECT html_template FROM templates WHERE name = 'bank'")
    widget(at, "ws_template_spring").set_value("+ new template").run()
    widget(at, "ws_new_template_spring").input(" bank ")
    widget(at, "ws_subjects_spring_+ new template").input("Replaced")
    widget(at, "ws_html_spring_+ new template").input("<p>replaced</p>")
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "error") == ("campaign 'spring' already has a template named 'bank': pick it in the "
                                         "Template box to change it, or give the new one another name")
    assert db_value(settings, "SELECT html_template FROM templates WHERE name = 'bank'") == before


def test_a_result_leaves_with_the_campaign_or_template_it_was_for_and_a_blank_new_template_is_no_error(
        settings, clock, spring):
    """"Template of 'spring' saved." stayed above the next campaign's editor, and "+ new template"
    opened on "the subject template is empty" before anything was typed."""
    at = spring_page(settings, clock)
    widget(at, "ws_new_name").input("autumn")
    at.button(key="ws_create_go").click().run()
    widget(at, "ws_campaign").set_value("spring").run()
    widget(at, "ws_html_spring_(the campaign's own)").input("<p>Hello {{ first_name }}</p>")
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Template of 'spring' saved."
    widget(at, "ws_template_spring").set_value("+ new template").run()
    assert not at.success and not at.error
    assert "Name the new template, write its subject and HTML body, then Preview (Ctrl+Enter)." in [
        c.value for c in at.caption]
    widget(at, "ws_template_spring").set_value("(the campaign's own)").run()
    at.button(key="ws_save_go").click().run()
    widget(at, "ws_campaign").set_value("autumn").run()
    assert not at.success and not at.exception


def test_attach_a_file_and_refuse_a_blocked_one(settings, clock, spring):
    at = page(settings, clock)
    widget(at, "ws_campaign").set_value("spring")
    widget(at, "ws_attach").set_value(("run.bat", b"@echo", "application/octet-stream"))
    at.run()
    at.button(key="ws_attach_go").click().run()
    assert last_message(at, "error") == "run.bat: SES does not send .bat files (executables and scripts are refused)"

    widget(at, "ws_attach").set_value(("cv.pdf", b"%PDF-1.4", "application/pdf"))
    at.run()
    at.button(key="ws_attach_go").click().run()
    assert last_message(at, "success") == "cv.pdf attached to every message of 'spring'."
    stored = settings.db_path.parent / "uploads" / "cv.pdf"
    assert stored.read_bytes() == b"%PDF-1.4"
    assert str(stored) in [t.value for t in at.text]
    assert "Attached: cv.pdf (8 bytes)" in [c.value for c in at.caption]  # under the preview

    at.button(key="ws_detach_go").click().run()
    assert last_message(at, "success") == "Messages of 'spring' carry no file of their own any more."
    assert db_value(settings, "SELECT attachments FROM campaigns WHERE name = 'spring'") is None


def test_pause_and_resume_each_ask_for_the_tick(settings, clock, spring):
    """The Admin tab's pause asked "I am sure", this one acted on a click."""
    at = spring_page(settings, clock)
    at.button(key="ws_pause_go").click().run()
    assert last_message(at, "warning") == "Nothing changed: tick 'I am sure' first."
    assert db_value(settings, "SELECT status FROM campaigns WHERE name = 'spring'") == "active"
    at.checkbox(key="ws_pause_sure_spring").check()
    at.button(key="ws_pause_go").click().run()
    assert last_message(at, "success") == "Campaign 'spring' paused."
    assert db_value(settings, "SELECT status FROM campaigns WHERE name = 'spring'") == "paused"
    at.checkbox(key="ws_pause_sure_spring").check()
    at.button(key="ws_pause_go").click().run()
    assert last_message(at, "success") == "Campaign 'spring' resumed."


def forged(widget):
    widget.proto.disabled = False
    return widget


@pytest.mark.parametrize("password", ["", PASSWORD], ids=["no-password-set", "password-not-entered"])
def test_without_the_password_everything_shows_and_nothing_changes(settings, clock, spring, password, tmp_path):
    (tmp_path / "cv.pdf").write_bytes(b"%PDF")
    set_templates(spring, "spring", attach=[tmp_path / "cv.pdf"])

    def snapshot():
        with sqlite3.connect(settings.db_path) as conn:
            return [conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("campaigns", "templates", "recipients")]

    before = snapshot()
    at = spring_page(settings, clock, password=password, unlocked=False)
    assert "Read-only: enter the dashboard password in the Admin tab to change campaigns." in [i.value for i in at.info]
    assert [m.value for m in at.markdown if m.value.startswith("**Subject:**")] == ["**Subject:** Interested in joining Acme"]
    for key in ("ws_create_go", "ws_import_go", "ws_save_go", "ws_attach_go", "ws_detach_go", "ws_pause_go"):
        assert at.button(key=key).disabled
        forged(at.button(key=key)).click().run()
        assert not at.success and not at.exception
    assert snapshot() == before


def test_the_next_run_lists_who_would_be_sent_and_who_is_held_back(settings, clock, spring, tmp_path):
    (tmp_path / "more.csv").write_text("email,first_name\nbob@example.org,Bob\ncy@example.org,Cy\n")
    import_csv(spring, tmp_path / "more.csv", campaign="spring")
    spring.execute("INSERT INTO suppressions (email, reason, source, created_at) VALUES ('bob@example.org', 'complaint', 'manual', 'x')")
    at = spring_page(settings, clock, password="", unlocked=False)
    plan = [d.value for d in at.dataframe if list(d.value.columns) == ["order", "email", "step"]][0]
    held = [d.value for d in at.dataframe if list(d.value.columns) == ["email", "step", "why"]][0]
    assert list(plan["email"]) == ["ada@example.org", "cy@example.org"]
    assert held.to_dict("records") == [{"email": "bob@example.org", "step": 1, "why": "suppressed: complaint"}]
    assert "2 message(s) of this campaign would go out; 80 of today's limit of 80 left for all campaigns, due " \
           "follow-ups first, then the oldest recipients. SES's own quota, read by the run, may cut it further." \
           in [c.value for c in at.caption]


def _tables(at: AppTest) -> tuple[list[str], list[dict]]:
    """(the addresses the Next run would send, the held rows)."""
    sent = [list(d.value["email"]) for d in at.dataframe if list(d.value.columns) == ["order", "email", "step"]]
    held = [d.value.to_dict("records") for d in at.dataframe if list(d.value.columns) == ["email", "step", "why"]]
    return (sent[0] if sent else []), (held[0] if held else [])


@pytest.fixture
def office_hours(settings):
    """The default SEND_HOURS, 09:00-17:00 here: the tests' clock starts at 08:00 in Berlin (TIMEZONE)."""
    return settings.model_copy(update={"send_hours": "09:00-17:00"})


@pytest.fixture
def zoned(spring, tmp_path):
    """Campaign 'spring': Ada (TIMEZONE's zone), then Cy in New York, then Dee in Berlin."""
    (tmp_path / "more.csv").write_text("email,first_name,timezone\ncy@example.org,Cy,America/New_York\n"
                                       "dee@example.org,Dee,Europe/Berlin\n")
    import_csv(spring, tmp_path / "more.csv", campaign="spring")
    return spring


def run_plan(settings, clock, campaign: str = "spring") -> tuple[list[str], dict[str, str]]:
    """What `email-automation run --plan` tells at `clock`: (sent, {held address: why}) of `campaign`."""
    from email_automation.database import connect
    from email_automation.plan import plan_run

    conn = connect(settings.db_path)
    try:
        planned = plan_run(conn, settings, now=clock())
    finally:
        conn.close()
    return ([p.email for p in planned.send if p.campaign == campaign],
            {h.email: h.reason for h in planned.held if h.campaign == campaign})


def test_outside_the_send_window_the_next_run_sends_nothing_and_says_why(office_hours, clock, zoned):
    at = spring_page(office_hours, clock, password="", unlocked=False)  # 08:00 in Berlin, 02:00 in New York
    sent, held = _tables(at)
    assert sent == [] and run_plan(office_hours, clock)[0] == []
    assert held == [{"email": "ada@example.org", "step": 1, "why": "outside the send window (08:00 is outside SEND_HOURS)"},
                    {"email": "cy@example.org", "step": 1,
                     "why": "outside the send window (02:00 is outside SEND_HOURS in America/New_York)"},
                    {"email": "dee@example.org", "step": 1,
                     "why": "outside the send window (08:00 is outside SEND_HOURS in Europe/Berlin)"}]
    assert {h["email"]: h["why"] for h in held} == run_plan(office_hours, clock)[1]
    captions = [c.value for c in at.caption]
    assert any(c.startswith("0 message(s) of this campaign would go out") for c in captions), captions
    assert "Outside the send window now: 08:00 is outside SEND_HOURS (SEND_DAYS mon-sun, SEND_HOURS 09:00-17:00, " \
           "TIMEZONE Europe/Berlin)" in at.info[-1].value


def test_inside_the_send_window_the_next_run_sends_whose_zone_is_open(office_hours, clock, zoned):
    clock.advance(3 * 3600)  # 11:00 in Berlin, 05:00 in New York
    at = spring_page(office_hours, clock, password="", unlocked=False)
    sent, held = _tables(at)
    assert sent == ["ada@example.org", "dee@example.org"] == run_plan(office_hours, clock)[0]
    assert held == [{"email": "cy@example.org", "step": 1,
                     "why": "outside the send window (05:00 is outside SEND_HOURS in America/New_York)"}]
    assert not [i for i in at.info if i.value.startswith("Outside the send window")]
    clock.advance(6 * 3600)  # 17:00 in Berlin (the end is excluded), 11:00 in New York: only Cy's window is open
    from email_automation.dashboard import clear_cache

    clear_cache()
    at = spring_page(office_hours, clock, password="", unlocked=False)
    assert _tables(at)[0] == ["cy@example.org"] == run_plan(office_hours, clock)[0]


def test_the_next_run_follows_the_daily_limit_left_and_the_per_company_limit(settings, clock, zoned, tmp_path):
    limited = settings.model_copy(update={"daily_limit": 2, "max_new_per_company_per_day": 1})
    (tmp_path / "acme.csv").write_text("email,first_name,company\nzed@acme.com,Zed,Acme\nyan@acme.com,Yan,Acme\n")
    import_csv(zoned, tmp_path / "acme.csv", campaign="spring")
    at = spring_page(limited, clock, password="", unlocked=False)
    sent, held = _tables(at)
    assert sent == run_plan(limited, clock)[0] and len(sent) == 2
    assert {h["email"]: h["why"] for h in held} == run_plan(limited, clock)[1]


def frame_html(at: AppTest) -> str:
    [frame] = at.get("iframe")
    return base64.b64decode(frame.proto.src.split(",", 1)[1]).decode()


def test_every_subject_variant_is_shown_and_the_chosen_recipient_gets_their_own(settings, clock, spring, tmp_path):
    (tmp_path / "more.csv").write_text("email,first_name\nbob@example.org,Bob\n")
    import_csv(spring, tmp_path / "more.csv", campaign="spring")
    at = spring_page(settings, clock)
    widget(at, "ws_subjects_spring_(the campaign's own)").input("Backend at {{ company }}?\nHi {{ first_name }}")
    widget(at, "ws_html_spring_(the campaign's own)").input("<p>{{ subject }}</p>")
    widget(at, "ws_preview_spring").set_value("bob@example.org")
    at.button(key="ws_preview_go").click().run()

    markdown = [m.value for m in at.markdown]
    assert "**Subject:** Hi Bob" in markdown  # Bob is the campaign's second recipient: the second variant
    assert "- Variant 1 of 2: Backend at ?\n- Variant 2 of 2 (this recipient gets it): Hi Bob" in markdown
    assert "<p>Hi Bob</p>" in frame_html(at)
    widget(at, "ws_preview_spring").set_value("ada@example.org")
    at.run()
    assert "- Variant 1 of 2 (this recipient gets it): Backend at Acme?\n- Variant 2 of 2: Hi Ada" in [
        m.value for m in at.markdown]


@pytest.fixture
def follow_up(spring, settings):
    """Campaign 'spring' with a named template 'bank' and a follow-up step 2."""
    from email_automation.campaign_templates import add_template
    from email_automation.database import utc_now
    from email_automation.sequences import add_step

    add_template(spring, "spring", "bank", subject="Risk at {{ company }}", html="<p>Dear {{ first_name }}</p>")
    add_step(spring, "spring", after_days=3, html="<p>Following up, {{ first_name }}.</p>", now=utc_now())
    return spring


def test_a_follow_up_step_is_edited_with_a_live_preview_in_the_thread_and_saved(settings, clock, follow_up):
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(2)
    at.run()
    assert widget(at, "ws_html_spring_step2_(the step's own)").value == "<p>Following up, {{ first_name }}.</p>"
    widget(at, "ws_html_spring_step2_(the step's own)").input("<p>Any news, {{ first_name }} at {{ company }}?</p>")
    at.button(key="ws_preview_go").click().run()
    assert "**Subject:** Re: Interested in joining Acme" in [m.value for m in at.markdown]  # step 1's, not yet sent
    assert "<p>Any news, Ada at Acme?</p>" in frame_html(at)
    assert "Any news, Ada at Acme?" in [t.value.strip() for t in at.text]

    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Step 2 of 'spring' saved."
    assert db_value(settings, "SELECT html_template FROM campaign_steps") == "<p>Any news, {{ first_name }} at {{ company }}?</p>"
    assert db_value(settings, "SELECT subject_template FROM campaign_steps") is None


def test_a_segments_version_of_a_step_is_saved_and_a_bad_one_is_refused(settings, clock, follow_up, tmp_path):
    (tmp_path / "bank.csv").write_text("email,first_name,company,role,template\nbo@bank.example,Bo,Bank,risk,bank\n")
    import_csv(follow_up, tmp_path / "bank.csv", campaign="spring")
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(2)
    at.run()
    widget(at, "ws_template_spring_step2").set_value("bank")
    at.run()
    widget(at, "ws_subjects_spring_step2_bank").input("About {{ role }} at {{ company }}")
    widget(at, "ws_html_spring_step2_bank").input("<p>Compliance news, {{ nickname }}?</p>")
    at.button(key="ws_preview_go").click().run()
    error = ("campaign 'spring', step 2, template 'bank': HTML body template line 1 reads {{ nickname }}, but "
             "bo@bank.example (pending), who may still get this template, has no 'nickname' column")
    assert last_message(at, "error").startswith(error)
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "error").startswith(error)
    assert db_value(settings, "SELECT count(*) FROM step_templates") == 0

    widget(at, "ws_html_spring_step2_bank").input("<p>Compliance news, {{ first_name }}?</p>")
    at.button(key="ws_preview_go").click().run()
    assert "**Subject:** About backend at Acme" in [m.value for m in at.markdown]
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Step 2, template 'bank', of 'spring' saved."
    assert db_value(settings, "SELECT html_template FROM step_templates WHERE name = 'bank'") == (
        "<p>Compliance news, {{ first_name }}?</p>")
    assert db_value(settings, "SELECT html_template FROM campaign_steps") == "<p>Following up, {{ first_name }}.</p>"


def test_a_template_reading_a_column_nobody_has_yet_is_saved_with_a_note(settings, clock, spring):
    """Before the CSV of a new segment is imported, its template may read the segment's own columns."""
    at = spring_page(settings, clock)
    widget(at, "ws_template_spring").set_value("+ new template")
    at.run()
    widget(at, "ws_new_template_spring").input("startup")
    widget(at, "ws_subjects_spring_+ new template").input("Your {{ stage }} round?")
    widget(at, "ws_html_spring_+ new template").input("<p>Hi {{ first_name }}</p>")
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == (
        "Template 'startup' saved.\n\nNote: 'stage' is not a column of any recipient waiting for template 'startup' "
        "yet: import refuses rows for it without that column.")
    assert db_value(settings, "SELECT subject_template FROM templates WHERE name = 'startup'") == "Your {{ stage }} round?"


def test_save_stores_what_was_typed_even_without_a_preview_first(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_html_spring_(the campaign's own)").input("<p>Straight to save, {{ first_name }}</p>")
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Template of 'spring' saved."
    assert db_value(settings, "SELECT html_template FROM campaigns WHERE name = 'spring'") == (
        "<p>Straight to save, {{ first_name }}</p>")
    assert "<p>Straight to save, Ada</p>" in frame_html(at)


HALF_WRITTEN = "<p>Half-written, {{ first_name }}</p>"


def test_a_previewed_edit_survives_picking_another_template_or_step_and_back(settings, clock, follow_up):
    """Only the form of the template picked is drawn; the others' previewed edits are kept."""
    at = spring_page(settings, clock)
    own = "ws_html_spring_(the campaign's own)"
    widget(at, own).input(HALF_WRITTEN)
    at.button(key="ws_preview_go").click().run()
    widget(at, "ws_template_spring").set_value("bank").run()
    widget(at, "ws_template_spring").set_value("(the campaign's own)").run()
    assert widget(at, own).value == HALF_WRITTEN
    widget(at, "ws_step_spring").set_value(2).run()
    widget(at, "ws_step_spring").set_value(1).run()
    assert widget(at, own).value == HALF_WRITTEN
    assert not at.exception


def test_the_step_picked_survives_a_look_at_another_campaign_and_other_tabs(settings, clock, follow_up):
    from .test_dashboard import open_tab

    at = spring_page(settings, clock)
    widget(at, "ws_new_name").input("autumn")
    at.button(key="ws_create_go").click().run()
    widget(at, "ws_campaign").set_value("spring").run()  # the new campaign is the one picked
    widget(at, "ws_step_spring").set_value(2).run()
    widget(at, "ws_campaign").set_value("autumn").run()
    widget(at, "ws_campaign").set_value("spring").run()
    assert widget(at, "ws_step_spring").value == 2
    widget(at, "ws_step_spring").set_value(1).run()
    widget(at, "ws_template_spring").set_value("+ new template").run()
    widget(at, "ws_new_template_spring").input("fresh")
    at.button(key="ws_preview_go").click().run()
    for tab in ("Replies", "Admin", "Campaigns"):
        open_tab(at, tab)
    assert widget(at, "ws_template_spring").value == "+ new template"
    assert widget(at, "ws_new_template_spring").value == "fresh"
    assert not at.exception


def test_a_recipient_with_their_own_subject_and_body_is_previewed_with_them(settings, clock, spring, tmp_path):
    """A CSV row's custom_subject and custom_body replace the template's in a run: the preview shows
    them (as `preview` and the run do), says so, and marks no variant as theirs."""
    (tmp_path / "more.csv").write_text(
        "email,first_name,custom_subject,custom_body\nbob@example.org,Bob,Ana suggested I write,Hi Bob - from Ana.\n")
    import_csv(spring, tmp_path / "more.csv", campaign="spring")
    at = spring_page(settings, clock)
    widget(at, "ws_subjects_spring_(the campaign's own)").input("Backend at {{ company }}?\nHi {{ first_name }}")
    widget(at, "ws_html_spring_(the campaign's own)").input("<p>Template body for {{ first_name }}</p>")
    widget(at, "ws_preview_spring").set_value("bob@example.org")
    at.button(key="ws_preview_go").click().run()
    assert not at.exception, at.exception

    markdown = [m.value for m in at.markdown]
    assert "**Subject:** Ana suggested I write" in markdown
    assert "- Variant 1 of 2: Backend at ?\n- Variant 2 of 2: Hi Bob" in markdown  # neither is his
    assert "Hi Bob - from Ana." in frame_html(at) and "Template body" not in frame_html(at)
    assert any(t.value.startswith("Hi Bob - from Ana.") for t in at.text)  # the text part
    assert ("bob@example.org has their own subject and body in the CSV: the template does not apply to them, "
            "and editing it does not change their message.") in [c.value for c in at.caption]

    widget(at, "ws_preview_spring").set_value("ada@example.org")  # anyone else: the draft, unchanged
    at.run()
    assert "**Subject:** Backend at Acme?" in [m.value for m in at.markdown]
    assert "- Variant 1 of 2 (this recipient gets it): Backend at Acme?\n- Variant 2 of 2: Hi Ada" in [
        m.value for m in at.markdown]
    assert "<p>Template body for Ada</p>" in frame_html(at)
    assert not [c.value for c in at.caption if "in the CSV" in c.value]


def test_an_error_belongs_to_the_last_action_and_is_shown_once(settings, clock, spring):
    at = spring_page(settings, clock)
    subjects = "ws_subjects_spring_(the campaign's own)"
    widget(at, subjects).input("Hello {{ first_name }")
    at.button(key="ws_save_go").click().run()
    [error] = [e.value for e in at.error]
    assert "subject template line 1: unexpected '}'" in error
    widget(at, subjects).input("Hello {{ first_name }}")
    at.button(key="ws_preview_go").click().run()
    assert not at.error and "**Subject:** Hello Ada" in [m.value for m in at.markdown]


def test_only_the_last_import_is_shown_under_the_name_it_was_uploaded_as(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_csv").set_value(("new.csv", CSV, "text/csv"))
    at.run()
    at.button(key="ws_import_go").click().run()
    assert at.code and "Download the rejects file" in [d.proto.label for d in at.get("download_button")]
    widget(at, "ws_csv").set_value(("noemail.csv", b"name,company\nAda,Acme\n", "text/csv"))
    at.run()
    at.button(key="ws_import_go").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith("noemail.csv: no email column"), error
    assert not at.success and not at.code
    assert "Download the rejects file" not in [d.proto.label for d in at.get("download_button")]


def test_an_existing_campaign_is_an_info_of_that_action_only(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_new_name").input("spring")
    at.button(key="ws_create_go").click().run()
    assert [i.value for i in at.info] == ["Campaign 'spring' already exists."] and not at.success
    at.checkbox(key="ws_pause_sure_spring").check()
    at.button(key="ws_pause_go").click().run()
    assert [s.value for s in at.success] == ["Campaign 'spring' paused."] and not at.info


# --- follow-up steps added, re-timed and removed from the tab -------------------------------------

NEW_STEP = 0  # the Step box's "+ new follow-up step"
NEW_STEP_HTML = "ws_html_spring_newstep_(the step's own)"


def steps_of(settings, campaign: str = "spring") -> list[tuple[int, int, str | None, str]]:
    """(number, wait, subject, HTML) of each follow-up step, as `step list` reads them."""
    from email_automation.database import connect
    from email_automation.sequences import list_steps

    conn = connect(settings.db_path)
    try:
        return [(s.number, s.after_days, s.subject, s.html) for s in list_steps(conn, campaign)]
    finally:
        conn.close()


def number_input(at: AppTest, key: str):
    [found] = [w for w in at.number_input if w.key == key]
    return found


def test_a_follow_up_step_is_added_from_the_dashboard_and_shown_in_the_step_box(settings, clock, spring):
    at = spring_page(settings, clock)
    assert widget(at, "ws_step_spring").options == ["Step 1: the first message", "+ new follow-up step"]
    widget(at, "ws_step_spring").set_value(NEW_STEP).run()
    assert "Write the follow-up's HTML body, then Preview (Ctrl+Enter) to see it in a recipient's thread." in [
        c.value for c in at.caption] and not at.error
    number_input(at, "ws_after_days_spring_newstep").set_value(4)
    widget(at, "ws_subjects_spring_newstep_(the step's own)").input("Still hiring, {{ first_name }}?")
    widget(at, NEW_STEP_HTML).input("<p>Any news, {{ first_name }}?</p>")
    at.button(key="ws_preview_go").click().run()
    assert "**Subject:** Still hiring, Ada?" in [m.value for m in at.markdown]
    assert "<p>Any news, Ada?</p>" in frame_html(at)
    at.button(key="ws_add_step_go").click().run()

    assert [s.value for s in at.success] == ["Step 2 added to campaign 'spring': 4 business day(s) after step 1."]
    assert steps_of(settings) == [(2, 4, "Still hiring, {{ first_name }}?", "<p>Any news, {{ first_name }}?</p>")]
    assert widget(at, "ws_step_spring").value == 2
    assert widget(at, "ws_html_spring_step2_(the step's own)").value == "<p>Any news, {{ first_name }}?</p>"
    assert number_input(at, "ws_after_days_spring_step2_4").value == 4
    widget(at, "ws_step_spring").set_value(NEW_STEP).run()  # the next one starts blank, after step 2
    assert widget(at, NEW_STEP_HTML).value == "" and number_input(at, "ws_after_days_spring_newstep").value == 3
    widget(at, NEW_STEP_HTML).input("<p>Last one, {{ first_name }}.</p>")
    at.button(key="ws_add_step_go").click().run()
    assert last_message(at, "success") == "Step 3 added to campaign 'spring': 3 business day(s) after step 2."
    assert [s[:3] for s in steps_of(settings)] == [(2, 4, "Still hiring, {{ first_name }}?"), (3, 3, None)]
    assert "**Subject:** Re: Interested in joining Acme" in [m.value for m in at.markdown]  # step 3, for Ada


def test_a_broken_new_step_is_one_error_and_adds_nothing(settings, clock, spring):
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(NEW_STEP).run()
    widget(at, NEW_STEP_HTML).input("<p>{{ nosuch </p>")
    at.button(key="ws_add_step_go").click().run()
    [error] = [e.value for e in at.error]
    assert error.startswith("campaign 'spring', step 2: HTML body template line 1: unexpected '/'"), error
    assert not at.success and steps_of(settings) == []
    assert widget(at, "ws_step_spring").value == NEW_STEP and widget(at, NEW_STEP_HTML).value == "<p>{{ nosuch </p>"


def test_a_steps_wait_changes_even_once_it_was_sent(settings, clock, follow_up):
    from .fakes import ScriptedTransport
    from .test_run_daily import run

    run(settings, follow_up, ScriptedTransport(), clock)  # Wednesday: step 1 to Ada
    clock.advance(5 * 86400)  # Monday: three business days later
    assert run(settings, follow_up, ScriptedTransport(), clock).steps == {"2": {"sent": 1}}
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(2).run()
    number_input(at, "ws_after_days_spring_step2_3").set_value(6)
    at.button(key="ws_wait_go").click().run()
    assert [s.value for s in at.success] == ["Step 2 of campaign 'spring' updated: 6 business day(s) after step 1."]
    assert [s[:2] for s in steps_of(settings)] == [(2, 6)]
    assert number_input(at, "ws_after_days_spring_step2_6").value == 6 and widget(at, "ws_step_spring").value == 2

    at.checkbox(key="ws_step_remove_sure_spring_2_").check()
    at.button(key="ws_step_remove_go").click().run()
    assert [e.value for e in at.error] == [
        "campaign 'spring': step 2 (or a later one) was already sent 1 time(s); it cannot be removed"]
    assert [s[:2] for s in steps_of(settings)] == [(2, 6)] and not at.success


def test_a_step_is_removed_and_the_step_box_goes_back_to_the_one_before(settings, clock, follow_up):
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(2).run()
    assert at.button(key="ws_step_remove_go").proto.label == "Remove step 2"
    at.button(key="ws_step_remove_go").click().run()
    assert [w.value for w in at.warning] == ["Nothing changed: tick 'I am sure' first."]
    assert len(steps_of(settings)) == 1
    at.checkbox(key="ws_step_remove_sure_spring_2_").check()
    at.button(key="ws_step_remove_go").click().run()
    assert [s.value for s in at.success] == ["Step 2 removed from campaign 'spring'."]
    assert steps_of(settings) == []
    assert widget(at, "ws_step_spring").value == 1
    assert widget(at, "ws_step_spring").options == ["Step 1: the first message", "+ new follow-up step"]


def test_a_named_templates_version_of_a_step_is_removed_alone(settings, clock, follow_up):
    from email_automation.step_content import set_step

    set_step(follow_up, "spring", 2, template="bank", html="<p>Dear {{ first_name }}, any news?</p>", now=clock())
    at = spring_page(settings, clock)
    widget(at, "ws_step_spring").set_value(2).run()
    widget(at, "ws_template_spring_step2").set_value("bank").run()
    assert widget(at, "ws_html_spring_step2_bank").value == "<p>Dear {{ first_name }}, any news?</p>"
    remove = at.button(key="ws_step_remove_go")
    assert remove.proto.label == "Remove the 'bank' version of step 2" and not remove.disabled
    remove.click().run()
    assert [w.value for w in at.warning] == ["Nothing changed: tick 'I am sure' first."]
    at.checkbox(key="ws_step_remove_sure_spring_2_bank").check()
    at.button(key="ws_step_remove_go").click().run()
    assert [s.value for s in at.success] == [
        "Step 2, template 'bank', removed from campaign 'spring': its recipients get the step's own version."]
    assert db_value(settings, "SELECT count(*) FROM step_templates") == 0
    assert steps_of(settings) == [(2, 3, None, "<p>Following up, {{ first_name }}.</p>")]
    # The bank segment now gets the step's own, and has nothing of its own to remove.
    assert widget(at, "ws_html_spring_step2_bank").value == "<p>Following up, {{ first_name }}.</p>"
    assert at.button(key="ws_step_remove_go").disabled


def test_a_locked_dashboard_adds_retimes_and_removes_no_step(settings, clock, follow_up):
    def snapshot():
        with sqlite3.connect(settings.db_path) as conn:
            return [conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("campaign_steps", "step_templates")]

    before = snapshot()
    at = spring_page(settings, clock, unlocked=False)
    widget(at, "ws_step_spring").set_value(2).run()
    assert number_input(at, "ws_after_days_spring_step2_3").disabled
    for key in ("ws_wait_go", "ws_step_remove_go"):
        assert at.button(key=key).disabled
        forged(at.button(key=key)).click().run()
        assert not at.success and not at.exception
    widget(at, "ws_step_spring").set_value(NEW_STEP).run()
    assert number_input(at, "ws_after_days_spring_newstep").disabled and at.button(key="ws_add_step_go").disabled
    widget(at, NEW_STEP_HTML).input("<p>Hello {{ first_name }}</p>")
    forged(at.button(key="ws_add_step_go")).click().run()
    assert not at.success and not at.exception
    assert snapshot() == before


def test_the_next_run_holds_the_colleagues_of_someone_who_answered_as_run_plan_does(settings, clock, spring, tmp_path):
    from email_automation import applications

    (tmp_path / "initech.csv").write_text("email,first_name,company\nzed@initech.com,Zed,Initech\n"
                                          "yan@initech.com,Yan,Initech\nxia@initech.com,Xia,Initech Labs\n")
    import_csv(spring, tmp_path / "initech.csv", campaign="spring")
    applications.mark(spring, "zed@initech.com", "interview", now=clock())
    sent, held = _tables(spring_page(settings, clock, password="", unlocked=False))
    assert sent == ["ada@example.org"] == run_plan(settings, clock)[0]
    zed = ("stopped by a reply: zed@initech.com at the same {} has application status 'interview'"
           " (STOP_COMPANY_ON_REPLY)")
    assert held == [
        {"email": "zed@initech.com", "step": 1, "why": "stopped by a reply: application status is 'interview'"},
        {"email": "yan@initech.com", "step": 1, "why": zed.format("company (Initech)")},
        {"email": "xia@initech.com", "step": 1, "why": zed.format("domain (initech.com)")}]
    assert {h["email"]: h["why"] for h in held} == run_plan(settings, clock)[1]


def test_a_campaign_and_a_template_named_like_a_result_keep_their_state(settings, clock, db, tmp_path):
    """Every session key that started with ws_ and ended with _result was a result to forget: a
    campaign `q_result` lost its Step box and its Pause tick, a template `a_result` its draft (the
    save said "saved" and stored the old content)."""
    from email_automation.campaign_templates import add_template
    from email_automation.database import utc_now
    from email_automation.sequences import add_step

    (tmp_path / "q.csv").write_text("email,first_name\nada@example.org,Ada\n")
    import_csv(db, tmp_path / "q.csv", campaign="q_result")
    add_template(db, "q_result", "a_result", subject="Hi", html="<p>Hello {{ first_name }}</p>")
    add_step(db, "q_result", after_days=3, html="<p>Again, {{ first_name }}</p>", now=utc_now())
    at = page(settings, clock)
    widget(at, "ws_campaign").set_value("q_result").run()
    widget(at, "ws_step_q_result").set_value(2).run()
    assert widget(at, "ws_step_q_result").value == 2
    widget(at, "ws_step_q_result").set_value(1).run()
    widget(at, "ws_template_q_result").set_value("a_result").run()
    widget(at, "ws_html_q_result_a_result").input("<p>Changed, {{ first_name }}</p>")
    at.button(key="ws_save_go").click().run()
    assert last_message(at, "success") == "Template 'a_result' saved."
    assert db_value(settings, "SELECT html_template FROM templates WHERE name = 'a_result'") == (
        "<p>Changed, {{ first_name }}</p>")
    at.checkbox(key="ws_pause_sure_q_result").check()
    at.button(key="ws_pause_go").click().run()
    assert db_value(settings, "SELECT status FROM campaigns WHERE name = 'q_result'") == "paused"


def test_the_import_rejects_stay_when_another_step_is_picked(settings, clock, spring, tmp_path):
    at = spring_page(settings, clock)
    widget(at, "ws_csv").set_value(("bad.csv", b"email\nnot-an-address\nbo@example.org\n", "text/csv"))
    at.run()
    at.button(key="ws_import_go").click().run()
    assert "Download the rejects file" in [d.proto.label for d in at.get("download_button")]
    widget(at, "ws_step_spring").set_value(NEW_STEP).run()
    assert "Download the rejects file" in [d.proto.label for d in at.get("download_button")]
