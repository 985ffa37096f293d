"""The README's quick-start commands are the ones CI runs, and the flags it documents exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if "pytest" in line and not line.startswith("#")]
    assert len(ci_lines) == 1
    assert f"\n{ci_lines[0]}\n" in (ROOT / "README.md").read_text()


def test_documented_pipeline_flags_exist():
    import evaluate
    import pipeline
    readme = (ROOT / "README.md").read_text()
    known = {opt for parser in (pipeline.build_parser(), evaluate.build_parser())
             for action in parser._actions for opt in action.option_strings}
    documented = set(re.findall(r"`(--?[a-zA-Z_]+)", readme))
    assert documented - known == set()
