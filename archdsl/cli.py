"""The ``archdsl`` command. Each subcommand lives in its own module with ``add_arguments`` and
``run``; only the chosen one is imported, so ``archdsl check`` never loads torch.

One meaning per flag across commands: ``--steps`` counts training steps and ``--seq`` is a sequence
length wherever they appear; ``--out`` is the folder a command writes its own results into (a run, a
bench table, a report, generated kernels) and ``--runs`` the root under which a search makes
``<study>/``. A flag that once meant something else is refused with what to write instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from archdsl.cleanup import run_cleanly
from archdsl.errors import ArchdslError, did_you_mean, format_error

COMMANDS = {
    "check": ("archdsl.lang.check_cmd", "parse and check specs; print sizes, parameter counts, search space"),
    "compile": ("archdsl.codegen.cli", "generate the fused Triton kernels of a spec"),
    "verify": ("archdsl.codegen.verify", "compare the compiled layer with the reference"),
    "train": ("archdsl.train.cli", "train a spec or a baseline in the byte-level LM for a fixed budget"),
    "bench": ("archdsl.train.bench", "train several models under the same clock and tabulate them"),
    "search": ("archdsl.search.cli", "architecture search under a parameter budget"),
    "report": ("archdsl.search.report", "regenerate a search study's report"),
    "sample": ("archdsl.train.sample", "print text sampled from a trained run"),
}


#: one example command line per command (shown by ``--help``; a command module may set ``EXAMPLE``)
EXAMPLES = {
    "check": "archdsl check specs/e88.rnn --preset E88_d12h32",
    "compile": "archdsl compile e88 --preset E88_d12h32 --out gen/",
    "verify": "archdsl verify e88 --preset test --device cpu --seq 17",
    "train": "archdsl train e88 --preset demo --minutes 1 --data corpus.txt --out runs/demo",
    "bench": "archdsl bench E88_d12h32 mamba2 fla-gdn --params 100M --minutes 2 --data corpus.txt",
    "search": "archdsl search e88 --budget 100M --minutes 10 --trials 64 --gpus all --depth 10:40",
    "report": "archdsl report runs/e88-100M",
    "sample": "archdsl sample runs/demo --prompt 'The ' --bytes 200",
}

#: (command, old flag) -> what to write instead: flags whose meaning was made one across commands
RENAMED = {
    ("verify", "--steps"): "--seq (the sequence length; --steps counts training steps in train and bench)",
    (
        "search",
        "--out",
    ): "--runs (the root of the study folders; --out is the folder a command writes itself)",
    ("report", "--out"): "--runs (the root of the study folders); the report's own folder is --dest",
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("archdsl")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _usage() -> str:
    lines = ["usage: archdsl COMMAND [options]", "       archdsl --version", "", "commands:"]
    lines += [f"  {name:<9} {help}" for name, (_, help) in COMMANDS.items()]
    lines += ["", "archdsl COMMAND --help shows a command's options, their defaults and an example."]
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default at the end of its help, unless the help already says it."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if "default" in text.lower() or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-V", "--version"):
        print(f"archdsl {version()}")
        return 0
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
        hint = did_you_mean(cmd, list(COMMANDS), "commands")
        print(f"error: unknown command '{cmd}'\n  {hint}", file=sys.stderr)
        return 2
    renamed = _renamed(cmd, argv)
    if renamed:
        print(renamed, file=sys.stderr)
        return 2
    module_name, help = COMMANDS[cmd]
    try:
        module = importlib.import_module(module_name)
        example = getattr(module, "EXAMPLE", None) or EXAMPLES.get(cmd)
        parser = argparse.ArgumentParser(
            prog=f"archdsl {cmd}",
            description=help,
            epilog=f"example:\n  {example}" if example else None,
            formatter_class=HelpFormatter,
        )
        module.add_arguments(parser)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse: --help (0) or its one `error:` line (2)
            return int(e.code or 0)
        return run_cleanly(args, module.run)
    except ArchdslError as e:
        print(format_error(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archdsl: interrupted", file=sys.stderr)
        return 130


def _renamed(cmd: str, argv: list[str]) -> str | None:
    for arg in argv:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if (cmd, flag) in RENAMED:
            return (
                f"error: archdsl {cmd}: {flag} is not a flag of this command; "
                f"did you mean {RENAMED[cmd, flag]}?"
            )
    return None


if __name__ == "__main__":
    sys.exit(main())
