"""`nc-jax` command line: `verify | theory | landscape | train`.

Each subcommand lives in a private module `nc_jax/_cli_<name>.py` exposing
`add_arguments(parser)` (cheap: no heavy imports) and `run(args) -> int` (the exit
status). Only the chosen subcommand's heavy modules are imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMANDS = {
    "verify": ("nc_jax._cli_verify", "run the default landscape verification grid (the main job)"),
    "theory": ("nc_jax._cli_theory", "print the closed-form global minimum of Theorem 3.1"),
    "landscape": ("nc_jax._cli_verify", "multistart descent and certified classification on one problem"),
    "train": ("nc_jax._cli_train", "train a ResNet18 on real or synthetic data and measure collapse"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nc-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # a subcommand not built yet
            if err.name != module_name:
                raise
            continue
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        adder(sub_parser)
        sub_parser.set_defaults(_module=module_name, _runner=f"run_{name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    runner = getattr(module, args._runner, None) or module.run
    return int(runner(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
