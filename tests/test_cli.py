"""Every numeric and device flag of every subcommand refuses a bad value before any work:
exit status 2 and the flag's name in the message (cifutils.cli)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifutils import cli
from cifutils.experiments import COMMANDS
from cifutils.experiments import main as experiments


class _Built(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a subcommand builds, caught before it parses anything."""

    def catch(self, *args, **kwargs):
        raise _Built(self)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Built) as info:
            importlib.import_module(COMMANDS[command]).main([])
    return info.value.parser


def _actions(parser: argparse.ArgumentParser):
    """(option strings, action) of the parser and of its subcommands' parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif action.option_strings:
            yield action


def _flag_cases() -> list[tuple[str, str, str]]:
    """(command, flag, bad value) for every checked flag, from the checks themselves."""
    mp = pytest.MonkeyPatch()
    try:
        cases = []
        for command in COMMANDS:
            for action in _actions(_parser(command, mp)):
                for bad in getattr(action.type, "bad_values", []):
                    cases.append((command, action.option_strings[-1], bad))
        return cases
    finally:
        mp.undo()


def test_every_typed_or_numeric_flag_is_checked(monkeypatch):
    for command in COMMANDS:
        for action in _actions(_parser(command, monkeypatch)):
            name = f"{command} {action.option_strings[-1]}"
            numeric = isinstance(action.default, (int, float)) and not isinstance(
                action.default, bool
            )
            if action.type is None:
                assert not numeric, f"{name}: numeric default but no checked type"
                continue
            assert action.type not in (int, float), f"{name}: unchecked {action.type}"
            assert getattr(action.type, "bad_values", None), f"{name}: check has no bad values"


@pytest.mark.parametrize("command, flag, bad", _flag_cases())
def test_bad_value_exits_2_naming_the_flag(command, flag, bad, capsys):
    with pytest.raises(SystemExit) as info:
        experiments([command, flag, bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "error:" in err


#: The cases of issue 22 with what each now prints (after "error: argument FLAG: ").
ISSUE_CASES = [
    ("mog", "--steps", "-1", "must be an integer >= 1, got '-1'"),
    ("mog", "--checkpoint-every", "-1", "must be an integer >= 1, got '-1'"),
    ("mog", "--checkpoint-every", "0", "must be an integer >= 1, got '0'"),
    ("mog", "--stop-after", "-3", "must be an integer >= 1, got '-3'"),
    ("mog", "--threads", "0", "must be an integer >= 1, got '0'"),
    ("mog", "--sigma0", "nan", "must be a finite number > 0, got 'nan'"),
    ("mog", "--seed", "4294967296", "must be an integer in [0, 4294967296)"),
    ("vae", "--epochs", "-1", "must be an integer >= 0, got '-1'"),
    ("vae", "--time-limit", "-1", "must be a finite number > 0, got '-1'"),
    ("vae", "--test-k", "0", "must be an integer >= 1, got '0'"),
    ("vae", "--test-limit", "-1", "must be an integer >= 1, got '-1'"),
    ("vae-many", "--seeds", "-1", "must be an integer in [0, 4294967296)"),
]


@pytest.mark.parametrize("command, flag, bad, message", ISSUE_CASES)
def test_issue_cases_print_the_rule(command, flag, bad, message, capsys):
    with pytest.raises(SystemExit) as info:
        experiments([command, flag, bad])
    assert info.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["mog", "vae", "vae-many"])  # those with --device
def test_cuda_without_cuda_fails_at_start_up(command, capsys):
    with pytest.raises(SystemExit) as info:
        experiments([command, "--device", "cuda"])
    assert info.value.code == 2
    assert "argument --device: 'cuda' requested but CUDA is not available" in (
        capsys.readouterr().err
    )


def test_the_command_line_exits_2_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cifutils.experiments", "mog", "--steps", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parent.parent)},
    )
    assert proc.returncode == 2
    assert "argument --steps: must be an integer >= 1" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_good_values_and_defaults():
    p = cli.ArgumentParser(prog="demo")
    p.add_argument("--n", type=int, default=0)  # bare int: an integer >= 0
    p.add_argument("--x", type=float, default=1.0)  # bare float: a finite number > 0
    p.add_argument("--seed", type=cli.SEED, default=0)
    args = p.parse_args(["--n", "3", "--x", "0.5", "--seed", str(2**32 - 1)])
    assert (args.n, args.x, args.seed) == (3, 0.5, 2**32 - 1)
    for bad in (["--n", "-1"], ["--x", "0"], ["--x", "inf"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    assert cli.device(allow_auto=True)("auto") == "auto" and cli.device()("cpu") == "cpu"


def test_mog_defaults_to_one_thread_and_says_why(monkeypatch, capsys):
    parser = _parser("mog", monkeypatch)
    assert parser.parse_args([]).threads == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "2,325 ms per step against 32 ms with 1" in help_text
