#!/usr/bin/env python3
"""Talk to A2A agents with the official Python a2a-sdk client, whichever version is installed.

Usage: client.py [--mode both|send|stream] [--token TOKEN] URL [URL ...]

For each agent base URL: resolve its Agent Card with the SDK's A2ACardResolver, build a client
with the SDK's ClientFactory, and
- send: a message naming no skill (the agent asks which one: input-required), then a follow-up
  on that task (its taskId) saying `status`, which completes it (blocking sends);
- stream: one streaming message saying `status`;
and print one JSON line:

    {"url": ..., "sdk": "0.3.26", "api": "0.3", "name": <card name>, "transport": <class>,
     "asked_state": "input-required", "send_state": "completed", "stream_state": "completed",
     "stream_events": 2, "error": null}

States are normalized to the A2A 0.3 spellings ("completed", "input-required", ...), so the lines
read the same for both SDK generations. The transport's class name is printed so a test can
check which protocol the SDK picked from the card (1.x: the 1.0 JSON-RPC transport; 0.3: its
JSON-RPC transport).

With --token, every request (the card's too, harmlessly) carries `Authorization: Bearer TOKEN`,
set on the httpx client the SDK is given: the way an SDK user sends the credential the card's
securitySchemes asks for.

Exit status: 0 when every agent answered every call, 1 otherwise (the failing line carries
"error"). Only the SDK speaks HTTP here: nothing is hand-rolled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
from importlib.metadata import version

import httpx

SDK_VERSION = version("a2a-sdk")
API = "0.3" if SDK_VERSION.startswith("0.") else SDK_VERSION.split(".")[0]
TEXT = "hello from the a2a-sdk interop client"
TIMEOUT = httpx.Timeout(30.0)


def norm_state(state: str) -> str:
    """'TASK_STATE_INPUT_REQUIRED' (1.x) and 'input-required' (0.3) both become 'input-required'."""
    s = state.lower()
    if s.startswith("task_state_"):
        s = s[len("task_state_") :]
    return s.replace("_", "-")


async def probe_v03(http: httpx.AsyncClient, url: str, mode: str, out: dict) -> None:
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory, create_text_message_object
    from a2a.types import Message, Role

    card = await A2ACardResolver(http, url).get_agent_card()
    out["name"] = card.name
    out["protocol_version"] = card.protocol_version
    if mode in ("both", "send"):
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
        out["transport"] = type(client._transport).__name__
        task_id = None
        async for event in client.send_message(create_text_message_object(Role.user, TEXT)):
            if not isinstance(event, Message):
                task, _update = event
                task_id = task.id
                out["asked_state"] = norm_state(task.status.state.value)
        follow = create_text_message_object(Role.user, "status")
        follow.task_id = task_id
        async for event in client.send_message(follow):
            if isinstance(event, Message):
                out["send_state"] = "message"
            else:
                task, _update = event
                out["send_state"] = norm_state(task.status.state.value)
                out["same_task"] = task.id == task_id
    if mode in ("both", "stream"):
        client = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)
        out["transport"] = type(client._transport).__name__
        n = 0
        async for event in client.send_message(create_text_message_object(Role.user, "status")):
            n += 1
            if isinstance(event, Message):
                out["stream_state"] = "message"
            else:
                task, _update = event
                out["stream_state"] = norm_state(task.status.state.value)
        out["stream_events"] = n


async def probe_v1(http: httpx.AsyncClient, url: str, mode: str, out: dict) -> None:
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import Role, SendMessageRequest, TaskState

    card = await A2ACardResolver(http, url).get_agent_card()
    out["name"] = card.name
    out["protocol_version"] = ",".join(i.protocol_version for i in card.supported_interfaces)

    def request(text: str, task_id: str | None = None) -> SendMessageRequest:
        message = new_text_message(text, role=Role.ROLE_USER)
        if task_id:
            message.task_id = task_id
        return SendMessageRequest(message=message)

    def state_of(resp) -> str | None:
        if resp.HasField("task"):
            return norm_state(TaskState.Name(resp.task.status.state))
        if resp.HasField("status_update"):
            return norm_state(TaskState.Name(resp.status_update.status.state))
        if resp.HasField("message"):
            return "message"
        return None

    if mode in ("both", "send"):
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
        out["transport"] = type(client._transport).__name__
        task_id = None
        async for resp in client.send_message(request(TEXT)):
            out["asked_state"] = state_of(resp) or out.get("asked_state")
            if resp.HasField("task"):
                task_id = resp.task.id
        async for resp in client.send_message(request("status", task_id)):
            out["send_state"] = state_of(resp) or out.get("send_state")
            if resp.HasField("task"):
                out["same_task"] = resp.task.id == task_id
    if mode in ("both", "stream"):
        client = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)
        out["transport"] = type(client._transport).__name__
        n = 0
        async for resp in client.send_message(request("status")):
            n += 1
            out["stream_state"] = state_of(resp) or out.get("stream_state")
        out["stream_events"] = n


async def probe(url: str, mode: str, token: str | None) -> dict:
    out: dict = {"url": url, "sdk": SDK_VERSION, "api": API, "name": None, "transport": None,
                 "asked_state": None, "send_state": None, "same_task": None, "stream_state": None,
                 "stream_events": 0, "error": None}
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as http:
            if API == "0.3":
                await probe_v03(http, url, mode, out)
            else:
                await probe_v1(http, url, mode, out)
    except Exception as e:  # noqa: BLE001 - reported on the agent's line, the run goes on
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["both", "send", "stream"], default="both")
    ap.add_argument("--token", default=None, help="bearer token sent with every request")
    ap.add_argument("urls", nargs="+", help="agent base URLs, e.g. http://127.0.0.1:4242/")
    args = ap.parse_args()
    ok = True
    for url in args.urls:
        line = await probe(url, args.mode, args.token)
        if line["error"]:
            ok = False
            print(line.pop("traceback"), file=sys.stderr)
        print(json.dumps(line), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
