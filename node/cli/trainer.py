"""CLI commands of the inner loop: ``ralphswarm task list|show`` and ``ralphswarm experiment``."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from trainer.datasets import DataError
from trainer.experiment import ExperimentResult, RunSettings, run_experiment
from trainer.patches import PatchError, apply_patch, source_sha256
from trainer.tasks import Task, TaskError, TaskRegistry, resolve_task

from node import ids
from node.cli.common import budget_scale_option, device_option, get_home, home_option
from node.errors import UserError
from node.home import Home

CRASHED_EXIT = 2  # the experiment ran and crashed: a result, not a usage error


def _task(name_or_id: str) -> Task:
    """A built-in task by name, or by any unique prefix of 6+ hex digits of its id (node/ids.py)."""
    registry = TaskRegistry()
    text = name_or_id.strip()
    if registry.find(text) is None and ids.is_prefix(text):
        text = ids.pick(text, registry.ids(), "task id")  # "not found" / "ambiguous" in one line
    try:
        return resolve_task(text)
    except TaskError as exc:
        raise UserError(str(exc)) from None


def _summary(task: Task) -> dict:
    body = task.body
    out = {"id": task.id, "name": task.name, "description": body["description"], "harness": body["harness"],
           "data": body["data"], "budget": body["budget"], "tolerance": body["tolerance"]}
    if task.entropy_bpb is not None:
        out["entropy_bpb"] = f"{task.entropy_bpb:.6f}"
    return out


def resolve_parent_source(home: Home, parent_id: str, *, task: Task) -> str:
    """The source a ``--parent`` stands for: "baseline" or the task's id is the task's own script;
    else a claim of this home's replica (any unique id prefix of 6+ hex digits), its source rebuilt
    along its lineage and checked (node/cli/views.py). The claim must be of the task run."""
    if parent_id in (task.id, "baseline"):
        return task.source
    if not home.exists:
        raise UserError(f"unknown parent {parent_id[:16]}: no corpus in {home.path} (run: ralphswarm init)")
    from node.cli.views import claim_source  # the replica and the corpus, only when a claim is named

    full, source = asyncio.run(claim_source(home, parent_id))
    if full != task.id and asyncio.run(_claim_task(home, full)) not in (task.id, None):
        raise UserError(f"parent {ids.short(full)} is a claim of another task than {task.name}; give --task")
    return source


async def _claim_task(home: Home, claim_id: str) -> str | None:
    from node.cli.corpus import open_replica

    async with open_replica(home) as replica:
        env = await replica.get(claim_id)
    return env.body["task"] if env is not None and env.kind == "claim" else None


def _echo_task_table(tasks: list[Task]) -> None:
    table = Table("name", "id", "budget", "tolerance", "data bytes", "floor bpb")
    for column in table.columns[:2]:
        column.no_wrap = True
    for task in tasks:
        floor = f"{task.entropy_bpb:.4f}" if task.entropy_bpb is not None else "-"
        table.add_row(task.name, task.id[:12], f"{task.budget_tokens:,}", task.body["tolerance"],
                      f"{task.body['data']['bytes']:,}", floor)
    Console().print(table)


def _progress_runner(enabled: bool):
    """A rich progress bar on stderr (tokens, loss, ETA) when it is a terminal; else nothing."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        return None, None
    progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                        TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console,
                        transient=True)
    state: dict = {}

    def on_progress(tokens: int, budget: int, loss) -> None:
        if "id" not in state:
            state["id"] = progress.add_task("train", total=budget, loss="-")
        progress.update(state["id"], completed=tokens, loss=f"{loss:.4f}" if loss is not None else "-")

    return progress, on_progress


