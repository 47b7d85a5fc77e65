"""Where a call runs: its deadline, policy scope, attributes and tool budgets (contextvars)."""
