"""Checks for csv-region-report (run with the task's working directory as cwd)."""

import hashlib
from pathlib import Path

SALES_SHA256 = "bf50e6e3ceed2334eae829d046f0caa89456c409bf410a457a6f2bfc41bad0b0"
EXPECTED_BY_REGION = [
    "region,total",
    "east,310.50",
    "north,200.00",
    "south,200.00",
    "west,262.00",
]


def test_total():
    assert Path("total.txt").read_text().strip() == "972.50"


def test_by_region_header():
    lines = Path("by_region.csv").read_text().splitlines()
    assert lines[0].strip() == "region,total"


def test_by_region_rows():
    lines = [line.strip() for line in Path("by_region.csv").read_text().splitlines()]
    assert [line for line in lines if line] == EXPECTED_BY_REGION


def test_sales_untouched():
    assert hashlib.sha256(Path("sales.csv").read_bytes()).hexdigest() == SALES_SHA256
