"""Mutation testing (development only): how many small planted bugs do the tests catch?

Runs mutmut (requirements-dev.txt) over the modules where a silent bug costs most, one module at
a time, each against only the test files that exercise it, so a full run takes well under an hour
on two cores. Each module runs in its own scratch copy of the working tree, so the tree you edit
is never touched and a run can go on while you work.

    python -m misc.mutation                       # every module below
    python -m misc.mutation training/loss.py      # one module
    python -m misc.mutation --list-survivors ...  # also print each surviving mutant's diff

Prints one row per module: mutants, killed (a test failed or timed out), survived, score.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Module -> the smallest test selection that exercises it through its users' paths.
MODULES: dict[str, list[str]] = {
    "training/mining.py": ["tests/test_mining.py"],
    "training/loss.py": ["tests/test_mining.py"],
    "training/sampler.py": ["tests/test_sampler.py"],
    "evaluation/knn.py": ["tests/test_knn.py",
                          "tests/test_search.py::test_search_is_exact_with_duplicates_ordered_by_index",
                          "tests/test_search.py::test_search_through_a_faiss_index_gives_the_same_answer"],
    "evaluation/metrics.py": ["tests/test_metrics.py"],
    "data/decode.py": ["tests/test_decode.py"],
    "data/download.py": ["tests/test_download.py"],
    "data/archive.py": ["tests/test_archive.py"],
    "training/checkpoints.py": ["tests/test_checkpoints.py"],
}


def _snapshot(dest: Path) -> None:
    """Copy the tracked and untracked-but-not-ignored files of the working tree into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _configure(dest: Path, module: str, tests: list[str]) -> None:
    """mutmut settings: mutate only ``module``, copy everything else as is, run only ``tests``.

    The fork server keeps torch's threads out of the forked test workers.
    """
    package = module.split("/")[0]
    others = sorted(p.name for p in dest.iterdir() if p.name not in {package, "setup.cfg"})
    lines = ["[mutmut]", f"source_paths = {package}", f"only_mutate = {module}",
             "process_isolation = forkserver", "also_copy ="]
    lines += [f"    {name}" for name in others]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -q"]
    (dest / "setup.cfg").write_text("\n".join(lines) + "\n")


def run_module(module: str, tests: list[str], show_survivors: bool) -> dict[str, int]:
    """Mutate one module in a scratch copy; return mutmut's counts."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        dest = Path(scratch)
        _snapshot(dest)
        _configure(dest, module, tests)
        subprocess.run(["mutmut", "run", "--max-children", "1"], cwd=dest,
                       stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["mutmut", "export-cicd-stats"], cwd=dest,
                       stdout=subprocess.DEVNULL, check=True)
        counts = json.loads((dest / "mutants" / "mutmut-cicd-stats.json").read_text())
        if show_survivors:
            _print_survivors(dest)
    return counts


def _print_survivors(dest: Path) -> None:
    """Print the diff of every mutant no test caught."""
    listing = subprocess.run(["mutmut", "results"], cwd=dest, check=True,
                             capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name, _, status = line.strip().partition(":")
        if status.strip() in {"survived", "no tests"}:
            print(subprocess.run(["mutmut", "show", name], cwd=dest, check=True,
                                 capture_output=True, text=True).stdout, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the modules named (all of MODULES by default) and print one score row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    parser.add_argument("--list-survivors", action="store_true",
                        help="print the diff of every surviving mutant")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module {unknown[0]}; choose from {', '.join(MODULES)}")
    if shutil.which("mutmut") is None:
        sys.exit("error: mutmut: not installed; pip install -r requirements-dev.txt")
    print(f"{'module':28} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6}", flush=True)
    for module in args.modules or MODULES:
        c = run_module(module, MODULES[module], args.list_survivors)
        killed = c["killed"] + c["timeout"]
        score = killed / max(c["total"], 1)
        print(f"{module:28} {c['total']:7} {killed:6} {c['total'] - killed:8} {score:6.0%}",
              flush=True)


if __name__ == "__main__":
    main()
