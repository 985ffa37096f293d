"""training/checkpoints.py: what a resumed run or evaluate.py gets from a run folder, and the one-line
error for each way a checkpoint can be unusable. Small models and no training, so these run fast."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UserError
from training.checkpoints import (
    FORMAT_VERSION,
    CheckpointSaver,
    available_epochs,
    load_checkpoint,
    load_weights,
    restore_rng_states,
    rng_states,
)


def save_checkpoint(run_dir, epoch: int, contents: dict) -> None:
    """Keep ``<epoch>.pth`` (and the rolling last.pth) as the trainer does with --save_every 1."""
    CheckpointSaver(run_dir, save_every=1).save(epoch, contents)


def state(model: nn.Module, **extra) -> dict:
    return {"model": model.state_dict(), "model_name": "lin", "model_class": "Linear", **extra}


@pytest.fixture
def run_dir(tmp_path):
    """Checkpoints of epochs 2, 10 and 3 (written out of order), plus files that are not ones."""
    torch.manual_seed(0)
    for epoch in (2, 10, 3):
        save_checkpoint(tmp_path, epoch, state(nn.Linear(2, 2), metrics={"score": epoch}))
    for name in (".10.pth.tmp", "10.pth.part", "notes.txt", "7.pt"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_available_epochs_are_the_epoch_files_in_numeric_order(run_dir, tmp_path):
    assert available_epochs(run_dir) == [2, 3, 10]
    assert available_epochs(tmp_path / "missing") == []


def test_latest_is_the_highest_epoch_with_its_contents(run_dir):
    checkpoint = load_checkpoint(run_dir)
    assert (checkpoint.epoch, checkpoint.path) == (10, run_dir / "10.pth")
    assert checkpoint.state["metrics"] == {"score": 10}
    assert checkpoint.state["format_version"] == FORMAT_VERSION and checkpoint.state["epoch"] == 10
    assert load_checkpoint(run_dir, 3).epoch == 3


def test_unreadable_latest_falls_back_with_a_warning_naming_it(run_dir):
    (run_dir / "10.pth").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=r"10\.pth: corrupt or unreadable checkpoint .*falling back"):
        assert load_checkpoint(run_dir).epoch == 3


def test_unreadable_epoch_asked_for_by_number_is_an_error(run_dir):
    (run_dir / "3.pth").write_bytes(b"")
    with pytest.raises(UserError) as err:
        load_checkpoint(run_dir, 3)
    assert str(err.value) == (f"{run_dir / '3.pth'}: corrupt or unreadable checkpoint (EOFError); "
                              "delete it or pick another epoch")


def test_missing_epoch_lists_the_available_ones(run_dir):
    with pytest.raises(UserError) as err:
        load_checkpoint(run_dir, 4)
    assert str(err.value) == (f"{run_dir / '4.pth'}: no checkpoint for epoch 4; "
                              "available epochs: 2, 3, 10; last.pth: 3")


def test_folder_without_checkpoints_says_to_train_first(tmp_path):
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == (f"{tmp_path}: no checkpoints (<epoch>.pth, last.pth) in this run folder; "
                              "train this configuration first, or check --save_dir and the "
                              "hyperparameter flags")


def test_run_without_best_says_what_else_can_be_loaded(run_dir):
    with pytest.raises(UserError) as err:
        load_checkpoint(run_dir, "best")
    assert str(err.value) == (f"{run_dir / 'best.pth'}: no best checkpoint (the run was trained before "
                              "best.pth existed, or never evaluated); use --checkpoint latest or one "
                              "of the epochs 2, 3, 10; last.pth: 3")


def test_no_readable_checkpoint_at_all(run_dir):
    for name in ("2.pth", "3.pth", "10.pth", "last.pth"):
        (run_dir / name).write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError) as err:
            load_checkpoint(run_dir)
    assert str(err.value) == (f"{run_dir}: none of the checkpoints (2, 3, 10) can be read; delete the "
                              "folder to train from scratch")


class Payload:
    """An object a checkpoint must never hold: unpickling arbitrary classes can run code."""


def test_file_holding_python_objects_is_refused_without_running_them(tmp_path):
    torch.save({"model": {}, "format_version": 1, "epoch": 1, "extra": Payload()}, tmp_path / "1.pth")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path, 1)
    assert str(err.value) == (f"{tmp_path / '1.pth'}: refused to load: it holds Python objects, not only "
                              "weights, and such a file can run code when opened (nothing in it was "
                              "run); use a checkpoint from a source you trust, or delete it")


@pytest.mark.parametrize("contents, expected", [
    ({"epoch": 1, "format_version": 1}, "not a Snap Vision checkpoint"),
    ({"model": {}, "epoch": "1", "format_version": 1}, "not a Snap Vision checkpoint"),
    ({"model": {}, "epoch": 1}, "not a Snap Vision checkpoint"),
    ([1, 2], "not a Snap Vision checkpoint"),
    ({"model": {}, "epoch": 1, "format_version": FORMAT_VERSION + 1},
     f"written by a newer Snap Vision (format {FORMAT_VERSION + 1}, this one reads up to {FORMAT_VERSION})"),
])
def test_files_that_are_not_our_checkpoints(tmp_path, contents, expected):
    torch.save(contents, tmp_path / "1.pth")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path, 1)
    assert str(err.value).startswith(f"{tmp_path / '1.pth'}: ") and expected in str(err.value)
    assert str(err.value).endswith("; delete it or pick another epoch" if "not a" in expected
                                   else "; upgrade to load it")


def test_current_format_version_loads(tmp_path):
    torch.save({"model": {}, "epoch": 1, "format_version": FORMAT_VERSION}, tmp_path / "1.pth")
    assert load_checkpoint(tmp_path, 1).epoch == 1


def test_load_weights_restores_the_saved_weights(run_dir):
    model = nn.Linear(2, 2)
    checkpoint = load_weights(model, run_dir, "lin", 3)
    saved = torch.load(run_dir / "3.pth", weights_only=True)["model"]
    assert checkpoint.epoch == 3 and torch.equal(model.weight, saved["weight"])


def test_load_weights_refuses_another_model(run_dir):
    with pytest.raises(UserError) as err:
        load_weights(nn.Linear(2, 2), run_dir, "other")
    assert str(err.value) == (f"{run_dir / '10.pth'}: holds a lin (Linear) model but other (Linear) was "
                              "requested; choose the matching --model or another run folder")


def test_load_weights_refuses_weights_of_another_shape(run_dir):
    with pytest.raises(UserError, match=r"10\.pth: weights do not fit Linear \(Error\(s\) in loading") as err:
        load_weights(nn.Linear(3, 2), run_dir, "lin")
    assert str(err.value).endswith("); it was trained with another version of the model")


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path, 1, {"model": {}, "rng": rng_states()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_states(load_checkpoint(tmp_path, 1).state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_saving_over_an_epoch_replaces_it_and_leaves_no_temporary_file(tmp_path):
    save_checkpoint(tmp_path, 1, {"model": {"w": torch.zeros(1)}})
    save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(1)}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.pth", "last.pth"]
    assert load_checkpoint(tmp_path, 1).state["model"]["w"].item() == 1.0



def test_best_is_the_highest_score_and_survives_a_resume(tmp_path):
    saver = CheckpointSaver(tmp_path)
    for epoch, score in ((1, 50.0), (2, 70.0), (3, 70.0), (4, 60.0)):
        saver.save(epoch, {"model": {}}, score=score)
    assert load_checkpoint(tmp_path, "best").epoch == 2            # ties keep the earlier epoch
    resumed = CheckpointSaver(tmp_path)
    assert resumed.resume().epoch == 4
    assert (resumed.best_score, resumed.best_epoch) == (70.0, 2)    # the trainer's "best ... at epoch 2"
    resumed.save(5, {"model": {}}, score=65.0)                      # below the best of 70
    assert load_checkpoint(tmp_path, "best").epoch == 2


@pytest.mark.parametrize("asked, used", [(3, 3), (10, 10), (5, 3), (20, 10), (1, 2)])
def test_nearest_is_the_asked_epoch_else_the_newest_before_it_else_the_earliest(run_dir, asked, used):
    """What ``--epochs N`` below a run's reach loads (training.trainer): N.pth, else the newest
    checkpoint saved before N, else the earliest one."""
    checkpoint = CheckpointSaver(run_dir).nearest(asked)
    assert (checkpoint.epoch, checkpoint.path.name) == (used, f"{used}.pth")
    assert checkpoint.state["metrics"] == {"score": used}


def test_epochs_kept_only_in_last_and_best_can_be_loaded_and_are_listed(tmp_path):
    """save_every 0 keeps no numbered file before the end: last.pth and best.pth are the run."""
    saver = CheckpointSaver(tmp_path)
    saver.save(1, {"model": {}}, score=80.0)
    saver.save(2, {"model": {}}, score=10.0)
    saver.save(3, {"model": {}}, final=True)
    assert saver.epochs() == [1, 3]
    assert saver.listing() == "3; last.pth: 3; best.pth: 1"
    assert (saver.nearest(2).epoch, saver.nearest(2).path.name) == (1, "best.pth")
    assert CheckpointSaver(tmp_path / "empty").listing() == "none numbered"
    (tmp_path / "3.pth").unlink()
    assert saver.listing() == "none numbered; last.pth: 3; best.pth: 1"
    assert (saver.load(3).epoch, saver.load(3).path.name) == (3, "last.pth")


def test_by_default_only_last_pth_is_kept_and_a_run_of_only_last_pth_loads(tmp_path):
    """save_every 0 (the default) and no score: a kill loses at most one epoch, nothing else piles up."""
    saver = CheckpointSaver(tmp_path)
    assert saver.save(1, {"model": {}}) == [tmp_path / "last.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]
    assert torch.load(tmp_path / "last.pth", weights_only=True)["best"] == {"score": None, "epoch": None}
    checkpoint = saver.load()
    assert (checkpoint.epoch, checkpoint.path.name) == (1, "last.pth")
    assert CheckpointSaver(tmp_path).resume().epoch == 1


def test_latest_prefers_the_numbered_file_when_last_pth_holds_the_same_epoch(tmp_path):
    """Both hold the same bytes; the numbered file is the one a message should name."""
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, {"model": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(tmp_path).path == tmp_path / "2.pth"


def test_damaged_last_pth_is_tried_first_then_skipped_with_a_warning_naming_it(run_dir):
    """last.pth whose epoch cannot even be peeked may still be the newest: it is tried first."""
    (run_dir / "last.pth").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=r"last\.pth: corrupt or unreadable checkpoint"):
        assert load_checkpoint(run_dir).epoch == 10


def test_last_pth_with_a_text_epoch_is_skipped_not_a_crash(run_dir):
    torch.save({"model": {}, "epoch": "11", "format_version": FORMAT_VERSION}, run_dir / "last.pth")
    assert CheckpointSaver(run_dir).listing() == "2, 3, 10"
    with pytest.warns(UserWarning, match=r"last\.pth: not a Snap Vision checkpoint"):
        assert load_checkpoint(run_dir).epoch == 10


TRIPWIRE: list[str] = []


def _tripwire() -> dict:
    TRIPWIRE.append("ran")
    return {}


class Tripwire:
    """Unpickling this calls `_tripwire`: what a malicious checkpoint would do."""

    def __reduce__(self):
        return _tripwire, ()


def test_listing_or_resuming_never_unpickles_code_from_last_pth(run_dir):
    """Peeking at last.pth's epoch (listings, choosing the latest) is as safe as loading it."""
    TRIPWIRE.clear()
    torch.save({"model": {}, "epoch": 11, "format_version": FORMAT_VERSION, "x": Tripwire()},
               run_dir / "last.pth")
    assert CheckpointSaver(run_dir).listing() == "2, 3, 10"
    with pytest.warns(UserWarning, match=r"last\.pth: refused to load"):
        assert load_checkpoint(run_dir).epoch == 10
    assert TRIPWIRE == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_states_survive_a_checkpoint_round_trip(tmp_path):
    torch.cuda.manual_seed_all(3)
    save_checkpoint(tmp_path, 1, {"model": {}, "rng": rng_states()})
    expected = torch.rand(4, device="cuda").tolist()
    torch.cuda.manual_seed_all(9)
    restore_rng_states(load_checkpoint(tmp_path, 1).state["rng"])
    assert torch.rand(4, device="cuda").tolist() == expected
