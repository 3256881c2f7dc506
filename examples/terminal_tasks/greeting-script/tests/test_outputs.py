"""Checks for greeting-script (run with the task's working directory as cwd)."""

import os
import subprocess
from pathlib import Path


def run(*args):
    return subprocess.run(
        ["./greet.sh", *args], capture_output=True, text=True, timeout=10, check=False
    )


def test_script_is_executable():
    assert Path("greet.sh").is_file()
    assert os.access("greet.sh", os.X_OK)


def test_greets_by_name():
    result = run("Ada")
    assert result.returncode == 0
    assert result.stdout == "Hello, Ada!\n"


def test_greets_the_world_without_arguments():
    result = run()
    assert result.returncode == 0
    assert result.stdout == "Hello, world!\n"


def test_greets_another_name():
    assert run("Grace Hopper").stdout == "Hello, Grace Hopper!\n"
