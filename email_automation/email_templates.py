"""Campaign templates: compiled once per campaign, rendered once per recipient.

Jinja2 runs sandboxed with StrictUndefined, so a typo in a variable name stops at the first
recipient instead of sending "Hi ," to everyone. The HTML body is autoescaped: recipient data
(names, companies, CSV columns) can never inject markup. The subject is rendered without HTML
escaping and collapsed to one line. CSS is inlined once on the template *source* (Jinja tags
protected as HTML comments), not once per message. Rendering is bounded in time and size
(template_limits.py). `check_template` lists the CSV columns a template reads, which
template_columns.py requires of every recipient who gets it.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from markupsafe import Markup

from .database import subject_variants  # noqa: F401 - part of this module's API (rows -> their subjects)
from .errors import TemplateRenderError
from .plain_text import DerivedText, html_to_text
from .template_columns import BUILTIN_VARIABLES, RECIPIENT_COLUMNS
from .template_limits import MAX_OUTPUT_CHARS, BoundedSandboxedEnvironment, TemplateLimitError, render_bounded
from .unsubscribe import url_for as unsubscribe_url_for



@dataclass(frozen=True)
class RenderedEmail:
    """One recipient's message content, ready for `messages.build_message`.

    `template` names the named template used (None: the campaign's own) and `subject_variant` is
    the source of the subject template chosen (None for a recipient's custom subject).
    """

    subject: str
    html: str
    text: str
    template: str | None = field(default=None, compare=False)  # provenance, not content
    subject_variant: str | None = field(default=None, compare=False)


class Fields(dict):
    """A recipient's extra CSV columns, the `fields` variable."""


# What `fields` offers besides its columns: the mapping's readers, for `{{ fields.get('x', '') }}`
# and `{% for name, value in fields.items() %}`. A column of one of these names is the column.
FIELDS_METHODS = frozenset({"get", "items", "keys", "values"})


def _no_column(name: str) -> str:
    return f"fields has no {name!r} column"


class _Reader(StrictUndefined):
    """One of FIELDS_METHODS taken from `fields` for a recipient without a column of its name:
    called, the mapping's method; otherwise the column that recipient lacks, undefined as any
    (printed, an error; `| default(...)` and `is defined` see it missing). Its text was
    `<built-in method items of ...>`."""

    __slots__ = ("_method",)
    # What the sandbox and Jinja's call ask of a callable (is_safe_callable, _PassArg.from_obj):
    # an undefined object's other attributes are errors.
    unsafe_callable = alters_data = False
    jinja_pass_arg = None

    def __init__(self, method: Callable[..., Any], name: str) -> None:
        super().__init__(hint=_no_column(name), name=name)
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)


class _Environment(BoundedSandboxedEnvironment):
    """`fields.x` and `fields['x']` are the column `x` or undefined (StrictUndefined: an error), as
    `{{ x }}` is: Jinja looks an attribute up before an item and an item before an attribute
    (https://jinja.palletsprojects.com/en/stable/templates/#variables), so `fields.items` printed
    dict's method for a recipient without an `items` column, and for one with it too."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Fields:
            if attribute in obj:
                return obj[attribute]
            if attribute not in FIELDS_METHODS:
                return self.undefined(hint=_no_column(attribute), obj=obj, name=attribute)
            return _Reader(super().getattr(obj, attribute), attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is Fields and isinstance(argument, str):
            return obj[argument] if argument in obj else self.undefined(hint=_no_column(argument), obj=obj,
                                                                         name=argument)
        return super().getitem(obj, argument)


def _environment(*, autoescape: bool) -> BoundedSandboxedEnvironment:
    return _Environment(autoescape=autoescape, undefined=StrictUndefined, keep_trailing_newline=True)


_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)

# Parts of a campaign, in the order errors name them.
_PARTS = {"subject": ("subject", _TEXT_ENV), "html": ("HTML body", _HTML_ENV),
          "text": ("text body", _TEXT_ENV)}


def check_template(subject: str | None, html: str | None, text: str | None, *,
                   campaign: str | None = None) -> dict[str, str]:
    """Compile the given templates without rendering them (used by `template set`); returns the CSV
    columns they read, each with where it is first read (`{"role": "subject template line 1"}`).

    A variable that is no recipient field or built-in is a CSV column, which template_columns.py
    checks against the recipients; one that no CSV header can become (`{{ Role }}`: headers become
    lower-case names) could never be filled, so it is refused here.

    Raises:
        TemplateRenderError: naming the part and line of the first syntax error or unknown variable.
    """
    found: dict[str, str] = {}
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        if source is None:
            continue
        label = _PARTS[part][0]
        if len(source) > MAX_OUTPUT_CHARS:
            raise TemplateRenderError(f"{_where(campaign)}the {label} template is {len(source):,} "
                                      f"characters, more than the limit of {MAX_OUTPUT_CHARS:,}")
        try:
            compiled = _compile(part, source, where=_where(campaign))
            if part == "subject" and _always_empty(source, compiled):
                raise TemplateRenderError(f"{_where(campaign)}the subject template renders empty whoever "
                                          "the recipient: every message needs a subject")
            for column, line in sorted(column_reads(part, source).items(), key=lambda item: item[1]):
                if column in RECIPIENT_COLUMNS:  # a plain {{ first_name }} is no column read: fields.first_name
                    raise TemplateRenderError(f"{_where(campaign)}{label} template line {line}: fields.{column} is "
                                              f"never set (fields holds the extra CSV columns only); write "
                                              f"{{{{ {column} }}}}")
                if not _can_be_column(column):
                    raise TemplateRenderError(_unknown(campaign, label, line, column))
                found.setdefault(column, f"{label} template line {line}")
        except RecursionError as err:  # Jinja's parser and compiler recurse once per nesting level
            raise TemplateRenderError(f"{_where(campaign)}the {label} template is nested too deeply") from err
    return found


def _where(campaign: str | None, step: int | None = None, template: str | None = None) -> str:
    """How an error starts: `campaign 'X': `, or for a follow-up step, which one (and whose version)."""
    if not campaign:
        return ""
    if step is None:
        return f"campaign {campaign!r}: "
    from .sequences import step_place

    return f"{step_place(campaign, step, template)}: "


# Through these a template may read a variable a recipient lacks: `{{ x | default('') }}`,
# `{% if x is defined %}` (https://jinja.palletsprojects.com/en/stable/templates/#jinja-filters.default).
_OPTIONAL_READS = frozenset({"default", "d", "defined", "undefined"})


def column_reads(part: str, source: str) -> dict[str, int]:
    """The variables a template part reads that are no recipient field or built-in (nor, in a body,
    `subject`), and the keys it reads from `fields` (`fields.role`, `fields['role']`), with the
    line of the first read: the CSV columns it needs. A read only through `| default(...)`, an
    `is defined` test, or inside `{% if x is defined %}` (or the `else` of `is undefined`) is left
    out: a recipient may lack it.

    Raises:
        jinja2.TemplateSyntaxError: the source does not parse.
    """
    tree = _PARTS[part][1].parse(source)
    known = {*RECIPIENT_COLUMNS, *BUILTIN_VARIABLES, *([] if part == "subject" else ["subject"])}
    context_names = meta.find_undeclared_variables(tree)
    undeclared = context_names - known
    guarded = {id(n.node) for n in tree.find_all((nodes.Filter, nodes.Test)) if n.name in _OPTIONAL_READS}
    guarded |= _read_where_defined(tree)
    lines: dict[str, int] = {}
    callees = {id(call.node) for call in tree.find_all(nodes.Call)}
    for node in tree.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)):
        column = _column_read(node, undeclared, "fields" in context_names, called=id(node) in callees)
        if column is not None and id(node) not in guarded:
            lines[column] = min(lines.get(column, node.lineno), node.lineno)
    return lines


def _column_read(node: nodes.Node, undeclared: set[str], fields_read: bool, *, called: bool) -> str | None:
    """The column `node` reads: an undeclared variable's name, or the key of `fields.key` or
    `fields['key']` (the built-in `fields` holds every extra column; StrictUndefined fails on a key
    the recipient lacks, as on a variable). Not a method of `fields` called (`fields.get('x')`)."""
    if isinstance(node, nodes.Name):
        return node.name if node.name in undeclared else None
    if not fields_read or (called and isinstance(node, nodes.Getattr) and node.attr in FIELDS_METHODS):
        return None
    return _read_key(node)


def _read_key(node: nodes.Node) -> str | None:
    """The column a guard tests or a read reads: `x`, `fields.x` and `fields['x']` are all column
    `x` (a recipient has both or neither)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, (nodes.Getattr, nodes.Getitem)) and isinstance(node.node, nodes.Name) and node.node.name == "fields":
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            return node.arg.value
    return None


