"""Training checkpoints (kidwhisper.train.checkpoint): checksums, the previous one kept, fallback, clear errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from kidwhisper.train import checkpoint as ckpt_io
from kidwhisper.train.checkpoint import CheckpointError, load_usable

FILES = ["checksums.sha256", "optimizer.pt", "rng_rank0.json", "scheduler.pt", "trainable.safetensors",
         "trainer_state.json"]


def save(run: Path, step: int) -> Path:
    """A real checkpoint of a small linear layer after ``step`` AdamW steps."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(step):
        layer(torch.ones(2, 4)).sum().backward()
        opt.step()
        sched.step()
    tmp = ckpt_io.tmp_dir(run)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ckpt_io.write_rng(tmp, 0)
    ckpt_io.write_files(tmp, {k: v.detach() for k, v in layer.state_dict().items()}, opt.state_dict(),
                        sched.state_dict())
    return ckpt_io.finish(tmp, ckpt_io.TrainerState(global_step=step, epoch=0, step_in_epoch=step, world_size=1,
                                                    windows_fingerprint="w"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_the_previous_checkpoint_is_kept_and_checksums_cover_every_file(tmp_path):
    save(tmp_path, 1)
    last = save(tmp_path, 2)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", "previous"]
    assert sorted(p.name for p in last.iterdir()) == FILES
    sums = dict(reversed(line.split("  ")) for line in (last / "checksums.sha256").read_text().splitlines())
    assert sorted(sums) == [f for f in FILES if f != "checksums.sha256"]
    for name, digest in sums.items():  # what `sha256sum -c checksums.sha256` checks
        assert hashlib.sha256((last / name).read_bytes()).hexdigest() == digest
    ckpt = load_usable(tmp_path)
    assert ckpt.path == last and ckpt.state.global_step == 2 and not ckpt.passed_over
    assert ckpt.scheduler["last_epoch"] == 2 and ckpt.optimizer["state"][0]["step"] == 2
    save(tmp_path, 3)
    assert load_usable(tmp_path).state.global_step == 3
    assert ckpt_io.load(ckpts / "previous").state.global_step == 2  # two generations, never more


@pytest.mark.parametrize("name", [n for n in FILES])
def test_a_truncated_file_falls_back_to_the_previous_checkpoint(tmp_path, caplog, name):
    save(tmp_path, 1)
    last = save(tmp_path, 2)
    truncate(last / name)
    with caplog.at_level(logging.WARNING, logger="kidwhisper.train.checkpoint"):
        ckpt = load_usable(tmp_path)
    assert ckpt.state.global_step == 1 and ckpt.path.name == "previous" and ckpt.passed_over == [last]
    assert f"checkpoints/last/{name}" in caplog.text and "resuming from" in caplog.text


def test_no_usable_checkpoint_names_every_bad_file(tmp_path):
    save(tmp_path, 1)
    last = save(tmp_path, 2)
    truncate(last / "optimizer.pt")
    (tmp_path / "checkpoints" / "previous" / "trainable.safetensors").unlink()
    with pytest.raises(CheckpointError) as e:
        load_usable(tmp_path)
    msg = str(e.value)
    assert msg.startswith("--resume: no usable checkpoint in")
    assert "last/optimizer.pt: its sha256 differs from the one in checksums.sha256 (truncated or damaged)" in msg
    assert "previous/trainable.safetensors: missing" in msg
    assert "start the run again in a new --out" in msg and "\n" not in msg


def test_an_unverifiable_older_checkpoint_names_its_unreadable_file(tmp_path):
    """Older versions wrote no checksums: a truncated trainer_state.json is named, not "Expecting value"."""
    last = save(tmp_path, 1)
    (last / "checksums.sha256").unlink()
    assert load_usable(tmp_path).state.global_step == 1  # parsed, not verified
    truncate(last / "trainer_state.json")
    with pytest.raises(CheckpointError, match=r"last/trainer_state.json: unreadable \(JSONDecodeError"):
        load_usable(tmp_path)
    truncate(last / "optimizer.pt")
    (last / "trainer_state.json").write_text('{"global_step": 1}')
    with pytest.raises(CheckpointError, match=r"trainer_state.json: lacks \['epoch'"):
        load_usable(tmp_path)


class Killed(Exception):
    pass


def test_a_kill_while_the_checkpoints_rotate_leaves_a_complete_one(tmp_path, monkeypatch):
    save(tmp_path, 1)
    save(tmp_path, 2)
    replace, calls = os.replace, []

    def die_before_the_new_one_is_in(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "last":
            raise Killed
        replace(src, dst)

    monkeypatch.setattr(ckpt_io.os, "replace", die_before_the_new_one_is_in)
    with pytest.raises(Killed):
        save(tmp_path, 3)
    monkeypatch.undo()
    assert calls == [".previous.del", "previous", "last"]
    assert not (tmp_path / "checkpoints" / "last").exists()
    assert load_usable(tmp_path).state.global_step == 2  # the step-2 checkpoint, now called previous
    save(tmp_path, 3)
    assert [load_usable(tmp_path).state.global_step, ckpt_io.load(tmp_path / "checkpoints" / "previous")
            .state.global_step] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last", "previous"]


def test_a_damaged_checkpoint_is_set_aside(tmp_path):
    save(tmp_path, 1)
    last = save(tmp_path, 2)
    truncate(last / "scheduler.pt")
    ckpt = load_usable(tmp_path)
    ckpt_io.set_aside(ckpt.passed_over)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.damaged", "previous"]
    save(tmp_path, 3)  # the good step-1 checkpoint becomes previous, not the damaged one
    assert ckpt_io.load(tmp_path / "checkpoints" / "previous").state.global_step == 1


# trainer_state.json as the Trainer wrote it before TrainerState existed (a dict of these keys, json.dumps'd)
SAVED_STATE = ('{"global_step": 6, "epoch": 2, "step_in_epoch": 2, "order": [1, 0], "best_wer": 0.875, '
               '"best_step": 4, "bad_evals": 1, "evals": [{"step": 2, "dev_wer": 1.25}, {"step": 4, "dev_wer": 0.875}, '
               '{"step": 6, "dev_wer": 0.9}], "elapsed_s": 12.5, "train_s": 9.25, "eval_s": 3.0, "windows_seen": 6, '
               '"clips_seen": 36, "stopped_early": false, "world_size": 1, "windows_fingerprint": "ab12"}')


def test_a_saved_trainer_state_loads_and_is_written_back_unchanged(tmp_path):
    last = save(tmp_path, 1)
    (last / "checksums.sha256").unlink()  # unverified, as in an older checkpoint: the state file is edited
    (last / "trainer_state.json").write_text(SAVED_STATE)
    state = load_usable(tmp_path).state
    assert (state.global_step, state.epoch, state.step_in_epoch, state.order) == (6, 2, 2, [1, 0])
    assert (state.best_wer, state.best_step, state.bad_evals, state.stopped_early) == (0.875, 4, 1, False)
    assert state.evals[-1] == {"step": 6, "dev_wer": 0.9} and state.clips_seen == 36
    assert json.dumps(state.to_dict()) == SAVED_STATE  # same keys, same order, same values

    (last / "trainer_state.json").write_text('{"global_step": 3, "epoch": 1, "step_in_epoch": 1, "world_size": 2, '
                                             '"windows_fingerprint": "w", "from_a_newer_version": 1}')
    state = load_usable(tmp_path).state  # optional keys default, unknown keys are ignored
    assert state == ckpt_io.TrainerState(global_step=3, epoch=1, step_in_epoch=1, world_size=2, windows_fingerprint="w")
