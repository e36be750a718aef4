"""The Campaigns tab's follow-up steps: add one, change a step's wait, remove a step or a named
template's version of it, with the CLI's library calls (`step add`, `step set --after-days`,
`step remove [--template NAME]`) through `dashboard_data.Reports`. Only once the dashboard
password is entered; each result is shown as the tab's other actions show theirs.

Streamlit runs the dashboard as a script, hence the absolute imports.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from email_automation.database import MAX_WAIT_DAYS
from email_automation.workspace import TemplateDraft

NEW_STEP = 0  # the Step box's "+ new follow-up step"
WAIT_FIELD = "ws_after_days_"  # a wait's number input (one of the editor's FORM_FIELDS)
DEFAULT_WAIT = 3  # business days, what a new step's wait starts at
EDITOR_FIELDS = ("ws_subjects_", "ws_html_", "ws_text_")


def step_key(campaign: str) -> str:
    """The Step box's widget key."""
    return f"ws_step_{campaign}"


def _sure_key(campaign: str, number: int, template: str | None) -> str:
    """The "I am sure" tick of one Remove button: a tick given for one step or version is not another's."""
    return f"ws_step_remove_sure_{campaign}_{number}_{template or ''}"


def step_label(number: int) -> str:
    if number == NEW_STEP:
        return "+ new follow-up step"
    return "Step 1: the first message" if number == 1 else f"Step {number}: follow-up"


def new_step_wait(campaign: str, number: int, locked: bool) -> str:
    """The new step's wait, a field of the editor's form; returns its widget key."""
    key = f"{WAIT_FIELD}{campaign}_newstep"
    st.number_input(f"Wait: business days after step {number - 1} was sent", min_value=1, max_value=MAX_WAIT_DAYS,
                    value=DEFAULT_WAIT, step=1, key=key, disabled=locked)
    return key


def add_action(reports, campaign: str, draft: Callable[[], TemplateDraft], fields: set[str]) -> Callable[[], str]:
    """The "Add step" click: `step add` with the form's wait and content; on success the form's
    `fields` start blank again and the Step box shows the new step."""
    wait = f"{WAIT_FIELD}{campaign}_newstep"

    def add() -> str:
        after_days = int(st.session_state.get(wait, DEFAULT_WAIT))
        number, notes = reports.add_step(campaign, after_days, draft())
        _forget(lambda key: key in fields)
        st.session_state[step_key(campaign)] = number  # a callback runs before the box is drawn
        return "\n\n".join([f"Step {number} added to campaign '{campaign}': {after_days} business day(s) after step "
                             f"{number - 1}.", *notes])

    return add


def wait_field(campaign: str, number: int, wait: int) -> str:
    """The widget key of step `number`'s wait: with the stored wait in it, so that a wait changed
    elsewhere (`step set --after-days`) shows, not what was typed here before."""
    return f"{WAIT_FIELD}{campaign}_step{number}_{wait}"


def step_controls(reports, campaign: str, number: int, wait: int, template: str | None, inherited: bool,
                  locked: bool) -> None:
    """Under the editor of follow-up step `number`: its wait, and Remove: the step itself for its
    own version (`template` None), else that named template's version. Their result is the
    editor's "step" result (shown after a removal too, on the step before)."""
    from email_automation.dashboard_campaigns import _act

    key = wait_field(campaign, number, wait)

    def change() -> str:
        after_days = int(st.session_state[key])
        reports.set_wait(campaign, number, after_days)
        _forget(lambda k: k == key)  # the field of the new wait starts at it
        return f"Step {number} of campaign '{campaign}' updated: {after_days} business day(s) after step {number - 1}."

    with st.form(f"ws_wait_form_{campaign}_{number}", border=False):
        field, button = st.columns([3, 1], vertical_alignment="bottom")
        field.number_input(f"Wait: business days after step {number - 1} was sent (now {wait}; a new wait applies "
                           "to everyone not yet sent this step)", min_value=1, max_value=MAX_WAIT_DAYS, value=wait,
                           step=1, key=key, disabled=locked)
        button.form_submit_button("Change wait", key="ws_wait_go", disabled=locked, on_click=_act,
                                  args=(reports, "step", change))
    if template is None:
        label, hint = f"Remove step {number}", "Refused once the step (or a later one) was sent to anyone."
    elif inherited:
        label, hint = f"Remove the '{template}' version of step {number}", (
            f"Template '{template}' has no version of its own of step {number}: its recipients get the step's own.")
    else:
        label, hint = f"Remove the '{template}' version of step {number}", (
            "Its recipients get the step's own version again.")
    sure, button = st.columns([1, 3], vertical_alignment="center")
    sure.checkbox("I am sure", key=_sure_key(campaign, number, template), disabled=locked or inherited)
    button.button(label, key="ws_step_remove_go", help=hint, disabled=locked or inherited, on_click=_act,
                  args=(reports, "step", _remove_action(reports, campaign, number, template)))


def _remove_action(reports, campaign: str, number: int, template: str | None) -> Callable[[], str | tuple[str, str]]:
    """The Remove click: a removal cannot be undone (the content is gone), so it asks for the tick."""
    from email_automation.dashboard_campaigns import NOT_SURE

    sure = _sure_key(campaign, number, template)

    def remove() -> str | tuple[str, str]:
        if not st.session_state.get(sure):
            return NOT_SURE
        reports.remove_step(campaign, number, template)
        _forget(lambda key: key == sure)
        if template is not None:  # the version's fields would show it still
            _forget(lambda key: key in {f"{field}{campaign}_step{number}_{template}" for field in EDITOR_FIELDS})
            return (f"Step {number}, template '{template}', removed from campaign '{campaign}': "
                    "its recipients get the step's own version.")
        forget_steps(campaign, number)
        st.session_state[step_key(campaign)] = number - 1
        return f"Step {number} removed from campaign '{campaign}'."

    return remove


def forget_steps(campaign: str, first: int) -> None:
    """Drop what the editor holds for the campaign's steps from `first` on (drafts, template
    picked, wait typed): a removal moved the later steps up, and step n's drafts are not step n+1's."""
    prefixes = tuple(f"{p}{campaign}_step" for p in (*EDITOR_FIELDS, WAIT_FIELD, "ws_template_"))

    def of_a_later_step(key: str) -> bool:
        if not key.startswith(prefixes):
            return False
        rest = key[len(next(p for p in prefixes if key.startswith(p))):]
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        return bool(digits) and int(digits) >= first and rest[len(digits):][:1] in ("", "_")

    _forget(of_a_later_step)


def _forget(drop: Callable[[str], bool]) -> None:
    for key in [k for k in st.session_state if isinstance(k, str) and drop(k)]:
        del st.session_state[key]
