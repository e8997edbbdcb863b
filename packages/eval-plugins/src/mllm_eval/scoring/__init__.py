"""Pure parsing and scoring functions of the benchmarks (no files, no models, no torch)."""
