"""The process-wide instance registry behind Redis links, ledgers and capture files."""

from __future__ import annotations

import threading
import time

from resilient_llm._instances import Instances


def test_one_instance_per_key_made_on_first_use() -> None:
    made: list[str] = []

    def make(key: str) -> list[str]:
        made.append(key)
        return [key]

    instances: Instances[str, list[str]] = Instances(make)
    first = instances.get("a")
    assert instances.get("a") is first and instances.get("b") == ["b"]
    assert made == ["a", "b"]


def test_threads_asking_at_once_share_one_instance() -> None:
    def slow(key: int) -> object:
        time.sleep(0.01)  # widen the window two makers would race in
        return object()

    instances: Instances[int, object] = Instances(slow)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(instances.get(1))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(item is got[0] for item in got)


def test_drain_hands_back_every_instance_and_forgets_them() -> None:
    instances: Instances[str, object] = Instances(lambda key: object())
    a, b = instances.get("a"), instances.get("b")
    drained = instances.drain()
    assert drained == [a, b]
    assert instances.drain() == []
    assert instances.get("a") is not a
