"""Every recipient has every CSV column its templates read.

A template reads a CSV column when it names a variable that is no recipient field or built-in
(email_templates.column_reads). A recipient gets its named template (its `template` column) or
the campaign's own, then each follow-up step's version for that template, else the step's own.
Two places keep the rule, so that a run never meets a recipient its templates cannot render
(which holds back the whole campaign):

- an import works out once per file which of its templates read a column the file lacks
  (`missing_columns`), and refuses the rows that would get one of them;
- a template change is checked against every recipient who may still get the template (at that
  step and not sent it, whatever their status: a failed, skipped or unknown one can come back
  through `retry-failed`, `unsuppress`, `mark EMAIL none` or `resolve --pending`; or sent an
  earlier one), one query per column (`require`). Before any
  such recipient exists, the change is accepted with a note: the import will hold the line.

The run's own render of every message before its first send stays the last guard.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .database import subject_variants
from .errors import TemplateRenderError

# Core recipient columns exposed to templates; every key of the `fields` JSON is added too.
RECIPIENT_COLUMNS = ("email", "first_name", "last_name", "company")
# What `recipient_context` adds for every recipient; `subject` is the rendered subject (bodies only).
BUILTIN_VARIABLES = ("fields", "sender_email", "sender_name", "campaign", "unsubscribe_url", "physical_address")

# Recipients who may still get step `?` (twice): at an earlier step, or at this one and not sent
# it (pending; failed, unknown ones can come back, see above, and skipped ones that `unsuppress`
# or `mark EMAIL none` bring back: suppressed, or stopped by a reply; not those skipped by hand or
# for having been mailed in another campaign, whom nothing brings back).
_MAY_GET = ("(r.step < ? OR (r.step = ? AND r.status != 'sent' AND (r.status != 'skipped'"
            " OR r.last_error LIKE 'suppressed: %' OR r.last_error LIKE 'stopped by a reply: %')))")
# The recipient's `fields` JSON has no such key (json_type is NULL for a missing path;
# https://www.sqlite.org/json1.html#jtype). CASE: json_type raises on text that is not JSON.
_LACKS = "CASE WHEN json_valid(r.fields) THEN json_type(r.fields, ?) END IS NULL"


@dataclass(frozen=True)
class Audience:
    """Who gets one template: the recipients of `segment` (an SQL condition on `r`, with `args`) at `step`."""

    label: str  # as a note names it: "template 'startup'", "step 2 of template 'bank'"
    step: int
    segment: str
    args: tuple = ()


def own_template() -> Audience:
    """Step 1 of the recipients without a named template."""
    return Audience("the campaign's own template", 1, "r.template IS NULL")


def named_template(name: str, step: int = 1) -> Audience:
    """Step `step` of the recipients of named template `name`: its own, or its version of a follow-up."""
    return Audience(f"template {name!r}" if step == 1 else f"step {step} of template {name!r}", step,
                    "r.template = ?", (name,))


def step_default(step: int, step_id: int | None) -> Audience:
    """Follow-up `step`'s own version: everyone whose template has no version of it (`step_id`
    None: a step being added, which has none)."""
    if step_id is None:
        return Audience(f"step {step}", step, "1")
    return Audience(f"step {step}", step, "r.template IS NULL OR r.template NOT IN"
                                          " (SELECT name FROM step_templates WHERE step_id = ?)", (step_id,))


def require(conn: sqlite3.Connection, campaign: str, audience: Audience, reads: Mapping[str, str], *,
            where: str = "", instead: str | None = None) -> list[str]:
    """Check that every recipient of `audience` has each column of `reads` ({column: where it is
    read, e.g. "HTML body template line 2"}); returns the note to show when none of them exists yet.

    `where` starts an error. `instead`: the change gives `audience` this template (e.g. "the
    campaign's own template") in place of theirs; it is named in the error, and no note is given.

    Raises:
        TemplateRenderError: naming one recipient who lacks a column, and the column.
    """
    if not reads:
        return []
    base = (f"FROM recipients r JOIN campaigns c ON c.id = r.campaign_id WHERE c.name = ? AND ({audience.segment})"
            f" AND {_MAY_GET}")
    args = (campaign, *audience.args, audience.step, audience.step)
    if conn.execute(f"SELECT 1 {base} LIMIT 1", args).fetchone() is None:
        return [] if instead else [_note(list(reads), audience.label)]
    for column, place in reads.items():
        row = conn.execute(f"SELECT r.email, r.status {base} AND {_LACKS} LIMIT 1",
                           (*args, f'$."{column}"')).fetchone()
        if row is None:
            continue
        fix = f"write {{{{ {column} | default('') }}}} to make it optional" + (
            ", or skip that recipient" if row[1] in ("pending", "failed", "sent") else "")
        if instead:
            raise TemplateRenderError(f"{where}{row[0]} ({row[1]}) would get {instead}, whose {place} reads "
                                      f"{{{{ {column} }}}}, and has no {column!r} column; {fix}")
        raise TemplateRenderError(f"{where}{place} reads {{{{ {column} }}}}, but {row[0]} ({row[1]}), who may still "
                                  f"get this template, has no {column!r} column; {fix}")
    return []


def _note(columns: list[str], label: str) -> str:
    names = ", ".join(repr(column) for column in columns)
    if len(columns) == 1:
        return (f"Note: {names} is not a column of any recipient waiting for {label} yet: import refuses rows "
                "for it without that column.")
    return (f"Note: {names} are not columns of any recipient waiting for {label} yet: import refuses rows "
            "for it without those columns.")


_LABELS = {"subject": "subject", "html": "HTML body", "text": "text body"}


def stored_reads(subjects: list[str], html: str, text: str | None) -> dict[str, str]:
    """The columns a stored template reads ({column: where}), as `check_template` finds them; a
    part that no longer parses reads none here (the run reports it). Simple parts are read
    without Jinja (`_plain_reads`): an import of a campaign whose templates are all simple does
    not load it (Jinja's import alone was 5% of a 200,000-row import)."""
    found: dict[str, str] = {}
    for part, source in [*(("subject", s) for s in subjects), ("html", html), ("text", text)]:
        reads = _plain_reads(part, source) if source else {}
        if reads is None:
            from jinja2 import TemplateSyntaxError

            from .email_templates import column_reads

            try:
                reads = column_reads(part, source)
            except (TemplateSyntaxError, RecursionError):
                continue
        for column, line in sorted(reads.items(), key=lambda item: item[1]):
            found.setdefault(column, f"{_LABELS[part]} template line {line}")
    return found


# Jinja's default syntax (https://jinja.palletsprojects.com/en/stable/templates/#synopsis): a tag
# starts at the first `{{`, `{%` or `{#`; strings are quoted with ' or " and backslash escapes.
_TAG = re.compile(r"\{[{%#]")
_STRING = re.compile(r"'[^'\\]*(?:\\.[^'\\]*)*'" + r'|"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NAME = re.compile(r"[^\W\d]\w*")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_NOT_NEWLINE = re.compile(r"[^\r\n]")
# What a plain tag may hold besides names and strings: no `.` `|` `[` `(` `:` (attributes,
# filters, subscripts, calls with keyword arguments, dicts), whose names are not all variables.
_PLAIN = re.compile(r"[\s\d=!<>~+\-*/%,]*")
# Names that are never a variable read in an expression, and the statements a plain part may use.
_OPERATORS = frozenset({"and", "or", "not", "in", "if", "else", "true", "false", "none", "True", "False", "None"})
_STATEMENTS = frozenset({"if", "elif", "else", "endif"})
# Names Jinja fills itself (its globals and loop variables): left to Jinja, which knows them.
_JINJA_NAMES = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self", "caller",
                          "varargs", "kwargs", "super"})


def _plain_reads(part: str, source: str) -> dict[str, int] | None:
    """`email_templates.column_reads` of a template made only of `{{ expression }}` and `{% if %}`
    tags over names, strings and operators, where every name is a variable read; None for any
    other template (a filter, a loop, a `set`, a comment...), which Jinja must read."""
    known = {*RECIPIENT_COLUMNS, *BUILTIN_VARIABLES, *([] if part == "subject" else ["subject"])}
    reads: dict[str, int] = {}
    position = 0
    while (tag := _TAG.search(source, position)) is not None:
        statement = tag.group() == "{%"
        if tag.group() == "{#":
            return None
        end = source.find("%}" if statement else "}}", tag.end())
        if end < 0:
            return None
        body = source[tag.end():end]
        bare = _STRING.sub(lambda m: _NOT_NEWLINE.sub(" ", m.group()), body)  # same length: names keep their place
        if "'" in bare or '"' in bare or "{" in bare or "}" in bare:
            return None  # a string or brace that may hide where the tag ends
        names = list(_NAME.finditer(bare))
        if statement:
            if not names or names[0].group() not in _STATEMENTS:
                return None
            names = names[1:]
        if _PLAIN.fullmatch(_NAME.sub(" ", bare)) is None:
            return None
        for name in names:
            word = name.group()
            if word in _JINJA_NAMES or word == "is" or (name.start() and bare[name.start() - 1].isdigit()):
                return None  # Jinja's own name, a test (`is defined`), or part of a number (`1e5`)
            if word not in _OPERATORS and word not in known and word not in reads:
                reads[word] = len(_NEWLINE.findall(source, 0, tag.end() + name.start())) + 1
        position = end + 2
    return reads


def template_reads(conn: sqlite3.Connection, campaign: str) -> dict[str | None, dict[str, str]]:
    """For each template an imported row may get (None: the campaign's own, else a named one):
    {column: which template reads it}, over it and each follow-up step's version for it (else the
    step's own). Empty for a campaign that does not exist yet."""
    row = conn.execute("SELECT * FROM campaigns WHERE name = ?", (campaign,)).fetchone()
    if row is None:
        return {}
    steps = conn.execute("SELECT * FROM campaign_steps WHERE campaign_id = ? ORDER BY step", (row["id"],)).fetchall()
    versions = {(v["step_id"], v["name"]): v for v in conn.execute(
        "SELECT * FROM step_templates WHERE step_id IN (SELECT id FROM campaign_steps WHERE campaign_id = ?)",
        (row["id"],))}
    found: dict[str | None, dict[str, str]] = {}
    sources = [(None, row), *((t["name"], t) for t in conn.execute(
        "SELECT * FROM templates WHERE campaign_id = ? ORDER BY id", (row["id"],)))]
    for name, source in sources:
        reads = dict.fromkeys(stored_reads(subject_variants(source), source["html_template"], source["text_template"]),
                              "the campaign's own template" if name is None else f"template {name!r}")
        for step in steps:
            version = versions.get((step["id"], name))
            by = f"step {step['step']}" + (f" of template {name!r}" if version else "")
            content = version or step
            for column in stored_reads([content["subject_template"]] if content["subject_template"] else [],
                                       content["html_template"], content["text_template"]):
                reads.setdefault(column, by)
        found[name] = reads
    return found


def missing_columns(reads: Mapping[str | None, Mapping[str, str]], columns: set[str]) -> dict[str | None, tuple[str, str]]:
    """Per template of `reads` (see `template_reads`), the first (column, which template reads it)
    that a file with these extra `columns` lacks; templates it has every column of are left out."""
    found = {}
    for name, needed in reads.items():
        gap = next(((column, by) for column, by in needed.items() if column not in columns), None)
        if gap is not None:
            found[name] = gap
    return found


def lacks_columns(row: Any, columns: Mapping[str, str]) -> bool:
    """Whether `with_columns` has to add one of `columns` to this recipient's row: then they will
    never get the template (every one who may has them all), so its subject may be empty for them."""
    from .email_templates import recipient_fields

    return not set(columns) <= set(recipient_fields(row))


def with_columns(row: Any, columns: Mapping[str, str]) -> dict[str, Any]:
    """A recipient row as a mapping whose `fields` has every one of `columns` (an empty value for
    those it lacks): to render a template for a recipient who will never get it, only to check it."""
    from .email_templates import recipient_fields

    fields = recipient_fields(row)
    for column in columns:
        fields.setdefault(column, "")
    return {**dict(row), "fields": json.dumps(fields)}
