"""Stage kinds that ship with the core."""
