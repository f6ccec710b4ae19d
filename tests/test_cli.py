"""The CLI lists its sub-commands and reports user errors in one line."""

import subprocess
import sys


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], capture_output=True, text=True, check=True)
    assert "extract" in out.stdout and "weights" in out.stdout


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
