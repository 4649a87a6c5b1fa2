"""What every command shares: the --home option and the Home it names, the shared definitions of
the --device and --budget-scale flags (node and experiment take the same values), human times."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from node.errors import UserError
from node.home import Home, default_home
from node.settings import BUDGET_SCALE_MAX, BUDGET_SCALE_MIN, check_budget_scale, check_device

home_option = click.option(
    "--home",
    "home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Node home directory (default: $RALPHSWARM_HOME or ~/.ralphswarm).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def get_home(home: Path | None) -> Home:
    return Home((home or default_home()).expanduser())


class _Checked(click.ParamType):
    """A flag value checked by one of node.settings' check functions (the config file's values go
    through the same function): a bad value is refused while the command line is parsed."""

    def __init__(self, name: str, check) -> None:
        self.name = name
        self.check = check

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.check(value)
        except UserError as exc:
            self.fail(exc.message, param, ctx)


DEVICE = _Checked("DEVICE", check_device)
BUDGET_SCALE = _Checked("FRACTION", check_budget_scale)


def device_option(default: str | None):
    return click.option("--device", type=DEVICE, default=default, show_default=default is not None,
                        help="auto, cpu, cuda, cuda:N or mps (default auto).")


def budget_scale_option(default: float | None, text: str = "Fraction of the task's token budget to train on."):
    return click.option("--budget-scale", type=BUDGET_SCALE, default=default, show_default=default is not None,
                        help=f"{text} ({BUDGET_SCALE_MIN:g} to {BUDGET_SCALE_MAX:g})")


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def when(epoch: int | float | None, now: float | None = None) -> str:
    """``2026-11-30 10:12:05 UTC (3 min ago)`` of epoch seconds."""
    if epoch is None:
        return "-"
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch)) + f" ({ago(now - epoch)})"
