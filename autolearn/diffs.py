"""Unified diffs: find one in a model's answer, parse it strictly, and split it per file.

The parser accepts what ``git diff`` and ``diff -u`` write:

* optional ``diff --git a/X b/Y`` lines with git's extended headers (``index``, modes,
  renames, ``similarity index``), and git binary sections, which are kept without hunks;
* a ``--- old`` / ``+++ new`` header pair (``a/``/``b/`` prefixes and tab-separated
  timestamps are stripped; ``/dev/null`` marks an added or deleted file);
* hunks ``@@ -start[,count] +start[,count] @@`` whose body has exactly ``count`` old
  (context + removed) and new (context + added) lines. ``\\ No newline at end of file``
  markers are allowed, and an empty line counts as an empty context line, as git does.

Text between file sections (an e-mail preamble, prose) is skipped, as ``git apply`` does;
a broken hunk, a header without hunks, or a path that leaves the repository (absolute or
with ``..``) makes the whole patch malformed.

What a patch *changes* is what rewards compare (:meth:`Patch.changes`): per file, the
removed and added lines that remain after lines removed and re-added unchanged cancel out
(a line diff of each hunk's old side against its new side). Context lines and no-op hunks
change nothing, so a patch made only of them has no changes (:meth:`Patch.has_changes`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

DEV_NULL = "/dev/null"

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_DIFF_FENCE_LANGUAGES = {"diff", "patch", "udiff"}
_GIT_EXTENDED_HEADERS = (
    "index ",
    "old mode ",
    "new mode ",
    "deleted file mode ",
    "new file mode ",
    "similarity index ",
    "dissimilarity index ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
    "Binary files ",
)


class DiffError(ValueError):
    """The text looks like a diff but is not a well-formed one."""


@dataclass(frozen=True)
class Hunk:
    """One ``@@`` hunk: its header numbers and its body lines (with their prefix)."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int
    section: str
    lines: tuple[str, ...]

    def net_changes(self) -> tuple[str, ...]:
        """The ``-``/``+`` lines left once unchanged lines (context, or removed and re-added
        as they were) cancel out: a line diff of the hunk's old side against its new side."""
        old = [line[1:] for line in self.lines if line[:1] in (" ", "-")]
        new = [line[1:] for line in self.lines if line[:1] in (" ", "+")]
        changes: list[str] = []
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, old_from, old_to, new_from, new_to in matcher.get_opcodes():
            if tag != "equal":
                changes += ["-" + line for line in old[old_from:old_to]]
                changes += ["+" + line for line in new[new_from:new_to]]
        return tuple(changes)

    @property
    def text(self) -> str:
        """The hunk as unified-diff text, header included, ending with a newline."""
        header = (
            f"@@ -{self.old_start},{self.old_count} +{self.new_start},{self.new_count} @@"
            f"{self.section}"
        )
        return "\n".join((header, *self.lines)) + "\n"


@dataclass(frozen=True)
class FileDiff:
    """The changes to one file. A path is ``None`` on the ``/dev/null`` side."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...]
    binary_lines: int = 0  # data lines of a ``GIT binary patch`` section

    @property
    def changes(self) -> str:
        """The net removed and added lines of all hunks, one per line (see :class:`Hunk`)."""
        return "".join(line + "\n" for hunk in self.hunks for line in hunk.net_changes())

    @property
    def is_change(self) -> bool:
        """True when the section really changes its file: a net line change, binary data,
        or a rename (a lone ``diff --git`` line or a mode change is not a change)."""
        renamed = None not in (self.old_path, self.new_path) and self.old_path != self.new_path
        return bool(self.changes) or self.binary_lines > 0 or renamed

    @property
    def path(self) -> str:
        """The file this section touches (the new name, or the old one for a deletion)."""
        return self.new_path or self.old_path or ""

    @property
    def body(self) -> str:
        """All hunks as text, without the ``---``/``+++`` header."""
        return "".join(hunk.text for hunk in self.hunks)

    @property
    def text(self) -> str:
        """This section as a patch that ``git apply`` understands."""
        if not self.hunks:
            return ""
        old = f"a/{self.old_path}" if self.old_path else DEV_NULL
        new = f"b/{self.new_path}" if self.new_path else DEV_NULL
        return f"--- {old}\n+++ {new}\n{self.body}"


@dataclass(frozen=True)
class Patch:
    """A parsed multi-file patch."""

    files: tuple[FileDiff, ...]

    def touched_files(self) -> set[str]:
        """The set of repository paths the patch names (changed or not)."""
        return {f.path for f in self.files}

    def changed_files(self) -> set[str]:
        """The paths the patch really changes (:attr:`FileDiff.is_change`)."""
        return {f.path for f in self.files if f.is_change}

    def has_changes(self) -> bool:
        """True when at least one file section really changes its file."""
        return any(f.is_change for f in self.files)

    def by_file(self) -> dict[str, str]:
        """Map each touched path to its hunks' text (sections on the same path are joined)."""
        split: dict[str, str] = {}
        for section in self.files:
            split[section.path] = split.get(section.path, "") + section.body
        return split

    def changes(self) -> dict[str, str]:
        """Map each changed path to its net removed/added lines (:attr:`FileDiff.changes`);
        binary sections and pure renames map to ``""``."""
        split: dict[str, str] = {}
        for section in self.files:
            if section.is_change:
                split[section.path] = split.get(section.path, "") + section.changes
        return split

    @property
    def text(self) -> str:
        """The normalised patch (only what was parsed), ready for ``git apply``."""
        return "".join(section.text for section in self.files)


