"""A template cannot hang or exhaust a run: rendering is bounded in time and size."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from typer.testing import CliRunner

from email_automation import template_limits
from email_automation.cli import app
from email_automation.database import connect
from email_automation.email_templates import CampaignTemplate, check_template
from email_automation.errors import TemplateRenderError

runner = CliRunner()

RECIPIENT = {"email": "ada@example.org", "first_name": "Ada", "last_name": "", "company": "",
             "fields": json.dumps({"role": "CTO"})}


class TickingClock:
    """Each reading is 10 ms after the last: a render that keeps looping meets the deadline
    after about a hundred checks, on any machine, without sleeping."""

    def __init__(self) -> None:
        self.readings = itertools.count()

    def __call__(self) -> float:
        return next(self.readings) * 0.01


def render(settings, html, subject="Hi", clock=time.monotonic):
    return CampaignTemplate("spring", subject, html, clock=clock).render(RECIPIENT, settings)


@pytest.mark.parametrize("html", [
    # the case: 10^10 iterations, nothing output
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    # the same without range(): loops over a long string
    "{% set s = 'x' * 50000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    # recursion through a macro, each level looping
    "{% macro f(n) %}{% for i in range(10) %}{{ f(n) if n else '' }}{% endfor %}{% endmacro %}{{ f(1) }}",
])
def test_a_template_that_loops_forever_stops_at_the_deadline_naming_the_template(settings, html):
    with pytest.raises(TemplateRenderError) as caught:
        render(settings, html, clock=TickingClock())
    assert str(caught.value) == (
        "campaign 'spring': the HTML body template stopped for ada@example.org: rendering took longer "
        f"than {template_limits.MAX_RENDER_SECONDS:g} s (loops too large?)")


@pytest.mark.parametrize("expression", [
    "'x' * 10**9", "10**9 * 'x'", "['x'] * 10**9", "'%1000000000s' % 'x'", "'%.1000000000f' % 1", "'{:>1000000000}'.format('x')",
    "'{0:{1}}'.format('x', 10**9)", "'{:.1000000000f}'.format(1.0)", "'%0*d' % (10**9, 1)",
    "'x'.ljust(10**9)", "'x'|center(10**9)", "('x' * 900000)|replace('x', 'yy')", "range(100000)|join('x' * 20)",
    "('x\n' * 400000)|indent(10)", "10 ** (10 ** 10)",
])
def test_a_value_too_large_is_refused_before_it_is_built(settings, expression):
    with pytest.raises(TemplateRenderError) as caught:
        render(settings, f"<p>{{{{ {expression} }}}}</p>")
    assert str(caught.value).startswith("campaign 'spring': the HTML body template stopped for ada@example.org: ")
    message = str(caught.value)
    assert "more than the limit of 1,000,000" in message or "too large" in message or "not allowed" in message
    assert "a value would be" not in message, "refused only after it was built"


def test_output_stops_once_past_the_size_cap(settings):
    html = "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"  # 10 MB, 100 bytes at a time
    with pytest.raises(TemplateRenderError, match="the output would be 1,000,0.. characters, more than the limit"):
        render(settings, html)


def test_ordinary_templates_render_as_before(settings):
    html = "{% for i in range(3) %}{{ loop.index }}{{ 'ab' * 2 }}{% endfor %} {{ 'a-b'|replace('-', '+') }} {{ [1, 2]|join(',') }}"
    assert "1abab2abab3abab a+b 1,2" in render(settings, html).html


def test_template_set_does_not_fold_a_huge_constant_at_compile_time():
    start = time.perf_counter()
    check_template("Hi", "<p>{{ 'x' * 10**9 }} {{ 'y'|center(10**9) }} {{ 10 ** (10 ** 10) }}</p>", None)
    assert time.perf_counter() - start < 5  # folding would allocate gigabytes or compute for hours


def test_a_hanging_template_is_refused_by_template_set_and_stops_preview_as_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(template_limits, "MAX_RENDER_SECONDS", 0.05)  # a real clock, a short deadline
    db = str(tmp_path / "t.db")
    csv = tmp_path / "people.csv"
    csv.write_text("email,first_name\nada@example.org,Ada\n")
    hang = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    (tmp_path / "hang.html").write_text(hang)
    assert runner.invoke(app, ["init", "--db", db]).exit_code == 0
    assert runner.invoke(app, ["import", str(csv), "--db", db]).exit_code == 0
    expected = ("Error: campaign 'default': the HTML body template stopped for ada@example.org: "
                "rendering took longer than 0.05 s (loops too large?)\n")
    refused = runner.invoke(app, ["template", "set", "--html", str(tmp_path / "hang.html"), "--db", db])
    assert (refused.exit_code, refused.stderr) == (2, expected)
    with connect(db) as conn:  # as stored by an older version, which did not render at `template set`
        conn.execute("UPDATE campaigns SET html_template = ?", (hang,))
    result = runner.invoke(app, ["preview", "--db", db])
    assert (result.exit_code, result.stderr) == (2, expected)
