"""Text shown as written where the dashboard's Streamlit elements read Markdown.

`st.success`, `st.error`, `st.caption` and `st.markdown` render their text as Markdown with
LaTeX (`$x$`) and directives (`:red[...]`): a campaign named `*Q1* $x$` came out in italics and
a formula, and an error naming it as well. Names and messages go through `literal` first.
"""

from __future__ import annotations

import re

# CommonMark shows an ASCII punctuation character after a backslash as itself
# (https://spec.commonmark.org/0.31.2/#backslash-escapes); Streamlit documents `\$` for a
# literal dollar sign (https://docs.streamlit.io/develop/api-reference/text/st.markdown).
# Escaped: the signs that format anywhere in a line (emphasis, code, links, HTML, tables,
# strike-through, LaTeX, entities), and those that format only at a line's start (headings,
# lists, quotes), there. The rest (a date's `-`, a sentence's `.`) reads the same either way.
_ANYWHERE = re.compile(r"([\\`*_\[\]<>|~$&])")
_LINE_START = re.compile(r"^()([#+\-=])", re.MULTILINE)
_LIST_NUMBER = re.compile(r"^(\d+)([.)])", re.MULTILINE)


# A line indented by four spaces would start a code block; a paragraph's lines are shown without
# their indentation anyway (https://spec.commonmark.org/0.31.2/#paragraphs).
_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)


def literal(text: str) -> str:
    """`text` with every sign Markdown would read as formatting escaped; its line breaks are kept."""
    escaped = _ANYWHERE.sub(r"\\\1", _INDENT.sub("", text))
    return _LIST_NUMBER.sub(r"\1\\\2", _LINE_START.sub(r"\1\\\2", escaped))
