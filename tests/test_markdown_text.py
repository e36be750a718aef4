"""Names and messages shown in the dashboard's Markdown elements read as written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from email_automation.markdown_text import literal

PLAIN = {"text", "softbreak", "hardbreak"}
SIGNS = st.sampled_from(list("\\`*_[]<>|~$&#+-=.)!:( \n\t") + ["1.", "    ", "---", "***", "<b>", "&amp;", "[a](b)"])


def shown(markdown: str) -> tuple[set[str], str]:
    """The kinds of tokens CommonMark reads in `markdown`, and its text as a reader sees it."""
    kinds, text = set(), []
    for token in MarkdownIt("commonmark").parse(markdown):
        kinds.add(token.type)
        for child in token.children or []:
            kinds.add(child.type)
            text.append("\n" if child.type.endswith("break") else child.content)
        if token.type == "paragraph_close":
            text.append("\n")
    return kinds, "".join(text).rstrip("\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(SIGNS | st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=4),
                max_size=12).map("".join))
def test_markdown_reads_no_formatting_in_a_literal(text):
    kinds, seen = shown(literal(text))
    assert kinds <= {"paragraph_open", "inline", "paragraph_close"} | PLAIN
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert [line.strip() for line in seen.splitlines() if line.strip()] == lines


def test_a_campaign_named_in_markdown_is_shown_as_named():
    kinds, seen = shown(literal("Campaign '*new* $y$ `code`' created.\n# one\n1. two"))
    assert kinds <= {"paragraph_open", "inline", "paragraph_close"} | PLAIN
    assert seen == "Campaign '*new* $y$ `code`' created.\n# one\n1. two"
