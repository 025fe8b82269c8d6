"""API keys (the file, the CLI, 401 before any model call, the bind rule), the bounded
queue under 20 concurrent clients, and the pause while forged runs a heavy job."""

from __future__ import annotations

import json
import os
import threading

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.ops import jobs
from appliance.serve.keys import KeyFileError, read_keys
from appliance.serve.server import ServeRefused, prepare
from appliance.status import gather
from appliance.store.backup import PID_FILE
from tests.serve.conftest import client, reconfigure, running, serve_home, served_rows

QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = serve_home(tmp_path / "keys", monkeypatch)
    yield config, db
    db.close()


def _forge(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_keys_are_kept_hashed_in_a_0600_file_and_shown_once(home):
    config, _ = home
    added = _forge("serve", "keys", "add", "editor")
    assert added.exit_code == 0, added.output
    token = added.output.strip().splitlines()[-1]
    assert token.startswith("fsk-") and len(token) > 40
    path = config.serve_keys_file
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert token not in path.read_text()  # only its hash
    listed = _forge("serve", "keys", "list", "--json")
    (key,) = json.loads(listed.output)["keys"]
    assert key["name"] == "editor" and token.startswith(key["shown"]) and token not in listed.output
    again = _forge("serve", "keys", "add", "editor")
    assert again.exit_code == 2 and "exists" in again.output
    path.chmod(0o644)
    loose = _forge("serve", "keys", "list")
    assert loose.exit_code == 1 and "mode 0644" in loose.output and "chmod 600" in loose.output
    with pytest.raises(KeyFileError):
        read_keys(path)
    path.chmod(0o600)
    assert _forge("serve", "keys", "revoke", "editor").exit_code == 0
    assert read_keys(path) == ()
    assert _forge("serve", "keys", "revoke", "editor").exit_code == 2


def test_beyond_loopback_without_a_key_the_server_does_not_start(home):
    config, _ = home
    with pytest.raises(ServeRefused, match="no API key exists"):
        prepare(config, "0.0.0.0", 0)
    refused = _forge("serve", "--host", "0.0.0.0", "--port", "0")
    assert refused.exit_code == 1 and "forge serve keys add" in refused.output


def test_without_a_valid_key_401_and_never_a_model_call(home):
    import openai

    config, db = home
    token = _forge("serve", "keys", "add", "agent").output.strip().splitlines()[-1]
    with running(config, host="0.0.0.0") as service:
        assert service.url.startswith("http://0.0.0.0:")
        service_url = service.url.replace("0.0.0.0", "127.0.0.1")
        local = type("Local", (), {"url": service_url})  # the same server, over loopback
        for key in ("none", token[:-1] + "x"):
            with pytest.raises(openai.AuthenticationError) as refused:
                client(local, key).chat.completions.create(model="coder", messages=QUESTION)
            assert refused.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                client(local, key).models.list()
        assert served_rows(db) == []  # the model was never called
        answered = client(local, token).chat.completions.create(
            model="coder", messages=QUESTION, max_tokens=4
        )
        assert answered.choices[0].message.content
        _forge("serve", "keys", "revoke", "agent")
        with pytest.raises(openai.AuthenticationError):  # revoked: refused from the next request
            client(local, token).chat.completions.create(model="coder", messages=QUESTION)
    assert len(served_rows(db)) == 1


def test_twenty_clients_against_a_queue_of_four_each_get_200_or_429(home):
    import openai

    config, db = home
    config = reconfigure(config, "[serve]\nqueue = 4\n")
    outcomes: list = [None] * 20
    start = threading.Barrier(20)

    def ask(i: int, service) -> None:
        start.wait()
        try:
            done = client(service).chat.completions.create(
                model="coder", messages=QUESTION, max_tokens=48, temperature=0
            )
            outcomes[i] = (200, done.model_extra["forge"]["call_id"])
        except openai.RateLimitError as exc:
            outcomes[i] = (429, exc.response.headers.get("retry-after"))

    with running(config) as service:
        threads = [threading.Thread(target=ask, args=(i, service)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        ok = [o for o in outcomes if o and o[0] == 200]
        busy = [o for o in outcomes if o and o[0] == 429]
        assert len(ok) + len(busy) == 20  # every client got an answer
        assert 5 <= len(ok) < 20 and busy  # at least the one decoding and the four waiting
        assert all(int(retry) >= 1 for _, retry in busy)
        # Each 200 is one logged call, and no refused request made one.
        assert sorted(call for _, call in ok) == [r[0] for r in served_rows(db)]
        assert service.admission.in_flight() == 0
        after = client(service).chat.completions.create(
            model="coder", messages=QUESTION, max_tokens=4
        )
        assert after.choices[0].message.content  # healthy afterwards


def test_while_forged_runs_a_heavy_job_serve_answers_503_and_status_shows_it(home):
    import openai

    config, db = home
    config = reconfigure(config, "[serve]\nyield_to_jobs = true\n")
    job, _ = jobs.enqueue(db, "train", {"stage": "scope"}, key="train", heavy=True)
    assert jobs.claim(db).id == job.id  # running now
    # forged's pid file names a live process: this one stands in for the daemon.
    (config.home / PID_FILE).write_text(f"{os.getpid()}\n")
    with running(config) as service:
        with pytest.raises(openai.APIStatusError) as paused:
            client(service).chat.completions.create(model="coder", messages=QUESTION)
        assert paused.value.status_code == 503
        assert paused.value.response.headers["retry-after"] == "30"
        assert f"paused: job {job.id} (train) running" in paused.value.message
        state = _wait_for(lambda: gather(config, db, resources={})["serve"], "refused")
        assert state["running"] and state["pid"] == os.getpid() and state["refused"] == 1
        assert state["url"] == service.url and state["paused"] == f"job {job.id} (train) running"
        jobs.done(db, job.id)
        answered = client(service).chat.completions.create(
            model="coder", messages=QUESTION, max_tokens=4
        )
        assert answered.choices[0].message.content
        assert _wait_for(lambda: gather(config, db, resources={})["serve"], "served")
        shown = _forge("status").output
        assert f"serve       serving at {service.url}" in shown and "1 answered" in shown
    assert gather(config, db, resources={})["serve"] == {"running": False}  # gone with it


def _wait_for(read, key: str, timeout: float = 10.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        state = read()
        if state.get(key) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)
