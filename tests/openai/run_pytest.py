#!/usr/bin/env python3
"""CTest's entry to the OpenAI API tests: runs pytest on the files given, or exits 77 (CTest's
SKIP_RETURN_CODE) when what they need is missing.

    run_pytest.py [--module=NAME]... [--program=NAME]... TEST_FILE... [-- PYTEST_ARGS]

--module: a Python package the tests need (openai, httpx); --program: a binary on $PATH (curl).
deploy/install-deps.sh installs them all; a machine without them skips rather than fails.
"""

import importlib.util
import pathlib
import shutil
import sys

SKIP = 77


def main(argv):
    files, extra, missing = [], [], []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            extra = list(args)
        elif arg.startswith("--module="):
            name = arg.split("=", 1)[1]
            if importlib.util.find_spec(name) is None:
                missing.append(f"Python package '{name}'")
        elif arg.startswith("--program="):
            name = arg.split("=", 1)[1]
            if shutil.which(name) is None:
                missing.append(f"program '{name}'")
        else:
            files.append(arg)
    if missing:
        print(f"skipped: {', '.join(missing)} not installed (deploy/install-deps.sh installs it)")
        return SKIP
    if importlib.util.find_spec("pytest") is None:
        print("pytest is not installed (deploy/install-deps.sh installs it)")
        return 1
    import pytest

    here = pathlib.Path(__file__).resolve().parent
    return pytest.main(["-q", "-p", "no:cacheprovider", "-rfEsx",
                        *(str(here / f) for f in files), *extra])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