def extract_diff_text(text: str) -> str | None:
    """Return the diff part of a model's answer, or ``None`` when it holds none.

    Fenced blocks tagged ``diff``/``patch`` win; then any fenced block that starts like a
    diff; then the raw text from its first ``diff --git`` or ``--- `` header on.
    """
    text = text.replace("\r\n", "\n")
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    tagged = [body for lang, body in blocks if lang in _DIFF_FENCE_LANGUAGES]
    if tagged:
        return "".join(_ensure_newline(body) for body in tagged)
    looking_like_diffs = [body for _, body in blocks if _first_header_index(body) is not None]
    if looking_like_diffs:
        return "".join(_ensure_newline(body) for body in looking_like_diffs)
    start = _first_header_index(text)
    if start is None:
        return None
    return _ensure_newline(text[start:])


def parse_patch(text: str) -> Patch:
    """Parse unified-diff text strictly; raise :class:`DiffError` naming the first problem."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[FileDiff] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("diff --git "):
            section, index = _parse_git_section(lines, index)
            if section is not None:
                files.append(section)
        elif line.startswith("--- ") and _peek(lines, index + 1).startswith("+++ "):
            section, index = _parse_header_and_hunks(lines, index)
            files.append(section)
        elif line.startswith(("+++ ", "@@ ")):
            raise DiffError(f"line {index + 1}: {line.split()[0]} without a '--- ' file header")
        else:
            index += 1  # text between sections is ignored, as git apply does
    if not files:
        raise DiffError("no file sections found")
    return Patch(tuple(files))


def extract_patch(text: str) -> Patch | None:
    """Find and parse the diff in a model's answer; ``None`` if absent or malformed."""
    diff_text = extract_diff_text(text)
    if diff_text is None:
        return None
    try:
        return parse_patch(diff_text)
    except DiffError:
        return None


def touched_files(patch_text: str) -> set[str]:
    """Paths changed by a patch (empty when it does not parse)."""
    try:
        return parse_patch(patch_text).touched_files()
    except DiffError:
        return set()


def split_by_file(patch_text: str) -> dict[str, str]:
    """Per-file hunk text of a patch (empty when it does not parse)."""
    try:
        return parse_patch(patch_text).by_file()
    except DiffError:
        return {}


def _ensure_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _first_header_index(text: str) -> int | None:
    """Offset of the first ``diff --git`` line or ``---``/``+++`` header pair."""
    match = re.search(r"^(diff --git |--- .*\n\+\+\+ )", text, re.MULTILINE)
    return match.start() if match else None


def _peek(lines: list[str], index: int) -> str:
    return lines[index] if index < len(lines) else ""


def _parse_git_section(lines: list[str], index: int) -> tuple[FileDiff | None, int]:
    """Parse from a ``diff --git`` line: extended headers, then hunks or a binary blob."""
    old_path, new_path = _git_line_paths(lines[index], index)
    index += 1
    while index < len(lines) and lines[index].startswith(_GIT_EXTENDED_HEADERS):
        header = lines[index]
        if header.startswith("new file mode "):
            old_path = None
        elif header.startswith("deleted file mode "):
            new_path = None
        index += 1
    if _peek(lines, index) == "GIT binary patch":
        index += 1
        data_lines = 0
        while index < len(lines) and not lines[index].startswith("diff --git "):
            data_lines += bool(re.fullmatch(r"[A-Za-z][0-9A-Za-z+/=!-~]+", lines[index]))
            index += 1
        return FileDiff(old_path, new_path, (), data_lines), index
    if _peek(lines, index).startswith("--- "):
        if not _peek(lines, index + 1).startswith("+++ "):
            raise DiffError(f"line {index + 2}: expected '+++ ' after '--- '")
        return _parse_header_and_hunks(lines, index)
    # A rename, mode change or empty file: nothing to apply line by line.
    return FileDiff(old_path, new_path, ()), index


