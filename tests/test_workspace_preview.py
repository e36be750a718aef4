"""workspace.render_draft for a recipient whose CSV row has their own subject and/or body."""

from __future__ import annotations

import pytest

from email_automation import workspace
from email_automation.import_csv import import_csv
from email_automation.preview import render_preview
from email_automation.workspace import TemplateDraft

DRAFT = TemplateDraft(None, ("Backend at {{ company }}?", "Hi {{ first_name }}"), "<p>Draft for {{ first_name }}</p>",
                      None)


@pytest.fixture
def spring(db, tmp_path):
    (tmp_path / "spring.csv").write_text(
        "email,first_name,company,custom_subject,custom_body\n"
        "ada@example.org,Ada,Acme,,\n"
        "bob@example.org,Bob,Bank,Ana suggested I write,Hi Bob - from Ana.\n"
        "cy@example.org,Cy,Corp,Cy's own subject,\n"
        "di@example.org,Di,Dell,,Own body of Di.\n")
    import_csv(db, tmp_path / "spring.csv", campaign="spring")
    return db


def test_a_normal_recipient_gets_the_draft(spring, settings):
    shown = workspace.render_draft(spring, settings, "spring", "ada@example.org", DRAFT)
    assert (shown.rendered.subject, shown.subjects, shown.variant) == ("Backend at Acme?", ("Backend at Acme?", "Hi Ada"), 0)
    assert "<p>Draft for Ada</p>" in shown.rendered.html
    assert not shown.own_subject and not shown.own_body


def test_their_own_subject_and_body_replace_the_draft_as_in_preview(spring, settings):
    shown = workspace.render_draft(spring, settings, "spring", "bob@example.org", DRAFT)
    assert shown.rendered.subject == "Ana suggested I write"
    assert "Hi Bob - from Ana." in shown.rendered.html and "Draft for" not in shown.rendered.html
    assert shown.rendered.text.startswith("Hi Bob - from Ana.")
    assert shown.subjects == ("Backend at Bank?", "Hi Bob") and shown.variant is None
    assert shown.own_subject and shown.own_body
    # The CLI's `preview` of the saved template, which a run sends, renders the same message.
    cli = render_preview(spring, settings, campaign="spring", email="bob@example.org")
    assert (cli.rendered.subject, cli.rendered.html, cli.rendered.text) == (
        shown.rendered.subject, shown.rendered.html, shown.rendered.text)


def test_their_own_subject_only_keeps_the_drafts_body(spring, settings):
    shown = workspace.render_draft(spring, settings, "spring", "cy@example.org", DRAFT)
    assert shown.rendered.subject == "Cy's own subject" and "<p>Draft for Cy</p>" in shown.rendered.html
    assert shown.variant is None and shown.own_subject and not shown.own_body


def test_their_own_body_only_keeps_their_subject_variant(spring, settings):
    shown = workspace.render_draft(spring, settings, "spring", "di@example.org", DRAFT)
    # Di is the fourth recipient of the campaign's own template: three before her, variant 3 % 2
    assert shown.variant == 3 % 2 and shown.rendered.subject == shown.subjects[shown.variant] == "Hi Di"
    assert "Own body of Di." in shown.rendered.html and "Draft for" not in shown.rendered.html
    assert not shown.own_subject and shown.own_body
