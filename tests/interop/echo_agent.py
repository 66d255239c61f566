#!/usr/bin/env python3
"""A minimal echo agent on the official Python a2a-sdk 0.3 server side: the wire bench's comparison.

Usage: echo_agent.py [--port N]   (default 0: the OS picks the port)

Built the way the SDK's own samples build an agent: an AgentExecutor, a DefaultRequestHandler
with the in-memory task store, A2AStarletteApplication, served by uvicorn on 127.0.0.1. Each
message becomes a task that completes at once with the message's text echoed back, so a
blocking message/send does the same protocol work as a Ratchet agent's `status` skill
(create a task, complete it with an agent message), minus the persistence.

Once uvicorn serves, it prints `A2A_LISTENING http://127.0.0.1:PORT/` on stdout.

With --token-env VAR, every request but the Agent Card must carry `Authorization: Bearer <$VAR>`
(401 otherwise), the way a third-party agent with its own credential behaves; each request's
verdict is printed as `A2A_AUTH ok|refused` so a test can see what arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvicorn
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.apps import A2AStarletteApplication
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentSkill
from a2a.utils import new_agent_text_message, new_task


class EchoExecutor(AgentExecutor):
    """Echo the request's text back as the completed task's status message."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            task = new_task(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = context.get_user_input()
        await updater.complete(new_agent_text_message(text, task.context_id, task.id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def card(url: str) -> AgentCard:
    return AgentCard(
        name="python-echo",
        description="Echoes the text of each message (a2a-sdk 0.3 comparison agent for Ratchet's wire bench)",
        url=url,
        version="0.1.0",
        protocol_version="0.3.0",
        preferred_transport="JSONRPC",
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="Echo the text back", tags=["echo"])],
    )


def require_bearer(app, token: str):
    """ASGI middleware: the card is public, everything else needs the bearer token."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and not scope["path"].startswith("/.well-known/"):
            headers = dict(scope.get("headers") or [])
            ok = headers.get(b"authorization", b"") == f"Bearer {token}".encode()
            print(f"A2A_AUTH {'ok' if ok else 'refused'}", flush=True)
            if not ok:
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"bearer token required"})
                return
        await app(scope, receive, send)

    return guarded


async def serve(port: int, http: str, token: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore())
    app = A2AStarletteApplication(agent_card=card(url), http_handler=handler).build()
    if token:
        app = require_bearer(app, token)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", http=http)
    server = uvicorn.Server(config)
    run = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if run.done():
            run.result()
            sys.exit("echo_agent: uvicorn stopped before serving")
        await asyncio.sleep(0.001)
    print(f"A2A_LISTENING {url}", flush=True)
    await run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-env", default=None, help="require the bearer token held in this environment variable")
    ap.add_argument("--loop", default="auto", help="uvicorn event loop: auto (uvloop when installed), asyncio, uvloop")
    ap.add_argument("--http", default="auto", help="uvicorn HTTP/1.1 parser: auto (httptools when installed), h11, httptools")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = asyncio.run
    if args.loop in ("auto", "uvloop"):
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            if args.loop == "uvloop":
                raise
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        sys.exit(f"echo_agent: {args.token_env} is unset")
    run(serve(args.port, args.http, token))


if __name__ == "__main__":
    main()
