"""The drivers: perform the engine's actions with sync or async I/O."""
