"""Checks for organize-by-extension (run with the task's working directory as cwd)."""

from pathlib import Path

EXPECTED = {
    "sorted/txt/report.txt": "Quarterly report\nrevenue up 4%\n",
    "sorted/txt/notes.txt": "buy milk\ncall bob\n",
    "sorted/csv/data.csv": "id,value\n1,10\n2,20\n",
    "sorted/csv/people.csv": "id,name\n7,ada\n",
    "sorted/log/server.log": "boot ok\nshutdown clean\n",
    "sorted/noext/README": "plain file without an extension\n",
}


def test_text_files_moved():
    for path in ("sorted/txt/report.txt", "sorted/txt/notes.txt"):
        assert Path(path).read_text() == EXPECTED[path]


def test_csv_files_moved():
    for path in ("sorted/csv/data.csv", "sorted/csv/people.csv"):
        assert Path(path).read_text() == EXPECTED[path]


def test_log_file_moved():
    assert Path("sorted/log/server.log").read_text() == EXPECTED["sorted/log/server.log"]


def test_file_without_extension_moved():
    assert Path("sorted/noext/README").read_text() == EXPECTED["sorted/noext/README"]


def test_nothing_else_in_sorted():
    found = {str(p) for p in Path("sorted").rglob("*") if p.is_file()}
    assert found == set(EXPECTED)


def test_inbox_is_empty():
    assert Path("inbox").is_dir()
    assert list(Path("inbox").iterdir()) == []
