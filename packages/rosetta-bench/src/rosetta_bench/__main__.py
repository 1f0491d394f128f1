import sys

from rosetta_bench.cli import main

sys.exit(main())
