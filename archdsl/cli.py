"""The ``archdsl`` command. Each subcommand lives in its own module with ``add_arguments`` and
``run``; only the chosen one is imported, so ``archdsl check`` never loads torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from archdsl.errors import ArchdslError, format_error

COMMANDS = {
    "check": ("archdsl.check_cmd", "parse and check specs; print sizes, parameter counts, search space"),
    "compile": ("archdsl.codegen.cli", "generate the fused Triton kernels of a spec"),
    "verify": ("archdsl.codegen.verify", "compare the compiled layer with the reference"),
    "train": ("archdsl.train_cmd", "train a spec or a baseline in the byte-level LM for a fixed budget"),
    "bench": ("archdsl.bench", "train several models under the same clock and tabulate them"),
    "search": ("archdsl.search.cli", "architecture search under a parameter budget"),
    "report": ("archdsl.search.report", "regenerate a search study's report"),
    "sample": ("archdsl.sample_cmd", "print text sampled from a trained run"),
}


def _usage() -> str:
    lines = ["usage: archdsl COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<9} {help}" for name, (_, help) in COMMANDS.items()]
    lines += ["", "archdsl COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(_usage(), flush=True)
        except BrokenPipeError:
            _quiet_stdout()
        return 0
    cmd = argv[0]
    try:
        return _run(cmd, argv[1:])
    except BrokenPipeError:  # `archdsl … | head`: the reader left; say nothing more
        _quiet_stdout()
        return 0


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not raise on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _run(cmd: str, argv: list[str]) -> int:
    if cmd not in COMMANDS:
        print(f"archdsl: unknown command '{cmd}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help = COMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"archdsl {cmd}", description=help)
        module.add_arguments(parser)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse: --help (0) or its one `error:` line (2)
            return int(e.code or 0)
        return int(module.run(args) or 0)
    except ArchdslError as e:
        print(format_error(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archdsl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
