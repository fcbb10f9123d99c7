#!/usr/bin/env python3
"""Clang's thread-safety analysis over engine/, scheduler/ and server/.

GCC ignores ABSL_GUARDED_BY and friends, so the build alone never checks them. This runs
`clang++ -fsyntax-only -Wthread-safety -Werror` on every .cc of those directories with the include
paths and definitions of an existing CMake build (its compile_commands.json), two at a time.
Prints one line per file and 'N passed, N failed'; exits 1 on any finding.

    python3 tools/lint/thread_safety.py [BUILD_DIR]      (default: build)
"""

import concurrent.futures
import json
import pathlib
import shlex
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
DIRS = ("engine", "scheduler", "server")
CHECK = ["-fsyntax-only", "-Wthread-safety", "-Wthread-safety-beta", "-Werror=thread-safety",
         "-Werror=thread-safety-beta", "-Wno-unknown-warning-option"]


def clang_args(command):
    """The include paths, definitions and language flags of a compile command."""
    words = shlex.split(command)
    keep = []
    i = 1
    while i < len(words):
        w = words[i]
        if w in ("-I", "-isystem", "-D", "-include"):
            keep += [w, words[i + 1]]
            i += 2
            continue
        if w.startswith(("-I", "-D", "-std=", "-isystem")):
            keep.append(w)
        i += 1
    return keep


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build")
    clang = shutil.which("clang++")
    if clang is None:
        print("clang++ not found; run deploy/install-deps.sh")
        return 1
    db = json.loads((build / "compile_commands.json").read_text())
    jobs = []
    for entry in db:
        path = pathlib.Path(entry["file"]).resolve()
        rel = path.relative_to(REPO) if REPO in path.parents else None
        if rel is None or rel.parts[0] not in DIRS or path.suffix != ".cc":
            continue
        jobs.append((str(rel), [clang, *CHECK, *clang_args(entry["command"]), str(path)],
                     entry["directory"]))
    jobs = sorted(set((r, tuple(c), d) for r, c, d in jobs))

    def run(job):
        rel, cmd, cwd = job
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        return rel, done.returncode, done.stderr

    passed = failed = 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for rel, code, err in pool.map(run, jobs):
            if code == 0:
                passed += 1
                print(f"ok    {rel}")
            else:
                failed += 1
                print(f"FAIL  {rel}\n{err}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