def _read_where_defined(tree: nodes.Template) -> set[int]:
    """The reads of `x` (node ids) in a branch that runs only when `x` is defined: the body of
    `{% if x is defined %}` or `{{ ... if x is defined else ... }}` (also as one side of an `and`),
    the `else` of `x is undefined` (only as the whole test: the `else` of `x is undefined and y`
    also runs when y is false)."""
    inside: set[int] = set()
    for branch in tree.find_all((nodes.If, nodes.CondExpr)):
        if isinstance(branch, nodes.If):
            body, otherwise = branch.body, branch.else_
        else:
            body, otherwise = [branch.expr1], [branch.expr2] if branch.expr2 is not None else []
        tests, guards = [branch.test], []
        while tests:
            test = tests.pop()
            if isinstance(test, nodes.And):
                tests += [test.left, test.right]
            elif isinstance(test, nodes.Test) and (key := _read_key(test.node)) is not None and (
                    test.name == "defined" or (test.name == "undefined" and test is branch.test)):
                guards.append((key, body if test.name == "defined" else otherwise))
        for key, part in guards:
            inside |= {id(n) for top in part for n in (top, *top.find_all((nodes.Name, nodes.Getattr, nodes.Getitem)))
                       if _read_key(n) == key}
    return inside


def _can_be_column(name: str) -> bool:
    """A name an extra CSV column can have: what import_csv.field_key makes of a header is itself."""
    from .import_csv import field_key

    return name != "subject" and field_key(name, 0) == name


