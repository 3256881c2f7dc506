"""Several GPUs of one host (skipped with fewer than 2): each process loads onto its own GPU.

Run on a multi-GPU machine with ``pytest -q tests/gpu``; ``bench/gpu_ddp.py`` measures whole
training runs under ``accelerate launch``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"),
]

# Run by torchrun in each process: load the training model as the pipeline does and report
# where its weights are and what this process holds on each GPU.
PROBE = """
import json, os, sys, torch
from autolearn.config import ModelConfig
from autolearn.models import load_training_model
for fp8 in (False, True):
    tm = load_training_model(ModelConfig(name=sys.argv[1], load_in_fp8=fp8), "transformers", seed=0)
    devices = sorted({str(t.device) for t in tm.model.state_dict().values()})
    held = [torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())]
    print(json.dumps({"rank": int(os.environ["LOCAL_RANK"]), "fp8": tm.fp8, "devices": devices,
                      "held": held}), flush=True)
    del tm
    torch.cuda.empty_cache()
"""


def test_each_process_loads_onto_its_own_gpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(probe),
         str(tiny_model_dir)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 4
    for report in reports:
        rank = report["rank"]
        assert report["devices"] == [f"cuda:{rank}"], report
        assert report["held"][1 - rank] == 0, report  # nothing left on the other GPU
