"""dvc.yaml: its stages name our scripts, files and params, and running them produces what it declares.

The real check runs every stage's command exactly as written, in a copy of the repository with a
tiny params.yaml and a small generated dataset, then looks for every declared output. DVC itself
is not needed for that; when it is installed, `dvc repro` runs the same pipeline in a git repo.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from common.params import load_params
from data.synthetic import generate_synthetic
from evaluation.reports import CURVES_CSV, CURVES_PNG, EMBEDDING_PNG, METRICS_FILE, PLOTS_DIR
from training.curves import TIDY_COLUMNS
from training.options import ALL_SETTINGS

REPO = Path(__file__).resolve().parents[1]
OUTPUT_KINDS = ("outs", "metrics", "plots")
# Left out of the workspace copy: tool state, run-time data and outputs (code and config go in).
NOT_COPIED = {".git", ".dvc", "__pycache__", ".pytest_cache", ".venv", "reports", "files_to_gitignore"}
# The workspace's dataset is a tiny synthetic set at data/synthetic (where dvc.yaml declares it),
# named as a folder: `--dataset synthetic` would replace it with the full 300-item built-in set.
TINY_DATASET = "data/synthetic"
TINY_PARAMS = {"train": {"model": "simple_net", "epochs": 1, "batch_size": 8, "images_per_item": 4,
                         "eval_every": 1, "save_every": 1, "num_workers": 0, "device": "cpu"},
               "data": {"dataset": TINY_DATASET, "eval_fraction": 0.25}}
STAGE_TIMEOUT_S = 300


def dvc_file() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def stages() -> dict[str, dict]:
    return dvc_file()["stages"]


def entries(stage: dict, kind: str) -> list[str]:
    """Paths of a stage's deps/outs/metrics/plots (each a path or {path: options})."""
    return [e if isinstance(e, str) else next(iter(e)) for e in stage.get(kind, [])]


def outputs(stage: dict) -> list[str]:
    return [path for kind in OUTPUT_KINDS for path in entries(stage, kind)]


def test_stages_run_our_front_ends_with_the_params_file():
    for name, stage in stages().items():
        words = shlex.split(stage["cmd"])
        assert words[0] == "python" and (REPO / words[1]).is_file(), f"{name}: {stage['cmd']}"
        assert words[words.index("--params") + 1] == "params.yaml", name


def test_deps_exist_or_come_from_an_earlier_stage():
    produced: set[str] = set()
    for name, stage in stages().items():
        for dep in entries(stage, "deps"):
            assert (REPO / dep).exists() or dep in produced, f"{name}: dep {dep} is neither in the repo nor an output"
        produced |= set(outputs(stage))


def test_prepare_depends_on_every_data_module():
    deps = set(entries(stages()["prepare"], "deps"))
    missing = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "data").glob("*.py")
                     if p.relative_to(REPO).as_posix() not in deps)
    assert not missing, f"add {missing} to the deps of the prepare stage in dvc.yaml"


def test_stage_params_are_keys_of_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    known = set(params) | set(load_params(REPO / "params.yaml", ALL_SETTINGS))
    for name, stage in stages().items():
        unknown = set(stage.get("params", [])) - known
        assert not unknown, f"{name}: params {unknown} are not in params.yaml"


def test_outputs_are_where_the_code_writes_with_params_yaml():
    params = load_params(REPO / "params.yaml", ALL_SETTINGS)
    all_stages = stages()
    assert params["data.dataset"] == "synthetic" and params["train.seed"] == 0
    assert f"{params['data.dataset_dir']}/synthetic" in outputs(all_stages["prepare"])
    assert f"{params['data.dataset_dir']}/files_to_gitignore/cache" in outputs(all_stages["prepare"])
    assert params["train.save_dir"] in outputs(all_stages["train"])
    root = params["reports.root"]
    assert sorted(outputs(all_stages["evaluate"])) == sorted([
        f"{root}/{METRICS_FILE}", f"{root}/{CURVES_CSV}", f"{root}/{PLOTS_DIR}/{CURVES_PNG}",
        f"{root}/{PLOTS_DIR}/{EMBEDDING_PNG}"])


