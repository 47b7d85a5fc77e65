"""One deadline across retries and streams, and what outcome() tells you afterwards.

Runs against the local fault-injecting provider: no API key, no network. Install and run (from
a checkout):

    python -m pip install -e '.[openai]'
    python examples/deadline_and_outcome.py
"""

from __future__ import annotations

import time

from resilient_llm import DeadlineExceeded, Policy, StreamInterrupted, deadline, outcome
from resilient_llm.openai import OpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def main() -> None:
    provider = FaultProvider()
    with provider.serve() as server:
        client = OpenAI(base_url=server.openai_base_url, api_key="sk-example",
                        policy=Policy(deadline=5))

        # A 429 with Retry-After, then an answer: one call, two attempts, one idempotency key.
        provider.script(Fault.status(429, headers={"retry-after": "0.5"}), Fault.ok(text="Paris."))
        answer = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
        report = outcome(answer)
        print("answer:", answer.choices[0].message.content)
        print("attempts:", [(a.status, a.failure) for a in report.attempts],
              f"in {report.elapsed:.2f} s")

        # A provider that hangs: the call ends at the deadline, not 30 minutes later.
        provider.script(Fault.hang())
        start = time.monotonic()
        try:
            with deadline(1.0):
                client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
        except DeadlineExceeded as exc:
            print(f"deadline: gave up after {time.monotonic() - start:.2f} s ({exc})")

        # A stream cut half-way: the text that arrived is kept, nothing looks complete.
        provider.script(Fault.stream_cut(after_events=4))
        stream = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES,  # type: ignore[arg-type]
                                                stream=True)
        try:
            for _ in stream:
                pass
        except StreamInterrupted as exc:
            print(f"stream interrupted ({exc.failure}); partial text: {exc.partial_text!r}")
        client.close()


if __name__ == "__main__":
    main()
