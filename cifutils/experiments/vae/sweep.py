"""The VAE sweep of Table 1 as one shell command per run, for a job runner.

``python -m cifutils.experiments sweep --budget paper`` prints, one per line, the command
that trains and evaluates each (dataset, posterior, seed) run; for the ``paper`` budget,
the Table-1 architecture, the four posteriors (Table 1's three and the NSF at hidden 32),
both datasets and seeds 0, 1, 2: 24 lines. Every command is resumable: it trains for at
most ``--time-limit`` minutes, checkpoints after every epoch, and writes the result (and,
with ``--save-weights``, the weights) only once training has finished
(``--eval-if-complete``). Each line starts with a test for that result file, so a job
runner can run every line again, in later jobs, until all results exist: a finished run is
not evaluated twice.

Examples::

    python -m cifutils.experiments sweep --budget paper > sweep.txt
    parallel -j 2 < sweep.txt                          # GNU parallel, 2 runs at a time
    sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" sweep.txt | bash   # a Slurm array, --array=0-23
"""

from __future__ import annotations

import shlex

from cifutils import cli
from cifutils.budgets import get_budget

from .config import VAEConfig
from .model import ALL_POSTERIORS, ARCHITECTURES

__all__ = ["sweep_commands", "main"]

DATASETS = ("mnist", "fashion-mnist")


def sweep_commands(
    budget: str | None = None,
    datasets=DATASETS,
    posteriors=ALL_POSTERIORS,
    seeds=(0, 1, 2),
    arch: str | None = None,
    time_limit: float = 60.0,
    python: str = "python",
    extra: tuple[str, ...] = (),
    out_dir: str = "results/vae",
) -> list[str]:
    """One shell command per run of the sweep, dataset-major, then posterior, then seed.

    Args:
        budget: ``smoke``, ``book`` or ``paper`` (default: ``$CIFUTILS_BUDGET``).
        arch: the architecture (default: the budget's, see
            :meth:`~cifutils.experiments.vae.config.VAEConfig.from_budget`).
        time_limit: minutes of training per invocation (``--time-limit``).
        python: the interpreter named in the commands.
        extra: more arguments appended to every command (e.g. ``--save-weights``).
        out_dir: where the results go (``--out-dir``; relative to the repository root, where
            the commands are to be run).
    """
    name = get_budget(budget).name
    lines = []
    for dataset in datasets:
        for posterior in posteriors:
            for seed in seeds:
                cfg = VAEConfig.from_budget(
                    name, dataset=dataset, posterior=posterior, seed=seed, arch=arch
                )
                args = [python, "-m", "cifutils.experiments", "vae"]
                args += ["--dataset", dataset, "--posterior", posterior, "--seed", str(seed)]
                args += ["--budget", name, "--arch", cfg.arch]
                args += ["--time-limit", f"{time_limit:g}", "--eval-if-complete"]
                args += ["--out-dir", out_dir, *extra]
                result = shlex.quote(f"{out_dir.rstrip('/')}/{cfg.name}.json")
                lines.append(f"test -e {result} || {shlex.join(args)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        prog="python -m cifutils.experiments sweep",
        description="Print the VAE sweep as one resumable command per run.",
    )
    p.add_argument(
        "--budget", type=cli.budget, default=None, help="smoke | book | paper ($CIFUTILS_BUDGET)"
    )
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--posteriors", nargs="+", choices=ALL_POSTERIORS, default=None)
    p.add_argument("--seeds", nargs="+", type=cli.SEED, default=[0, 1, 2])
    p.add_argument("--arch", choices=ARCHITECTURES, default=None)
    p.add_argument("--time-limit", type=cli.POSITIVE, default=60.0, help="minutes per invocation")
    p.add_argument("--python", default="python", help="the interpreter in the commands")
    p.add_argument("--out-dir", default="results/vae", help="where the results go")
    p.add_argument(
        "--save-weights", action="store_true", help="add --save-weights to every command"
    )
    p.add_argument(
        "--extra",
        default="",
        help="more arguments for every command, as one string (e.g. '--runs-dir /scratch')",
    )
    a = p.parse_args(argv)
    extra = tuple(shlex.split(a.extra)) + (("--save-weights",) if a.save_weights else ())
    posteriors = a.posteriors or list(ALL_POSTERIORS)
    lines = sweep_commands(
        a.budget, a.datasets, posteriors, a.seeds, a.arch, a.time_limit, a.python, extra, a.out_dir
    )
    print("\n".join(lines))
    return 0
