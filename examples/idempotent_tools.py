"""Exactly one email, although the agent's model call times out and its step is replayed.

An agent asks a model what to do, the model asks for the ``send_email`` tool, the email goes
out, and the follow-up model call times out. The agent (like most agent frameworks) replays
the whole step: the model asks for the same email again. ``@side_effect`` recognises the same
action in the same run and returns the stored receipt instead of sending a second email.

Part two runs the same job in two processes at once (a duplicated queue delivery) sharing a
SQLite ledger: still one email in total.

No network and no API key: the model is ``resilient_llm.testing.FaultProvider``, a local fake
of the OpenAI API driven in-process, scripted to hang once. It needs no SDK, only the base
install. Install and run (from a checkout)::

    python -m pip install -e .
    python examples/idempotent_tools.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from pydantic import BaseModel

from resilient_llm import deadline, deadline_headers, run, side_effect
from resilient_llm.testing import Fault, FaultProvider

JOB_ID = "order-1234"
TOOL_CALL = json.dumps({
    "tool": "send_email",
    "arguments": {"to": "ada@example.com", "subject": "Order 1234 shipped",
                  "body": "Your parcel is on its way."},
})


class Receipt(BaseModel):
    message_id: str
    to: str


def outbox() -> Path:
    """The fake mail server: every email sent is one line in this file."""
    return Path(os.environ["EXAMPLE_OUTBOX"])


# `name=` pins the tool name in the key, so keys survive renaming or moving the function
# (and agree between `python this_file.py` and the worker processes it spawns).
@side_effect(name="send_email")
def send_email(to: str, subject: str, body: str) -> Receipt:
    """Send one email. Forwarding the headers lets a mail API deduplicate and time out too."""
    headers = deadline_headers()
    time.sleep(0.3)  # SMTP is slow; long enough for a duplicate worker to arrive meanwhile
    with outbox().open("a") as f:
        f.write(json.dumps({"to": to, "subject": subject, "pid": os.getpid()}) + "\n")
    key = headers["Idempotency-Key"].strip('"')
    return Receipt(message_id=f"msg-{key[:8]}", to=to)


def ask_model(client: httpx2.Client, messages: list[dict[str, str]]) -> str:
    """One chat completion (the fault provider speaks the OpenAI wire format)."""
    response = client.post("/chat/completions",
                           json={"model": "gpt-4.1-mini", "messages": messages})
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def agent_step(client: httpx2.Client) -> str:
    """Model → tool → model. Not idempotent by itself: replaying it repeats the tool call."""
    messages = [{"role": "user", "content": "Tell Ada her order shipped."}]
    request: dict[str, Any] = json.loads(ask_model(client, messages))
    receipt = send_email(**request["arguments"])
    assert isinstance(receipt, Receipt)  # a replayed result has the declared type
    messages.append({"role": "tool", "content": receipt.model_dump_json()})
    return ask_model(client, messages)


def run_job(job_id: str, provider: FaultProvider) -> str:
    """Run the agent for one job, replaying the step after a model timeout, within 10 s."""
    client = httpx2.Client(transport=provider.transport(), timeout=0.2,
                           base_url="https://api.openai.example/v1")
    with deadline(10), run(job_id):  # keys derive from the job id, never from the clock
        for attempt in range(1, 4):
            try:
                return agent_step(client)
            except httpx2.TimeoutException:
                print(f"  [{os.getpid()}] model call timed out (attempt {attempt}); "
                      "replaying the step")
        raise RuntimeError("the model kept timing out")


def worker(job_id: str) -> None:
    """One of two processes that received the same job."""
    provider = FaultProvider()
    provider.script(Fault.ok(text=TOOL_CALL), Fault.ok(text="Done: Ada was told."))
    print(f"  [{os.getpid()}] {run_job(job_id, provider)}")


def emails_sent() -> int:
    return len(outbox().read_text().splitlines()) if outbox().exists() else 0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EXAMPLE_OUTBOX"] = str(Path(tmp) / "outbox-1.jsonl")
        print("one process, in-memory ledger:")
        provider = FaultProvider()
        provider.script(
            Fault.ok(text=TOOL_CALL),  # the model asks for the email
            Fault.hang(),              # the follow-up call times out: the step is replayed
            Fault.ok(text=TOOL_CALL),  # the replayed step asks for the same email again
            Fault.ok(text="Done: Ada was told."),
        )
        print(f"  {run_job(JOB_ID, provider)}")
        print(f"emails sent: {emails_sent()}")

        print("two processes, one SQLite ledger (a duplicated job):")
        os.environ["EXAMPLE_OUTBOX"] = str(Path(tmp) / "outbox-2.jsonl")
        os.environ["RESILIENT_LLM_IDEMPOTENCY_STORE"] = f"sqlite:///{tmp}/ledger.db"
        spawn = multiprocessing.get_context("spawn")
        workers = [spawn.Process(target=worker, args=(JOB_ID,)) for _ in range(2)]
        for p in workers:
            p.start()
        for p in workers:
            p.join(timeout=60)
            if p.exitcode != 0:
                raise SystemExit(f"worker failed with exit code {p.exitcode}")
        print(f"two processes on SQLite, emails sent: {emails_sent()}")


if __name__ == "__main__":
    main()
