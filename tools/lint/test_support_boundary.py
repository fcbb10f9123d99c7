#!/usr/bin/env python3
"""The test oracles (tests/support, CMake target catserve_test_support) never reach production.

Fails when a CMakeLists.txt of a production directory (engine/, scheduler/, server/, proto/,
tools/engine_cli/) names catserve_test_support, or when a source file there includes a header
of tests/support/. Usage: test_support_boundary.py REPO_ROOT
"""
import pathlib
import re
import sys

PRODUCTION = ("engine", "scheduler", "server", "proto", "tools/engine_cli")


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    problems = []
    for top in PRODUCTION:
        for path in sorted((root / top).rglob("*")):
            if path.name == "CMakeLists.txt" and "catserve_test_support" in path.read_text():
                problems.append(f"{path.relative_to(root)} links catserve_test_support")
            elif path.suffix in (".cc", ".h", ".cu") and re.search(
                    r'#include "tests/support/', path.read_text()):
                problems.append(f"{path.relative_to(root)} includes a tests/support header")
    for p in problems:
        print(p)
    print(f"{len(problems)} production file(s) reach the test oracles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
