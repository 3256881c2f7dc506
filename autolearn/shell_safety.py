"""Find shell commands in a model's answer and flag the dangerous ones before anything runs.

Commands are parsed, not grepped: a quote-aware scanner splits the script at ``;``,
``&&``, ``||``, ``|``, ``&``, newlines and parentheses (dropping comments, lifting out
``$(...)``, backtick and ``<(...)`` substitutions and here-documents), then :mod:`shlex`
splits every simple command into words and redirections (``>|``, ``>&`` and ``&>`` are
redirections; a ``( ... )`` group after a ``|`` stays part of the pipeline). Each command
is normalised before the rules look at it:

* quotes and backslashes are removed (``"r"'m'`` and ``\\rm`` are ``rm``), and
  ``/bin/rm`` is ``rm`` (basename of the command word);
* ``VAR=value`` prefixes and wrappers are peeled off: ``sudo``, ``doas``, ``env``,
  ``nohup``, ``nice``, ``ionice``, ``timeout``, ``time``, ``command``, ``builtin``,
  ``exec``, ``stdbuf``, ``setsid``, ``xargs``, ``flock``, ``busybox``, ...;
* nested code is analysed recursively: ``bash -c '...'`` (any shell), ``eval``,
  ``su -c``, here-documents and here-strings fed to a shell, text that ``echo``,
  ``printf`` or ``cat <<EOF`` pipe into a shell, ``find -exec``, command substitutions,
  and quoted strings inside ``python -c`` / ``perl -e`` code;
* paths are resolved the way the shell would: ``~``, ``$HOME`` and ``${HOME}`` are the
  home directory, variables assigned earlier in the script are substituted (also
  ``for VAR in WORDS``, where VAR takes the most dangerous word, and ``set -- ARGS``
  for ``$1``... and ``$@``), unknown variables expand to the empty string (the worst
  case: ``rm -rf "$DIR/"`` is ``rm -rf /``), and so do values beyond 4096 characters,
  ``cd`` to an absolute path is followed, ``//``, ``.`` and ``..`` are normalised,
  ``{a,b}`` lists in the operands of file commands are expanded, and globs such as
  ``/*`` or ``/e*`` match the directories they would hit.

Rules (:data:`RULES`):

==================  ===========================================================================
rule                flags
==================  ===========================================================================
``rm-root``         recursive ``rm`` (``-r``, ``-R``, ``-rf``, ``--recursive``), ``find -delete``
                    or ``mv`` of ``/``, the home directory, a top-level system directory
                    (``/etc``, ``/usr``, ``/var``, ...), a glob over one of them (``/*``), or a
                    bare chain of parent directories (``..``); ``rsync --delete`` into one of
                    them; any ``--no-preserve-root``
``mkfs``            ``mkfs``/``mkfs.*``, ``mke2fs``, ``mkswap``, ``wipefs``, ``fdisk``,
                    ``sfdisk``, ``parted``, ``blkdiscard`` (formatting or repartitioning disks)
``dd-device``       ``dd`` with ``of=`` a device under ``/dev``
``device-write``    any other write to ``/dev`` (redirection, ``tee``, ``cp``, ``shred``, ...)
                    except ``/dev/null``, ``/dev/zero``, ``/dev/std*``, ``/dev/tty``,
                    ``/dev/fd/*``, ``/dev/shm/*`` and the random devices
``system-write``    writes, deletions, moves or permission changes under ``/etc``,
                    ``/boot``, ``/sys``, ``/proc``, ``/bin``, ``/sbin``, ``/lib*`` and ``/usr``
                    (``/usr/local`` is allowed): redirections, ``tee``, ``cp``/``mv``/``ln``/
                    ``install``/``rsync`` destinations, ``touch``, ``sed -i``, ``rm``, ``chmod``,
                    ``dd of=``, ``curl -o`` / ``wget -O``
``chmod-root``      ``chmod``/``chown``/``chgrp``/``chattr``/``setfacl`` on ``/`` or
                    recursive on a protected directory (``chmod -R 777 /``)
``fork-bomb``       a shell function that calls itself through a pipe or in the background
                    (``:(){ :|:& };:``), or interpreter code that forks in a loop
``pipe-to-shell``   downloaded or decoded content executed: ``curl``/``wget``/``nc``/
                    ``base64 -d``/``xxd -r`` piped into a shell or interpreter reading stdin
                    (also inside ``( ... )``), ``bash <(curl ...)``, ``source <(wget ...)``, ``sh -c "$(curl ...)"``,
                    ``eval "$(curl ...)"``
``shutdown``        ``shutdown``, ``reboot``, ``halt``, ``poweroff``, ``kexec``, ``init 0|6``,
                    ``systemctl poweroff|reboot|halt|...``, ``kill`` of pid ``1`` or ``-1``
``unparseable``     unbalanced quotes, an unterminated substitution, nesting deeper than 8
                    levels or a ``find`` with over 1024 (root, ``-exec``) pairs: safety
                    cannot be verified (cheaply), so the script is treated as unsafe
==================  ===========================================================================

Known limits: two-step tricks (download to a file, run it later), content built at run
time (``$(printf ...)`` as a command name) and interpreters' own file APIs are out of
reach of static checks; the execution sandbox is the second line of defence.
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

RULES: dict[str, str] = {
    "rm-root": "recursive delete or move of /, the home directory or a system directory",
    "mkfs": "formatting or repartitioning a disk",
    "dd-device": "dd writing to a device",
    "device-write": "writing to a device under /dev",
    "system-write": "modifying files under /etc, /usr, /boot, /sys, /proc, /bin, /sbin or /lib",
    "chmod-root": "changing ownership or permissions of / or recursively of a system directory",
    "fork-bomb": "a self-replicating process loop",
    "pipe-to-shell": "executing downloaded or decoded content",
    "shutdown": "shutting down, rebooting or killing every process",
    "unparseable": "the script cannot be parsed, so its safety cannot be checked",
}

HOME = "~"
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh"})
INTERPRETERS = frozenset(
    {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua"}
)
FETCHERS = frozenset(
    {"curl", "wget", "fetch", "aria2c", "nc", "ncat", "netcat", "socat", "telnet", "lynx"}
)
DECODERS = frozenset({"base64", "base32", "basenc", "xxd", "openssl", "uudecode", "rev"})
_SYSTEM_DIRS = (
    "bin boot dev etc home lib lib32 lib64 libx32 media mnt opt proc root run sbin srv sys usr var"
)
PROTECTED_DIRS = frozenset({"/", HOME} | {f"/{name}" for name in _SYSTEM_DIRS.split(" ")})
WRITE_PROTECTED_PREFIXES = ("/etc", "/boot", "/sys", "/proc", "/bin", "/sbin", "/lib", "/usr")
WRITE_ALLOWED_PREFIXES = ("/usr/local",)
DEVICE_ALLOWED = (
    "/dev/null",
    "/dev/zero",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/stdin",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
    "/dev/fd/",
    "/dev/shm/",
)
MKFS_COMMANDS = frozenset(
    {"mkfs", "mke2fs", "mkswap", "wipefs", "fdisk", "sfdisk", "cfdisk", "parted", "sgdisk"}
    | {"mkdosfs", "mkntfs", "blkdiscard"}
)
POWER_COMMANDS = frozenset({"shutdown", "reboot", "halt", "poweroff", "kexec"})
SYSTEMCTL_POWER_VERBS = frozenset(
    {"poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "emergency", "rescue"}
)
PIPES = ("|", "|&")
RESERVED_WORDS = frozenset({"!", "{", "}", "then", "do", "else", "elif", "if", "while", "until"})
PATH_WRITERS = frozenset(
    {"touch", "truncate", "mkdir", "rmdir", "unlink", "shred", "chattr", "setfacl", "rm"}
    | {"chmod", "chown", "chgrp"}
)
COPIERS = frozenset({"cp", "mv", "install", "rsync", "ln"})
PERMISSION_COMMANDS = frozenset({"chmod", "chown", "chgrp", "chattr", "setfacl"})

# wrapper -> options that take a separate argument
WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T"}),
    "doas": frozenset({"-u", "-C"}),
    "nohup": frozenset(),
    "time": frozenset({"-f", "-o"}),
    "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "setsid": frozenset(),
    "unbuffer": frozenset(),
    "fakeroot": frozenset(),
    "chronic": frozenset(),
    "proxychains": frozenset({"-f"}),
    "strace": frozenset({"-e", "-o", "-p", "-s", "-u"}),
    "xargs": frozenset({"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--delimiter"}),
    "watch": frozenset({"-n", "-d"}),
    "catchsegv": frozenset(),
}
# wrappers whose first non-option argument is not the command
WRAPPERS_WITH_LEADING_ARG = {"timeout": 1, "flock": 1, "chroot": 1, "taskset": 1}

_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*", re.DOTALL)
DECLARATIONS = frozenset({"export", "declare", "local", "readonly", "typeset"})
_SUBST_PLACEHOLDER = re.compile(r"__ALSUB(\d+)__")
_VARIABLE = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])")
_HEREDOC = re.compile(r"(?<![<])<<(-?)[ \t]*(['\"]?)([A-Za-z_][\w.-]*)\2")
_FENCE = re.compile(r"^```[ \t]*([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_COMMAND_TAG = re.compile(r"<command>(.*?)</command>", re.DOTALL | re.IGNORECASE)
_SHELL_FENCE_LANGUAGES = {"bash", "sh", "shell", "zsh", "console", "terminal", "shell-session"}
_STRING_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
_MAX_DEPTH = 8
# A longer variable value or expansion counts as unknown (so it expands to ""): doubling
# assignments (A=$A$A) would otherwise grow exponentially.
_MAX_VALUE = 4096
_MAX_BRACE_WORDS = 64  # brace expansion of one word stops before producing more words
_FIND_WORK_LIMIT = 1024  # (root, -exec command) pairs one find may ask us to check
_BRACE_LIST = re.compile(r"(?<!\$)\{([^{}]*,[^{}]*)\}")
_FIND_ACTIONS = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_FIND_ENDS = frozenset({";", "+", "\\;"})


class ShellParseError(ValueError):
    """The script has unbalanced quotes or an unterminated substitution."""


@dataclass(frozen=True)
class Finding:
    """One dangerous command: the rule it breaks and the normalised command."""

    rule: str
    command: str


@dataclass
class SimpleCommand:
    """One command of a pipeline after word splitting."""

    argv: list[str]
    redirects: list[tuple[str, str]] = field(default_factory=list)
    stdin_script: str | None = None  # a here-document or here-string body
    terminator: str = ""  # the control operator after it: ; && || & ( ) newline


@dataclass
class _Scanned:
    """The script split at control operators, with substitutions lifted out."""

    segments: list[tuple[str, str]]  # (simple command text, operator that ends it)
    substitutions: list[str]  # inner text of $(...), `...`, <(...), >(...)
    heredocs: list[str]


@dataclass
class _State:
    """What the analysis knows while walking a script top to bottom."""

    variables: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # None: the (unknown, harmless) working directory
    depth: int = 0


# --------------------------------------------------------------------------- extraction


def extract_commands(text: str) -> list[str]:
    """Return the shell scripts in a model's answer, in order.

    Sources: ``<command>...</command>`` tags and fenced blocks tagged ``bash``, ``sh``,
    ``shell``, ``zsh`` or ``console``. Leading ``$ `` prompts are removed; in ``console``
    blocks, lines without a prompt are output and are dropped.
    """
    found: list[tuple[int, str]] = []
    for match in _COMMAND_TAG.finditer(text):
        found.append((match.start(), match.group(1)))
    for match in _FENCE.finditer(text):
        language = match.group(1).lower()
        if language in _SHELL_FENCE_LANGUAGES:
            found.append((match.start(), _strip_prompts(match.group(2), language)))
    scripts = [script.strip("\n") for _, script in sorted(found)]
    return [script for script in scripts if script.strip()]


def _strip_prompts(block: str, language: str) -> str:
    lines = block.splitlines()
    prompted = [line for line in lines if line.startswith("$ ")]
    if language in {"console", "terminal", "shell-session"} and prompted:
        return "\n".join(line[2:] for line in prompted)
    if prompted and len(prompted) == len([line for line in lines if line.strip()]):
        return "\n".join(line[2:] if line.startswith("$ ") else line for line in lines)
    return block


# --------------------------------------------------------------------------- public checks


def find_dangers(script: str) -> list[Finding]:
    """Return every rule the script breaks (empty when it looks safe)."""
    return _analyse(script, _State(), strict=True)


def is_dangerous(script: str) -> bool:
    """True when :func:`find_dangers` flags anything."""
    return bool(find_dangers(script))


def _analyse(script: str, state: _State, *, strict: bool) -> list[Finding]:
    """Analyse a script; ``strict=False`` ignores parse errors (used for guessed code)."""
    if state.depth > _MAX_DEPTH:
        return [Finding("unparseable", "nesting too deep")]
    try:
        pipelines, scanned = parse_script(script)
    except ShellParseError as exc:
        return [Finding("unparseable", str(exc))] if strict else []
    findings: list[Finding] = []
    nested = _State(state.variables, state.cwd, state.depth + 1)
    for inner in scanned.substitutions:
        findings += _analyse(inner, nested, strict=strict)
    findings += _fork_bombs(pipelines)
    for pipeline in pipelines:
        findings += _check_pipeline(pipeline, scanned.substitutions, state)
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


# --------------------------------------------------------------------------- parsing


def parse_script(script: str) -> tuple[list[list[SimpleCommand]], _Scanned]:
    """Split a script into pipelines of simple commands (raises :class:`ShellParseError`)."""
    body, heredocs = _lift_heredocs(script)
    scanned = _scan(body)
    scanned.heredocs = heredocs
    bodies = iter(heredocs)
    pipelines: list[list[SimpleCommand]] = []
    current: list[SimpleCommand] = []
    piped_groups = 0  # open ( ) groups that read a pipe: their commands join the pipeline
    for text, operator in scanned.segments:
        command = _split_words(text, bodies)
        if command is not None:
            command.terminator = operator
            current.append(command)
        opens_piped_group = command is None and bool(current) and current[-1].terminator in PIPES
        if operator == "(" and (piped_groups or opens_piped_group):
            piped_groups += 1
        elif operator == ")" and piped_groups:
            piped_groups -= 1
        if piped_groups:
            continue
        if operator not in PIPES and current:
            pipelines.append(current)
            current = []
    if current:
        pipelines.append(current)
    return pipelines, scanned


def _lift_heredocs(script: str) -> tuple[str, list[str]]:
    """Remove here-document bodies from the text (in order), keeping the ``<<WORD`` parts."""
    kept: list[str] = []
    bodies: list[str] = []
    lines = script.replace("\r\n", "\n").split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        kept.append(line)
        index += 1
        for match in _HEREDOC.finditer(line):
            strip_tabs, delimiter = match.group(1) == "-", match.group(3)
            body: list[str] = []
            while index < len(lines):
                candidate = lines[index].lstrip("\t") if strip_tabs else lines[index]
                index += 1
                if candidate == delimiter:
                    break
                body.append(candidate)
            bodies.append("\n".join(body))
    return "\n".join(kept), bodies


def _scan(text: str) -> _Scanned:
    """Quote-aware split at control operators; comments dropped, substitutions lifted."""
    scanner = _Scanner(text)
    scanner.run()
    return _Scanned(scanner.segments, scanner.substitutions, [])


class _Scanner:
    """A small state machine over the raw characters of a script."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.current: list[str] = []
        self.segments: list[tuple[str, str]] = []
        self.substitutions: list[str] = []

    def run(self) -> None:
        while self.pos < len(self.text):
            self._step()
        self._end_segment("")

    def _step(self) -> None:
        char = self.text[self.pos]
        rest = self.text[self.pos : self.pos + 3]
        if char == "\\":
            self._escape()
        elif char == "'":
            self._single_quoted()
        elif char == '"':
            self._double_quoted()
        elif rest.startswith(("$(", "<(", ">(")) or char == "`":
            self._substitution()
        elif char == "#" and self._at_word_start():
            self._skip_comment()
        elif char in ";&|()\n":
            self._operator()
        else:
            self.current.append(char)
            self.pos += 1

    def _escape(self) -> None:
        pair = self.text[self.pos : self.pos + 2]
        if pair != "\\\n":  # a line continuation disappears
            self.current.append(pair)
        self.pos += 2

    def _single_quoted(self) -> None:
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise ShellParseError("unbalanced single quote")
        self.current.append(self.text[self.pos : end + 1])
        self.pos = end + 1

    def _double_quoted(self) -> None:
        self.current.append('"')
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.current.append(self.text[self.pos : self.pos + 2])
                self.pos += 2
            elif char == '"':
                self.current.append('"')
                self.pos += 1
                return
            elif self.text.startswith("$(", self.pos) or char == "`":
                self._substitution()
            else:
                self.current.append(char)
                self.pos += 1
        raise ShellParseError("unbalanced double quote")

    def _substitution(self) -> None:
        if self.text[self.pos] == "`":
            end = self._find_backtick_end(self.pos + 1)
            inner, self.pos = self.text[self.pos + 1 : end], end + 1
        else:
            end = _matching_paren(self.text, self.pos + 1)
            inner, self.pos = self.text[self.pos + 2 : end], end + 1
        self.current.append(f"__ALSUB{len(self.substitutions)}__")
        self.substitutions.append(inner)

    def _find_backtick_end(self, start: int) -> int:
        index = start
        while index < len(self.text):
            if self.text[index] == "\\":
                index += 2
                continue
            if self.text[index] == "`":
                return index
            index += 1
        raise ShellParseError("unterminated backtick substitution")

    def _at_word_start(self) -> bool:
        return not self.current or self.current[-1][-1:] in (" ", "\t")

    def _skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def _operator(self) -> None:
        char = self.text[self.pos]
        previous = self.current[-1][-1:] if self.current else ""
        following = self.text[self.pos + 1 : self.pos + 2]
        if (char == "&" and (previous in ("<", ">") or following == ">")) or (
            char == "|" and previous == ">"
        ):
            self.current.append(char)  # part of a redirection: >&2, &>file, >|file
            self.pos += 1
            return
        for operator in ("&&", "||", "|&", ";;", ";&"):
            if self.text.startswith(operator, self.pos):
                self.pos += len(operator)
                self._end_segment(operator)
                return
        self.pos += 1
        self._end_segment(char)

    def _end_segment(self, operator: str) -> None:
        segment = "".join(self.current).strip()
        self.current = []
        if segment or operator in ("&", "|", "|&"):
            self.segments.append((segment, operator))
        elif operator in ("(", ")"):
            self.segments.append(("", operator))


