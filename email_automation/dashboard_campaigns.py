"""The dashboard's Campaigns tab: create a campaign, import a CSV, edit templates with a live
preview, add, re-time and remove follow-up steps (dashboard_steps), attach files, pause or resume.
Every change goes through `dashboard_data.Reports`'s admin hooks (the CLI's library calls) and
only once the dashboard password is entered; without it the tab shows everything and changes
nothing.

Streamlit runs the dashboard as a script, hence the absolute imports.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable

import streamlit as st

from email_automation.database import MAX_CAMPAIGN_NAME_CHARS
from email_automation.errors import EmailAutomationError
from email_automation.markdown_text import literal
from email_automation.workspace import TemplateDraft

OWN = "(the campaign's own)"
NEW = "+ new template"
CSV_UPLOAD, ATTACH_UPLOAD = "ws_csv", "ws_attach"  # the file pickers' widget keys
IMPORT_REJECTS = "ws_import_rejects"  # the last import's reject lines, rejects file and its name
# The editor form's fields, one set per campaign, step and template (the keys end with those),
# and the follow-up steps' waits.
FORM_FIELDS = ("ws_subjects_", "ws_html_", "ws_text_", "ws_new_template_", "ws_after_days_")
STEP_OWN = "(the step's own)"
NOT_SURE = ("warning", "Nothing changed: tick 'I am sure' first.")  # an action whose "I am sure" is not ticked
# The preview frame: a data: URL has an opaque origin, so the message cannot reach the page, and
# this Content Security Policy lets no script run in it (https://www.w3.org/TR/CSP3/#meta-element).
_NO_SCRIPTS = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data: https:; style-src \'unsafe-inline\'">'


def _unlocked(reports) -> bool:
    from email_automation.dashboard import UNLOCKED

    return bool(reports.admin_enabled and st.session_state.get(UNLOCKED))


# The tab's actions, each with one result kept for the next run (`_act`, `_result`). Exact keys:
# a widget's key ends with a campaign's or template's name, which may well end in "_result".
ACTIONS = ("create", "import", "save", "step", "attach", "pause")


def _forget_results(names: tuple[str, ...] = ACTIONS) -> None:
    """What the tab's earlier actions said (and, with the import's, its rejects): only the last
    action's is shown."""
    for key in [*(f"ws_{name}_result" for name in names), *([IMPORT_REJECTS] if "import" in names else [])]:
        st.session_state.pop(key, None)


def _forget_editor_results() -> None:
    """Another step or template picked: the editor's results were about the one before (the
    campaign's import and its rejects file still hold)."""
    _forget_results(("save", "step"))


def _act(reports, name: str, action) -> None:
    """Button callback: run `action()` when unlocked, keep its one-line result for the next rerun in
    place of any earlier action's. `action()` returns the message of a success, or (kind, message)."""
    from email_automation.dashboard import clear_cache

    _forget_results()
    if not _unlocked(reports):
        result = ("error", "Refused: admin actions are locked. Set DASHBOARD_PASSWORD and enter it in the Admin tab.")
    else:
        try:
            outcome = action()
            result = outcome if isinstance(outcome, tuple) else ("success", outcome)
        except EmailAutomationError as err:
            result = ("error", str(err))
        except sqlite3.Error as err:
            result = ("error", f"Database error, nothing changed: {err}")
        clear_cache()
    st.session_state[f"ws_{name}_result"] = result


def _result(name: str) -> str | None:
    """Show the last action's result if it was `name`; returns its message."""
    kind, message = st.session_state.get(f"ws_{name}_result", (None, None))
    if kind:
        getattr(st, kind)(literal(message))
    return message


