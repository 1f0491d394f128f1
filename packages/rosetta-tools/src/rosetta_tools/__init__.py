"""rosetta-bench: throughput harness, side-by-side training, and the `rosetta` command line."""
