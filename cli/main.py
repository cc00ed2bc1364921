"""`digits` entry point. Each subcommand module registers itself; user-facing errors
become one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

# Modules that each define `register(subparsers)`.
COMMAND_MODULES = (
    "cli.model_cmds",
    "cli.compare_cmds",
    "cli.scan_cmds",
    "cli.service_cmds",
    "cli.client_cmds",
    "cli.keys_cmds",
    "cli.runtime_cmds",
)


# Commands that call the HTTP API (cli/client.py), and so take --api-key.
API_COMMANDS = ("submit", "status", "results", "cancel", "resume", "delete")


class UserError(Exception):
    """An error whose message is meant for the user as it stands."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    for module, name in (("shared.mnist", "MnistError"), ("shared.imaging", "ImageError")):
        with contextlib.suppress(ImportError, AttributeError):
            types.append(getattr(importlib.import_module(module), name))
    if "shared.artifact" in sys.modules:
        types.append(sys.modules["shared.artifact"].ArtifactError)
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digits", description="Read handwritten digits from scanned images, in bulk."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    # The commands that talk to the API take a key: before or after the command's name.
    key_help = "API key for a server that wants one (default: $DIGITS_API_KEY)"
    parser.add_argument("--api-key", default=None, help=key_help)
    for command, sub_parser in sub.choices.items():
        if command in API_COMMANDS:
            sub_parser.add_argument("--api-key", default=argparse.SUPPRESS, help=key_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.api_key:  # cli/client.py reads it from there, as it reads $DIGITS_API_KEY
        os.environ["DIGITS_API_KEY"] = args.api_key
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            print(f"digits {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
