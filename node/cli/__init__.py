"""The ``ralphswarm`` command: the edge where named errors become one line and an exit code.

Commands are grouped by concern in the modules of this package (corpus, views, trainer, node, demo); each
exposes ``register(group)`` and is registered here, explicitly. What they share (the --home option)
lives in ``common``, the client for a running node in ``client``.
"""
from __future__ import annotations

import sys
import click

from protocol import ProtocolError

from node.cli import corpus, demo, node, trainer, views
from node.errors import UserError

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ralphswarm")
def cli() -> None:
    """ralphswarm: a peer-to-peer client for distributed autoresearch."""


for _module in (corpus, views, trainer, node, demo):
    _module.register(cli)


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
