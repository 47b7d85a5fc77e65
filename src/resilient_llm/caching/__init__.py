"""Prompt-cache keys, prefix lint, cache health and the opt-in response cache."""
