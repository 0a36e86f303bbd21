"""Multi-process meta-learning: two Gloo processes on CPU launched by ``torchrun`` train a few steps;
both ranks must end with identical weights (DDP averaged the same gradients), and only rank 0 wrote
the run folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headpuppet.testing import make_dataset, tiny_config

SCRIPT = textwrap.dedent('''
    import hashlib, json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from headpuppet.config import load_config
    from headpuppet.training.loop import MetaTrainer

    data, out, cfg_file = sys.argv[1:4]
    trainer = MetaTrainer(load_config(config_file=cfg_file), data, out_root=out, device="cpu")
    start = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in trainer.raw.items()}
    run = trainer.run()
    rank = trainer.dist.rank
    digests, moved = {}, {}
    for name, m in trainer.raw.items():
        h = hashlib.sha256()
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
        digests[name] = h.hexdigest()
        moved[name] = any(not torch.equal(v, start[name][k]) for k, v in m.state_dict().items())
    opt = hashlib.sha256()
    for group in trainer.opt_g.state.values():
        opt.update(group["exp_avg"].numpy().tobytes())
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": trainer.dist.world_size, "run": str(run), "digests": digests,
        "moved": moved, "adam": opt.hexdigest(), "step": trainer.step}))
    trainer.close()
''')


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    data = make_dataset(tmp_path / "ds", videos=5, frames=4)
    cfg_file = tmp_path / "cfg.yaml"
    from headpuppet.config import save_config

    save_config(tiny_config(steps=3, checkpoint_every=2, log_every=1), cfg_file)
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "runs"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("HEADPUPPET_DISABLE_PLUGINS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(data), str(out), str(cfg_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0 and "Address already in use" in proc.stderr:
        pytest.skip("no free local port for the Gloo rendezvous")
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 3
    assert all(r0["moved"].values()) and all(r1["moved"].values())
    assert r0["digests"] == r1["digests"]
    assert r0["adam"] == r1["adam"]
    assert r0["run"] == r1["run"]
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1  # rank 0 alone made a run folder
    run = runs[0]
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3]  # one line per step, not one per rank
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000003"]

    # the checkpoint rank 0 wrote holds the weights both ranks ended with
    from safetensors.torch import load_file

    final = run / "checkpoints" / "step-0000003"
    for name, digest in r0["digests"].items():
        h = hashlib.sha256()
        for k, v in sorted(load_file(str(final / f"{name}.safetensors")).items()):
            h.update(k.encode())
            h.update(v.contiguous().numpy().tobytes())
        assert h.hexdigest() == digest, name
