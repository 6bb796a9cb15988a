"""Training: resume equals an uninterrupted run, signals save state, checkpoints survive a
workflow's deletion of outputs, DDP with two processes equals one process."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmodiff import prepare, synthetic
from cosmodiff.checkpoint import load_checkpoint, model_from_checkpoint
from cosmodiff.train import Diverged, Interrupted, TrainSettings, dihedral, train

ROOT = Path(__file__).resolve().parents[1]
MODEL = {
    "base_channels": 8,
    "channel_mults": [1, 2],
    "num_res_blocks": 1,
    "attention": [False, True],
    "mid_attention": True,
    "groups": 4,
    "time_dim": 32,
    "dropout": 0.0,
}
DIFFUSION = {"schedule": "mudur", "timesteps": 1000, "loss": "huber", "model_variance": "fixedlarge"}
SETTINGS = TrainSettings(iterations=6, batch_size=4, lr=1e-3, ema_decay=0.9, checkpoint_every=3, seed=0, log_every=1, lr_step=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    synthetic.synthesize_cmd(d, "lognormal", n_sims=4, seed=1, resolution=32, progress=False)
    out = {32: d / "p32.h5", 16: d / "p16.h5"}
    prepare.prepare_dataset(d / "Maps_Mcdm_IllustrisTNG_LH_z=0.00.npy", d / "params_LH_IllustrisTNG.txt", out,
                            {"train": 0.5, "val": 0.25, "test": 0.25}, progress=False)
    return out


def run(data, tmp, settings=SETTINGS, **kw):
    return train(data[16], MODEL, DIFFUSION, settings, checkpoint_dir=tmp / "ckpt", state_dir=tmp / "state",
                 metrics_path=tmp / "metrics.jsonl", progress=False, **kw)


def same_weights(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for key in ("model", "ema"):
        assert ca[key].keys() == cb[key].keys()
        for name in ca[key]:
            assert torch.equal(ca[key][name], cb[key][name]), (key, name)


def test_resume_gives_the_weights_of_an_uninterrupted_run(data, tmp_path):
    straight = run(data, tmp_path / "a")
    with pytest.raises(Interrupted, match="iteration 4"):
        run(data, tmp_path / "b", stop_after=4)
    # the workflow deletes declared outputs before a retry: the checkpoint at 3 must come back
    for f in (tmp_path / "b/ckpt").iterdir():
        f.unlink()
    resumed = run(data, tmp_path / "b")
    assert [p.name for p in straight] == [p.name for p in resumed] == ["ckpt_0000003.pt", "ckpt_0000006.pt"]
    for a, b in zip(straight, resumed):
        same_weights(a, b)
    rows_a = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows_b] == list(range(1, 7))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert [r["lr"] for r in rows_b] == [1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1.25e-4]


def test_state_from_other_settings_is_not_resumed(data, tmp_path):
    with pytest.raises(Interrupted):
        run(data, tmp_path, stop_after=2)
    other = replace(SETTINGS, lr=5e-4)
    paths = run(data, tmp_path, settings=other)
    fresh = run(data, tmp_path / "fresh", settings=other)
    same_weights(paths[-1], fresh[-1])


def _damage(path):
    """Overwrite the start of a file in place (same inode), as a disk or a stray write would."""
    with open(path, "r+b") as f:
        f.write(b"\0" * 4096)


def test_resume_restores_a_good_copy_of_a_checkpoint_damaged_in_place(data, tmp_path):
    """Issue 15, case 2: the resumable state hard-linked the declared checkpoints, so a
    checkpoint damaged in place came back damaged on every rerun."""
    straight = run(data, tmp_path / "a")
    paths = run(data, tmp_path / "b")
    _damage(paths[0])
    with pytest.raises(ValueError, match="not a readable cosmodiff checkpoint"):
        load_checkpoint(paths[0])
    for f in (tmp_path / "b/ckpt").iterdir():  # the workflow deletes declared outputs before a rerun
        f.unlink()
    for a, b in zip(straight, run(data, tmp_path / "b")):
        same_weights(a, b)


def test_unreadable_state_or_damaged_copy_warns_and_starts_over(data, tmp_path, caplog):
    straight = run(data, tmp_path / "a")
    with pytest.raises(Interrupted):
        run(data, tmp_path / "b", stop_after=4)
    state = tmp_path / "b/state/state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # truncated: used to fail every rerun
    with caplog.at_level("WARNING", logger="cosmodiff.train"):
        resumed = run(data, tmp_path / "b")
    assert f"ignoring {state}: it cannot be read" in caplog.text and "training starts from iteration 0" in caplog.text
    same_weights(straight[-1], resumed[-1])
    # a state whose copy of a checkpoint no longer has the sha256 it recorded is not resumed
    caplog.clear()
    with pytest.raises(Interrupted):
        run(data, tmp_path / "c", stop_after=4)
    _damage(tmp_path / "c/state/ckpt_0000003.pt")
    with caplog.at_level("WARNING", logger="cosmodiff.train"):
        resumed = run(data, tmp_path / "c")
    assert f"not resuming: {tmp_path / 'c/state/ckpt_0000003.pt'} is missing or damaged" in caplog.text
    for a, b in zip(straight, resumed):
        same_weights(a, b)


def test_non_finite_loss_stops_training_with_the_iteration(data, tmp_path):
    """Issue 15, case 4: NaN losses were logged and checkpoints saved."""
    with pytest.raises(Diverged, match=r"training loss is nan at iteration 1: check the prepared maps"):
        run(data, tmp_path, normalisation=(float("nan"), 12.0))
    assert not list((tmp_path / "ckpt").glob("*.pt")) if (tmp_path / "ckpt").exists() else True


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", bytes(range(256)) * 8, "half"])
def test_unreadable_checkpoint_is_one_line_that_never_suggests_unsafe_loading(data, tmp_path, content):
    """Issue 15, case 8: an empty, truncated or random-bytes file gave a zip, EOFError or
    unpickling traceback suggesting weights_only=False."""
    good = run(data, tmp_path / "a", settings=replace(SETTINGS, iterations=1, checkpoint_every=1))[-1]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2] if content == "half" else content)
    with pytest.raises(ValueError) as info:
        model_from_checkpoint(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad} is not a readable cosmodiff checkpoint") and "\n" not in msg
    assert "weights_only" not in msg and "rerun the training stage that wrote it" in msg


def test_checkpoint_whose_config_does_not_match_its_weights(data, tmp_path):
    good = run(data, tmp_path / "a", settings=replace(SETTINGS, iterations=1, checkpoint_every=1))[-1]
    ckpt = load_checkpoint(good)
    ckpt["model_config"]["base_channels"] = 16
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"edited.pt: its model_config does not match its weights \(RuntimeError: "):
        model_from_checkpoint(tmp_path / "edited.pt")


def test_checkpoint_contents_and_weights_only_loading(data, tmp_path):
    last = run(data, tmp_path)[-1]
    ckpt = load_checkpoint(last)
    assert ckpt["iteration"] == 6 and ckpt["resolution"] == 16 and ckpt["stage"] == "train"
    assert len(ckpt["normalisation"]) == 2 and ckpt["diffusion_config"] == DIFFUSION
    model, diffusion, _ = model_from_checkpoint(last)
    assert diffusion.T == 1000 and not model.training
    # EMA differs from the raw weights (decay 0.9)
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["ema"])


def test_finetune_starts_from_the_pretrained_weights(data, tmp_path):
    pre = run(data, tmp_path / "pre")[-1]
    ft = train(data[32], MODEL, DIFFUSION, replace(SETTINGS, iterations=1, checkpoint_every=1, lr=1e-12),
               checkpoint_dir=tmp_path / "ft", state_dir=tmp_path / "fts", metrics_path=tmp_path / "ft.jsonl",
               init_from=pre, progress=False)[-1]
    a, b = load_checkpoint(pre), load_checkpoint(ft)
    assert b["resolution"] == 32
    for k in a["ema"]:  # one step at lr 1e-12 leaves the pretrained EMA weights in place
        torch.testing.assert_close(b["model"][k], a["ema"][k], rtol=0, atol=1e-9)


def test_learning_rate_milestones_and_a_late_sparse_ema_in_the_loop(data, tmp_path):
    """lr_milestones [2, 5]: iterations 1-2 at lr, 3-5 at lr/2, 6 at lr/4 (the metrics log the
    rate of the next iteration); ema_start 3: the EMA equals the raw weights at checkpoint 3,
    then averages at iterations 4 and 6 only (ema_every 2)."""
    settings = replace(SETTINGS, lr_step=0, lr_milestones=[2, 5], ema_start=3, ema_every=2, ema_decay=0.5)
    paths = run(data, tmp_path, settings)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    at3, at6 = load_checkpoint(paths[0]), load_checkpoint(paths[1])
    assert all(torch.equal(at3["ema"][k], at3["model"][k]) for k in at3["model"])
    assert not all(torch.equal(at6["ema"][k], at6["model"][k]) for k in at6["model"])


def test_dihedral_covers_the_eight_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    out = dihedral(x, torch.arange(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    np.testing.assert_array_equal(out[0], x[0])
    # periodic maps stay periodic: a rolled map maps to a rolled map
    y = torch.roll(x[:1], 1, dims=-1)
    assert torch.equal(dihedral(y, torch.tensor([1])), torch.roll(dihedral(x[:1], torch.tensor([1])), -1, dims=-2))


def _script_args(data, tmp, settings):
    return [sys.executable, str(ROOT / "workflow/scripts/train.py"), "--stage", "pretrain", "--data", str(data[16]),
            "--norm-data", str(data[32]), "--model", json.dumps(MODEL), "--diffusion", json.dumps(DIFFUSION),
            "--settings", json.dumps(settings), "--checkpoint-dir", str(tmp / "ckpt"), "--state-dir", str(tmp / "state"),
            "--metrics", str(tmp / "m.jsonl"), "--loss-figure", str(tmp / "loss.png"), "--threads", "1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_state_and_the_next_run_resumes(data, tmp_path, sig):
    settings = dict(iterations=200, batch_size=4, lr=1e-3, lr_step=0, lr_gamma=0.5, ema_decay=0.9,
                    checkpoint_every=100, seed=0, grad_clip=0.0, timestep_sampler="uniform",
                    sampler_options={}, log_every=1)
    proc = subprocess.Popen(_script_args(data, tmp_path, settings), stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "state/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert f"stopped by {sig.name}" in err
    state = torch.load(tmp_path / "state/state.pt", weights_only=True)
    stopped_at = state["iteration"]
    assert 1 <= stopped_at < 200
    # the retry resumes where the signal stopped it and finishes
    done = subprocess.run(_script_args(data, tmp_path, settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {tmp_path / 'state/state.pt'} at iteration {stopped_at}" in done.stderr
    rows = [json.loads(x)["iteration"] for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert rows == list(range(1, settings["iterations"] + 1))
    assert (tmp_path / "ckpt/ckpt_0000100.pt").exists() and (tmp_path / "ckpt/ckpt_0000200.pt").exists() and (tmp_path / "loss.png").exists()


def _ddp_worker(rank, world, port, data, tmp, settings):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(data[16], MODEL, DIFFUSION, settings, checkpoint_dir=tmp / "ckpt", state_dir=tmp / "state",
          metrics_path=tmp / "metrics.jsonl", progress=False)
    torch.distributed.destroy_process_group()


def test_ddp_two_processes_follow_one_process(data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    settings = replace(SETTINGS, iterations=4, checkpoint_every=4, lr_step=0)
    run(data, tmp_path / "one", settings=settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, data, tmp_path / "two", settings), nprocs=2, join=True, start_method="spawn")
    one = [json.loads(x)["loss"] for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x)["loss"] for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(two, one, rtol=1e-5)
    a, b = load_checkpoint(tmp_path / "one/ckpt/ckpt_0000004.pt"), load_checkpoint(tmp_path / "two/ckpt/ckpt_0000004.pt")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-6)