def _git_line_paths(line: str, index: int) -> tuple[str | None, str | None]:
    match = re.match(r'^diff --git ("?a/.+?"?) ("?b/.+"?)$', line)
    if not match:
        raise DiffError(f"line {index + 1}: malformed 'diff --git' line")
    return _clean_path(match.group(1), index), _clean_path(match.group(2), index)


def _parse_header_and_hunks(lines: list[str], index: int) -> tuple[FileDiff, int]:
    old_path = _clean_path(lines[index][4:], index)
    new_path = _clean_path(lines[index + 1][4:], index + 1)
    if old_path is None and new_path is None:
        raise DiffError(f"line {index + 1}: both sides are /dev/null")
    index += 2
    hunks: list[Hunk] = []
    while _peek(lines, index).startswith("@@"):
        hunk, index = _parse_hunk(lines, index)
        hunks.append(hunk)
        if _looks_like_stray_hunk_line(lines, index):
            raise DiffError(f"line {index + 1}: more lines than its hunk header announces")
    if not hunks:
        raise DiffError(f"line {index + 1}: file header without any @@ hunk")
    return FileDiff(old_path, new_path, tuple(hunks)), index


def _parse_hunk(lines: list[str], index: int) -> tuple[Hunk, int]:
    """Parse one hunk and check that its body has exactly the announced line counts."""
    match = _HUNK_HEADER.match(lines[index])
    if not match:
        raise DiffError(f"line {index + 1}: malformed hunk header {lines[index][:60]!r}")
    old_start, new_start = int(match.group(1)), int(match.group(3))
    old_count = int(match.group(2)) if match.group(2) is not None else 1
    new_count = int(match.group(4)) if match.group(4) is not None else 1
    if old_count == 0 and new_count == 0:
        raise DiffError(f"line {index + 1}: empty hunk")
    header_line = index + 1
    index += 1
    old_seen = new_seen = 0
    body: list[str] = []
    while old_seen < old_count or new_seen < new_count:
        if index >= len(lines):
            raise DiffError(f"hunk at line {header_line}: ends early (patch truncated)")
        line = lines[index]
        kind = line[:1]
        if kind in (" ", ""):
            old_seen, new_seen = old_seen + 1, new_seen + 1
            line = line or " "
        elif kind == "-":
            old_seen += 1
        elif kind == "+":
            new_seen += 1
        elif kind != "\\":
            raise DiffError(f"hunk at line {header_line}: line counts do not match its header")
        body.append(line)
        index += 1
        if old_seen > old_count or new_seen > new_count:
            raise DiffError(f"hunk at line {header_line}: more lines than its header announces")
    if _peek(lines, index).startswith("\\"):
        body.append(lines[index])
        index += 1
    hunk = Hunk(old_start, old_count, new_start, new_count, match.group(5), tuple(body))
    return hunk, index


def _clean_path(raw: str, index: int) -> str | None:
    """Strip quotes, timestamps and the ``a/``/``b/`` prefix; reject paths leaving the repo."""
    path = raw.split("\t", 1)[0].strip()
    if len(path) >= 2 and path[0] == path[-1] == '"':
        path = _unquote_git_path(path[1:-1])
    if path == DEV_NULL:
        return None
    if path.startswith(("a/", "b/")):
        path = path[2:]
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise DiffError(f"line {index + 1}: unsafe or empty path {path!r}")
    return path


def _looks_like_stray_hunk_line(lines: list[str], index: int) -> bool:
    """A body line right after a complete hunk means the header's counts were too small."""
    line = _peek(lines, index)
    if not line.startswith((" ", "-", "+")):
        return False
    is_next_header = line.startswith("--- ") and _peek(lines, index + 1).startswith("+++ ")
    return not is_next_header


def _unquote_git_path(quoted: str) -> str:
    """Undo git's C-style quoting (octal escapes of UTF-8 bytes)."""
    try:
        raw = quoted.encode("utf-8").decode("unicode_escape").encode("latin-1")
    except (UnicodeError, ValueError) as exc:  # a bad escape such as \x or \777
        raise DiffError(f"badly quoted path {quoted!r}") from exc
    return raw.decode("utf-8", "replace")
