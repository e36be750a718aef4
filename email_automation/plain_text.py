"""The text/plain alternative of an HTML body, and a shortcut that converts a template once, not every message.

Converting HTML to text (lxml parses it, inscriptis lays it out) is the costliest step of
building a message. Most messages of a campaign differ only in the recipient's values, so
`DerivedText` renders the HTML template once with a placeholder for each value, converts that
once, and fills each message's values into the result. It does so only when that is provably
the same text as converting the message's own HTML:

- the message's HTML is exactly the placeholder HTML with the (escaped) values put in, which
  holds for any template logic that did not look at the values beyond "empty or not" (checked
  every message, a string comparison);
- every placeholder sits in plain running text (a paragraph, a heading, a list item, the
  title), not in a table (cell widths follow their text), `<pre>`, a style, a script, a
  comment, an attribute or a link (whose " <target>" depends on its label and target), and not
  where it would complete an entity or a tag (`&am{{ x }}`, `<{{ x }}`);
- every value is printable text with no leading, trailing or repeated spaces (HTML collapses
  whitespace around it, which a placeholder has none of), and the message's HTML holds no
  private-use character (the placeholders' range) of its own.

Anything else takes the per-message conversion. tests/test_plain_text.py checks both give the
same text on generated templates and values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

# Links stay readable in text/plain as "text <url>", the delimiters RFC 3986 appendix C suggests.
_SHOWN_LINK_SCHEMES = ("http://", "https://", "mailto:")
# https://www.w3.org/TR/xml/#charsets: what a text node can hold.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_CONFIG = None  # inscriptis' ParserConfig, made at the first conversion (lxml and inscriptis load then)


def html_to_text(html_body: str) -> str:
    """A readable text/plain alternative of an HTML body: paragraphs, line breaks and link targets kept."""
    if not html_body.strip():
        return "\n"
    tree = _parse(html_body)
    _add_link_targets(tree)
    return _text_of(tree)


def _add_link_targets(tree: Any) -> None:
    """Each link's " <target>" after its label, where the text needs it (see link_suffix)."""
    for anchor in tree.iter("a"):
        suffix = link_suffix(anchor.get("href") or "", _label(anchor))
        if suffix:
            anchor.tail = suffix + (anchor.tail or "")


def link_suffix(href: str, label: str) -> str:
    """What follows a link's label in the text: ` <target>`, unless the label already says it.

    Characters XML cannot hold (a control character in a recipient's value) are left out: lxml
    refuses them in a text node.
    """
    href = href.strip()
    address = href[len("mailto:"):] if href.lower().startswith("mailto:") else href
    if href.lower().startswith(_SHOWN_LINK_SCHEMES) and label not in (href, address):
        return _NOT_XML.sub("", f" <{href}>")
    return ""


def _label(anchor: Any) -> str:
    return " ".join(anchor.text_content().split())


def _parse(html_body: str) -> Any:
    import lxml.html

    return lxml.html.document_fromstring(html_body)


def _text_of(tree: Any) -> str:
    global _TEXT_CONFIG
    from inscriptis import Inscriptis

    if _TEXT_CONFIG is None:
        from inscriptis.css_profiles import CSS_PROFILES
        from inscriptis.model.config import ParserConfig

        _TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"])  # the template source's indentation is not text
    text = Inscriptis(tree, _TEXT_CONFIG).get_text().replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"  # a list keeps its indent


# --- the shortcut ---------------------------------------------------------------------------

