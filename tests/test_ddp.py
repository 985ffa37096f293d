"""Two CPU processes under torchrun (gloo): the gathered loss has the global-batch gradient,
training writes one run folder from rank 0 only, and both ranks end with the same weights."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.datasets import make_dataset
from training.checkpoints import available_epochs
from training.runs import find_run_folders

REPO = Path(__file__).resolve().parents[1]

DRIVER = '''
import json, sys
from pathlib import Path
import torch, torch.distributed as dist
from tests.test_training import FakeImageSet, fresh_model, tiny_config
from training.distributed import gather_batch, setup
from training.loss import triplet_loss
from training.trainer import train

out = Path(sys.argv[1])
ctx = setup("cpu")

# The gradient that reaches shared weights, averaged as DDP does, equals the one-process gradient
# of the loss over the concatenated global batch.
gen = torch.Generator().manual_seed(0)
w = torch.randn(5, 3, generator=gen).requires_grad_(True)
x_all, labels_all = torch.randn(16, 5, generator=gen), torch.arange(16) // 4
rows = slice(8 * ctx.rank, 8 * ctx.rank + 8)
emb, labels = gather_batch(ctx, x_all[rows] @ w, labels_all[rows])
triplet_loss(emb, labels, 0.5, "all").loss.backward()
dist.all_reduce(w.grad)
reference = w.detach().clone().requires_grad_(True)
triplet_loss(x_all @ reference, labels_all, 0.5, "all").loss.backward()
grad_ok = torch.allclose(w.grad / ctx.world_size, reference.grad, atol=1e-6)

lines = []
model = fresh_model(seed=ctx.rank)  # DDP must broadcast rank 0's weights
train(tiny_config(epochs=3), model, FakeImageSet(items=16), FakeImageSet(items=6, seed=1),
      out / "runs", log=lines.append)
torch.save(model.state_dict(), out / f"weights{ctx.rank}.pt")
(out / f"rank{ctx.rank}.json").write_text(json.dumps({"grad_ok": grad_ok, "log": lines}))
'''


def torchrun(*argv: object, check: bool = True) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 argv...` in the repository, one thread each."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               *map(str, argv)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done


def test_torchrun_two_processes(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    torchrun(driver, tmp_path)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["grad_ok"] and ranks[1]["grad_ok"]
    assert [line.split()[1] for line in ranks[0]["log"][:-1]] == ["0/3", "1/3", "2/3", "3/3"]
    assert ranks[0]["log"][-1].startswith("saved ")
    assert ranks[1]["log"] == []

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == \
        ["2.pth", "3.pth", "best.pth", "hparams.json", "last.pth", "training_stats.csv"]
    assert available_epochs(run_dir) == [2, 3]
    with open(run_dir / "training_stats.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2", "3"]

    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in (0, 1)]
    saved = torch.load(run_dir / "3.pth", weights_only=True)["model"]
    for name in saved:
        assert torch.equal(weights[0][name], weights[1][name])
        assert torch.equal(weights[0][name], saved[name])


def test_torchrun_pipeline_as_the_readme_shows(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 pipeline.py ...`: one run folder, written and printed once."""
    shop = make_dataset(tmp_path / "shop", num_items=12, per_item=4)
    done = torchrun("pipeline.py", "-m", "simple_net", "--epochs", "2", "--save_every", "1",
                    "--eval_every", "1", "--batch_size", "8", "-K", "2", "--num_workers", "0",
                    "--device", "cpu", "--dataset", shop, "--dataset_dir", tmp_path / "data",
                    "--save_dir", tmp_path / "models")
    epochs = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["0/2", "1/2", "2/2"], done.stdout   # rank 0 alone reports
    assert done.stdout.count("in_any@5") == 1
    (run_dir,) = find_run_folders(tmp_path / "models")
    assert available_epochs(run_dir) == [1, 2]
    with open(run_dir / "training_stats.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]

    # The same command after an item was added: rank 0 refuses the changed data, and the other
    # process stops with it instead of waiting at a barrier forever (the timeout would fail it).
    make_dataset(tmp_path / "more", num_items=13, per_item=4)
    (tmp_path / "more" / "item_012").rename(shop / "item_012")
    again = torchrun("pipeline.py", "-m", "simple_net", "--epochs", "3", "--batch_size", "8", "-K", "2",
                     "--num_workers", "0", "--device", "cpu", "--dataset", shop, "--dataset_dir",
                     tmp_path / "data", "--save_dir", tmp_path / "models", check=False)
    assert again.returncode != 0
    assert "item_012" in again.stderr and "rank 0 refused this run" in again.stderr