def _unknown(campaign: str | None, label: str, line: int, name: str) -> str:
    return (f"{_where(campaign)}{label} template line {line}: unknown variable {name!r}: not a recipient field "
            f"({', '.join(RECIPIENT_COLUMNS)}), a built-in ({', '.join(BUILTIN_VARIABLES)}) or a name a CSV column "
            "can have (a column `Job Title` is {{ job_title }})")


def _compile(part: str, source: str, *, where: str):
    label, env = _PARTS[part]
    try:
        return env.from_string(source)
    except TemplateSyntaxError as err:
        raise TemplateRenderError(f"{where}{label} template line {err.lineno}: {err.message}") from err


def _always_empty(source: str, subject: Any) -> bool:
    """Whether a subject that reads no variable renders empty (`{{ "" }}`, `{% if false %}...{% endif %}`):
    empty for every recipient, so refused before there are any. One that reads a variable, even
    optionally (`{{ role | default('') }}`), may not be empty for some: checked per recipient instead."""
    if meta.find_undeclared_variables(_TEXT_ENV.parse(source)):
        return False
    try:
        return not _one_line(render_bounded(subject, {}))
    except Exception:  # any render error (`{{ 1 / 0 }}`): the first recipient's render reports it
        return False


# --- recipient data -----------------------------------------------------------------------

def _row_get(row: Any, key: str, default: Any = None) -> Any:
    """Read a column from a sqlite3.Row or a mapping, tolerating absent columns."""
    keys = row.keys() if hasattr(row, "keys") else ()
    return row[key] if key in keys else default


def recipient_fields(recipient_row: Any) -> dict[str, Any]:
    """The extra CSV columns stored as JSON in `recipients.fields` (a dict, possibly empty)."""
    raw = _row_get(recipient_row, "fields")
    if isinstance(raw, Mapping):
        return dict(raw)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as err:
        email = _row_get(recipient_row, "email", "?")
        raise TemplateRenderError(f"recipient {email}: extra fields are not a JSON object: {err}") from err
    return dict(value) if isinstance(value, Mapping) else {}


def recipient_context(recipient_row: Any, settings: Any, campaign_name: str) -> dict[str, Any]:
    """Every variable a template may use for this recipient.

    Extra CSV columns come first so that a column called e.g. `unsubscribe_url` or
    `sender_email` can never override what the sender configured.
    """
    fields = recipient_fields(recipient_row)
    context: dict[str, Any] = dict(fields)
    for column in RECIPIENT_COLUMNS:
        value = _row_get(recipient_row, column)
        context[column] = "" if value is None else value
    context.update(
        fields=Fields(fields),  # every extra column as one mapping: {{ fields.role }}, {{ fields.get("role", "") }}
        sender_email=settings.sender_email,
        sender_name=settings.sender_name,
        campaign=campaign_name,
        unsubscribe_url=unsubscribe_url_for(settings, context["email"]),
        physical_address=settings.physical_address,
    )
    return context


# --- CSS inlining, once per template --------------------------------------------------------

_INLINER = None  # made at the first template (css-inline loads then)
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_MARK = "EAJINJA"
_JINJA_IN_COMMENT = re.compile(r"<!--(?:(?!-->).)*?(?:\{\{|\{%|\{#)", re.DOTALL)
_DOCUMENT_TAG = re.compile(r"<(?:!doctype|html|head|body)[\s>]", re.IGNORECASE)


