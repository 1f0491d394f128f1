"""One module per `rosetta` subcommand, each with `add_arguments(parser)` and `run(args) -> int`."""