# Placeholders are private-use characters, which no value that takes the shortcut can hold (they
# are not printable). A value's placeholder: "\ue000" + one character numbering it + "\ue001".
# A message whose HTML holds a private-use character of its own (an icon font's) is converted.
_VALUE = "\ue000{}\ue001"
_FIRST, _LAST = 0xE100, 0xF8FF  # the numbers: the rest of the private use area
_PIECE = re.compile("(\ue000.\ue001)", re.DOTALL)
_PLACEHOLDER_CHARS = re.compile("[\ue000-\ue001]")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
# Running text whose layout does not depend on the length or content of its words.
_RUNNING = frozenset({
    "html", "body", "div", "p", "span", "br", "b", "strong", "i", "em", "u", "s", "small", "big", "sup", "sub",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "center", "font", "a", "section",
    "article", "header", "footer", "main", "address",
})
_HIDDEN = frozenset({"head", "title"})  # never in the text: a value there is left out both ways
# Text before a value that the value could complete into a tag (in the HTML) or an entity (in the
# parsed text, which inscriptis unescapes once more).
_OPEN_TAG = re.compile(r"<[!/?]?\Z")
_OPEN_ENTITY = re.compile(r"&[#A-Za-z0-9]*\Z")
MAX_SHAPES = 32  # different sets of empty values per template; beyond, each message is converted


@dataclass(frozen=True)
class _Skeleton:
    html: list[str | int]  # the placeholder HTML as pieces
    text: list[str | int]  # its text as pieces
    used: frozenset[int] = frozenset()  # the values the HTML shows: only those are checked and escaped


class DerivedText:
    """The text of one HTML template's messages, converted once per set of empty values.

    `render(context)` renders the template (the same compiled template the message came from).
    """

    def __init__(self, render: Callable[[dict[str, Any]], str]) -> None:
        self._render = render
        self._shapes: dict[tuple, _Skeleton | None] = {}

    def text(self, html_body: str, context: Mapping[str, Any]) -> str:
        """The text of `html_body`, which `render(context)` returned: `html_to_text(html_body)`, for less."""
        if _PRIVATE_USE.search(html_body):
            return html_to_text(html_body)
        names, values = _values(context)
        key = (names, *(bool(v) if isinstance(v, str) else repr(v) for v in values))
        if key not in self._shapes:
            if len(self._shapes) >= MAX_SHAPES:
                return html_to_text(html_body)
            self._shapes[key] = self._skeleton(context, names, values)
        skeleton = self._shapes[key]
        if skeleton is None or not all(_plain(values[n]) for n in skeleton.used):
            return html_to_text(html_body)
        if _fill(skeleton.html, {n: escape(values[n]) for n in skeleton.used}) != html_body:
            return html_to_text(html_body)
        return "".join(piece if isinstance(piece, str) else values[piece] for piece in skeleton.text)

    def _skeleton(self, context: Mapping[str, Any], names: tuple, values: list) -> _Skeleton | None:
        """The placeholder HTML and its text; None when a value's place is not plain running text."""
        if len(values) > _LAST - _FIRST:
            return None
        marked = _with_placeholders(context, names)
        try:
            html_body = self._render(marked)
        except Exception:  # noqa: BLE001 - a template that needs real values: convert each message
            return None
        if _PLACEHOLDER_CHARS.search(html_body) is None:
            return _Skeleton([html_body], [html_to_text(html_body)])  # no value shows: one text for all
        # Checked in the source too: how a parser keeps a half entity ("&#") differs between lxml versions.
        if not html_body.strip() or any(_OPEN_TAG.search(html_body, 0, m.start()) or _OPEN_ENTITY.search(html_body, 0, m.start())
                                        for m in re.finditer("\ue000", html_body)):
            return None
        tree = _parse(html_body)
        if _in_attribute_or_link(tree) or not _in_running_text(tree):
            return None
        _add_link_targets(tree)  # no value in any link: the same targets for every message
        text = _text_of(tree)
        shown = sum(part.count("\ue000") for part in _running_parts(tree))
        if text.count("\ue000") != shown:
            return None
        text_pieces, html_pieces = list(_pieces(text)), list(_pieces(html_body))
        if any(isinstance(p, int) and not 0 <= p < len(values) for p in (*text_pieces, *html_pieces)):
            return None  # the template's own text looks like a placeholder: convert each message
        return _Skeleton(html_pieces, text_pieces, frozenset(p for p in html_pieces if isinstance(p, int)))


