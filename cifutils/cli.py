"""Checked command-line values, shared by every experiment subcommand.

A bad value must stop a command before any work, with the flag named, never train a model
for nothing or crash at the end. The parsers of ``mog``, ``vae`` and ``vae-many`` are
:class:`ArgumentParser` s, whose numeric flags all go through a :class:`Number` check:
argparse then answers a bad value with ``error: argument --steps: must be an integer >= 1,
got '-1'`` and exit status 2. A numeric flag declared with a bare ``type=int`` or
``type=float`` gets the default check (an integer >= 0, a finite number > 0), so a new flag
is never unchecked; flags with other ranges say so with :func:`count`, :data:`SEED` or
:data:`POSITIVE`. :func:`device` refuses a device this machine does not have (``--device
cuda`` without CUDA) at start-up.

Example:
    >>> p = ArgumentParser(prog="demo")
    >>> _ = p.add_argument("--steps", type=count(1))
    >>> p.parse_args(["--steps", "3"]).steps
    3
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["Number", "count", "SEED", "POSITIVE", "device", "budget", "ArgumentParser"]


class Number:
    """An argparse ``type``: parses an ``int`` or a finite ``float`` and checks its range.

    Args:
        kind: ``int`` or ``float``.
        low: smallest allowed value (None: no bound).
        high: largest allowed value (None: no bound).
        low_open: ``low`` itself is refused (``> low`` instead of ``>= low``).

    Attributes:
        bad_values: strings this check refuses (out of range, or not a number of its
            kind): what the tests feed every flag.
    """

    def __init__(
        self, kind: type, low: float | None = None, high: float | None = None, low_open=False
    ) -> None:
        if kind not in (int, float):
            raise ValueError(f"kind must be int or float, got {kind!r}")
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.__name__ = self.describe()  # argparse names the type by it in some messages

    def describe(self) -> str:
        """The rule in words, e.g. ``"an integer >= 1"`` or ``"a finite number > 0"``."""
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low:g}, {self.high + 1:.0f})"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low:g}"
        return what

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        bad = self.kind is float and not math.isfinite(value)
        if self.low is not None:
            bad = bad or value < self.low or (self.low_open and value == self.low)
        if self.high is not None:
            bad = bad or value > self.high
        if bad:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value

    @property
    def bad_values(self) -> list[str]:
        out = ["x"]
        if self.low is not None:
            out.append(f"{self.low:g}" if self.low_open else f"{self.low - 1:g}")
        if self.high is not None:
            out.append(f"{self.high + 1:.0f}")
        if self.kind is int:
            out.append("1.5")
        else:
            out += ["nan", "inf"]
        return out

    def __repr__(self) -> str:
        return f"Number({self.describe()})"


def count(low: int = 0) -> Number:
    """An integer ``>= low``: steps, sizes, limits, threads."""
    return Number(int, low)


#: A seed, an integer in ``[0, 2**32)`` (NumPy's seeds stop there).
SEED = Number(int, 0, 2**32 - 1)
#: A finite number ``> 0``, for scales and minutes.
POSITIVE = Number(float, 0.0, low_open=True)
#: The checks given to bare ``type=int`` and ``type=float`` flags.
_DEFAULTS: dict[type, Number] = {int: count(0), float: POSITIVE}


def device(allow_auto: bool = False) -> Callable[[str], str]:
    """An argparse ``type`` for ``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (and ``auto``
    when ``allow_auto``), refused at start-up when this machine lacks it. Returns the text
    unchanged (the command resolves it as before)."""
    choices = "cpu, cuda, cuda:N" + (" or auto" if allow_auto else "")

    def check(text: str) -> str:
        import torch

        if allow_auto and text == "auto":
            return text
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {choices}, got {text!r}") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise argparse.ArgumentTypeError(
                    f"{text!r} requested but CUDA is not available on this machine "
                    f"(torch {torch.__version__}); use --device cpu"
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise argparse.ArgumentTypeError(
                    f"{text!r} requested but this machine has {torch.cuda.device_count()} "
                    "CUDA device(s)"
                )
        elif dev.type != "cpu":
            raise argparse.ArgumentTypeError(f"must be {choices}, got {text!r}")
        return text

    check.__name__ = "device"
    check.bad_values = ["gpu"] + ([] if _cuda_available() else ["cuda"])
    return check


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def budget(text: str) -> str:
    """An argparse ``type`` for ``--budget``: a known budget name (returned as given)."""
    from .budgets import get_budget

    try:
        get_budget(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


budget.bad_values = ["huge"]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose numeric flags are always checked: a bare
    ``type=int`` becomes ``count(0)`` and a bare ``type=float`` :data:`POSITIVE`
    (subcommand parsers made with ``add_subparsers`` are of this class too)."""

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        kind = kwargs.get("type")
        if kind in _DEFAULTS:
            kwargs["type"] = _DEFAULTS[kind]
        return super().add_argument(*args, **kwargs)
