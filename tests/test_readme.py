"""The README's two set-up commands are the ones the project actually uses."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_commands():
    cmds = setup_commands()
    assert len(cmds) == 2
    assert "pipelines/demo/run.py" in cmds[0] and "pytest" in cmds[1]
    assert (ROOT / "README.md").read_text(encoding="utf-8").index("```bash") < 40


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert setup_commands()[1] in ci
