"""Pipelines: the YAML schema, overrides, checks, the runner, fingerprints, the run folder, multi-process launch."""
