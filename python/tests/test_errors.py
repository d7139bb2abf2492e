"""Every call ends with the right error, fast; bad input never stops a runtime."""

from __future__ import annotations

import asyncio
import json
import time

from autogen_core import (
    AgentId,
    CancellationToken,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    TopicId,
    rpc,
)

from switchboard._native import NativeError, tail_topic
from switchboard.autogen import (
    AgentRegistrationError,
    CantHandleError,
    HandlerError,
    MessageDecodeError,
    RpcTimeoutError,
    SelfRpcError,
    UnknownAgentTypeError,
)

from switchboard.autogen._errors import translate

from agents import Add, Boom, Calc, Nothing, Slow, Sum
from helpers import bootstrap, eventually


async def timed(coro, limit: float):
    start = time.monotonic()
    try:
        return await coro, None
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        return None, e
    finally:
        assert time.monotonic() - start < limit, f"took {time.monotonic() - start:.1f}s (limit {limit}s)"


async def test_each_failure_ends_the_call_with_its_error(prefix, workers, runtime_factory):
    workers("calc", prefix, "calc-host")
    rt = runtime_factory(prefix, "caller", rpc_timeout=3.0)
    await rt.start()
    calc = AgentId("calc", "k")

    _, e = await timed(rt.send_message(Add(1, 1), AgentId("nobody", "x")), 5)
    assert isinstance(e, UnknownAgentTypeError) and isinstance(e, LookupError), repr(e)
    assert "nobody" in str(e)

    # As on SingleThreadedAgentRuntime, the handler's ValueError reaches the caller.
    local = SingleThreadedAgentRuntime()
    await Calc.register(local, "calc", Calc)
    local.start()
    try:
        await local.send_message(Boom("bad input"), calc)
    except ValueError as local_error:
        expected_text = str(local_error)
    await local.stop()
    _, e = await timed(rt.send_message(Boom("bad input"), calc), 5)
    assert isinstance(e, ValueError) and isinstance(e, HandlerError), repr(e)
    assert str(e) == expected_text == "bad input"
    assert e.agent == "calc/k" and e.remote_type == "ValueError"

    assert await rt.send_message(Nothing("none"), calc) is None

    _, e = await timed(rt.send_message(Slow(30), calc), 6)
    assert isinstance(e, RpcTimeoutError) and isinstance(e, asyncio.TimeoutError), repr(e)

    _, e = await timed(asyncio.wait_for(rt.send_message(Slow(30), AgentId("calc", "k2")), 0.5), 2)
    assert isinstance(e, asyncio.TimeoutError), repr(e)

    token = CancellationToken()
    asyncio.get_running_loop().call_later(0.3, token.cancel)
    _, e = await timed(rt.send_message(Slow(30), AgentId("calc", "k3"), cancellation_token=token), 2)
    assert isinstance(e, asyncio.CancelledError), repr(e)

    # A message type the recipient has no serializer for.
    _, e = await timed(rt._native.send("NoSuchType", "application/json", b"{}", ("calc", "k"), None, None, None), 5)
    assert isinstance(e, NativeError) and e.args[0] == "unknown_message_type", repr(e)

    # The runtime keeps serving after all of that.
    assert await rt.send_message(Add(20, 22), calc) == Sum(42)
    await rt.stop()


async def test_unknown_message_type_is_cant_handle(prefix, workers, runtime_factory):
    workers("calc", prefix, "calc-host")
    rt = runtime_factory(prefix, "caller")
    await rt.start()

    from dataclasses import dataclass

    @dataclass
    class Stranger:
        x: int

    _, e = await timed(rt.send_message(Stranger(1), AgentId("calc", "k")), 5)
    assert isinstance(e, CantHandleError), repr(e)
    await rt.stop()


class Narcissus(RoutedAgent):
    """Calls itself from its handler: must fail fast, not wait for its own turn."""

    def __init__(self) -> None:
        super().__init__("calls itself")

    @rpc
    async def go(self, message: Add, ctx: MessageContext) -> Sum:
        try:
            await self.send_message(Add(0, 0), self.id)
        except SelfRpcError:
            return Sum(-99)
        return Sum(0)


