"""Low CPU priority for a harness process's start-up, normal priority for its job.

A process started beside a training run (a warm process of the pool, an evaluation) must not slow
that run down while it imports torch, yet its own job must run at the priority of the bare loop it
is measured against; an unprivileged process can lower its priority but never raise it again.
Linux shares CPU time at two levels, so there are two mechanisms:
- threads: niceness is per thread, so the start-up work runs on a thread of its own, niced;
- sessions: with autogroup (the default on most distributions) CPU time is first shared between
  sessions, and niceness orders threads only within one. The sandbox is a session of its own, so
  the session's autogroup is niced as well, and the process leaves that session (setsid: a new
  session, a new autogroup at normal priority) when its job becomes urgent. Leaving the session is
  safe only inside the sandbox's own pid namespace, whose end ends every process of the run
  whatever its session; the runner says whether there is one (not in sandbox mode "none").
"""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable


class Background:
    def __init__(self, nice: int, *, may_leave_session: bool):
        self.nice = nice
        self._session_niced = nice > 0 and may_leave_session and _nice_session(nice)
        self._thread: threading.Thread | None = None
        self._failure: list[BaseException] = []

    def start(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a thread of its own at low priority."""
        def target() -> None:
            try:
                if self.nice:
                    try:
                        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
                    except OSError:
                        pass  # not Linux: normal priority
                work()
            except BaseException as exc:  # noqa: BLE001 - re-raised by join()
                self._failure.append(exc)

        self._thread = threading.Thread(target=target, name="background", daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the work; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
        if self._failure:
            raise self._failure[0]

    def foreground_when(self, ready: Callable[[], bool]) -> threading.Event:
        """Go to the foreground as soon as ``ready()``, whatever the main thread is doing then; the
        returned event is set at that moment (the main thread waits on it rather than poll again)."""
        event = threading.Event()

        def watch() -> None:
            while not ready():
                time.sleep(0.01)
            self.foreground()
            event.set()

        threading.Thread(target=watch, name="foreground-watch", daemon=True).start()
        return event

    def foreground(self) -> None:
        """From now on the process runs at normal priority (the work thread stays niced: where
        there is no autogroup, a start-up still unfinished when the job becomes urgent stays slow)."""
        if self._session_niced:
            self._session_niced = False
            try:
                os.setsid()
            except OSError:
                pass


def _nice_session(nice: int) -> bool:
    for _ in range(3):
        try:
            with open("/proc/self/autogroup", "w", encoding="ascii") as f:
                f.write(f"{nice}\n")
            return True
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                return False  # no autogroup here: thread niceness is all there is
            time.sleep(0.1)  # the kernel takes one autogroup change per 0.1 s, machine-wide
    return False