def campaigns_page(reports, *, shown: bool = True) -> None:
    """The tab; with `shown` False (another tab is open) only the widgets that hold what a person
    types, without the preview, the plan and the files."""
    from email_automation.dashboard import fetch

    locked = not _unlocked(reports)
    if locked:
        st.info("Read-only: enter the dashboard password in the Admin tab to change campaigns.")
    with st.container(border=True):
        st.markdown("**New campaign**")
        st.text_input("Name", key="ws_new_name", disabled=locked, max_chars=MAX_CAMPAIGN_NAME_CHARS)

        def create() -> tuple[str, str]:
            name = st.session_state["ws_new_name"]
            created = reports.create_campaign(name)
            st.session_state["ws_campaign"] = name.strip()  # what the tab's import and editor work on next
            if created:
                return "success", f"Campaign '{name.strip()}' created."
            return "info", f"Campaign '{name.strip()}' already exists."

        st.button("Create", key="ws_create_go", disabled=locked, on_click=_act, args=(reports, "create", create))
        _result("create")
    campaigns = [name for name, _ in fetch(reports, "campaigns")]
    if not campaigns:
        st.caption("No campaigns yet.")
        return
    # A result is about the campaign, step and template it was given for: picking another one
    # clears it (a save's "saved" stayed above the next campaign's editor).
    campaign = st.selectbox("Campaign", campaigns, key="ws_campaign", on_change=_forget_results)
    if not shown:
        # A file chosen and not yet imported or attached is a widget's value: Streamlit forgets
        # it in a run that does not draw the widget.
        for key in (CSV_UPLOAD, ATTACH_UPLOAD):
            if st.session_state.get(key) is not None:
                file_picker(key, locked)
        editor_section(reports, campaign, locked, shown=False)
        return
    import_section(reports, campaign, locked)
    editor_section(reports, campaign, locked)
    plan_section(reports, campaign)
    attachments_section(reports, campaign, locked)
    pause_section(reports, campaign, locked)


def file_picker(key: str, locked: bool) -> None:
    """The CSV or the attachment file picker, drawn alike wherever it is: a widget stays the same
    one from run to run, its file kept, only with the same key and parameters."""
    if key == CSV_UPLOAD:
        st.file_uploader("CSV file", type=["csv", "tsv", "txt"], key=key, disabled=locked)
    else:
        st.file_uploader("File to attach", key=key, disabled=locked)


def import_section(reports, campaign: str, locked: bool) -> None:
    with st.container(border=True):
        st.markdown("**Import recipients** (the same checks as `email-automation import`)")
        file_picker(CSV_UPLOAD, locked)

        def run() -> str:
            upload = st.session_state.get(CSV_UPLOAD)
            if upload is None:
                raise EmailAutomationError("choose a CSV file first")
            report, rejects = reports.import_upload(campaign, upload.name, upload.getvalue())
            st.session_state[IMPORT_REJECTS] = ([r.message(upload.name) for r in report.rejects], rejects,
                                                     f"{upload.name.rsplit('.', 1)[0]}.rejects.csv")
            counts = (f"{upload.name}: {report.inserted} added to campaign '{campaign}', {report.duplicates} "
                      f"duplicate(s) skipped, {report.invalid} invalid.")
            return "\n\n".join([counts, *filter(None, [report.renamed_note()])])

        st.button("Import", key="ws_import_go", disabled=locked, on_click=_act, args=(reports, "import", run))
        _result("import")
        lines, data, name = st.session_state.get(IMPORT_REJECTS, ([], None, ""))
        if lines:
            st.code("\n".join(lines), language=None)
        if data:
            st.download_button("Download the rejects file", data, file_name=name, mime="text/csv", key="ws_rejects_file")


def keep_values(keep: Callable[[str], bool]) -> None:
    """Set again the value of each widget key for which `keep(key)`: Streamlit forgets the value of
    a widget not drawn in a run, and a value the page set survives it
    (https://docs.streamlit.io/develop/concepts/multipage-apps/widgets). Never a widget drawn in
    this run: a value set by the page replaces what the browser shows, what is typed in a form and
    not yet submitted with it."""
    for key in list(st.session_state):
        if isinstance(key, str) and keep(key):
            st.session_state[key] = st.session_state[key]


