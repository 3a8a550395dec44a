"""The README's commands are the ones CI runs."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = ci_lines.index(next(line for line in ci_lines if "README test command" in line))
    command = ci_lines[marker + 1].strip()
    assert command in readme, f"README.md does not contain CI's test command: {command}"
