"""Decisions without I/O: the call state machine, classification, backoff, routing,
breakers and pressure."""
