"""The CLI against a real control plane: output, --json, and one-line errors with exit codes."""

from __future__ import annotations

import json

import apothic
from apothic.exception import exit_code_for


def test_run_prints_remote_output_and_results(cli) -> None:
    result = cli("run", "examples/hello.py", timeout=120)
    assert "squaring 7 on a worker" in result.stdout  # printed inside a container
    assert "remote: 49" in result.stdout
    assert "map: [0, 1, 4, 9, 16]" in result.stdout
    assert "job status: succeeded" in result.stdout


def test_run_passes_entrypoint_arguments(cli) -> None:
    result = cli("run", "examples/hello.py::main", "--n", "2", timeout=120)
    assert "map: [0, 1]" in result.stdout


def test_deploy_then_call_by_name_from_another_process(cli, server: dict) -> None:
    out = cli("deploy", "tests/e2e/apps/basic.py").stdout
    assert "deployed" in out and "e2e-basic" in out
    assert apothic.Function.from_name("e2e-basic", "add").remote(40, 2) == 42
    apps = json.loads(cli("app", "list", "--json").stdout)
    assert any(a["name"] == "e2e-basic" and a["state"] == "deployed" for a in apps)
    missing = apothic.Function.from_name("e2e-basic", "nope")
    try:
        missing.remote()
    except apothic.exception.NotFoundError as e:
        assert e.code == "function.not_found"
    else:
        raise AssertionError("an unknown function name must fail")


def test_job_commands(cli, server: dict) -> None:
    call = apothic.Function.from_name("e2e-basic", "shout").spawn("cli")
    cli("job", "wait", call.object_id)
    status = json.loads(cli("job", "status", call.object_id, "--json").stdout)
    assert {"id", "status", "attempts", "worker_id"} <= status.keys()
    assert status["status"] == "succeeded" and status["attempts"] == 1 and status["worker_id"].startswith("wk-")
    assert "shouting cli" in cli("job", "logs", call.object_id).stdout
    watched = cli("job", "watch", call.object_id).stdout
    assert "queued" in watched and "succeeded" in watched
    assert "succeeded" in cli("job", "cancel", call.object_id).stdout  # already ended: unchanged


def test_worker_list_json_has_the_local_agents_pid(cli) -> None:
    workers = json.loads(cli("worker", "list", "--json").stdout)
    assert workers and all({"id", "status", "pid"} <= w.keys() for w in workers)
    assert any(w["provider"] == "local" and isinstance(w["pid"], int) for w in workers)
    assert "cpu" in workers[0]["capacity"] and isinstance(workers[0]["capacity"]["gpus"], list)


def test_server_status(cli, server: dict) -> None:
    status = json.loads(cli("server", "status", "--json").stdout)
    assert status["pid"] == server["pid"] and status["status"] == "running"


def _one_line_error(result, code: str) -> None:
    assert result.returncode == exit_code_for(code), (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and code in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_job_id(cli) -> None:
    _one_line_error(cli("job", "status", "fc-00000000000000000000000000", expect=None), "job.not_found")
    _one_line_error(cli("job", "status", "bogus", expect=None), "job.not_found")


def test_wrong_api_key(cli) -> None:
    _one_line_error(cli("app", "list", expect=None, APOTHIC_API_KEY="ak-wrong", APOTHIC_SERVER_URL=_url(cli)),
                    "auth.invalid_key")


def test_no_server_reachable(cli) -> None:
    _one_line_error(cli("app", "list", expect=None, APOTHIC_SERVER_URL="http://127.0.0.1:9"),
                    "server.unreachable")


def test_file_with_no_app(cli, tmp_path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    _one_line_error(cli("run", str(empty), expect=None), "app.not_found_in_file")


def _url(cli) -> str:
    return json.loads(cli("server", "status", "--json").stdout)["url"]


def test_queue_commands(cli) -> None:
    cli("queue", "create", "cli-q", "--max-deliveries", "3")
    cli("queue", "put", "cli-q", "1", "two", '{"three": 3}')
    assert json.loads(cli("queue", "peek", "cli-q", "--json").stdout) == [1, "two", {"three": 3}]
    assert cli("queue", "len", "cli-q").stdout.strip() == "3"
    listed = json.loads(cli("queue", "list", "--json").stdout)
    assert any(q["name"] == "cli-q" and q["len"] == 3 and q["dead_letter"] == "cli-q.dlq" for q in listed)
    assert json.loads(cli("queue", "get", "cli-q", "--n", "2", "--json").stdout) == [1, "two"]
    cli("queue", "clear", "cli-q")
    assert cli("queue", "len", "cli-q").stdout.strip() == "0"
    cli("queue", "delete", "cli-q")
    _one_line_error(cli("queue", "len", "cli-q", expect=None), "queue.not_found")
    _one_line_error(cli("queue", "watch", "cli-q", expect=None), "queue.not_found")


def test_dict_commands(cli) -> None:
    cli("dict", "create", "cli-d")
    cli("dict", "put", "cli-d", "a", "1")
    cli("dict", "put", "cli-d", "b", "text")
    got = json.loads(cli("dict", "get", "cli-d", "a", "--json").stdout)
    assert got["value"] == 1 and got["version"] == 1
    assert json.loads(cli("dict", "peek", "cli-d", "--json").stdout) == {"a": 1, "b": "text"}
    assert cli("dict", "len", "cli-d").stdout.strip() == "2"
    assert any(d["name"] == "cli-d" for d in json.loads(cli("dict", "list", "--json").stdout))
    _one_line_error(cli("dict", "get", "cli-d", "zzz", expect=None), "dict.key_not_found")
    cli("dict", "clear", "cli-d")
    cli("dict", "delete", "cli-d")
    _one_line_error(cli("dict", "len", "cli-d", expect=None), "dict.not_found")