def _matching_paren(text: str, open_index: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``open_index``, skipping quoted text."""
    depth, index = 0, open_index
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise ShellParseError("unbalanced single quote")
            index = end
        elif char == '"':
            index = _closing_double_quote(text, index)
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ShellParseError("unterminated $( or <( substitution")


def _closing_double_quote(text: str, start: int) -> int:
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index
        index += 1
    raise ShellParseError("unbalanced double quote")


def _split_words(text: str, heredocs: Iterator[str]) -> SimpleCommand | None:
    """Split one simple command with shlex; separate redirections from arguments."""
    if not text:
        return None
    lexer = shlex.shlex(text, posix=True, punctuation_chars="<>&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ShellParseError(str(exc)) from None
    command = SimpleCommand([])
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token and set(token) <= set("<>&|") and token not in ("&", "|"):
            target = tokens[index + 1] if index + 1 < len(tokens) else ""
            index += 2
            if token == "<<":
                command.stdin_script = next(heredocs, "")
            elif token == "<<<":
                command.stdin_script = target
            elif not (token.endswith("&") and re.fullmatch(r"-|\d+", target or "")):
                if command.argv and command.argv[-1].isdigit():
                    command.argv.pop()  # the fd number of 2>file
                command.redirects.append((token, target))
            continue
        command.argv.append(token)
        index += 1
    return command


# --------------------------------------------------------------------------- normalising


def _expand(word: str, state: _State) -> str:
    """Expand ``~`` and variables; unknown variables become empty, as in the shell.

    Variables past the first ``_MAX_VALUE`` substituted characters count as unknown too."""
    return _expand_bounded(word, state)[0]


def _expand_bounded(word: str, state: _State) -> tuple[str, bool]:
    """:func:`_expand`, and whether every variable fitted within ``_MAX_VALUE``."""
    added = 0

    def substitute(match: re.Match[str]) -> str:
        nonlocal added
        value = lookup(match)
        added += len(value)
        return value if added <= _MAX_VALUE else ""

    def lookup(match: re.Match[str]) -> str:
        if match.group(2) is not None:
            name, default = match.group(2), ""
        else:
            parsed = re.match(r"([A-Za-z_]\w*|\d+)(:?[-=])?(.*)", match.group(1), re.DOTALL)
            if parsed is None:
                return ""  # ${#VAR} and other forms: treat as unknown
            name = parsed.group(1)
            default = parsed.group(3) if parsed.group(2) else ""
        if name == "HOME":
            return HOME
        return state.variables.get(name, default)

    if word == "~" or word.startswith("~/"):
        word = HOME + word[1:]
    expanded = _VARIABLE.sub(substitute, word)
    return expanded, added <= _MAX_VALUE


def _expand_known(word: str, state: _State) -> str:
    """Expand a word only if every variable in it is known (used for command names)."""
    names = [m.group(1) or m.group(2) for m in _VARIABLE.finditer(word)]
    if names and all(name in state.variables for name in names):
        return _expand(word, state)
    return word


def _resolve(word: str, state: _State) -> str | None:
    """Absolute (or ``~``-based) normalised path of a word; ``None`` if relative to an
    unknown working directory and not climbing out of it."""
    path = _expand(word, state)
    if path.startswith(HOME):
        rest = posixpath.normpath("/" + path[len(HOME) :].lstrip("/"))
        return HOME if rest == "/" else HOME + rest
    if path.startswith("/"):
        return "/" + posixpath.normpath(path).lstrip("/")
    if state.cwd is not None:
        return _resolve(posixpath.join(state.cwd, path), _State(state.variables))
    normal = posixpath.normpath(path) if path else "."
    if normal == ".." or normal.startswith("../"):
        return normal
    return None


def _is_protected_dir(path: str | None) -> bool:
    """True for /, ~, top-level system dirs, globs over them, and bare ``..`` chains."""
    if path is None:
        return False
    if path in PROTECTED_DIRS:
        return True
    if re.fullmatch(r"\.\.(/\.\.)*(/[*.]*)?", path):
        return True
    if any(char in path for char in "*?["):
        base = path[: path.index(next(c for c in path if c in "*?["))].rsplit("/", 1)[0]
        base = base or "/"
        if base in PROTECTED_DIRS or any(fnmatch.fnmatch(p, path) for p in PROTECTED_DIRS):
            return True
    return False


def _write_rule(path: str | None) -> str | None:
    """The rule broken by writing to ``path``, if any."""
    if path is None or path.startswith(HOME):
        return None
    if path == "/dev" or path.startswith("/dev/"):
        allowed = any(path == a or (a.endswith("/") and path.startswith(a)) for a in DEVICE_ALLOWED)
        return None if allowed else "device-write"
    if path.startswith(WRITE_ALLOWED_PREFIXES):
        return None
    for prefix in WRITE_PROTECTED_PREFIXES:
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "*"):
            return "system-write"
        if prefix == "/lib" and re.match(r"/lib(32|64|x32)(/|$)", path):
            return "system-write"
    return None


def _strip_prefixes(argv: list[str], state: _State) -> list[str]:
    """Drop reserved words and ``VAR=value`` prefixes; remember standalone assignments."""
    words = list(argv)
    while words and words[0] in RESERVED_WORDS:
        words.pop(0)
    count = 0
    while count < len(words) and _ASSIGNMENT.fullmatch(words[count]):
        count += 1
    if count == len(words) or (words[0] in DECLARATIONS and count == 0):
        _remember_assignments(words, state)
        if count == len(words):
            return []
    words = words[count:]
    if words and "$" in words[0]:
        words[0] = _expand_known(words[0], state)
    return words


def _remember_assignments(words: list[str], state: _State) -> None:
    for word in words:
        if _ASSIGNMENT.fullmatch(word):
            name, value = word.split("=", 1)
            expanded, complete = _expand_bounded(value, state)
            _remember(name, expanded if complete else None, state)


def _remember(name: str, value: str | None, state: _State) -> None:
    """Store a variable; a missing or over-long value makes it unknown (empty)."""
    if value is None or len(value) > _MAX_VALUE:
        state.variables.pop(name, None)
    else:
        state.variables[name] = value


def _assign_loop_variable(args: list[str], state: _State) -> None:
    """``for VAR in WORDS``: VAR takes the most dangerous word (flag if any word would)."""
    if len(args) < 2 or args[1] != "in" or not re.fullmatch(r"[A-Za-z_]\w*", args[0]):
        return
    words = args[2:]
    values = [piece for word in words for piece in _expand(word, state).split()]
    if not values or any("$(" in word for word in words):
        state.variables.pop(args[0], None)  # run-time values: unknown
    else:
        _remember(args[0], _most_dangerous(values, state), state)


def _set_positional(args: list[str], state: _State) -> None:
    """``set -- A B`` (or ``set A B``) assigns ``$1``, ``$2``, ... and ``$@``."""
    if "--" in args:
        operands = args[args.index("--") + 1 :]
    elif args and not args[0].startswith(("-", "+")):
        operands = args
    else:
        return  # set -e, set -o pipefail: options only
    values = [_expand(operand, state) for operand in operands]
    for number, value in enumerate(values, start=1):
        _remember(str(number), value, state)
    for name in ("@", "*"):
        _remember(name, _most_dangerous(values, state) if values else None, state)


def _most_dangerous(values: list[str], state: _State) -> str:
    """The value that would break the most serious rule when used as a path."""

    def severity(value: str) -> int:
        path = _resolve(value, state)
        return 2 if _is_protected_dir(path) else 1 if _write_rule(path) else 0

    return max(values, key=severity)


def _peel_wrappers(argv: list[str]) -> list[str]:
    """Remove sudo/env/nohup/timeout/... so the real command comes first."""
    words = list(argv)
    for _ in range(_MAX_DEPTH):
        if not words:
            return words
        name = posixpath.basename(words[0])
        if name == "env":
            words = _after_env(words[1:])
        elif name in WRAPPERS:
            words = _skip_options(words[1:], WRAPPERS[name])
        elif name in WRAPPERS_WITH_LEADING_ARG:
            rest = _skip_options(words[1:], frozenset({"-k", "-s", "-E", "-w", "-c"}))
            words = rest[WRAPPERS_WITH_LEADING_ARG[name] :]
        elif name == "busybox" and len(words) > 1:
            words = words[1:]
        else:
            return [name, *words[1:]]
    return words


def _skip_options(words: list[str], with_argument: frozenset[str]) -> list[str]:
    index = 0
    while index < len(words) and words[index].startswith("-"):
        option = words[index]
        index += 1
        if option == "--":
            break
        if option in with_argument:
            index += 1
    while index < len(words) and _ASSIGNMENT.fullmatch(words[index]):
        index += 1  # sudo VAR=value command
    return words[index:]


def _after_env(words: list[str]) -> list[str]:
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("-u", "--unset", "-C", "--chdir"):
            index += 2
        elif word in ("-S", "--split-string") and index + 1 < len(words):
            return shlex.split(words[index + 1]) + words[index + 2 :]
        elif word.startswith("-") or _ASSIGNMENT.fullmatch(word):
            index += 1
        else:
            break
    return words[index:]


def _display(argv: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in argv)


# --------------------------------------------------------------------------- rules


def _check_pipeline(
    pipeline: list[SimpleCommand], substitutions: list[str], state: _State
) -> list[Finding]:
    findings: list[Finding] = []
    feeds_from_network = False
    literal: str | None = None  # code that a previous stage prints verbatim
    for command in pipeline:
        argv = _peel_wrappers(_strip_prefixes(command.argv, state))
        argv = [_restore(word, substitutions) for word in argv]
        findings += _check_redirects(command, argv, substitutions, state)
        if not argv:
            continue
        if feeds_from_network and _reads_code_from_stdin(argv):
            findings.append(Finding("pipe-to-shell", _display(argv)))
        if literal is not None and argv[0] in SHELLS and _reads_code_from_stdin(argv):
            nested = _State(dict(state.variables), state.cwd, state.depth + 1)
            findings += _analyse(literal, nested, strict=False)
        feeds_from_network = feeds_from_network or _produces_code(argv)
        passes_through = argv[0] == "tee" or argv == ["cat"]
        literal = _printed_literal(argv, command) or (literal if passes_through else None)
        findings += _check_command(argv, command, substitutions, state)
    return findings


def _printed_literal(argv: list[str], command: SimpleCommand) -> str | None:
    """The text ``echo``/``printf`` print, or a here-document given to ``cat``.

    ``\\n`` counts as a line break (``echo -e``, ``printf``); ``printf`` arguments are
    joined to the format, which is enough to read ``printf 'rm -rf %s' DIR``."""
    name, args = argv[0], argv[1:]
    if name == "echo":
        while args and re.fullmatch(r"-[neE]+", args[0]):
            args = args[1:]
        return " ".join(args).replace("\\n", "\n")
    if name == "printf":
        return " ".join(args).replace("\\n", "\n")
    if name == "cat" and len(argv) == 1 and command.stdin_script is not None:
        return command.stdin_script
    return None


def _restore(word: str, substitutions: list[str]) -> str:
    """Put lifted substitutions back as ``$(...)`` text (for nested analysis)."""
    return _SUBST_PLACEHOLDER.sub(lambda m: f"$({substitutions[int(m.group(1))]})", word)


def _check_redirects(
    command: SimpleCommand, argv: list[str], substitutions: list[str], state: _State
) -> list[Finding]:
    findings = []
    for operator, target in command.redirects:
        if ">" in operator or operator == "<>":
            rule = _write_rule(_resolve(target, state))
            if rule:
                findings.append(Finding(rule, f"{_display(argv)} {operator} {target}"))
        elif (
            operator == "<"
            and _reads_code_from_stdin(argv)
            and _substitution_downloads(_restore(target, substitutions))
        ):
            findings.append(Finding("pipe-to-shell", f"{_display(argv)} < {target}"))
    return findings


def _produces_code(argv: list[str]) -> bool:
    """A pipeline stage that downloads or decodes content (``curl``, ``base64 -d``)."""
    name, args = argv[0], argv[1:]
    if name in FETCHERS:
        return True
    if name in DECODERS:
        return name == "rev" or any(
            a in ("-d", "-D", "--decode", "-r", "-revert", "enc", "base64") for a in args
        )
    return False


def _reads_code_from_stdin(argv: list[str]) -> bool:
    """A shell or interpreter that executes what arrives on stdin."""
    name, args = argv[0], argv[1:]
    if name in ("source", ".", "eval"):
        return not args or args[0] in ("/dev/stdin", "-")
    if name not in SHELLS | INTERPRETERS:
        return False
    operands = [a for a in args if not a.startswith("-")]
    return "-s" in args or "-" in args or not operands or operands[0] == "/dev/stdin"


def _check_command(
    argv: list[str], command: SimpleCommand, substitutions: list[str], state: _State
) -> list[Finding]:
    name, args = argv[0], argv[1:]
    findings = _check_code_execution(argv, command, state)
    if name.startswith("mkfs") or name in MKFS_COMMANDS:
        findings.append(Finding("mkfs", _display(argv)))
    findings += _check_shutdown(name, args, argv)
    findings += _check_deletion(name, args, argv, state)
    findings += _check_writes(name, args, argv, state)
    if name in {"cd", "pushd"}:
        _change_directory(args, state)
    elif name == "for":
        _assign_loop_variable(args, state)
    elif name == "set":
        _set_positional(args, state)
    if name == "find":
        findings += _check_find(args, argv, command, substitutions, state)
    return findings


def _check_code_execution(argv: list[str], command: SimpleCommand, state: _State) -> list[Finding]:
    """Recurse into ``sh -c``, ``eval``, ``su -c``, stdin scripts and interpreter code."""
    name, args = argv[0], argv[1:]
    nested = _State(dict(state.variables), state.cwd, state.depth + 1)
    findings: list[Finding] = []
    if name.startswith("$(") and _substitution_downloads(name):
        findings.append(Finding("pipe-to-shell", _display(argv)))
    code = _inline_code(name, args)
    if name in SHELLS or name in ("eval", "su", "runuser"):
        if code is not None:
            findings += _analyse(code, nested, strict=True)
        for operand in args:
            if operand.startswith("$(") and _substitution_downloads(operand):
                findings.append(Finding("pipe-to-shell", _display(argv)))
        if command.stdin_script is not None:
            findings += _analyse(command.stdin_script, nested, strict=True)
    elif name in ("source", "."):
        if args and args[0].startswith("$(") and _substitution_downloads(args[0]):
            findings.append(Finding("pipe-to-shell", _display(argv)))
    elif name in INTERPRETERS and code is not None:
        if "fork" in code and re.search(r"\b(while|for|loop)\b", code):
            findings.append(Finding("fork-bomb", _display(argv)))
        for match in _STRING_LITERAL.finditer(code):
            literal = match.group(1) if match.group(1) is not None else match.group(2)
            findings += _analyse(literal, nested, strict=False)
    return findings


def _flat(script: str) -> list[SimpleCommand]:
    try:
        pipelines, _ = parse_script(script)
    except ShellParseError:
        return []
    return [command for pipeline in pipelines for command in pipeline if command.argv]


def _substitution_downloads(word: str) -> bool:
    """True when a ``$(...)`` word runs a downloader or decoder."""
    inner = word[2:-1] if word.startswith("$(") and word.endswith(")") else word
    return any(_produces_code(_peel_wrappers(c.argv)) for c in _flat(inner))


def _inline_code(name: str, args: list[str]) -> str | None:
    """The code given with ``-c`` (shells, ``su``), ``-c``/``-e``/``-r`` (interpreters) or
    as the arguments of ``eval``; ``None`` when there is none."""
    if name == "eval":
        return " ".join(args)
    letters = "c" if name in SHELLS or name in ("su", "runuser") else "ceEr"
    if name not in SHELLS | INTERPRETERS | {"su", "runuser"}:
        return None
    for index, arg in enumerate(args):
        if arg.startswith(("--command=", "--eval=")):
            return arg.split("=", 1)[1]
        is_code_flag = arg in ("--command", "--eval") or (
            re.fullmatch(r"-[A-Za-z]+", arg) is not None and any(c in arg[1:] for c in letters)
        )
        if is_code_flag:
            return args[index + 1] if index + 1 < len(args) else ""
    return None


def _check_shutdown(name: str, args: list[str], argv: list[str]) -> list[Finding]:
    dangerous = (
        name in POWER_COMMANDS
        or (name in ("init", "telinit") and bool(args) and args[0] in ("0", "6"))
        or (name == "systemctl" and any(a in SYSTEMCTL_POWER_VERBS for a in args))
        or (name == "kill" and _kills_everything(args))
        or name == "killall5"
    )
    return [Finding("shutdown", _display(argv))] if dangerous else []


def _kills_everything(args: list[str]) -> bool:
    rest = list(args)
    if rest and rest[0] in ("-s", "-n"):
        rest = rest[2:]
    elif rest and re.fullmatch(r"-(\d+|[A-Z][A-Z0-9+-]*)", rest[0]) and len(rest) > 1:
        rest = rest[1:]  # the signal
    if rest and rest[0] == "--":
        rest = rest[1:]
    return any(pid in ("1", "-1") for pid in rest)


def _options_and_operands(args: list[str]) -> tuple[list[str], list[str]]:
    """Split arguments into options and (brace-expanded) operands."""
    options, operands, after_dashes = [], [], False
    for arg in args:
        if after_dashes or not arg.startswith("-") or arg == "-":
            operands += _expand_braces(arg)
        elif arg == "--":
            after_dashes = True
        else:
            options.append(arg)
    return options, operands


def _expand_braces(word: str) -> list[str]:
    """Bash brace expansion of ``{a,b}`` lists, in order: ``/{bin,etc}`` is ``/bin /etc``.

    Quotes are already gone, so a quoted ``{a,b}`` is expanded too (the safe direction).
    Expansion stops before it would produce more than ``_MAX_BRACE_WORDS`` words."""
    words = [word]
    while True:
        matches = [_BRACE_LIST.search(item) for item in words]
        if not any(matches):
            return words
        alternatives = [m.group(1).split(",") if m else [] for m in matches]
        if sum(max(len(parts), 1) for parts in alternatives) > _MAX_BRACE_WORDS:
            return words
        expanded: list[str] = []
        for item, match, parts in zip(words, matches, alternatives, strict=True):
            if match is None:
                expanded.append(item)
            else:
                expanded += [item[: match.start()] + part + item[match.end() :] for part in parts]
        words = expanded


def _is_recursive(options: list[str]) -> bool:
    return any(
        o in ("--recursive", "-recursive")
        or (not o.startswith("--") and ("r" in o[1:] or "R" in o[1:]))
        for o in options
    )


def _check_deletion(name: str, args: list[str], argv: list[str], state: _State) -> list[Finding]:
    options, operands = _options_and_operands(args)
    recursive = _is_recursive(options)
    if name == "rm" and (
        "--no-preserve-root" in options
        or (recursive and any(_is_protected_dir(_resolve(o, state)) for o in operands))
    ):
        return [Finding("rm-root", _display(argv))]
    if name == "mv" and any(_is_protected_dir(_resolve(o, state)) for o in operands[:-1]):
        return [Finding("rm-root", _display(argv))]
    deletes_extra = any(o == "--del" or o.startswith("--delete") for o in options)
    if (
        name == "rsync"
        and deletes_extra
        and len(operands) > 1
        and _is_protected_dir(_resolve(operands[-1], state))
    ):
        return [Finding("rm-root", _display(argv))]
    if name in PERMISSION_COMMANDS:
        targets = [_resolve(o, state) for o in operands[1:]] if name != "chattr" else []
        if any(t == "/" for t in targets) or (
            recursive and any(_is_protected_dir(t) for t in targets)
        ):
            return [Finding("chmod-root", _display(argv))]
    return []


def _check_writes(name: str, args: list[str], argv: list[str], state: _State) -> list[Finding]:
    """Commands that write to their path arguments (``tee``, ``cp`` dest, ``dd of=``...)."""
    options, operands = _options_and_operands(args)
    targets: list[str] = []
    if name == "tee" or name in PATH_WRITERS:
        targets = operands
    elif name in COPIERS:
        targets = [operands[-1]] if len(operands) > 1 else []
        targets += [o.split("=", 1)[1] for o in options if o.startswith("--target-directory=")]
        targets += _option_values(args, ("-t",))
        if name == "mv":
            targets += operands[:-1]  # moving a system file away is a write too
    elif name in ("sed", "perl") and any(
        o.startswith(("-i", "--in-place", "-pi")) for o in options
    ):
        targets = operands
    elif name == "dd":
        targets = [a[3:] for a in args if a.startswith("of=")]
    elif name in ("curl", "wget"):
        targets = _option_values(args, ("-o", "--output", "-O", "--output-document"))
    findings = []
    for target in targets:
        rule = _write_rule(_resolve(target, state))
        if rule == "device-write" and name == "dd":
            rule = "dd-device"
        if rule:
            findings.append(Finding(rule, _display(argv)))
    return findings


def _option_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    values = []
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            values.append(args[index + 1])
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                values.append(arg.split("=", 1)[1])
    return values


def _change_directory(args: list[str], state: _State) -> None:
    operands = [a for a in args if not a.startswith("-") or a == "-"]
    if not operands:
        state.cwd = HOME
        return
    if operands[0] == "-":
        state.cwd = None
        return
    resolved = _resolve(operands[0], state)
    state.cwd = resolved if resolved is not None and not resolved.startswith("..") else None


def _check_find(
    args: list[str],
    argv: list[str],
    command: SimpleCommand,
    substitutions: list[str],
    state: _State,
) -> list[Finding]:
    """``find ROOT -delete`` is ``rm -r ROOT``; ``-exec CMD {} ;`` runs CMD on ROOT."""
    roots: list[str] = []
    for arg in args:
        if arg.startswith(("-", "(", "!")):
            break
        roots += _expand_braces(arg)
    roots = list(dict.fromkeys(roots)) or ["."]
    findings: list[Finding] = []
    if "-delete" in args and any(_is_protected_dir(_resolve(r, state)) for r in roots):
        findings.append(Finding("rm-root", _display(argv)))
    actions = _find_actions(args)
    if len(roots) * len(actions) > _FIND_WORK_LIMIT:
        return [*findings, Finding("unparseable", "find: too many roots and -exec actions")]
    if actions and state.depth > _MAX_DEPTH:
        return [*findings, Finding("unparseable", "nesting too deep")]
    nested = _State(dict(state.variables), state.cwd, state.depth + 1)
    for action in actions:
        for root in roots:
            concrete = SimpleCommand([root if word == "{}" else word for word in action])
            findings += _check_pipeline([concrete], substitutions, nested)
    return findings


def _find_actions(args: list[str]) -> list[tuple[str, ...]]:
    """The distinct commands run by ``-exec``/``-execdir``/``-ok``/``-okdir``, in order."""
    actions: list[tuple[str, ...]] = []
    index = 0
    while index < len(args):
        if args[index] in _FIND_ACTIONS:
            start = index + 1
            index = next((i for i in range(start, len(args)) if args[i] in _FIND_ENDS), len(args))
            if index > start:
                actions.append(tuple(args[start:index]))
        index += 1
    return list(dict.fromkeys(actions))


def _fork_bombs(pipelines: list[list[SimpleCommand]]) -> list[Finding]:
    """A shell function whose body calls the function itself through a pipe or with ``&``.

    ``name() { ... }`` reaches us as the one-word command ``name`` ended by ``(``, then a
    command starting with ``{``; a command starting with ``}`` closes the innermost group.
    """
    findings: list[Finding] = []
    groups: list[str | None] = []  # open { } groups: the function they define, or None
    pending: str | None = None
    for pipeline in pipelines:
        for command in pipeline:
            words = list(command.argv)
            if words[:1] == ["}"]:
                if groups:
                    groups.pop()
                words = words[1:]
            if words[:1] == ["function"] and len(words) >= 2:
                pending = words[1]
                words = words[2:]
            if words[:1] == ["{"]:
                groups.append(pending)
                pending = None
                words = words[1:]
            if len(words) == 1 and command.terminator == "(":
                pending = words[0]
            spawns = len(pipeline) > 1 or command.terminator == "&"
            if words and spawns and words[0] in groups:
                findings.append(Finding("fork-bomb", _display(words)))
    return findings
