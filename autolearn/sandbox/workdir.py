"""A shell run's work dir at the bwrap level: a size-capped tmpfs inside the sandbox, and the
host side of copying its contents back afterwards.

Inside, the work dir's path is a tmpfs of ``Limits.workdir_mb`` (`isolation._bwrap_argv`); the
runner copies the host folder in from a read-only bind, runs bash, kills every other process
of the sandbox and sends the folder back as a tar through a pipe (`_harness._run_shell_in_copy`).
No host path is writable from inside, so the host disk receives only what `copy_back` extracts.

`copy_back` trusts nothing in the stream. It keeps at most the cap of file data (in 4 KiB
blocks, as the tmpfs counts it, so whatever fitted inside comes back) and at most one entry per
4 KiB of the cap, so empty files and directories cannot add up unbounded either (directory
blocks come on top of the data: at most as much again if every entry were a directory). It
extracts only directories, regular files and symlinks (as links, never followed: tarfile's
``tar`` filter refuses any path that resolves outside the folder, checked again as each entry
is written), drops setuid/setgid/sticky and group/other write bits, and skips hard links,
devices, fifos and sockets. The folder's old contents are removed first, so it ends as the run
left it. The stream waits in memory, or past 4 MiB in a temporary file (at most twice the cap,
deleted once extracted). The folder is replaced only when the stream ends with the runner's end
marker: a run the host had to kill (its wall clock plus ``process.COPY_BACK_GRACE_S``, an output
flood) or a stream cut at `stream_limit` leaves the folder as it was. Entry names over 1 KiB or
nested over 64 deep are refused (tarfile's filter resolves every prefix of a name).
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from autolearn.sandbox.limits import _MIB, Limits
from autolearn.sandbox.process import _remove_tree

logger = logging.getLogger(__name__)


_BLOCK = 4096  # file data counts in blocks of this size; one entry is allowed per block
_SPOOL_IN_MEMORY = 4 * _MIB  # a stream larger than this is spooled to a temporary file
_MAX_NAME_BYTES = 1024  # longer entry names are refused
_MAX_DEPTH = 64  # so are names nested deeper than this
_STREAM_END = b"AUTOLEARN-WORKDIR-END\n"  # the runner's last bytes (_harness._send_tree)


@dataclass(frozen=True)
class CopyBack:
    """What came back from a run's capped work dir."""

    arrived: bool  # the runner sent the folder (not when it failed or the host killed the run)
    timed_out: bool = False  # the runner stopped bash at the wall clock
    full: bool = False  # the tmpfs was (nearly) full: writes beyond the cap failed inside
    cap_mb: int = 0
    dropped: int = 0  # entries beyond the cap, not copied back
    refused: int = 0  # entries the filter refused (special files, hard links, outside paths)
    incomplete: bool = False  # the stream broke off

    @property
    def message(self) -> str:
        """One line for ExecResult.message; "" when everything came back."""
        notes = []
        if not self.arrived:
            notes.append("the work dir was not copied back")
        if self.full:
            notes.append(f"the work dir reached its {self.cap_mb} MiB cap (writes beyond failed)")
        if self.dropped:
            notes.append(f"{self.dropped} work dir entries beyond the cap were not copied back")
        if self.refused:
            notes.append(f"{self.refused} work dir entries refused (special files, links out)")
        if self.incomplete:
            notes.append("the work dir copy-back broke off")
        return "; ".join(notes)


def workdir_mb_for(folder: Path, *, headroom_mb: int = Limits.workdir_mb) -> int:
    """A ``Limits.workdir_mb`` that holds `folder` as it is plus `headroom_mb` for the run."""
    used = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                used += os.lstat(os.path.join(directory, name)).st_size + _BLOCK
            except OSError:
                continue
    return -(-used // _MIB) + headroom_mb


def spool() -> IO[bytes]:
    """A file for the stream: in memory while small, then a temporary file (deleted on close)."""
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, prefix="autolearn-wd-")


def stream_limit(limits: Limits) -> int:
    """Bytes of stream the host keeps at most: twice the cap, room for tar headers (the cap on
    what is extracted is applied again by `copy_back`)."""
    return 2 * limits.workdir_mb * _MIB + _MIB


def copy_back(spool: IO[bytes], workdir: Path, cap_mb: int) -> CopyBack:
    """Replace the contents of `workdir` with what the stream in `spool` holds, within the cap."""
    spool.seek(0)
    header = spool.read(2)
    if len(header) < 2:
        return CopyBack(arrived=False, cap_mb=cap_mb)
    if not _ends_whole(spool):  # killed mid-send, or cut at the stream limit: keep the folder
        logger.warning("shell run in %s: the work dir copy-back broke off; folder kept", workdir)
        return CopyBack(arrived=False, cap_mb=cap_mb, incomplete=True)
    spool.seek(2)
    timed_out, full = header[:1] == b"T", header[1:2] == b"F"
    _empty(workdir)
    dropped = refused = 0
    incomplete = False
    try:
        with tarfile.open(fileobj=spool, mode="r:") as tar:
            chosen, dropped, refused = _choose(tar, workdir, cap_mb * _MIB)
            tar.extractall(workdir, members=chosen, filter=_safe_or_skipped)
    except (tarfile.TarError, OSError, EOFError) as exc:
        logger.debug("work dir copy-back of %s broke off: %s", workdir, exc)
        incomplete = True
    result = CopyBack(True, timed_out, full, cap_mb, dropped, refused, incomplete)
    if full or dropped:
        logger.warning("shell run in %s: %s", workdir, result.message)
    return result


def _ends_whole(spool: IO[bytes]) -> bool:
    """Whether the stream ends with the runner's end marker, i.e. it arrived whole."""
    spool.seek(0, os.SEEK_END)
    length = spool.tell()
    if length < 2 + len(_STREAM_END):
        return False
    spool.seek(length - len(_STREAM_END))
    return spool.read(len(_STREAM_END)) == _STREAM_END


def _empty(directory: Path) -> None:
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(Path(entry.path))
        else:
            os.unlink(entry.path)


def _choose(
    tar: tarfile.TarFile, workdir: Path, cap_bytes: int
) -> tuple[list[tarfile.TarInfo], int, int]:
    """(members to extract, how many the cap dropped, how many the filter refused)."""
    chosen: list[tarfile.TarInfo] = []
    used = dropped = refused = 0
    for member in tar:
        if len(member.name) > _MAX_NAME_BYTES or member.name.count("/") > _MAX_DEPTH:
            refused += 1  # tarfile's filter resolves every prefix: quadratic in the depth
            continue
        try:
            _safe_member(member, str(workdir))
        except tarfile.FilterError:
            refused += 1
            continue
        cost = -(-member.size // _BLOCK) * _BLOCK if member.isreg() else 0  # as the tmpfs counts
        if used + cost > cap_bytes or len(chosen) >= cap_bytes // _BLOCK:
            dropped += 1
            continue
        used += cost
        chosen.append(member)
    return chosen, dropped, refused


def _safe_or_skipped(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """`_safe_member`, or None (skip it) where it refuses: checked again as each member is
    written, because an earlier member may have made a symlink that this one's path crosses.
    (Not ``errorlevel = 0``: with that, tarfile extracts the *unfiltered* member on a refusal.)"""
    try:
        return _safe_member(member, dest)
    except tarfile.FilterError:
        return None


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's ``tar`` filter, for directories, regular files and symlinks only."""
    if not (member.isreg() or member.isdir() or member.issym()) or member.name in ("", "."):
        raise tarfile.SpecialFileError(member)
    return tarfile.tar_filter(member, dest)