def _values(context: Mapping[str, Any]) -> tuple[tuple, list]:
    """The context's names (top level, then `fields`'s keys) and their values, in one order."""
    fields = context.get("fields")
    extra = tuple(fields) if isinstance(fields, Mapping) else ()
    names = (tuple(k for k in context if k != "fields"), extra)
    values = [context[k] for k in names[0]] + [fields[k] for k in extra]
    return names, values


def _with_placeholders(context: Mapping[str, Any], names: tuple) -> dict[str, Any]:
    """The context with each non-empty text value replaced by its placeholder."""
    number = iter(range(len(names[0]) + len(names[1])))

    def mark(value: Any) -> Any:
        n = next(number)
        return _VALUE.format(chr(_FIRST + n)) if isinstance(value, str) and value else value

    marked = {k: mark(context[k]) for k in names[0]}
    if "fields" in context:
        marked["fields"] = {k: mark(context["fields"][k]) for k in names[1]}
    return marked


def _plain(value: str) -> bool:
    """A value HTML shows as it is: printable, no leading, trailing or repeated spaces, and no "&"
    (inscriptis unescapes the parsed text again, so "&amp;" would show as "&")."""
    return value.isprintable() and value == value.strip() and "  " not in value and "&" not in value


def _pieces(text: str) -> Iterator[str | int]:
    """Text, and the number of each value's placeholder in it."""
    for n, piece in enumerate(_PIECE.split(text)):
        if n % 2 == 0:
            if piece:
                yield piece
        else:
            yield ord(piece[1]) - _FIRST


def _fill(pieces: list, values: Mapping[int, str] | list) -> str:
    return "".join(piece if isinstance(piece, str) else str(values[piece]) for piece in pieces)


def _in_attribute_or_link(tree: Any) -> bool:
    """Whether a value sits in an attribute (a link's target among them) or a link's label.

    A link's " <target>" depends on both (it is left out when the label says the target, or for
    a target that is no URL), and is laid out with the text around it (a table's column widths,
    whitespace collapsed): such messages are converted one by one.
    """
    for node in tree.iter():
        if not isinstance(node.tag, str):
            continue
        if any("\ue000" in name or "\ue000" in value for name, value in node.attrib.items()):
            return True
        if node.tag == "a" and "\ue000" in _label(node):
            return True
    return False


def _in_running_text(tree: Any) -> bool:
    """Every value's place is running text or hidden (the title), never a comment or a table."""
    for node in tree.iter():
        if "\ue000" in (node.text or "") and (not isinstance(node.tag, str)  # a comment or processing instruction
                                              or _where(node) is None or _opens_entity(node.text)):
            return False
        if "\ue000" in (node.tail or "") and (_where(node.getparent()) is None or _opens_entity(node.tail)):
            return False
    return True


def _opens_entity(text: str) -> bool:
    """Whether a value in `text` follows "&..." that it could complete into an entity."""
    return any(_OPEN_ENTITY.search(text, 0, m.start()) for m in re.finditer("\ue000", text))


def _where(node: Any) -> str | None:
    """"running" or "hidden" for text inside `node`, None when its layout may depend on it."""
    tags = []
    while node is not None:
        tags.append(node.tag)
        node = node.getparent()
    if any(tag in _HIDDEN for tag in tags) and all(tag in _HIDDEN or tag == "html" for tag in tags):
        return "hidden"
    return "running" if all(tag in _RUNNING for tag in tags) else None


def _running_parts(tree: Any) -> Iterator[str]:
    """Every text and tail of running text (the parts that are shown)."""
    for node in tree.iter():
        if isinstance(node.tag, str) and _where(node) == "running":
            yield node.text or ""
        parent = node.getparent()
        if parent is not None and _where(parent) == "running":
            yield node.tail or ""