def keep_other_drafts(drawn: set[str]) -> None:
    """Keep what was previewed in the editor for another campaign, step or template (only the form
    of the one picked is drawn); the fields `drawn` in this run are left alone."""
    keep_values(lambda key: key.startswith(FORM_FIELDS) and key not in drawn)


def editor_section(reports, campaign: str, locked: bool, *, shown: bool = True) -> None:
    """The template and step editor: a form, so that everything typed reaches the server with the
    Preview (Ctrl+Enter) or Save click that submits it, even while an earlier rerun is still running.
    The Step box also offers a new follow-up step, added with the same form; a follow-up's wait and
    its removal are under it (dashboard_steps)."""
    from email_automation.dashboard import fetch
    from email_automation.dashboard_steps import (NEW_STEP, add_action, new_step_wait, step_controls, step_key,
                                                  step_label, wait_field)

    with st.container(border=True):
        st.markdown("**Templates** (one subject per line: several lines are subject variants)")
        waits = fetch(reports, "steps", campaign)
        picked_step = st.selectbox("Step", [*waits, NEW_STEP], key=step_key(campaign), format_func=step_label,
                                   on_change=_forget_editor_results)
        adding = picked_step == NEW_STEP
        step = max(waits) + 1 if adding else picked_step  # the number a new step gets, as `step add` numbers it
        if step == 1:
            drafts = {d.name: d for d in fetch(reports, "drafts", campaign)}
            labels, where = [OWN, *[name for name in drafts if name], NEW], campaign
        elif adding:
            drafts = {None: TemplateDraft(None, ("",), "", None, step=step)}
            labels, where = [STEP_OWN], f"{campaign}_newstep"
        else:
            drafts = fetch(reports, "step_drafts", campaign, step)
            labels, where = [STEP_OWN, *[name for name in drafts if name]], f"{campaign}_step{step}"
        # A new step has only its own version: versions per named template come once it is added.
        picked = STEP_OWN if adding else st.selectbox("Template", labels, key=f"ws_template_{where}",
                                                      on_change=_forget_editor_results)
        emails = fetch(reports, "recipient_emails", campaign)
        email = st.selectbox("Preview for", emails, key=f"ws_preview_{campaign}") if emails else None
        base = drafts.get(None if picked in (OWN, STEP_OWN) else picked) if picked != NEW else TemplateDraft(None, ("",), "", None)
        key = f"{where}_{picked}"
        fields = {f"ws_subjects_{key}", f"ws_html_{key}", f"ws_text_{key}",
                  *([f"ws_new_template_{campaign}"] if picked == NEW else [])}

        def draft() -> TemplateDraft:
            """The editor's content as last submitted (the session state holds it once the form was sent)."""
            state = st.session_state
            name = (state.get(f"ws_new_template_{campaign}", "").strip() or None if picked == NEW
                    else None if picked in (OWN, STEP_OWN) else picked)
            subjects = state.get(f"ws_subjects_{key}", "\n".join(base.subjects))
            lines = tuple(s for s in subjects.splitlines() if s.strip())
            return TemplateDraft(name, (lines or ("",)) if step == 1 else (" ".join(lines),),
                                 state.get(f"ws_html_{key}", base.html),
                                 state.get(f"ws_text_{key}", base.text or "") or None, step=step)

        def save() -> str:
            current = draft()
            if picked == NEW and not current.name:
                raise EmailAutomationError("give the new template a name")
            if picked == NEW and current.name in drafts:
                raise EmailAutomationError(f"campaign {campaign!r} already has a template named {current.name!r}: pick "
                                           "it in the Template box to change it, or give the new one another name")
            notes = reports.save_draft(campaign, current)
            if picked == NEW:  # the box shows the template just made; "+ new template" starts blank again
                for field in fields:
                    st.session_state.pop(field, None)
                st.session_state[f"ws_template_{where}"] = current.name
            if step != 1:
                done = f"Step {step}{'' if current.name is None else f', template {current.name!r},'} of {campaign!r} saved."
            else:
                done = f"Template {'of ' + repr(campaign) if current.name is None else repr(current.name)} saved."
            return "\n\n".join([done, *notes])

        with st.form(f"ws_editor_{key}", border=False):
            if picked == NEW:
                st.text_input("New template name", key=f"ws_new_template_{campaign}", disabled=locked)
            if adding:
                fields.add(new_step_wait(campaign, step, locked))
            st.text_area("Subject" if step == 1 else "Subject (empty: 'Re: ' + the subject of step 1)",
                         "\n".join(base.subjects), key=f"ws_subjects_{key}", height=80)
            st.text_area("HTML body", base.html, key=f"ws_html_{key}", height=260)
            st.text_area("Text body (empty: derived from the HTML)", base.text or "", key=f"ws_text_{key}", height=120)
            left, right = st.columns(2)
            left.form_submit_button("Preview (Ctrl+Enter)", key="ws_preview_go", on_click=_forget_results)
            if adding:
                right.form_submit_button("Add step", key="ws_add_step_go", disabled=locked, on_click=_act,
                                         args=(reports, "save", add_action(reports, campaign, draft, fields)))
            else:
                right.form_submit_button("Save template", key="ws_save_go", disabled=locked, on_click=_act,
                                         args=(reports, "save", save))
        saved = _result("save")
        if step != 1 and not adding:
            step_controls(reports, campaign, step, waits[step], None if picked == STEP_OWN else picked,
                          base.inherited, locked)
            fields.add(wait_field(campaign, step, waits[step]))
        _result("step")
        keep_other_drafts(fields)
        if not shown:
            return
        if adding and not draft().html.strip():
            st.caption("Write the follow-up's HTML body, then Preview (Ctrl+Enter) to see it in a recipient's thread.")
            return
        if picked == NEW and not draft().html.strip():  # nothing written yet: nothing wrong yet
            st.caption("Name the new template, write its subject and HTML body, then Preview (Ctrl+Enter).")
            return
        draft_preview(reports, campaign, email, draft(), saved)


