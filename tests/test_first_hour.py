"""What a new user reads: flag typos, messages that name what was done and where, one-line
warnings, and one unit (percent) for a metric everywhere it is shown."""
import csv
import functools
import json
import re
import shlex
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import evaluate
import pipeline
from common.cli import run_main, show_warning_line
from data import sources
from data.decode import decode_image
from data.splits import load_splits
from data.synthetic import generate_synthetic
from evaluation import figures
from tests.datasets import TINY, make_dataset


def run(main, argv, capsys):
    code = run_main(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("front_end, typo, meant", [
    (pipeline, "--epoch", "--epochs"), (pipeline, "--batchsize", "--batch_size"),
    (evaluate, "--shownums", "--show_nums"), (evaluate, "--num_neighbors", "--num_neighbours")])
def test_an_unknown_flag_is_refused_with_the_closest_real_one(front_end, typo, meant, capsys):
    with pytest.raises(SystemExit) as exit_info:
        front_end.main([typo, "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {typo} 2; {typo}: did you mean {meant}?" in err


def test_a_prefix_is_not_taken_for_the_flag(capsys):
    with pytest.raises(SystemExit):
        pipeline.main(["--epoch", "2", "--prepare_only"])  # must not silently mean --epochs 2
    assert "did you mean --epochs?" in capsys.readouterr().err


def test_show_nums_out_of_range_stops_before_any_metric(trained, capsys):
    _, _, common = trained
    code, out, err = run(evaluate.main, ["--model", "simple_net", "--show_nums", "3", "999", *common], capsys)
    assert code == 2 and "precision@1" not in out
    assert re.fullmatch(r"error: --show_nums: query number\(s\) 999 out of range; valid numbers are 0 to \d+\n", err)


def test_the_only_run_of_a_model_comes_with_the_command_that_evaluates_it(trained, capsys):
    _, save_dir, common = trained
    code, _, err = run(evaluate.main, ["--model", "simple_net", "-lr", "0.5", "--no_figures", *common], capsys)
    assert code == 2
    command = shlex.split(err.split("to evaluate the one simple_net run: ")[1])
    assert command[:2] == ["python", "evaluate.py"] and str(save_dir) in " ".join(command)
    code, out, _ = run(evaluate.main, [*command[2:], "--no_figures"], capsys)  # the printed line works
    assert code == 0 and "epoch 2 of" in out


def test_a_corrupt_latest_checkpoint_warns_in_one_clean_line(trained, tmp_path, capsys):
    _, save_dir, common = trained
    copy = tmp_path / "models"
    shutil.copytree(save_dir, copy)
    run_dir = next(copy.glob("*/SimpleNet_*"))
    corrupt = [run_dir / "last.pth", run_dir / "2.pth"]  # both hold epoch 2: "latest" falls back to 1
    for path in corrupt:
        path.write_bytes(b"not a checkpoint")
    code, out, err = run(evaluate.main, ["--model", "simple_net", "--no_figures", *common,
                                         "--save_dir", str(copy)], capsys)
    assert code == 0 and "epoch 1 of" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and sorted(line.split(": ")[1] for line in lines) == sorted(map(str, corrupt))
    assert all(line.startswith("warning: ") and "falling back" in line for line in lines)
    assert "UserWarning" not in err and "warnings.warn" not in err


def test_a_library_warning_keeps_its_origin_on_the_same_line(capsys):
    show_warning_line("something\n  odd", DeprecationWarning, "/usr/lib/python3/site-packages/lib.py", 7)
    assert capsys.readouterr().err == "warning: something odd (DeprecationWarning from lib.py:7)\n"


def test_warnings_formatting_is_restored_after_the_front_end(capsys):
    before = warnings.showwarning
    run_main(lambda argv: 0, [])
    assert warnings.showwarning is before


def test_one_unit_for_a_metric_in_the_table_the_csv_and_metrics_json(trained, tmp_path, capsys):
    _, save_dir, common = trained
    reports = tmp_path / "reports"
    code, out, _ = run(evaluate.main, ["--model", "simple_net", "--no_figures", "--reports_dir", str(reports),
                                       *common], capsys)
    assert code == 0
    table = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
             if re.match(r"^(precision@1|MAP@R|in_any@5)\s+[\d.]+$", line)}
    metrics = json.loads((reports / "metrics.json").read_text())
    with open(next(save_dir.glob("*/SimpleNet_*")) / "training_stats.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    for table_key, json_key, csv_key in (("precision@1", "precision@1", "precision@1"),
                                         ("MAP@R", "map@r", "map@r"),
                                         ("in_any@5", "in_any@5", "evaluation score")):
        assert table[table_key] == pytest.approx(metrics[json_key], abs=0.05)  # the table rounds to 0.1
        assert float(last[csv_key]) == pytest.approx(metrics[json_key], abs=1e-3)
    queries = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("queries"))
    assert metrics["num_queries"] == queries and metrics["precision@1"] > 1  # percent, not a fraction
    assert f"reports written: {reports / 'metrics.json'}" in out
    assert str(reports / "plots" / "embedding.png") in out


def test_generating_the_built_in_dataset_says_how_long_and_how_much(tmp_path, capsys, monkeypatch):
    small = functools.partial(generate_synthetic, num_items=5, photos_per_item=2, image_size=16)
    monkeypatch.setattr(sources, "generate_synthetic", small)
    sources.locate_dataset("synthetic", tmp_path)
    out = capsys.readouterr().out
    assert re.fullmatch(rf"generating the built-in synthetic dataset in {re.escape(str(tmp_path / 'synthetic'))}"
                        r" \.\.\. done in \d+\.\d s \(5 items, 10 photos\)\n", out)


def test_dataset_stats_show_the_split_then_the_pipeline_runs(tmp_path, capsys):
    dataset = make_dataset(tmp_path / "shop", num_items=10, per_item=3)
    common = ["--dataset", str(dataset), "--dataset_dir", str(tmp_path / "data"), "-m", "simple",
              "--dataset_stats"]
    assert pipeline.main([*common, "--prepare_only"]) == 0
    out = capsys.readouterr().out
    splits = dict(re.findall(r"^split (\w+)\s+(\d+) items, (?:\d+) images", out, re.M))
    assert splits == {"train": "8", "eval": "2"} and "items          10" in out
    assert "precision@1" not in out  # --prepare_only: the statistics alone
    assert pipeline.main(common) == 0  # without it, the original's meaning: statistics, then the run
    out = capsys.readouterr().out
    assert out.index("split eval") < out.index("precision@1")


def figure_argv(common, *more):
    return ["--model", "simple_net", "--save_fig", "--num_disp", "1", *more, *common]


def eval_figs(common):
    return Path(common[common.index("--dataset_dir") + 1]) / "files_to_gitignore" / "eval_figs"


def test_figure_pages_are_one_folder_per_evaluation_and_rerunning_replaces_only_its_own(trained, capsys):
    _, save_dir, common = trained
    run_name = next(save_dir.glob("*/SimpleNet_*")).name
    assert run(evaluate.main, figure_argv(common, "--num_pages", "3"), capsys)[0] == 0
    assert run(evaluate.main, figure_argv(common, "--checkpoint", "1", "--num_pages", "2"), capsys)[0] == 0
    mine = eval_figs(common) / "simple_net" / f"{run_name}_epoch2_both"
    other = eval_figs(common) / "simple_net" / f"{run_name}_epoch1_both"
    query = eval_figs(common) / "simple_net_query" / "queries.png"
    query.parent.mkdir(parents=True, exist_ok=True)
    query.write_bytes(b"a query's figure")
    (mine / "notes.txt").write_text("mine")
    assert sorted(p.name for p in mine.glob("*.png")) == ["1.png", "2.png", "3.png"]

    code, out, _ = run(evaluate.main, figure_argv(common, "--num_pages", "1"), capsys)
    assert code == 0 and f"saved 1 figure page(s) of 1 queries to {mine}/" in out
    assert sorted(p.name for p in mine.iterdir()) == ["1.png", "notes.txt"]  # stale 2.png, 3.png gone
    assert sorted(p.name for p in other.glob("*.png")) == ["1.png", "2.png"]  # another checkpoint's
    assert query.read_bytes() == b"a query's figure"


def test_figure_pages_are_titled_and_drawn_from_the_photo_files(trained, capsys, monkeypatch):
    _, save_dir, common = trained
    drawn = []
    real_draw = figures.draw_page
    monkeypatch.setattr(figures, "draw_page", lambda rows, title: drawn.append((rows, title)) or real_draw(rows, title))
    code, _, _ = run(evaluate.main, figure_argv(common, "--show_nums", "5", "2", "0", "--num_disp", "2"), capsys)
    assert code == 0 and len(drawn) == 2
    run_name = next(save_dir.glob("*/SimpleNet_*")).name
    assert [title for _, title in drawn] == [
        f"simple_net ({run_name}, epoch 2): chosen queries; queries 5, 2 (page 1/2)",
        f"simple_net ({run_name}, epoch 2): chosen queries; queries 0 (page 2/2)"]
    cell_px = figures.PageLayout(rows=1, cols=1).cell_px
    assert {cell.image.shape for rows, _ in drawn for row in rows for cell in row} == {(cell_px, cell_px, 3)}
    assert (eval_figs(common) / "simple_net" / f"{run_name}_epoch2_nums_5-2-0" / "2.png").exists()


def test_photo_files_decode_at_display_size_and_fall_back_to_the_cache(tmp_path):
    root = make_dataset(tmp_path / "shop", num_items=3, per_item=2, size=300)
    image_set = load_splits(root, 32, tmp_path / "cache").sets["train"]
    photos = figures.PhotoFiles(image_set, size=150)
    first = Path(image_set.paths[0])
    assert np.array_equal(photos.batch([0])[0], decode_image(first, 150))
    first.unlink()  # moved away since the cache was built: the cached pixels, enlarged
    enlarged = photos.batch([0, 1])
    assert enlarged.shape == (2, 150, 150, 3)
    assert np.abs(enlarged[0].astype(int) - image_set.batch([0])[0, 0, 0]).max() <= 2


def test_the_pipeline_table_shows_the_untrained_network_beside_the_trained_one(tmp_path, capsys):
    dataset = make_dataset(tmp_path / "shop", num_items=12, per_item=4)
    argv = ["--dataset", str(dataset), "--dataset_dir", str(tmp_path / "data"), "--save_dir",
            str(tmp_path / "models"), "-m", "simple", "simple_net", "--epochs", "1", *TINY]
    assert pipeline.main(argv) == 0
    table = capsys.readouterr().out.split("retrieval on ")[1].splitlines()
    assert table[1].split() == ["metric", "(%)", "simple", "simple_net", "untrained", "simple_net"]
    with open(next((tmp_path / "models").glob("*/SimpleNet_*")) / "training_stats.csv", newline="") as f:
        epoch0 = next(csv.DictReader(f))
    p_at_1 = next(line.split() for line in table if line.startswith("precision@1"))
    assert p_at_1[2] == f"{float(epoch0['precision@1']):.1f}"  # the untrained column is epoch 0's
    assert next(line.split() for line in table if line.startswith("closest[2]"))[2] == "-"
