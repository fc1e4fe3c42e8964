"""`nc-jax` command line: `verify | theory | landscape | train`.

Each subcommand lives in a private module `nc_jax/_cli_<name>.py` exposing
`add_arguments(parser)` (cheap: no heavy imports) and `run(args) -> int` (the exit
status, an :class:`nc_jax.io.ExitCode`). Only the chosen subcommand's heavy modules are
imported. A :class:`nc_jax.io.UsageError` raised by a runner becomes one line on stderr
and exit status 2. ``verify``, ``landscape`` and ``train`` also take the flags of
:mod:`nc_jax.distributed` (several processes); their runners check those flags first and
join the other processes before any JAX computation; only process 0 prints to stdout.
"""

from __future__ import annotations

import argparse
import sys

from nc_jax import _cli_theory, _cli_train, _cli_verify, distributed
from nc_jax.io import ExitCode, UsageError, enable_compilation_cache

_SUBCOMMANDS = {
    "verify": (_cli_verify, "run the default landscape verification grid (the main job)"),
    "theory": (_cli_theory, "print the closed-form global minimum of Theorem 3.1"),
    "landscape": (_cli_verify, "multistart descent and certified classification on one problem"),
    "train": (_cli_train, "train a ResNet18 on real or synthetic data and measure collapse"),
}
_DISTRIBUTED = ("verify", "landscape", "train")  # subcommands that run in several processes

_EPILOG = ("exit status: 0 OK (the evidence supports the verdict), 1 disagreement with the theory, "
           "2 usage error, 3 INCONCLUSIVE (too few converged, certified runs), 4 training diverged")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="nc-jax", description=__doc__.splitlines()[0], epilog=_EPILOG,
                                     allow_abbrev=False)
    parser.add_argument("--cache-dir", default=None,
                        help="JAX persistent compilation cache folder ('off' disables; default: $NC_JAX_CACHE_DIR "
                             "or ~/.cache/nc_jax/xla): a second run loads its compiled programs instead of compiling")
    sub = parser.add_subparsers(dest="command", required=True)
    subparsers = {}
    for name, (module, help_text) in _SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOG, allow_abbrev=False,
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(sub_parser)
        if name in _DISTRIBUTED:
            distributed.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module, _runner=f"run_{name}")
        subparsers[name] = sub_parser
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's own usage line, not the top-level one
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    enable_compilation_cache(args.cache_dir)
    module = args._module
    runner = getattr(module, args._runner, None) or module.run
    try:
        with distributed.primary_stdout():
            return int(runner(args) or 0)
    except UsageError as err:
        print(f"nc-jax {args.command}: error: {err}", file=sys.stderr)
        return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(main())
