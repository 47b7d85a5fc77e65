"""Azure OpenAI across two regions: a throttled deployment in one, an answer from the other.

Runs against the local fault-injecting provider, which answers Azure's deployment paths
(``/openai/deployments/{name}/chat/completions?api-version=...``): no Azure account, no
network. Two local servers stand in for the two regional resources. Install and run (from a
checkout):

    python -m pip install -e '.[openai]'
    python examples/azure_failover.py
"""

from __future__ import annotations

from resilient_llm import Policy, ResidencyViolation, outcome
from resilient_llm.openai import AzureOpenAI
from resilient_llm.testing import Fault, FaultProvider

MESSAGES = [{"role": "user", "content": "Summarise our refund policy in one line."}]


def main() -> None:
    eastus, sweden = FaultProvider(), FaultProvider()
    with eastus.serve() as east_server, sweden.serve() as sweden_server:
        east = east_server.openai_base_url.removesuffix("/v1")
        north = sweden_server.openai_base_url.removesuffix("/v1")
        policy = Policy(
            region="eastus",
            fallbacks={"gpt-4o-prod": ["gpt-4o-prod@swedencentral"]},
            region_endpoints={"swedencentral": north},
            deadline=10,
        )
        # East US is out of capacity for a while: a 429 in Azure's own shape, every time.
        eastus.set_default(Fault.status(429, headers={"retry-after-ms": "30000"}))
        sweden.set_default(Fault.ok(text="Refunds within 30 days, no questions asked."))

        with AzureOpenAI(azure_endpoint=east, api_version="2024-10-21", api_key="example-key",
                         policy=policy) as client:
            answer = client.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES)  # type: ignore[arg-type]
            report = outcome(answer)
            print("answer:", answer.choices[0].message.content)
            print(f"served by {report.served_by} (degraded: {report.degraded}, "
                  f"reason: {report.reason})")
            print("attempts:", [(a.target, a.status, a.failure) for a in report.attempts])
            print("sent to Sweden Central:", [r.path for r in sweden.requests])

        # Residency: only EU regions allowed, and this client's region is East US: nothing is sent.
        eu_only = policy.replace(allowed_regions=frozenset({"swedencentral"}), fallbacks={})
        with AzureOpenAI(azure_endpoint=east, api_version="2024-10-21", api_key="example-key",
                         policy=eu_only) as client:
            try:
                client.chat.completions.create(model="gpt-4o-prod", messages=MESSAGES)  # type: ignore[arg-type]
            except ResidencyViolation as exc:
                print("refused:", exc)


if __name__ == "__main__":
    main()
