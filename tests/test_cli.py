"""The CLI lists its sub-commands and reports user errors in one line."""

import re
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
# the sub-commands the README and docs document, written out here rather than read from engine/cli.py
DOCUMENTED = {"extract", "weights", "train", "pretrain", "train-color", "swap", "evaluate", "verify", "export-dataset"}


def _listed_commands(help_text: str) -> list[str]:
    """Sub-command names in argparse's listing: the 4-space-indented first words under COMMAND."""
    section = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^ {4}(\S+)", section, flags=re.MULTILINE)


def test_help_lists_every_documented_command():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, check=True)
    listed = _listed_commands(out.stdout)
    assert sorted(listed) == sorted(DOCUMENTED), out.stdout


def test_every_command_module_is_wired_into_the_cli():
    """Each stage's command module (engine/<stage>/command.py, *_command.py) is one of the CLI's commands."""
    from engine.cli import COMMANDS

    on_disk = {".".join(("engine", *p.relative_to(ENGINE).with_suffix("").parts))
               for p in ENGINE.rglob("*.py") if p.name == "command.py" or p.name.endswith("_command.py")}
    assert len(on_disk) == len(DOCUMENTED)
    assert {module for _, module, _ in COMMANDS} == on_disk


def test_extract_help_has_options():
    out = subprocess.run([sys.executable, "-m", "engine", "extract", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--out", "--detector", "--size", "--every", "--min-face", "--select"):
        assert flag in out


def test_weights_list_reports_missing(tmp_path):
    env = {"FACESTUDIO_WEIGHTS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "engine", "weights", "--list"], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert "missing" in out and str(tmp_path) in out