def _echo_result(run: ExperimentResult, task: Task, sha: str) -> None:
    rows = [("task", f"{task.name} {task.id[:16]}"), ("source_sha256", sha), ("sandbox", run.sandbox)]
    if run.outcome_ok:
        r = run.result
        rows += [("val_bpb", r["val_bpb"])]
        if "entropy_bpb" in r:
            rows += [("entropy_bpb", r["entropy_bpb"])]
        rows += [("tokens", str(r["tokens"])), ("seed", str(r["seed"])), ("train_s", r["wall_s"]),
                 ("total_s", f"{run.wall_s:.3f}"), ("flops_per_token", str(r["flops_per_token"])),
                 ("device", r["device"]), ("torch", r["torch"])]
    else:
        rows += [("outcome", "crashed"), ("reason", run.reason), ("total_s", f"{run.wall_s:.3f}")]
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:  # autoresearch style: a grep-able key: value block
        click.echo(f"{key + ':':<{width}}{value}")


def register(group: click.Group) -> None:

    @group.group("task")
    def task_group() -> None:
        """Tasks: the arenas claims compete in (built-in: tiny, shakespeare)."""

    @task_group.command("list")
    @home_option
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
    def task_list(home: Path | None, as_json: bool) -> None:
        """List the tasks this node knows."""
        get_home(home)
        tasks = TaskRegistry().all()
        if as_json:
            click.echo(json.dumps([_summary(t) for t in tasks]))
        else:
            _echo_task_table(tasks)

    @task_group.command("show")
    @click.argument("name_or_id")
    @home_option
    @click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "body": <task body>}.')
    def task_show(name_or_id: str, home: Path | None, as_json: bool) -> None:
        """Show one task, by name, id or id prefix, with its baseline train script."""
        get_home(home)
        task = _task(name_or_id)
        if as_json:
            click.echo(json.dumps({"id": task.id, "body": task.body}, ensure_ascii=False))
            return
        for key, value in _summary(task).items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            click.echo(f"{key + ':':<14}{value}")
        click.echo("\n# baseline train script\n" + task.source)

    @group.command("experiment")
    @home_option
    @click.option("--task", "task_name", default=None, help="Task name or id (default: the config's task).")
    @click.option("--patch", "patch_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Unified diff to apply to the parent's source.")
    @click.option("--parent", default=None, help="Parent claim (id prefix, 6+ hex; default: the task baseline).")
    @click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
    @budget_scale_option(1.0)
    @device_option("auto")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=None,
                  help="Wall-clock limit of training in seconds.")
    @click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
    def experiment(home: Path | None, task_name: str | None, patch_file: Path | None, parent: str | None,
                   seed: int, budget_scale: float, device: str, timeout_s: float | None, as_json: bool) -> None:
        """Train the task's script (optionally patched) in the sandbox and measure val_bpb."""
        h = get_home(home)
        task = _task(task_name or str(h.config()["task"]))
        try:
            h.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {h.cache_dir}: {exc.strerror or exc}") from None
        source = resolve_parent_source(h, parent, task=task) if parent else task.source
        if patch_file is not None:
            try:
                patch = patch_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"cannot read patch {patch_file}: {exc}") from None
            try:
                source = apply_patch(source, patch)
            except PatchError as exc:
                raise UserError(f"patch {patch_file.name}: {exc}") from None
        progress, on_progress = _progress_runner(not as_json)
        # One run and exit: no warm processes for a next run that never comes.
        options = dict(seed=seed, budget_scale=budget_scale, device=device, timeout_s=timeout_s,
                       cache_dir=h.cache_dir, settings=RunSettings(warm_pool=False))
        try:
            if progress is not None:
                with progress:
                    run = run_experiment(task, source, on_progress=on_progress, **options)
            else:
                run = run_experiment(task, source, **options)
        except DataError as exc:  # pragma: no cover - run_experiment reports data errors as outcomes
            raise UserError(str(exc)) from None
        sha = source_sha256(source)
        if as_json:
            click.echo(json.dumps({"task": task.id, "parent": parent, "source_sha256": sha, "ok": run.outcome_ok,
                                   "reason": run.reason, "sandbox": run.sandbox, "total_s": f"{run.wall_s:.3f}",
                                   "result": run.result}))
        else:
            _echo_result(run, task, sha)
        if not run.outcome_ok:
            raise UserError(f"experiment crashed: {run.reason}", exit_code=CRASHED_EXIT)