def _inline_css(html_source: str) -> str:
    """Move <style> rules into style="" attributes (the one call into css-inline)."""
    global _INLINER
    if _INLINER is None:
        import css_inline

        # keep_at_rules: @media queries cannot be inlined; they stay in a <style> so layouts stay responsive.
        # load_remote_stylesheets=False: compiling a template never fetches anything from the network.
        _INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
    return _INLINER.inline(html_source)


def inline_template_source(source: str) -> str | None:
    """Inline CSS into a Jinja HTML template without touching its Jinja tags.

    Each tag is swapped for an HTML comment, which the HTML parser keeps in place even inside
    <table> (plain text there would be moved out of the table), inlined, then swapped back.
    Returns None when the tags did not come back intact (tags inside <style>, inside a tag or an
    HTML comment): the caller then inlines each rendered message instead.
    """
    if _MARK in source or _JINJA_IN_COMMENT.search(source):
        return None
    if not _DOCUMENT_TAG.search(source):
        # A fragment: the HTML parser would add <html><head><body> at the first content, which
        # may sit inside `{% if %}`, leaving the other branches without them. Add them around it.
        source = f"<html><head></head><body>{source}</body></html>"
    tags: list[str] = []

    def protect(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return f"<!--{_MARK}{len(tags) - 1}-->"

    inlined = _inline_css(_JINJA_TAG.sub(protect, source))
    # Inside <title>/<textarea> the comment is text, and comes back entity-escaped.
    marker = re.compile(rf"(?:<!--|&lt;!--){_MARK}(\d+)(?:-->|--&gt;)")
    if [int(m.group(1)) for m in marker.finditer(inlined)] != list(range(len(tags))):
        return None
    return marker.sub(lambda m: tags[int(m.group(1))], inlined)


def custom_body_html(body: str) -> str:
    """A recipient's plain-text custom body as escaped HTML paragraphs."""
    paragraphs = re.split(r"\n\s*\n", body.replace("\r\n", "\n").strip())
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in para.split("\n")) + "</p>"
        for para in paragraphs if para.strip()
    )


# A custom body replaces the campaign body, but keeps the unsubscribe link and postal address
# that CAN-SPAM and the Gmail/Yahoo bulk-sender rules require in every message.
_CUSTOM_BODY_PAGE = _HTML_ENV.from_string("""\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="margin: 0; padding: 0;">
<div style="max-width: 600px; padding: 24px 16px; font-family: Arial, Helvetica, sans-serif; \
font-size: 15px; line-height: 1.6; color: #222222;">
{{ body_html }}
<p style="margin-top: 32px; font-size: 12px; color: #777777;">
{%- if unsubscribe_url %}<a href="{{ unsubscribe_url }}" style="color: #777777;">Unsubscribe</a> and you will not hear from me again.
{%- else %}Reply "unsubscribe" and you will not hear from me again.{% endif %}
{%- if physical_address %}<br>{{ physical_address }}{% endif %}</p>
</div>
</body></html>
""")


# --- the compiled campaign -------------------------------------------------------------------