def draft_preview(reports, campaign: str, email: str | None, draft: TemplateDraft, saved: str | None) -> None:
    """The draft as `email` would get it; an error only when it is not the one the last save showed."""
    from email_automation.dashboard import fetch

    problem = None
    if email:
        try:
            result = reports.preview_draft(campaign, email, draft)
        except EmailAutomationError as err:
            problem = str(err)
        else:
            preview(result, email)
            if draft.step == 1:
                files = fetch(reports, "message_files", campaign, email)
                st.caption("Attached: " + (", ".join(f"{literal(n)} ({'missing' if size is None else f'{size:,} bytes'})"
                                                     for n, size in files) or "nothing"))
            else:
                st.caption("A follow-up answers in the recipient's thread and carries no attachment.")
    else:
        st.caption("Import recipients to see a preview.")
    if problem and problem != saved:  # a failed save already said it, just above
        st.error(literal(problem))


def preview(result, email: str) -> None:
    """The recipient's subject (and every variant, labelled), the HTML part in a frame that runs
    no script, the text part beside it; said plainly when the recipient's own subject or body
    (CSV columns custom_subject, custom_body) replaces the template's."""
    rendered = result.rendered
    st.markdown(f"**Subject:** {literal(rendered.subject)}")
    if result.own_subject and result.own_body:
        st.caption(f"{literal(email)} has their own subject and body in the CSV: the template does not apply to them, "
                   "and editing it does not change their message.")
    elif result.own_subject:
        st.caption(f"{literal(email)} has their own subject in the CSV: the template's subject lines do not apply to them, "
                   "and editing them does not change their subject (their body comes from the template).")
    elif result.own_body:
        st.caption(f"{literal(email)} has their own body in the CSV: the template's HTML and text bodies do not apply to "
                   "them, and editing them does not change their body (their subject comes from the template).")
    if len(result.subjects) > 1:
        st.markdown("\n".join(
            f"- Variant {n} of {len(result.subjects)}{' (this recipient gets it)' if n - 1 == result.variant else ''}: "
            f"{literal(subject)}" for n, subject in enumerate(result.subjects, 1)))
    left, right = st.columns(2)
    page = _NO_SCRIPTS + rendered.html
    with left:
        st.iframe("data:text/html;charset=utf-8;base64," + base64.b64encode(page.encode("utf-8")).decode("ascii"),
                  height=420)
    with right:
        st.text(rendered.text)


