"""Every command documents itself, and `atelier --help` stays free of heavy imports."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from evaluator.cli.main import main


def _walk(group: click.Group, prefix: list[str]):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the root group loads its commands on demand
        command = group.get_command(ctx, name)
        yield [*prefix, name], command
        if isinstance(command, click.Group):
            yield from _walk(command, [*prefix, name])


def test_every_command_has_help():
    runner = CliRunner()
    commands = list(_walk(main, []))
    assert {"catalog", "plan", "generate", "import", "score", "dashboard", "report", "demo"} <= {
        path[0] for path, _ in commands
    }
    for path, command in commands:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        assert (command.help or command.short_help or "").strip(), f"`atelier {' '.join(path)}` has no help text"


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from evaluator.cli.main import main\n"
        "CliRunner().invoke(main, ['--help'])\n"
        "heavy = [m for m in ('torch', 'diffusers', 'open_clip', 'faiss', 'duckdb', 'pandas', 'streamlit') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_clip_model_comes_from_the_option_else_the_environment(tmp_path):
    """ATELIER_CLIP_MODEL is read through evaluator.workspace.settings when --model is absent."""
    from click.testing import CliRunner

    from evaluator.cli.main import main

    (tmp_path / "wd").mkdir()
    args = ["embed", "-w", str(tmp_path / "wd")]
    missing = CliRunner().invoke(main, args, env={"ATELIER_CLIP_MODEL": ""})
    assert missing.exit_code == 2 and "ATELIER_CLIP_MODEL" in missing.output
    from_env = CliRunner().invoke(main, args, env={"ATELIER_CLIP_MODEL": "no-such-arch"})
    assert from_env.exit_code == 1 and "no-such-arch" in from_env.output
    given = CliRunner().invoke(main, [*args, "--model", "other-arch"], env={"ATELIER_CLIP_MODEL": "no-such-arch"})
    assert given.exit_code == 1 and "other-arch" in given.output
