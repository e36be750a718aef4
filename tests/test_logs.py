"""LOG_FILE: readable lines, rotated at a size so an unattended server never fills its disk."""

from __future__ import annotations

import logging
import re

import pytest

from email_automation import logs
from email_automation.errors import ConfigError

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING) ")


@pytest.fixture
def attach(request):
    """setup_file_logging, detached again after the test so no handler leaks into other tests."""

    def attach(*args, **kwargs):
        handler = logs.setup_file_logging(*args, **kwargs)
        request.addfinalizer(lambda: logs.close_file_logging(handler))
        return handler

    return attach


def test_lines_read_time_level_message(tmp_path, attach):
    path = tmp_path / "run.log"
    attach(path)
    logging.getLogger("email_automation.run").info("jane@example.com sent 0100018c-abc")
    logging.getLogger("email_automation.run").warning("3 recipient(s) are now 'unknown'")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert LINE.match(lines[0]) and lines[0].endswith(" INFO jane@example.com sent 0100018c-abc")
    assert lines[1].endswith(" WARNING 3 recipient(s) are now 'unknown'")


def test_small_max_bytes_rotates_into_numbered_readable_files(tmp_path, attach):
    path = tmp_path / "logs" / "run.log"  # the folder is created
    attach(path, max_bytes=500, backups=3)
    log = logging.getLogger("email_automation.run")
    for n in range(60):
        log.info("recipient%02d@example.com sent msg-%02d", n, n)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["run.log", "run.log.1", "run.log.2", "run.log.3"]  # older ones dropped
    for file in path.parent.iterdir():
        assert file.stat().st_size <= 500
        assert all(LINE.match(line) for line in file.read_text(encoding="utf-8").splitlines())
    newest = path.read_text(encoding="utf-8").splitlines()[-1]
    assert newest.endswith("recipient59@example.com sent msg-59")
    kept = "".join(p.read_text() for p in path.parent.iterdir())
    assert "recipient00@" not in kept  # beyond `backups` files, the oldest lines are gone


def test_setting_up_twice_does_not_double_lines(tmp_path, attach):
    path = tmp_path / "run.log"
    first = attach(path)
    assert attach(path) is first
    logging.getLogger("email_automation").info("once")
    assert path.read_text().count("once") == 1


def test_no_path_means_no_file_logging():
    assert logs.setup_file_logging(None) is None
    assert logs.setup_file_logging("") is None


def test_an_unwritable_log_file_is_a_config_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"^invalid setting LOG_FILE=.*not-a-folder/run.log: cannot write it"):
        logs.setup_file_logging(blocker / "run.log")