class CampaignTemplate:
    """A campaign's subject(s), HTML and optional text templates, compiled and CSS-inlined once.

    `subject` may be several variants; `render` is told which one. `template` names the named
    template this is (None: the campaign's own). `step`: the follow-up step this is (None: the
    first contact), for errors to name it. `clock` times each render against
    template_limits.MAX_RENDER_SECONDS.
    """

    def __init__(self, name: str, subject: str | Sequence[str], html: str, text: str | None = None, *,
                 clock: Callable[[], float] = time.monotonic, template: str | None = None,
                 step: int | None = None) -> None:
        self.name = name
        self.template = template
        self._where = _where(name, step, template)
        self._clock = clock
        self.subject_variants = (subject,) if isinstance(subject, str) else tuple(subject)
        self._subjects = [_compile("subject", variant, where=self._where) for variant in self.subject_variants]
        _compile("html", html, where=self._where)  # syntax errors with the author's line numbers
        inlined = inline_template_source(html)
        self._inline_each_message = inlined is None
        self._html = _compile("html", html if inlined is None else inlined, where=self._where)
        self._text = _compile("text", text, where=self._where) if text else None
        self._derived_text = DerivedText(lambda context: render_bounded(self._html, context, clock=self._clock))

    @classmethod
    def from_campaign(cls, campaign_row: Any, *, clock: Callable[[], float] = time.monotonic,
                      template_row: Any = None) -> CampaignTemplate:
        """Compile a `campaigns` row (name, subject_template, subject_variants, html_template,
        text_template), or with `template_row` that `templates` row of the campaign."""
        source = campaign_row if template_row is None else template_row
        return cls(campaign_row["name"], subject_variants(source), source["html_template"],
                   _row_get(source, "text_template"), clock=clock,
                   template=None if template_row is None else template_row["name"])

    def render(self, recipient_row: Any, settings: Any, *, derive_text: bool = True, variant: int = 0,
               subject_required: bool = True) -> RenderedEmail:
        """Render this campaign for one recipient, with subject variant number `variant` (modulo their count).

        `derive_text=False` leaves `text` empty when it would be converted from the HTML: a run
        checks that every message renders before the first send, and that conversion, the
        costliest step, cannot fail on HTML its template produced.

        A subject that comes out empty (or only whitespace) is an error, as an undefined variable
        is: every path that sends or shows a message renders it here, so none can send one without
        a subject. `subject_required=False` is for a caller that renders the template for someone
        who will not get this subject (their own custom_subject replaces it, or they lack a column
        it reads), only to check that it renders or to show it.

        Raises:
            TemplateRenderError: naming the campaign, the recipient and the problem, e.g. the
                variable that is not defined, or the subject that renders empty.
        """
        context = recipient_context(recipient_row, settings, self.name)
        custom_subject = (_row_get(recipient_row, "custom_subject") or "").strip()
        index = variant % len(self._subjects)
        subject = custom_subject or self._render("subject", self._subjects[index], context)
        context["subject"] = _one_line(subject)
        if not context["subject"] and subject_required:
            raise self._empty_subject(context["email"], index)
        custom_body = (_row_get(recipient_row, "custom_body") or "").strip()
        if custom_body:
            context["body_html"] = Markup(custom_body_html(custom_body))  # escaped line by line
            body = self._render("html", _CUSTOM_BODY_PAGE, context)
        else:
            body = self._render("html", self._html, context)
            if self._inline_each_message:
                body = _inline_css(body)
        if self._text is not None and not custom_body:
            text = self._render("text", self._text, context)
        elif not derive_text:
            text = ""
        elif custom_body or self._inline_each_message:
            text = html_to_text(body)
        else:
            text = self._derived_text.text(body, context)  # converted once per template, see plain_text.py
        return RenderedEmail(subject=context["subject"], html=body, text=text, template=self.template,
                             subject_variant=None if custom_subject else self.subject_variants[index])

    def _empty_subject(self, email: str, index: int) -> TemplateRenderError:
        """The error for a subject that renders empty: the message would go out as "(no subject)",
        which reads as a mistake; it names the variant and what the subject reads, to fill in."""
        which = f"subject variant {index + 1} of {len(self._subjects)}" if len(self._subjects) > 1 else "subject"
        names = subject_names(self.subject_variants[index])
        reads = f" (it reads {', '.join(names)})" if names else ""
        return TemplateRenderError(f"{self._where}the {which} renders empty for {email}{reads}: every message "
                                   "needs a subject; give them a value or change the template")

    def _render(self, part: str, template: Any, context: dict[str, Any]) -> str:
        try:
            return render_bounded(template, context, clock=self._clock)
        except TemplateLimitError as err:
            raise TemplateRenderError(
                f"{self._where}the {_PARTS[part][0]} template stopped for {context['email']}: {err}"
            ) from err
        except UndefinedError as err:
            raise TemplateRenderError(
                f"{self._where}cannot render the {_PARTS[part][0]} for "
                f"{context['email']}: {err.message} (add that column to the CSV, or change the template)"
            ) from err
        except Exception as err:  # sandbox SecurityError, filters on wrong types, 1/0, ...
            raise TemplateRenderError(
                f"{self._where}cannot render the {_PARTS[part][0]} for "
                f"{context['email']}: {type(err).__name__}: {err}"
            ) from err


def _one_line(value: str) -> str:
    """Collapse whitespace (including newlines from recipient data) so a subject stays one line."""
    return " ".join(value.split())


def subject_names(source: str) -> list[str]:
    """The variables and `fields` keys a subject template reads, sorted, to name in an error."""
    tree = _TEXT_ENV.parse(source)
    names = meta.find_undeclared_variables(tree) - {"fields"}
    names |= {f"fields.{key}" for node in tree.find_all((nodes.Getattr, nodes.Getitem)) if (key := _read_key(node)) is not None}
    return sorted(names)
