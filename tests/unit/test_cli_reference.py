"""docs/cli.md matches the commands; the root group loads commands lazily and handles errors."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from evaluator.cli.main import COMMANDS, CommandEntry, load_command, main
from evaluator.cli.options import quiet_option, workdir_option
from evaluator.cli.reference import DOC_PATH, REGENERATE, render_reference, root_context, walk
from evaluator.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_docs_cli_md_is_the_generated_reference():
    expected = render_reference()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.is_file() else ""
    assert current == expected, f"{DOC_PATH} is out of date with the commands' --help: run `{REGENERATE}`"


def test_the_reference_lists_every_command_and_sub_command():
    text = render_reference()
    for name in COMMANDS:
        assert f"\n## atelier {name}\n" in text
    for path in ("catalog build", "catalog validate", "checkpoints fingerprint", "index build", "index search",
                 "metrics list", "references add"):
        assert f"\n## atelier {path}\n" in text
    assert "Usage: atelier catalog build [OPTIONS]" in text


def test_the_reference_does_not_depend_on_the_terminal():
    env = dict(os.environ, COLUMNS="40", LINES="10")
    out = subprocess.run([sys.executable, "-m", "evaluator.cli.reference", "--check"], capture_output=True,
                         text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr


def test_check_mode_names_the_command_that_regenerates(tmp_path):
    from evaluator.cli.reference import main as reference_main

    stale = tmp_path / "cli.md"
    stale.write_text("old\n")
    assert reference_main(["--check", "--out", str(stale)]) == 1
    assert stale.read_text() == "old\n"
    assert reference_main(["--out", str(stale)]) == 0
    assert reference_main(["--check", "--out", str(stale)]) == 0


def test_the_table_summaries_are_the_commands_first_lines():
    """`atelier --help` prints the table's summaries: they must be what click would print."""
    for name, entry in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert entry.summary == command.get_short_help_str(10_000), name


def test_root_help_and_one_command_import_only_what_they_need():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from evaluator.cli.main import main\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('evaluator.cli.', 'dashboard', 'catalog'))))\n"
        "CliRunner().invoke(main, ['sql', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('evaluator.cli.', 'dashboard', 'catalog'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after_help, after_sql = out.stdout.splitlines()
    assert after_help == "['evaluator.cli.main', 'evaluator.cli.options']"
    assert "evaluator.cli.query" in after_sql and "dashboard" not in after_sql and "catalog" not in after_sql


def test_the_evaluator_never_imports_the_dashboard():
    """dashboard imports evaluator; the way back is only the command table's strings."""
    offenders = []
    for path in (REPO / "evaluator").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith(("import dashboard", "from dashboard")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert not offenders, offenders


@pytest.fixture
def fake_commands(monkeypatch):
    """Two commands reached through the root's table: one fails on purpose, one is a bug."""

    @click.command("refuse")
    def refuse() -> None:
        """Fail on purpose."""
        raise InputError("styles.csv: line 3: bad cell")

    @click.command("crash")
    def crash() -> None:
        """Fail by a bug."""
        raise ZeroDivisionError("a bug")

    module = types.ModuleType("atelier_fake_commands")
    module.refuse, module.crash = refuse, crash
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for name in ("refuse", "crash"):
        monkeypatch.setitem(COMMANDS, name, CommandEntry(f"{module.__name__}:{name}", f"Fail ({name})."))
    monkeypatch.setattr(main, "commands", {})
    yield


def test_an_atelier_error_is_one_line_and_exit_1_a_bug_keeps_its_traceback(fake_commands):
    result = CliRunner().invoke(main, ["refuse"])
    assert result.exit_code == 1
    assert result.output == "Error: styles.csv: line 3: bad cell\n"
    result = CliRunner().invoke(main, ["crash"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_a_missing_workdir_is_one_line():
    result = CliRunner().invoke(main, ["sql", "-w", "/nonexistent/atelier-wd", "SELECT 1"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: workdir /nonexistent/atelier-wd does not exist"), lines


def test_workdir_has_both_spellings_and_no_progress_still_works_hidden():
    seen = {}

    @click.command()
    @workdir_option(create=True)  # "a" need not exist
    @quiet_option()
    def probe(workdir: Path, quiet: bool) -> None:
        seen.update(workdir=workdir, quiet=quiet)

    runner = CliRunner()
    for args, quiet in ((["-w", "a"], False), (["--workdir", "a", "-q"], True), (["-w", "a", "--quiet"], True),
                        (["-w", "a", "--no-progress"], True)):
        result = runner.invoke(probe, args)
        assert result.exit_code == 0, result.output
        assert seen == {"workdir": Path("a"), "quiet": quiet}
    help_text = runner.invoke(probe, ["--help"]).output
    assert "-w, --workdir" in help_text and "-q, --quiet" in help_text and "--no-progress" not in help_text


def test_every_workdir_option_has_the_short_spelling():
    for ctx in walk(root_context()):
        for param in ctx.command.params:
            if param.name == "workdir":
                assert "-w" in param.opts and "--workdir" in param.opts, ctx.command_path
