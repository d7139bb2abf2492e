"""Durable steps for agents hosted on Switchboard: ``await step("name", fn)``.

The runtime delivers at least once: after a crash or a partition move, a handler
that had not finished runs again from the start. A *step* is a piece of a handler
whose result is journaled in Kafka (the agent's state partition) before the handler
goes on; when the same message reaches the agent again, each step that completed
returns its journaled result instead of running ``fn`` again, so a model call, a
payment or an email in a step is not repeated::

    from switchboard import step

    @message_handler
    async def on_order(self, message: Order, ctx: MessageContext) -> Receipt:
        quote = await step("quote", lambda: pricing.quote(message))
        charge = await step("charge", lambda: payments.charge(message.card, quote["total"]))
        return Receipt(charge["id"])

- ``fn`` is called with no arguments and returns an awaitable (or a value); its
  result must be JSON (``json.dumps``-able: dicts, lists, strings, numbers, bools,
  ``None``); a pydantic model can be returned as ``model.model_dump()``.
- Steps are numbered per name in call order, so a handler must call its steps in the
  same order each time it handles the same message.
- A step that raises is not journaled: it runs again next time. A step interrupted
  before its result was journaled also runs again, so side effects must be idempotent
  or keyed (e.g. by ``ctx.message_id``).
- The journal of a message is dropped once the message is committed. With the
  runtime setting ``durable_steps=False`` (``runtime.durableSteps: false``) and outside a
  handler of a ``SwitchboardAgentRuntime`` (e.g. under AutoGen's own runtimes), ``fn``
  simply runs.

docs/protocol.md ("Durable steps") has the exact guarantees.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Awaitable, Callable, TypeVar, Union

T = TypeVar("T")

__all__ = ["step"]


async def step(name: str, fn: Callable[[], Union[Awaitable[T], T]]) -> T:
    """Runs ``fn`` as durable step ``name`` of the message being handled (see the
    module's documentation); returns its result, or the journaled one."""
    from .autogen._shell import HANDLER_CONTEXT  # not at import: `switchboard` stays light

    ctx = HANDLER_CONTEXT.get()
    if ctx is None:
        return await _call(fn)
    n, journaled = ctx.step_begin(name)
    if journaled is not None:
        return json.loads(journaled)
    result = await _call(fn)
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the result of step {name!r} must be JSON: {e}") from None
    await ctx.step_record(name, n, text)
    return result


async def _call(fn: Callable[[], Any]) -> Any:
    out = fn()
    if inspect.isawaitable(out):
        out = await out
    return out
