"""Fleet-wide coordination through Redis."""
