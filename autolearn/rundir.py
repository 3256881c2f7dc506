"""The run folder (``training.output_dir``): the names a run writes there, and nothing else.

A training run writes only these names into its folder:

    run.json           the toolkit's record of the run; its presence marks the folder as a run's
    config.yaml        the merged config (``--config`` accepts it as it is)
    metrics.jsonl      one row per logged step
    reward_curve.png   the reward plot
    checkpoint-N/      resumable checkpoints
    adapter/, merged/  the final LoRA adapter and the merged model
    best/, best.json   the adapter that scored best on held-out problems (``eval_steps``)
    completions/       TRL's completion tables (``log_completions``)
    runs/              TensorBoard logs (``report_to: tensorboard``)

:func:`check_run_dir` enforces the rules before any data is read or model loaded: the folder
must be creatable and writable; a folder that holds one of those names but no ``run.json`` of
ours is someone else's and is refused (other files beside them are left alone, so nested run
folders such as ``outputs/code`` inside ``outputs`` are fine); a ``config.yaml`` edited since
the run wrote it is the user's now; a fresh run refuses earlier checkpoints; ``--resume`` needs
one and has nothing to do when the run already reached its last step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autolearn import __version__
from autolearn.errors import NothingToDoError, UserError

RUN_FILE = "run.json"
RUN_MARKER = "autolearn_run"  # the key that tells our run.json from someone else's
OWN_NAMES = (
    RUN_FILE,
    "config.yaml",
    "metrics.jsonl",
    "reward_curve.png",
    "adapter",
    "merged",
    "best",
    "best.json",
    "completions",
    "runs",
)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------- checkpoints


def checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``output_dir``, oldest (smallest N) first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` directory in ``output_dir``, if any."""
    found = checkpoints(output_dir)
    return str(found[-1]) if found else None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The global step a ``checkpoint-N`` directory was saved at (its N)."""
    return int(Path(checkpoint).name.rpartition("-")[2])


def checkpoint_to_resume(output_dir: Path, *, resume: bool) -> str | None:
    """The checkpoint the run continues from: the newest one with ``resume``, none otherwise.

    A fresh run into a folder with an earlier run's checkpoints is refused: checkpoint
    rotation (``save_total_limit``) would delete the new run's checkpoints first, and
    ``--resume`` would later pick the old run's newest one.
    """
    checkpoint = last_checkpoint(output_dir)
    if resume and checkpoint is None:
        raise UserError(f"--resume: no checkpoint-N directory in {output_dir}")
    if not resume and checkpoint is not None:
        raise UserError(
            f"{output_dir} already holds checkpoints of an earlier run: pass --resume to "
            "continue it, or choose another --output_dir"
        )
    return checkpoint


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` logged after ``last_step``.

    A run that died after its last checkpoint logged steps that the resumed run logs again.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # blank, or torn by the crash
            continue
        if isinstance(row, dict) and row.get("step", 0) <= last_step:
            kept.append(line + "\n")
    path.write_text("".join(kept), encoding="utf-8")


# --------------------------------------------------------------------------- run.json


def read_run_record(output_dir: Path) -> dict[str, Any] | None:
    """The folder's ``run.json`` if one of our runs wrote it, else ``None``."""
    path = output_dir / RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and RUN_MARKER in record else None


def write_run_record(output_dir: Path, record: dict[str, Any]) -> None:
    """Replace ``run.json`` in one step, so another process never reads half of it."""
    temporary = output_dir / f".{RUN_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, output_dir / RUN_FILE)


def update_run_record(output_dir: Path, **fields: Any) -> None:
    """Set ``fields`` in the run's ``run.json`` (main process only)."""
    record = read_run_record(output_dir) or new_run_record()
    record.update(fields)
    write_run_record(output_dir, record)


def new_run_record() -> dict[str, Any]:
    """The first fields of ``run.json``."""
    return {RUN_MARKER: __version__, "status": "starting", "sessions": []}


