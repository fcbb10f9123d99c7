"""python3 tools/convert {official,fla} ...: see cli.py and docs/MODELS.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from convert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
