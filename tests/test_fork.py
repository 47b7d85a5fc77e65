"""A process forked from one whose threads were using a target (``multiprocessing`` with the
"fork" start method, ``gunicorn --preload``): the child's calls are admitted at once, as the
official client's are. Before, the child inherited the parent's queue of waiters and requests
in flight (threads that do not exist in the child), and every call to that target waited
behind them until its deadline."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import pytest

from resilient_llm import Policy
from resilient_llm.engine.registry import registry
from resilient_llm.engine.target import TargetKey
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")


def in_child(work: Any) -> str:
    """Run ``work()`` in a forked child; its result (a short string) comes back on a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        try:
            message = str(work())
        except BaseException as exc:  # any failure is the test's answer
            message = f"error: {exc!r}"
        os.write(write, message.encode()[:4000])
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_a_forked_child_starts_with_no_target_state() -> None:
    key = TargetKey("https://api.example", "cred", "m")
    state = registry.get(key, 0.0)
    state.inflight = 4
    state.enqueue("interactive", 1.0)  # a waiter of a parent thread
    try:
        answer = in_child(lambda: (len(registry), registry.get(key, 0.0).inflight,
                                   registry.get(key, 0.0).admit_now("interactive", 1.0, 0.0)
                                   is not None))
    finally:
        registry.clear()
    assert answer == "(0, 0, True)"  # nothing inherited; a fresh state admits at once


@pytest.mark.slow
def test_a_child_forked_while_the_parent_queued_calls_is_served_at_once() -> None:
    provider = FaultProvider(capacity=2, service_time=0.1)
    provider.default = Fault.ok()
    messages: Any = [{"role": "user", "content": "x"}]
    with provider.serve() as server:
        client = OpenAI(base_url=server.openai_base_url, api_key="k",
                        policy=Policy(deadline=5))
        stop = threading.Event()

        def busy() -> None:
            for _ in range(200):  # bounded: until the child has answered
                if stop.is_set():
                    return
                with contextlib.suppress(Exception):  # the load's own outcome does not matter
                    client.chat.completions.create(model="m", messages=messages)

        threads = [threading.Thread(target=busy) for _ in range(8)]
        for thread in threads:
            thread.start()
        for _ in range(100):  # until calls queue in the parent (the cap is learned)
            if any(s.waiting for s in registry.snapshots(0.0)):
                break
            threading.Event().wait(0.02)

        def child() -> str:
            # A client of its own, for the same target (the pressure state is per target and
            # per process, not per client): the parent's idle pooled connections, shared with
            # the parent's threads that go on using them, garbled a request under load.
            own = OpenAI(base_url=server.openai_base_url, api_key="k", policy=Policy(deadline=5))
            answer = own.chat.completions.create(model="m", messages=messages)
            return answer.choices[0].message.content or "empty"

        result = in_child(child)
        stop.set()
        for thread in threads:
            thread.join()
    registry.clear()
    assert not result.startswith("error"), result
