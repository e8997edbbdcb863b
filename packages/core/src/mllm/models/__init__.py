"""Model adapters that ship with the core."""
