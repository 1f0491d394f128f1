import sys

from rosetta_tools.cli import main

sys.exit(main())
