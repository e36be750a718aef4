"""`status` answers as fast as the libraries it needs allow: it loads none of the sending or import ones."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from email_automation import database

# What only sending, importing or the dashboard need.
NOT_FOR_STATUS = ("boto3", "botocore", "streamlit", "pandas", "jinja2", "email_validator", "css_inline",
                  "inscriptis", "lxml", "tenacity", "imapclient")


def test_status_loads_no_sending_or_import_library(tmp_path):
    database.init_db(tmp_path / "s.db").close()
    code = f"""
        import sys
        from email_automation.cli import main
        sys.argv = ["email-automation", "status", "--db", "s.db"]
        try:
            main()
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted(m for m in {NOT_FOR_STATUS!r} if m in sys.modules))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
