"""Two CPU processes under torchrun (gloo): one initialisation, two dropout streams, one writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_processes_share_the_start_draw_their_own_dropout_and_only_rank0_writes(
        tmp_path: Path) -> None:
    probe = Path(__file__).with_name("ddp_probe.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(probe), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(probe.parent.parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    said = f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, said
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["first_adapter"] == r1["first_adapter"], "processes must start from one init"
    assert r0["masks"] != r1["masks"], "processes must draw different dropout masks"
    assert r0["final"] == r1["final"], "data-parallel replicas must stay in sync"
    assert r0["losses"] == r1["losses"]  # the history holds the all-reduced loss
    assert r0["saves"] == [2, 4] and r1["saves"] == []
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["rank0.json", "rank1.json", "retrain.ckpt"], leftovers
