"""An OpenAI-compatible oracle on loopback: it stands in for a strong hosted teacher
(which a test cannot reach offline) by answering each stage with what the real commit
says (appliance.campaign.truth), for the candidates and symbols the prompt's schema lists.

Every second code answer to the same prompt is wrong (the real edits undone), so of two
samples one resolves and one fails: the data package gets SFT and DPO rows. With an
`upstream` (forge serve), every stage but code is passed on to it unchanged but for the
model name, and its answer returned: a small model's answers in a package that resolves.
It checks the API key like a hosted service (401 otherwise) and logs every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from openai import OpenAI
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from appliance.campaign import targets
from appliance.campaign.truth import CommitTruth, plan_target
from appliance.stages.templates import templates

MODEL = "oracle-1"


def _stage(system: str) -> str:
    for stage, template in templates().items():
        if template["system"].strip() == system:
            return stage
    raise ValueError("not a stage prompt")


class Oracle:
    def __init__(
        self, truths: dict[str, CommitTruth], key: str, upstream: tuple[str, str] | None = None
    ) -> None:
        self.truths = truths  # commit message -> what the commit did
        self.key = key
        self.upstream = upstream  # (base URL, model) that answers every stage but code
        self.refuse: str | None = None  # a stage whose prompts get a 400, as too long
        self.forwarded = 0
        self.requests: list[dict] = []
        self.code_asked: dict[str, int] = {}
        self.lock = threading.Lock()

    def answer(self, body: dict) -> str:
        system, user = (m["content"] for m in body["messages"])
        stage = _stage(system)
        task = max((t for t in self.truths if t in user), key=len)
        truth = self.truths[task]
        schema = body["response_format"]["json_schema"]["schema"]
        if self.upstream is not None and stage != "code":
            url, model = self.upstream
            with self.lock:
                self.forwarded += 1
            client = OpenAI(base_url=url, api_key="none", max_retries=0, timeout=300)
            answer = client.chat.completions.create(**(body | {"model": model}))
            return answer.choices[0].message.content or ""
        if stage == "task_analysis":
            return json.dumps({"summary": task.splitlines()[0], "kind": "feature",
                               "files": list(truth.files) or ["README.md"]})  # fmt: skip
        if stage == "scope":
            shown = schema["properties"]["files"]["items"]["properties"]["path"]["enum"]
            return json.dumps(targets.scope_target(truth.files, shown, set()))
        if stage == "precision":
            shown = schema["properties"]["symbols"]["items"]["properties"]["symbol"]["enum"]
            return json.dumps(targets.precision_target(truth.symbols, shown))
        if stage == "plan":
            return json.dumps(plan_target(task, truth))
        prompt = hashlib.sha256(user.encode()).hexdigest()
        with self.lock:
            nth = self.code_asked.get(prompt, 0)
            self.code_asked[prompt] = nth + 1
        edits = [{"path": e.path, "search": e.search, "replace": e.replace} for e in truth.edits]
        if nth % 2:  # wrong: the first edit changes nothing
            first = truth.edits[0]
            edits = [{"path": first.path, "search": first.search, "replace": first.search}]
        return json.dumps({"edits": edits})

    async def chat(self, request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "")
        if given != f"Bearer {self.key}":  # says the key back, as careless servers do
            return JSONResponse({"error": {"message": f"bad key {given}", "type": "auth"}}, 401)
        body = await request.json()
        if body["model"] != MODEL:
            return JSONResponse({"error": {"message": "no such model"}}, 404)
        if self.refuse and _stage(body["messages"][0]["content"]) == self.refuse:
            return JSONResponse({"error": {"message": "prompt too long for this model"}}, 400)
        with self.lock:
            self.requests.append(body)
        text = await run_in_threadpool(self.answer, body)
        return JSONResponse({
            "id": "chatcmpl-oracle", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })  # fmt: skip

    async def models(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, 401)
        return JSONResponse(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "t"}]}
        )


@contextmanager
def serving(oracle: Oracle) -> Iterator[str]:
    """The oracle on a free loopback port; yields its base URL (…/v1)."""
    app = Starlette(routes=[
        Route("/v1/chat/completions", oracle.chat, methods=["POST"]),
        Route("/v1/models", oracle.models, methods=["GET"]),
    ])  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the oracle did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(30)