def plan_section(reports, campaign: str) -> None:
    """What a real run started now would send for this campaign, and who is held back and why:
    `run --plan`'s own plan (`plan.plan_run`), computed only while this tab is open."""
    from email_automation.dashboard import fetch

    plan = fetch(reports, "next_run", campaign)
    with st.container(border=True):
        st.markdown("**Next run** (a real run started now, as `email-automation run --plan` tells it)")
        if plan.paused:
            st.warning(f"Campaign '{literal(campaign)}' is paused: the next run sends none of it.")
        if plan.closed:
            st.info(f"Outside the send window now: {plan.closed}. A run started now sends nobody whose time zone "
                    "is outside it.")
        st.caption(f"{len(plan.to_send)} message(s) of this campaign would go out; {plan.remaining_today} of today's "
                   f"limit of {plan.daily_limit} left for all campaigns, due follow-ups first, then the oldest "
                   "recipients" + (f"; {plan.over_limit} more of all campaigns wait for a later day (daily limit)"
                                   if plan.over_limit else "") + ". SES's own quota, read by the run, may cut it further.")
        if plan.to_send:
            st.dataframe([{"order": n, "email": e, "step": step} for n, (e, step) in enumerate(plan.to_send, 1)],
                         hide_index=True, key="ws_plan_table")
        if plan.held:
            shown = f"; the first {len(plan.held)} are shown" if plan.held_total > len(plan.held) else ""
            st.markdown(f"Held back ({plan.held_total}{shown})")
            st.dataframe([{"email": e, "step": step, "why": why} for e, step, why in plan.held], hide_index=True,
                         key="ws_held_table")


def attachments_section(reports, campaign: str, locked: bool) -> None:
    from email_automation.dashboard import fetch

    with st.container(border=True):
        st.markdown("**Attachments** sent with every message of the campaign")
        files = fetch(reports, "attached_files", campaign)
        st.text("\n".join(files) if files else "(none)")
        file_picker(ATTACH_UPLOAD, locked)

        def attach() -> str:
            upload = st.session_state.get(ATTACH_UPLOAD)
            if upload is None:
                raise EmailAutomationError("choose a file first")
            path = reports.attach_upload(campaign, upload.name, upload.getvalue())
            return f"{path.name} attached to every message of '{campaign}'."

        st.button("Attach", key="ws_attach_go", disabled=locked, on_click=_act, args=(reports, "attach", attach))
        if files:
            st.button("Remove all", key="ws_detach_go", disabled=locked, on_click=_act, args=(reports, "attach", lambda: (
                reports.detach_all(campaign), f"Messages of '{campaign}' carry no file of their own any more.")[1]))
        _result("attach")


def pause_section(reports, campaign: str, locked: bool) -> None:
    from email_automation.dashboard import fetch

    state = dict(fetch(reports, "campaigns")).get(campaign)
    with st.container(border=True):
        st.markdown(f"**Sending** is {'paused' if state == 'paused' else 'active'} for this campaign")
        pausing = state != "paused"

        sure = f"ws_pause_sure_{campaign}"

        def toggle() -> str | tuple[str, str]:
            if not st.session_state.get(sure):
                return NOT_SURE
            (reports.pause if pausing else reports.resume)(campaign)
            st.session_state[sure] = False
            return f"Campaign '{campaign}' {'paused' if pausing else 'resumed'}."

        tick, button = st.columns([1, 3], vertical_alignment="center")
        tick.checkbox("I am sure", key=sure, disabled=locked)
        button.button("Pause" if pausing else "Resume", key="ws_pause_go", disabled=locked, on_click=_act,
                      args=(reports, "pause", toggle))
        _result("pause")
