"""Blocking work (training runs) off the event loop, in daemon threads.

``asyncio.to_thread`` uses the loop's default executor, whose threads the interpreter joins at exit:
a node asked to stop would then wait for a half-finished training run. A daemon thread is abandoned
at exit instead, and the sandboxed child it watches dies with the node (bubblewrap's
--die-with-parent, unshare's --kill-child), so SIGTERM stops a node within seconds.
"""
from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")


async def run_in_daemon_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            ok, value = False, exc
        else:
            ok = True
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    threading.Thread(target=target, name=getattr(fn, "__name__", "work"), daemon=True).start()
    return await future