def test_top_level_plots_read_declared_outputs_and_columns():
    evaluate_outputs = outputs(stages()["evaluate"])
    for plot in dvc_file()["plots"]:
        (title, options), = plot.items()
        assert options["x"] == "epoch", title
        for path, columns in options["y"].items():
            for column in columns if isinstance(columns, list) else [columns]:
                assert path in evaluate_outputs and column in TIDY_COLUMNS, f"{title}: {path} {column}"


def test_no_dependency_file_is_empty():
    """`dvc repro` warns "'<file>' is empty" for each empty file dep: a new user reads it as a fault."""
    for name, stage in stages().items():
        for dep in entries(stage, "deps"):
            path = REPO / dep
            assert not path.is_file() or path.stat().st_size > 0, f"{name}: dep {dep} is an empty file"


@lru_cache(maxsize=None)
def help_text(script: str) -> str:
    """`python <script> --help`, from its build_parser() in this process (fast)."""
    return importlib.import_module(Path(script).stem).build_parser().format_help()


def test_stage_flags_exist_in_the_front_ends():
    """Every flag a stage passes is one its script declares."""
    for name, stage in stages().items():
        words = shlex.split(stage["cmd"])
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in help_text(words[1]), f"{name}: {words[1]} has no {flag}"


def make_workspace(root: Path) -> Path:
    """A copy of the repository's code with a tiny params.yaml and a small built-in dataset."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(names) & NOT_COPIED
        if Path(folder) == REPO / "data":  # sub-folders of data/ are datasets and caches, not code
            skipped |= {n for n in names if (Path(folder) / n).is_dir()}
        return skipped

    workspace = root / "repo"
    shutil.copytree(REPO, workspace, ignore=ignore)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for group, values in TINY_PARAMS.items():
        params[group].update(values)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    generate_synthetic(workspace / TINY_DATASET, seed=0, num_items=12, photos_per_item=4, image_size=32)
    return workspace


def environment() -> dict[str, str]:
    """The stages' `python` is this interpreter; headless plots; no DVC telemetry."""
    env = dict(os.environ, MPLBACKEND="Agg", DVC_NO_ANALYTICS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run(command: str | list[str], cwd: Path, env: dict[str, str], with_stderr: bool = False) -> str:
    """Run ``command`` (a string through the shell, as DVC runs a stage) and return its stdout
    (followed by its stderr, where DVC writes its warnings, when asked)."""
    result = subprocess.run(command, shell=isinstance(command, str), cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=STAGE_TIMEOUT_S)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + (result.stderr if with_stderr else "")


def assert_outputs_exist(workspace: Path) -> None:
    for name, stage in stages().items():
        for path in outputs(stage):
            assert (workspace / path).exists(), f"{name}: declared output {path} was not written"


def test_every_stage_command_runs_as_written(tmp_path):
    workspace = make_workspace(tmp_path)
    env = environment()
    before = sorted(p.name for p in (workspace / TINY_DATASET).iterdir())
    for stage in stages().values():
        run(stage["cmd"], workspace, env)
    assert_outputs_exist(workspace)
    assert sorted(p.name for p in (workspace / TINY_DATASET).iterdir()) == before  # used, not rebuilt
    assert (workspace / "reports" / METRICS_FILE).stat().st_size > 0


def dvc_command() -> list[str] | None:
    """How to call DVC here: its executable, or `python -m dvc` where only the package is installed."""
    found = shutil.which("dvc")
    if found:
        return [found]
    return [sys.executable, "-m", "dvc"] if importlib.util.find_spec("dvc") else None


def test_dvc_repro_runs_the_pipeline(tmp_path):
    dvc = dvc_command()
    if dvc is None:
        pytest.skip("dvc not installed")
    workspace = make_workspace(tmp_path)
    env = environment()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine: stages leave __pycache__/ in deps
    run(["git", "init", "-q"], workspace, env)
    run([*dvc, "init", "-q"], workspace, env)
    assert "is empty" not in run([*dvc, "repro"], workspace, env, with_stderr=True)
    assert_outputs_exist(workspace)
    status = run([*dvc, "status"], workspace, env)
    assert "up to date" in status, f"dvc status right after dvc repro (is __pycache__/ in .dvcignore?):\n{status}"
    assert "precision@1" in run([*dvc, "metrics", "show"], workspace, env)