def session_entry(resume_from: str | None) -> dict[str, Any]:
    """What ``run.json`` records of one invocation: when, where from, with which command line."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
        "resumed_from": Path(resume_from).name if resume_from else None,
    }


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's bytes, or ``None`` when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- the checks


def check_run_dir(
    output_dir: Path, *, resume: bool, max_steps: int, claim: bool, writer: bool = True
) -> str | None:
    """Check ``output_dir`` for a run and return the checkpoint to resume from (or ``None``).

    Raises :class:`UserError` for a folder the run may not use and :class:`NothingToDoError`
    for ``--resume`` of a run that already reached ``max_steps`` with its model saved. With
    ``claim`` (the main process, once the run is about to start), creates the folder and
    writes ``run.json`` into it before anything else is written there; without it, only
    checks that it could. The edited-config check is left to the ``writer`` (the main
    process under ``accelerate launch``): the others could see the main process's
    ``config.yaml`` before its checksum.
    """
    check_location(output_dir)
    record = read_run_record(output_dir)
    if record is None:
        refuse_foreign_names(output_dir)
    elif writer:
        refuse_edited_config(output_dir, record)
    checkpoint = checkpoint_to_resume(output_dir, resume=resume)
    if checkpoint is None:
        refuse_saved_model(output_dir)
    elif finished_at(checkpoint, max_steps) and model_saved(output_dir):
        raise NothingToDoError(
            f"{output_dir} is already at step {checkpoint_step(checkpoint)} of {max_steps}; "
            "nothing to do (raise --max_steps to train further)"
        )
    if claim:
        claim_run_dir(output_dir, record, checkpoint)
    return checkpoint


def check_location(output_dir: Path) -> None:
    """Refuse an output path that is a file, lies under one, or where no file can be written.

    Writing is tried for real (a hidden temporary file in the folder, or in its nearest
    existing parent), as permissions, read-only mounts and ``/proc`` all answer differently.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file, not a folder")
    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--output_dir {output_dir}: {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".autolearn-probe-"):
            pass
    except OSError as exc:
        raise UserError(
            f"--output_dir {output_dir}: cannot create files in {existing} ({exc.strerror or exc})"
        ) from None


def refuse_foreign_names(output_dir: Path) -> None:
    """Refuse a folder without our ``run.json`` that holds names a run would write."""
    if not output_dir.is_dir():
        return
    taken = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in output_dir.iterdir()
        if p.name in OWN_NAMES or CHECKPOINT.match(p.name)
    )
    if taken:
        raise UserError(
            f"--output_dir {output_dir} holds {', '.join(taken)}, which no run of this toolkit "
            f"wrote (there is no {RUN_FILE} of ours) and which a run would overwrite: choose "
            "a new or empty folder"
        )


def refuse_edited_config(output_dir: Path, record: dict[str, Any]) -> None:
    """Refuse a run folder whose ``config.yaml`` changed after the run wrote it."""
    current = file_sha256(output_dir / "config.yaml")
    if current is not None and current != record.get("config_sha256"):
        raise UserError(
            f"{output_dir / 'config.yaml'} was edited after the run wrote it, and a run "
            "rewrites that file: copy it out of the run folder (pass the copy to --config), "
            "or choose another --output_dir"
        )


def refuse_saved_model(output_dir: Path) -> None:
    """Refuse a fresh run into a folder that holds the saved model of an earlier one."""
    saved = [name + "/" for name in ("adapter", "merged") if (output_dir / name).exists()]
    if saved:
        raise UserError(
            f"{output_dir} holds the saved model of an earlier run ({', '.join(saved)}), which "
            "a fresh run would replace: choose another --output_dir"
        )


def model_saved(output_dir: Path) -> bool:
    """Whether the run's final adapter and merged model are both there."""
    return (output_dir / "adapter" / "adapter_config.json").is_file() and (
        output_dir / "merged" / "config.json"
    ).is_file()


def finished_at(checkpoint: str | Path | None, max_steps: int) -> bool:
    """Whether ``checkpoint`` is at (or past) the run's last step, ``max_steps``."""
    return checkpoint is not None and checkpoint_step(checkpoint) >= max_steps


def claim_run_dir(output_dir: Path, record: dict[str, Any] | None, resume_from: str | None) -> None:
    """Create the folder and write ``run.json``: a new record, or one more session on resume."""
    if record is not None and resume_from is not None:
        claimed = record
    else:  # a new run; the config an earlier attempt wrote here is still ours to replace
        claimed = new_run_record()
        claimed["sessions"] = []
        if record is not None:
            claimed["config_sha256"] = record.get("config_sha256")
    claimed["status"] = "starting"
    claimed["sessions"] = [*claimed.get("sessions", []), session_entry(resume_from)]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_run_record(output_dir, claimed)
    except OSError as exc:
        raise UserError(
            f"--output_dir {output_dir}: cannot write there ({exc.strerror or exc})"
        ) from None
