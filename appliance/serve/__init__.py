"""`forge serve`: an OpenAI-compatible HTTP endpoint over Forge's one model pool.

[`app`](app.py) the routes (Starlette) and what they share, [`protocol`](protocol.py) the
OpenAI request and response shapes, [`names`](names.py) the model names (a role's base, a
stage's active adapter), [`keys`](keys.py) the API keys, [`admission`](admission.py) the
bounded queue per base, [`state`](state.py) the state file `forge status` reads and the
pause while forged runs a heavy job, [`server`](server.py) the bind rules and uvicorn.
"""
