"""The README documents every CLI command with its help text, and the two commands.

    .venv/bin/python -m pytest tests/test_readme.py -q
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_appears_with_its_help_text():
    from node.cli import cli

    ref = _reference()
    found = list(ref.commands(cli))
    assert len(found) >= 17
    for path, short, usage in found:
        assert f"`{usage}`" in README, f"{path} is missing from README.md (run scripts/cli_reference.py --write)"
        assert short and short in README, f"the help text of {path} is not in README.md"


def test_reference_block_is_current():
    ref = _reference()
    assert ref.render() in README, "README.md's command reference is stale: run scripts/cli_reference.py --write"


def test_two_commands_exist_and_are_executable():
    for script in ("scripts/start", "scripts/test", "scripts/setup", ".ci/run"):
        path = ROOT / script
        assert path.exists() and os.access(path, os.X_OK), script
        assert script.split("/")[-1] in README or script in (".ci/run", "scripts/setup")
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow  # one Python process per command: 8 s
def test_every_command_help_runs_without_error():
    from node.cli import cli

    ref = _reference()
    for path, _, _ in ref.commands(cli):
        words = path.split()[1:]
        out = subprocess.run([sys.executable, "-m", "node.cli", *words, "--help"],
                             capture_output=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0 and b"Usage:" in out.stdout, (path, out.stderr[-500:])
