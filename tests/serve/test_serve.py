"""The official `openai` client, unchanged, against `forge serve` with the real SmolLM2:
models, chat with and without streaming, JSON-schema output, completions with logprobs,
a promote and a rollback served from the next request, and bad input."""

from __future__ import annotations

import http.client
import json
import shutil
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from appliance import registry
from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from tests.registry.conftest import add_adapter
from tests.serve.conftest import CONTEXT, client, running, serve_home, served_rows

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Two real LoRAs that learnt different continuations (as in tests/serving/test_adapters.py).
TEXT_A = "The lighthouse keeper's cat is named Quizzlebottom and it sleeps on the great lamp."
TEXT_B = "The lighthouse keeper's cat is named Pepperwhistle and it hunts crabs at dawn."
PROMPT = "The lighthouse keeper's cat is named"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = serve_home(tmp_path_factory.mktemp("serve"), monkeypatch)
        yield config, db
        db.close()


@pytest.fixture(scope="module")
def served(home):
    config, _ = home
    with running(config) as service:
        yield service


def test_models_lists_each_role_and_stage_with_what_it_serves_now(served):
    listed = {m.id: m for m in client(served).models.list()}
    assert list(listed) == ["reasoning", "coder", "task_analysis", "scope", "precision",
                            "plan", "code"]  # fmt: skip
    scope = listed["scope"].model_extra["forge"]
    assert scope == {"role": "reasoning", "stage": "scope", "base": "smol", "adapter": None}
    assert listed["coder"].model_extra["forge"]["stage"] is None


def test_chat_streamed_is_the_same_answer_as_chat_whole(served, home):
    _, db = home
    openai = client(served)
    before = len(served_rows(db))
    whole = openai.chat.completions.create(
        model="coder", messages=QUESTION, max_tokens=24, temperature=0
    )
    answer = whole.choices[0].message.content
    assert answer.strip() and whole.usage.completion_tokens > 0
    assert whole.model_extra["forge"]["adapter"] is None
    stream = openai.chat.completions.create(
        model="coder", messages=QUESTION, max_tokens=24, temperature=0, stream=True
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(deltas) > 3  # it came token by token, not at once
    assert "".join(deltas) == answer
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    rows = served_rows(db)[before:]
    assert [(r[1], r[5]) for r in rows] == [("serve", answer), ("serve", answer)]
    assert rows[0][0] == whole.model_extra["forge"]["call_id"]


def test_json_schema_output_parses_and_validates(served):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "country": {"type": "string", "enum": ["France", "Spain", "Italy"]},
        },
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    answer = client(served).chat.completions.create(
        model="reasoning",
        messages=[{"role": "user", "content": "Which city is the capital of France? JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
        max_tokens=60,
        temperature=0,
    )
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city", "country"} and data["country"] in ("France", "Spain", "Italy")
    assert isinstance(data["city"], str) and len(data["city"]) <= 30
    anything = client(served).chat.completions.create(
        model="reasoning", messages=QUESTION, response_format={"type": "json_object"},
        max_tokens=40, temperature=0,
    )  # fmt: skip
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


def test_completions_give_each_token_and_its_logprob(served):
    done = client(served).completions.create(
        model="coder", prompt="def add(a, b):", max_tokens=8, temperature=0, logprobs=0
    )
    choice = done.choices[0]
    assert "".join(choice.logprobs.tokens) == choice.text
    assert len(choice.logprobs.token_logprobs) == done.usage.completion_tokens
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    assert max(choice.logprobs.token_logprobs) > -0.7  # greedy picks a likely token


def test_a_promote_and_a_rollback_change_the_adapter_of_the_next_request(
    served, home, lora_factory
):
    config, db = home
    gguf = shipped_gguf()
    for version, text, name in ((1, TEXT_A, "quiz"), (2, TEXT_B, "pepper")):
        path = config.dir("adapters") / "scope" / f"scope-v{version}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lora_factory(text, name), path)
        add_adapter(db, "scope", version, base_sha256=sha256_file(gguf),
                    path=str(path.relative_to(config.home)))  # fmt: skip
    openai = client(served)

    def ask() -> tuple[str, str | None]:
        done = openai.completions.create(model="scope", prompt=PROMPT, max_tokens=8,
                                         temperature=0)  # fmt: skip
        return done.choices[0].text, done.model_extra["forge"]["adapter"]

    def listed() -> str | None:
        models = {m.id: m for m in openai.models.list()}
        return models["scope"].model_extra["forge"]["adapter"]

    base_text, adapter = ask()
    assert adapter is None and "Quizzlebottom" not in base_text
    registry.promote(db, "scope", 1)
    assert listed() == "scope-v1"
    text, adapter = ask()
    assert adapter == "scope-v1" and "Quizz" in text
    registry.promote(db, "scope", 2)
    text, adapter = ask()
    assert adapter == "scope-v2" and "Pepper" in text
    registry.rollback(db, "scope")
    text, adapter = ask()
    assert adapter == "scope-v1" and "Quizz" in text and listed() == "scope-v1"
    assert db.execute("SELECT adapter FROM model_calls ORDER BY id DESC LIMIT 1").fetchone() == (
        "scope-v1",
    )
    registry.rollback(db, "scope", to_base=True)
    assert ask() == (base_text, None)


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_input_gets_a_clear_error_in_the_openai_shape_and_no_model_call(served, home):
    import openai as openai_module

    _, db = home
    before = len(served_rows(db))
    status, body = _post(served.url + "/chat/completions", b'{"model": "coder", "messages": [')
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    extra = json.dumps({"model": "coder", "messages": QUESTION, "tools": []}).encode()
    status, body = _post(served.url + "/chat/completions", extra)
    assert status == 400 and "tools" in body["error"]["message"]
    openai = client(served)
    with pytest.raises(openai_module.NotFoundError) as unknown:
        openai.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert unknown.value.code == "model_not_found" and "scope" in unknown.value.message
    long_prompt = "word " * (CONTEXT + 50)
    with pytest.raises(openai_module.BadRequestError) as oversize:
        openai.completions.create(model="coder", prompt=long_prompt, max_tokens=10)
    assert oversize.value.code == "context_length_exceeded"
    message = oversize.value.message
    assert f"holds {CONTEXT} tokens" in message and "+ max_tokens 10 =" in message
    with pytest.raises(openai_module.BadRequestError) as too_much:
        openai.chat.completions.create(model="coder", messages=QUESTION, max_tokens=CONTEXT)
    assert f"+ max_tokens {CONTEXT} = " in too_much.value.message
    assert len(served_rows(db)) == before  # none of these reached the model
    fine = openai.chat.completions.create(model="coder", messages=QUESTION, max_tokens=4)
    assert fine.choices[0].message.content


def test_a_client_that_drops_mid_stream_stops_its_generation(served, home):
    _, db = home
    before = len(served_rows(db))
    where = urlsplit(served.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
    body = {"model": "coder", "prompt": "Once upon a time", "max_tokens": 600,
            "temperature": 0.8, "seed": 1, "stream": True}  # fmt: skip
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = 0
    while events < 3:
        if answer.readline().startswith(b"data: "):
            events += 1
    conn.sock.shutdown(2)  # the client goes away mid-answer
    conn.close()
    deadline = time.monotonic() + 60
    while len(served_rows(db)) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    (row,) = served_rows(db)[before:]
    assert row[1] == "serve" and row[3] == "cancelled"
    assert 3 <= row[4] < 600  # stopped well before max_tokens
    after = client(served).chat.completions.create(model="coder", messages=QUESTION, max_tokens=4)
    assert after.choices[0].message.content  # the server goes on serving