async def test_self_rpc_fails_fast(prefix, runtime_factory):
    rt = runtime_factory(prefix, "selfish")
    await Narcissus.register(rt, "narcissus", Narcissus)
    await rt.start()
    reply, e = await timed(rt.send_message(Add(1, 1), AgentId("narcissus", "n")), 5)
    assert e is None and reply == Sum(-99), (reply, e)
    await rt.stop()


async def test_agent_types_are_unique_across_processes(prefix, workers, runtime_factory):
    workers("calc", prefix, "calc-host")
    rt = runtime_factory(prefix, "usurper")
    await rt.start()
    try:
        await Calc.register(rt, "calc", Calc)
    except AgentRegistrationError as e:
        assert isinstance(e, ValueError)
        assert "calc-host" in str(e), str(e)
    else:
        raise AssertionError("a second runtime registered the same agent type")
    await rt.stop()


def dead_letters(prefix: str, runtime: str, count: int, timeout: float = 15.0):
    return tail_topic(bootstrap(), f"{prefix}.{runtime}.dlq", count, timeout)


async def test_undecodable_body_is_dead_lettered_and_the_process_keeps_serving(prefix, workers, runtime_factory):
    workers("calc", prefix, "calc-host")
    rt = runtime_factory(prefix, "caller")
    await rt.start()
    calc = ("calc", "k")
    # The body of an `Add` that is not an Add: the handler's type cannot decode it.
    _, e = await timed(rt._native.send("Add", "application/json", b'{"x": 1}', calc, None, None, None), 5)
    assert isinstance(e, NativeError), repr(e)
    assert isinstance(translate(e), MessageDecodeError), repr(e)
    assert "TypeError" in str(translate(e)), repr(e)
    # And an event whose body is not even UTF-8.
    # (calc-host subscribes calc to "notes" itself: agents.scenario_calc)
    await rt._native.publish("Note", "application/json", b"\xff{", ("notes", "k"), None, None)
    letters = dead_letters(prefix, "calc-host", 2)
    assert len(letters) == 2, letters
    reasons = sorted(h["switchboard_dlq_reason"] for _p, _o, _k, _v, h in letters)
    assert {k for _p, _o, k, _v, _h in letters} == {b"k"}
    assert '"Add"' in reasons[0] and "TypeError" in reasons[0], reasons
    assert '"Note"' in reasons[1] and "UnicodeDecodeError" in reasons[1], reasons
    assert await rt.send_message(Add(1, 2), AgentId(*calc)) == Sum(3)
    await rt.stop()


async def test_a_raising_factory_gives_a_clear_error_and_a_dead_letter(prefix, workers, runtime_factory):
    workers("fragile", prefix, "fragile-host")
    rt = runtime_factory(prefix, "caller")
    await rt.start()
    _, e = await timed(rt.send_message(Add(1, 1), AgentId("fragile", "f1")), 5)
    assert isinstance(e, HandlerError), repr(e)
    assert "agent factory for fragile/f1 raised NoModel: no model configured" in str(e), str(e)
    # The RPC's input is dead-lettered too (a retry would fail the same way), and so
    # is an event for it, which has no caller to tell.
    await rt.publish_message(Add(1, 1), TopicId("fragile-events", "f2"))
    letters = dead_letters(prefix, "fragile-host", 2)
    assert len(letters) == 2, letters
    by_key = {k: h["switchboard_dlq_reason"] for _p, _o, k, _v, h in letters}
    for key in ("f1", "f2"):
        reason = by_key[key.encode()]
        assert f"agent factory for fragile/{key} raised NoModel: no model configured" in reason, reason
    # The process serves its other types.
    assert await rt.send_message(Add(2, 2), AgentId("calc", "c")) == Sum(4)
    await rt.stop()
