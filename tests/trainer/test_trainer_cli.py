"""`ralphswarm task list|show` and `ralphswarm experiment`, through the real CLI edge.

Run: .venv/bin/python -m pytest tests/trainer/test_trainer_cli.py -q
"""
from __future__ import annotations

import hashlib
import json

import pytest

import protocol
from node.cli import main
from trainer.patches import make_patch
from trainer.tasks import builtin_tasks

TINY = builtin_tasks()["tiny"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_task_list_json(capsys, tmp_path):
    code, out, _ = run(capsys, "task", "list", "--json", "--home", str(tmp_path))
    assert code == 0
    listed = {t["name"]: t for t in json.loads(out)}
    assert set(listed) == {"tiny", "shakespeare"}
    assert listed["tiny"]["id"] == TINY.id and listed["tiny"]["entropy_bpb"].startswith("1.9")


def test_task_list_table(capsys, tmp_path):
    code, out, _ = run(capsys, "task", "list", "--home", str(tmp_path))
    assert code == 0 and "tiny" in out and "shakespeare" in out


def test_task_show_json_is_id_and_body(capsys, tmp_path):
    code, out, _ = run(capsys, "task", "show", TINY.id[:12], "--json", "--home", str(tmp_path))
    shown = json.loads(out)
    assert code == 0 and set(shown) == {"id", "body"}
    assert shown["id"] == protocol.task_id(shown["body"]) == TINY.id
    protocol.schemas.validate_task(shown["body"])


def test_task_show_text_and_unknown_task(capsys, tmp_path):
    code, out, _ = run(capsys, "task", "show", "shakespeare", "--home", str(tmp_path))
    assert code == 0 and "MODEL_DIM = 384" in out
    code, out, err = run(capsys, "task", "show", "nope", "--home", str(tmp_path))
    assert code == 1 and err == "error: unknown task 'nope' (known: shakespeare, tiny)\n" and out == ""


@pytest.mark.slow
def test_experiment_json_prints_exactly_one_object(capsys, tmp_path):
    new = TINY.source.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.04")
    patch = tmp_path / "lr.diff"
    patch.write_text(make_patch(TINY.source, new))
    code, out, _ = run(capsys, "experiment", "--home", str(tmp_path / "home"), "--task", "tiny", "--patch",
                       str(patch), "--seed", "3", "--budget-scale", "0.03", "--device", "cpu", "--json")
    assert code == 0
    obj = json.loads(out)  # the whole of stdout is one JSON object
    assert obj["ok"] is True and obj["task"] == TINY.id and obj["parent"] is None
    assert obj["source_sha256"] == hashlib.sha256(new.encode()).hexdigest()
    protocol.schemas.validate_result(obj["result"])
    assert obj["result"]["seed"] == 3


@pytest.mark.slow
def test_crashed_experiment_json_and_exit_status(capsys, tmp_path):
    patch = tmp_path / "bad.diff"
    patch.write_text(make_patch(TINY.source, TINY.source.replace("def build_model(", "def build_modl(")))
    code, out, err = run(capsys, "experiment", "--home", str(tmp_path), "--patch", str(patch),
                       "--budget-scale", "0.03", "--device", "cpu", "--json")
    obj = json.loads(out)
    assert code == 2 and obj["ok"] is False and obj["result"] is None
    assert obj["reason"] == "train script defines no build_model()"
    assert err == "error: experiment crashed: train script defines no build_model()\n"


@pytest.mark.parametrize("args, message", [
    (["--patch", "{tmp}/missing.diff"], "cannot read patch"),
    (["--patch", "{tmp}/garbage.diff"], "patch garbage.diff: patch line 1: expected a diff header"),
    (["--parent", "ab" * 32], "unknown parent abababababababab"),
    (["--budget-scale", "-1"], "budget scale must be in [0.0001, 1]"),
    (["--budget-scale", "2"], "budget scale must be in [0.0001, 1]"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--task", "nope"], "unknown task 'nope'"),
])
def test_experiment_bad_input_is_one_line(capsys, tmp_path, args, message):
    (tmp_path / "garbage.diff").write_text("this is not a diff\n")
    argv = ["experiment", "--home", str(tmp_path)] + [a.format(tmp=tmp_path) for a in args]
    code, out, err = run(capsys, *argv)
    flag_value = "budget scale" in message or "device" in message  # refused while parsing: a usage error
    assert code == (2 if flag_value else 1) and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
