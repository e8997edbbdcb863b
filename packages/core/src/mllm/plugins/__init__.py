"""The plugin system: hook specifications, component specs, the kinds table, the registry, the built-ins."""
