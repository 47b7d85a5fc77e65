"""Side effects that run once: run scopes, keys and the ledger protocol."""
