"""`python -m rosetta_common.vectors [DIR]`: regenerate the stored vectors (default: `STORED_DIR`)."""

import sys
from pathlib import Path

from rosetta_common.vectors import STORED_DIR, write_all

for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else STORED_DIR):
    print(path)
