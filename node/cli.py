"""The ``ralphswarm`` command: the edge where named errors become one line and an exit code.

Commands are grouped by concern in ``node/cli_*.py``; each module exposes ``register(group)``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from protocol import ProtocolError

from .errors import UserError
from .home import Home, default_home

home_option = click.option(
    "--home",
    "home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node home directory (default: $RALPHSWARM_HOME or ~/.ralphswarm).",
)


def get_home(home: Path | None) -> Home:
    return Home((home or default_home()).expanduser())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ralphswarm")
def cli() -> None:
    """ralphswarm: a peer-to-peer client for distributed autoresearch."""


def _register_all() -> None:
    import importlib

    for name in ("cli_corpus", "cli_trainer", "cli_node", "cli_demo"):
        try:
            module = importlib.import_module(f"node.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"node.{name}":
                continue
            raise
        module.register(cli)


_register_all()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="ralphswarm", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except UserError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except ProtocolError as exc:
        click.echo(f"error: {exc.reason}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
