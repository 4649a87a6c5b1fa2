"""What every command shares: the --home option and the Home it names."""
from __future__ import annotations

from pathlib import Path

import click

from node.home import Home, default_home

home_option = click.option(
    "--home",
    "home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node home directory (default: $RALPHSWARM_HOME or ~/.ralphswarm).",
)


def get_home(home: Path | None) -> Home:
    return Home((home or default_home()).expanduser())
