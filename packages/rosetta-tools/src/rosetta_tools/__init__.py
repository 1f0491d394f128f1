"""rosetta-tools: the `rosetta` command line, the weight layouts, side-by-side and distributed training, and the
throughput harness."""
