"""The runtime's A2A server, with the official a2a-sdk as the client."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from google.protobuf import json_format, struct_pb2

from conftest import TOKEN


def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


async def client_for(url: str, h: httpx.AsyncClient, streaming: bool = False):
    card = await A2ACardResolver(h, url).get_agent_card()
    return ClientFactory(ClientConfig(httpx_client=h, streaming=streaming)).create(card)


def message(text: str | None = None, data=None, context_id: str | None = None, **metadata) -> Message:
    parts = []
    if text is not None:
        parts.append(Part(text=text))
    if data is not None:
        parts.append(Part(data=json_format.ParseDict(data, struct_pb2.Value())))
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=parts)
    if context_id:
        m.context_id = context_id
    if metadata:
        m.metadata.update(metadata)
    return m


async def send(client, msg: Message, return_immediately: bool = False):
    """SendMessage; the task of its (last) response."""
    request = SendMessageRequest(
        message=msg, configuration=SendMessageConfiguration(return_immediately=return_immediately)
    )
    last = None
    async for response in client.send_message(request):
        last = response
    assert last is not None and last.HasField("task"), last
    return last.task


def artifact_json(task):
    part = task.artifacts[0].parts[0]
    if part.HasField("text"):
        return part.text
    return json_format.MessageToDict(part.data)


async def test_the_runtime_card_has_a_skill_per_agent_type(runtime):
    async with http() as h:
        card = await A2ACardResolver(h, runtime.url).get_agent_card()
        assert [s.id for s in card.skills] == ["echo", "counter", "py"]
        assert card.capabilities.streaming
        interface = card.supported_interfaces[0]
        assert (interface.url, interface.protocol_binding, interface.protocol_version) == (
            f"{runtime.url}/a2a",
            "JSONRPC",
            "1.0",
        )
        assert "demo.Ask" in card.skills[2].description
        assert "bearer" in card.security_schemes
        one = await A2ACardResolver(h, f"{runtime.url}/a2a/counter").get_agent_card()
        assert (one.name, one.supported_interfaces[0].url) == ("counter", f"{runtime.url}/a2a/counter")
        missing = await h.get(f"{runtime.url}/a2a/nobody/.well-known/agent-card.json")
        assert missing.status_code == 404


async def test_send_message_to_echo_counter_and_a_python_http_agent(runtime):
    async with http() as h:
        echo = await client_for(f"{runtime.url}/a2a/echo", h)
        task = await send(echo, message("hello"))
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_json(task) == "hello"
        assert task.history[0].parts[0].text == "hello"

        data_task = await send(echo, message(data={"n": [1, 2]}))
        assert artifact_json(data_task) == {"n": [1, 2]}

        # One contextId is one agent key: the counter's state carries over.
        counter = await client_for(f"{runtime.url}/a2a/counter", h)
        context = f"conv-{uuid.uuid4().hex[:6]}"
        first = await send(counter, message("one", context_id=context))
        second = await send(counter, message("two", context_id=context))
        assert (artifact_json(first), artifact_json(second)) == ({"count": 1}, {"count": 2})
        assert second.context_id == context
        other = await send(counter, message("one", context_id=context + "-b"))
        assert artifact_json(other) == {"count": 1}

        # Through the runtime card's interface, naming the type in metadata.
        any_type = await client_for(runtime.url, h)
        py = await send(any_type, message("hi", agentType="py"))
        assert py.status.state == TaskState.TASK_STATE_COMPLETED
        assert artifact_json(py) == "py got hi"
        assert py.artifacts[0].metadata["messageType"] == "demo.Reply"

        # A handler error is a failed task with the reason.
        failed = await send(any_type, message("fail", agentType="py"))
        assert failed.status.state == TaskState.TASK_STATE_FAILED
        assert "asked to fail" in failed.status.message.parts[0].text


async def test_a_streamed_task_sends_its_task_artifact_and_final_status(runtime):
    async with http() as h:
        py = await client_for(f"{runtime.url}/a2a/py", h, streaming=True)
        request = SendMessageRequest(message=message(data={"text": "slow", "sleep": 0.5}))
        events = [e async for e in py.send_message(request)]
        kinds = [e.WhichOneof("payload") for e in events]
        assert kinds[0] == "task" and events[0].task.status.state == TaskState.TASK_STATE_WORKING, kinds
        assert kinds[-2:] == ["artifact_update", "status_update"], kinds
        assert events[-2].artifact_update.artifact.parts[0].text == "py got slow"
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        assert {e.artifact_update.task_id for e in events[-2:-1]} == {events[0].task.id}


async def test_return_immediately_then_get_list_and_subscribe(runtime):
    async with http() as h:
        py = await client_for(f"{runtime.url}/a2a/py", h, streaming=True)
        polling = await client_for(f"{runtime.url}/a2a/py", h)
        context = f"ctx-{uuid.uuid4().hex[:6]}"
        task = await send(polling, message(data={"text": "later", "sleep": 1.0}, context_id=context), True)
        assert task.status.state == TaskState.TASK_STATE_WORKING
        # SubscribeToTask follows it to the end.
        events = [e async for e in py.subscribe(SubscribeToTaskRequest(id=task.id))]
        assert events[0].task.id == task.id
        assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        done = await polling.get_task(GetTaskRequest(id=task.id))
        assert (done.status.state, artifact_json(done)) == (TaskState.TASK_STATE_COMPLETED, "py got later")
        listed = await polling.list_tasks(ListTasksRequest(context_id=context, include_artifacts=True))
        assert [t.id for t in listed.tasks] == [task.id]
        assert listed.total_size == 1
        with pytest.raises(TaskNotFoundError):
            await polling.get_task(GetTaskRequest(id=str(uuid.uuid4())))


async def test_get_task_from_another_replica_after_sigterm_and_after_a_restart(network):
    a, b = network.start("dur"), network.start("dur")
    async with http() as h:
        on_a = await client_for(f"{a.url}/a2a/py", h)
        finished = await send(on_a, message(data={"text": "kept"}))
        # Started on A, still running when A gets SIGTERM: A's drain finishes it.
        running = await send(on_a, message(data={"text": "in flight", "sleep": 2.0}), True)
        assert running.status.state == TaskState.TASK_STATE_WORKING
        assert a.stop() == 0
        on_b = await client_for(f"{b.url}/a2a/py", h)
        got = await on_b.get_task(GetTaskRequest(id=finished.id))
        assert (got.status.state, artifact_json(got)) == (TaskState.TASK_STATE_COMPLETED, "py got kept")
        got = await on_b.get_task(GetTaskRequest(id=running.id))
        assert (got.status.state, artifact_json(got)) == (TaskState.TASK_STATE_COMPLETED, "py got in flight")
        # A replica started afterwards reads the tasks from the topic.
        c = network.start("dur")
        on_c = await client_for(f"{c.url}/a2a/py", h)
        got = await on_c.get_task(GetTaskRequest(id=finished.id))
        assert artifact_json(got) == "py got kept"


async def test_cancel_a_long_task_from_another_replica(network):
    a, b = network.start("cancel"), network.start("cancel")
    async with http() as h:
        on_a = await client_for(f"{a.url}/a2a/py", h)
        on_b = await client_for(f"{b.url}/a2a/py", h)
        task = await send(on_a, message(data={"text": "long", "sleep": 8}), True)
        canceled = await on_b.cancel_task(CancelTaskRequest(id=task.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        for client in (on_a, on_b):
            got = await client.get_task(GetTaskRequest(id=task.id))
            assert got.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await on_a.cancel_task(CancelTaskRequest(id=task.id))
        done = await send(on_a, message(data={"text": "quick"}))
        with pytest.raises(TaskNotCancelableError):
            await on_b.cancel_task(CancelTaskRequest(id=done.id))


async def test_cancel_interrupts_the_handler(network):
    """The cancel reaches the agent's turn: the py agent's HTTP call is dropped, so the
    next message to the same agent instance (same contextId, handled after the first)
    is answered at once instead of after the first one's 30 s."""
    a, b = network.start("interrupt"), network.start("interrupt")
    context = f"slow-{uuid.uuid4().hex[:8]}"
    async with http() as h:
        on_a = await client_for(f"{a.url}/a2a/py", h)
        on_b = await client_for(f"{b.url}/a2a/py", h)
        slow = await send(on_a, message(data={"text": "slow", "sleep": 30}, context_id=context), True)
        await asyncio.sleep(1)  # the turn is running (the py agent sleeps)
        canceled = await on_b.cancel_task(CancelTaskRequest(id=slow.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        started = asyncio.get_running_loop().time()
        quick = await send(on_b, message(data={"text": "next"}, context_id=context))
        elapsed = asyncio.get_running_loop().time() - started
        assert quick.status.state == TaskState.TASK_STATE_COMPLETED, quick
        assert artifact_json(quick) == "py got next"
        assert elapsed < 10, f"the next turn waited {elapsed:.1f} s: the canceled handler ran on"
        got = await on_a.get_task(GetTaskRequest(id=slow.id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED


async def test_ended_tasks_expire_everywhere_and_stay_gone_after_a_restart(network):
    """With taskRetentionMs 3000 an ended task is found at first, then on no replica,
    and a replica started afterwards (reading the topic from the start) does not
    bring it back; a task still running is kept."""
    retention = ", taskRetentionMs: 3000"
    a = network.start("expiry", runtime_extra=retention)
    b = network.start("expiry", runtime_extra=retention)
    async with http() as h:
        on_a = await client_for(f"{a.url}/a2a/counter", h)
        on_b = await client_for(f"{b.url}/a2a/py", h)
        done = await send(on_a, message(text="count me"))
        assert done.status.state == TaskState.TASK_STATE_COMPLETED
        running = await send(on_b, message(data={"text": "long", "sleep": 12}), True)
        got = await on_b.get_task(GetTaskRequest(id=done.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        gone = set()
        while len(gone) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.5)
            for name, client in (("a", on_a), ("b", on_b)):
                try:
                    await client.get_task(GetTaskRequest(id=done.id))
                except TaskNotFoundError:
                    gone.add(name)
        assert gone == {"a", "b"}, f"the ended task still found on {({'a', 'b'} - gone)}"
        still = await on_a.get_task(GetTaskRequest(id=running.id))
        assert still.status.state == TaskState.TASK_STATE_WORKING, "a running task is kept"
        c = network.start("expiry", runtime_extra=retention)
        on_c = await client_for(f"{c.url}/a2a/counter", h)
        with pytest.raises(TaskNotFoundError):
            await on_c.get_task(GetTaskRequest(id=done.id))
        listed = await on_c.list_tasks(ListTasksRequest())
        assert done.id not in {t.id for t in listed.tasks}
        assert running.id in {t.id for t in listed.tasks}
        await on_b.cancel_task(CancelTaskRequest(id=running.id))
    c.stop()


async def test_input_required_then_a_reply_with_the_task_id_continues_it(network):
    """The agent asks for input; the client answers with the same taskId on another
    replica; the task completes with the answer, its history holding both messages."""
    a, b = network.start("input"), network.start("input")
    async with http() as h:
        on_a = await client_for(f"{a.url}/a2a/py", h)
        on_b = await client_for(f"{b.url}/a2a/py", h)
        asked = await send(on_a, message(data={"text": "ask"}))
        assert asked.status.state == TaskState.TASK_STATE_INPUT_REQUIRED, asked
        assert asked.status.message.parts[0].text == "what is your name?"
        seen = await on_b.get_task(GetTaskRequest(id=asked.id))
        assert seen.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
        answer = message(data={"text": "Ada"})
        answer.task_id = asked.id
        done = await send(on_b, answer)
        assert (done.id, done.context_id) == (asked.id, asked.context_id)
        assert done.status.state == TaskState.TASK_STATE_COMPLETED, done
        assert artifact_json(done) == "py got Ada"
        got = await on_a.get_task(GetTaskRequest(id=asked.id))
        assert got.status.state == TaskState.TASK_STATE_COMPLETED
        assert len(got.history) == 2
        # A completed task takes no more messages (-32004 UnsupportedOperation).
        late = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "SendMessage",
            "params": {"message": {"messageId": "m-late", "taskId": asked.id, "role": "ROLE_USER",
                                   "parts": [{"text": "again"}]}},
        }
        r = (await h.post(f"{a.url}/a2a/py", json=late, headers={"A2A-Version": "1.0"})).json()
        assert r["error"]["code"] == -32004, r
        # An input-required task can be canceled.
        asked = await send(on_a, message(data={"text": "ask"}))
        canceled = await on_b.cancel_task(CancelTaskRequest(id=asked.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED


async def test_v03_method_names_answer_in_v03_shapes(runtime):
    async with http() as h:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {
                "message": {
                    "kind": "message",
                    "messageId": str(uuid.uuid4()),
                    "role": "user",
                    "parts": [{"kind": "text", "text": "old client"}],
                }
            },
        }
        r = (await h.post(f"{runtime.url}/a2a/echo", json=body)).json()
        task = r["result"]
        assert (task["kind"], task["status"]["state"]) == ("task", "completed"), r
        assert task["artifacts"][0]["parts"][0] == {"kind": "text", "text": "old client"}
        r = (
            await h.post(
                f"{runtime.url}/a2a/echo",
                json={"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": task["id"]}},
            )
        ).json()
        assert r["result"]["status"]["state"] == "completed"
        # A 1.0 method with an A2A-Version: 0.3 header answers in 0.3 shapes too.
        r = (
            await h.post(
                f"{runtime.url}/a2a/echo",
                headers={"A2A-Version": "0.3"},
                json={"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": task["id"]}},
            )
        ).json()
        assert r["result"]["kind"] == "task"
        stream = []
        async with h.stream(
            "POST",
            f"{runtime.url}/a2a/echo",
            json={**body, "id": 4, "method": "message/stream"},
        ) as s:
            async for line in s.aiter_lines():
                if line.startswith("data:"):
                    stream.append(json.loads(line[5:])["result"])
        assert [e["kind"] for e in stream] == ["task", "artifact-update", "status-update"], stream
        assert stream[-1]["final"] is True
        # v0.3's blocking: false answers at once; the task completes later.
        later = {**body, "id": 5}
        later["params"] = {**body["params"], "configuration": {"blocking": False}}
        later["params"]["message"] = {**body["params"]["message"], "parts": [{"kind": "data", "data": {"text": "v03", "sleep": 0.5}}]}
        r = (await h.post(f"{runtime.url}/a2a/py", json=later)).json()
        assert r["result"]["status"]["state"] == "working", r
        for _ in range(50):
            got = (
                await h.post(
                    f"{runtime.url}/a2a/py",
                    json={"jsonrpc": "2.0", "id": 6, "method": "tasks/get", "params": {"id": r["result"]["id"]}},
                )
            ).json()["result"]
            if got["status"]["state"] != "working":
                break
            await asyncio.sleep(0.1)
        assert got["status"]["state"] == "completed", got
        assert got["artifacts"][0]["parts"][0] == {"kind": "text", "text": "py got v03"}


async def test_many_concurrent_tasks_all_complete(runtime):
    async with http() as h:
        echo = await client_for(f"{runtime.url}/a2a/echo", h)
        tasks = await asyncio.gather(*(send(echo, message(f"n{i}")) for i in range(20)))
        assert sorted(artifact_json(t) for t in tasks) == sorted(f"n{i}" for i in range(20))
