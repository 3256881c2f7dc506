"""Checks for count-log-errors (run with the task's working directory as cwd)."""

import hashlib
from pathlib import Path

EXPECTED_ERRORS = 4  # lines whose second field is ERROR; two more lines only mention it
LOG_SHA256 = "699d00616c0dbd76add367b326ce3b43ad3a6d15081344cb606ec088cc614631"


def test_count_file_exists():
    assert Path("error_count.txt").is_file()


def test_count_is_exact():
    assert Path("error_count.txt").read_text().strip() == str(EXPECTED_ERRORS)


def test_log_is_untouched():
    assert hashlib.sha256(Path("app.log").read_bytes()).hexdigest() == LOG_SHA256
