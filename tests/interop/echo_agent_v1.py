#!/usr/bin/env python3
"""A minimal echo agent on the official Python a2a-sdk 1.x server side, speaking A2A 1.0 only.

Usage: echo_agent_v1.py [--port N] [--token-env VAR] [--minimal]   (port 0: the OS picks it)

Built the way the SDK's 1.x samples build an agent: an AgentExecutor, a DefaultRequestHandler
with the in-memory task store, the SDK's Starlette routes for the Agent Card and for JSON-RPC
(without the 0.3 compatibility switch: a 0.3 request is refused), served by uvicorn on
127.0.0.1. Its card declares one interface, JSON-RPC at protocol version 1.0 (so the SDK adds no
0.3 member to it). Each message becomes a task that reports `working`, publishes the message's
text as an artifact, and completes with the text echoed back as its status message; a stream
sees all of it, framed by sse-starlette (with `\\r\\n` line ends).

Once uvicorn serves, it prints `A2A_LISTENING http://127.0.0.1:PORT/` on stdout.

With --token-env VAR, every request but the Agent Card must carry `Authorization: Bearer <$VAR>`
(401 otherwise), the way a third-party agent with its own credential behaves; each request's
verdict is printed as `A2A_AUTH ok|refused`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

import uvicorn
from a2a.helpers.proto_helpers import get_message_text, new_task_from_user_message, new_text_artifact, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes.agent_card_routes import create_agent_card_routes
from a2a.server.routes.jsonrpc_routes import create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette


class EchoExecutor(AgentExecutor):
    """Echo the request's text: working, an artifact with the text, completed with it (minimal:
    completed with it at once, the same protocol work as the 0.3 echo agent, for the wire bench)."""

    def __init__(self, minimal: bool) -> None:
        self.minimal = minimal

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        text = get_message_text(context.message)
        if not self.minimal:
            await updater.update_status(TaskState.TASK_STATE_WORKING)
            await updater.add_artifact([new_text_artifact("echo", text).parts[0]], name="echo")
        await updater.complete(new_text_message(text, context_id=task.context_id, task_id=task.id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


def card(url: str) -> AgentCard:
    return AgentCard(
        name="python-echo-v1",
        description="Echoes the text of each message (a2a-sdk 1.x, A2A 1.0 only)",
        version="0.1.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
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


async def serve(port: int, token: str | None, minimal: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    agent_card = card(url)
    handler = DefaultRequestHandler(agent_executor=EchoExecutor(minimal), task_store=InMemoryTaskStore(), agent_card=agent_card)
    routes = create_agent_card_routes(agent_card) + create_jsonrpc_routes(handler, rpc_url="/")
    app = Starlette(routes=routes)
    if token:
        app = require_bearer(app, token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    run = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if run.done():
            run.result()
            sys.exit("echo_agent_v1: uvicorn stopped before serving")
        await asyncio.sleep(0.001)
    print(f"A2A_LISTENING {url}", flush=True)
    await run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-env", default=None, help="require the bearer token held in this environment variable")
    ap.add_argument("--minimal", action="store_true", help="complete at once (no working status, no artifact)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    token = os.environ.get(args.token_env) if args.token_env else None
    if args.token_env and not token:
        sys.exit(f"echo_agent_v1: {args.token_env} is unset")
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    run(serve(args.port, token, args.minimal))


if __name__ == "__main__":
    main()
