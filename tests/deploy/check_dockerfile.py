#!/usr/bin/env python3
"""Static checks of deploy/Dockerfile (no Docker engine on the CI machines, so it is never built
here): the stages, the build dependencies against deploy/install-deps.sh, the user, ports,
entrypoint and model path against the Helm chart's defaults, the build context filter.
Prints 'N passed, N failed'; exits non-zero on any failure.
"""
import pathlib
import re
import shlex
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOCKERFILE = ROOT / "deploy/Dockerfile"

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(("ok    " if ok else "FAIL  ") + what)


def instructions(text):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def main():
    ins = instructions(DOCKERFILE.read_text())
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else None
            for k, a in ins if k == "ARG"}
    froms = [a for k, a in ins if k == "FROM"]
    check(len(froms) >= 2, f"multi-stage: {len(froms)} stages")
    check(froms[0].endswith("AS build") and froms[-1].endswith("AS runtime"), "stages 'build' then 'runtime'")
    check("devel" in (args.get("BUILD_IMAGE") or "") and "nvidia/cuda" in args["BUILD_IMAGE"],
          f"builds on the CUDA devel image ({args.get('BUILD_IMAGE')})")
    check("runtime" in (args.get("RUNTIME_IMAGE") or "") and "nvidia/cuda" in args["RUNTIME_IMAGE"],
          f"runs on the CUDA runtime image ({args.get('RUNTIME_IMAGE')})")
    runtime = ins[[i for i, (k, _) in enumerate(ins) if k == "FROM"][-1]:]
    build = ins[: [i for i, (k, _) in enumerate(ins) if k == "FROM"][-1]]

    # Build dependencies: the -dev packages deploy/install-deps.sh installs for the build (not the
    # test-only ones: GoogleTest, Google Benchmark, libFuzzer's runtime; the image builds no tests).
    deps = (ROOT / "deploy/install-deps.sh").read_text()
    m = re.search(r"debs=\((.*?)\)", deps, re.S)
    test_only = ("gtest", "gmock", "benchmark", "libclang-rt")
    wanted = {p for p in m.group(1).split() if p.endswith("-dev") and not any(t in p for t in test_only)} \
        | {"protobuf-compiler-grpc", "protobuf-compiler"}
    build_runs = " ".join(a for k, a in build if k == "RUN")
    missing = sorted(p for p in wanted if p not in build_runs.split())
    check(not missing, f"build stage installs the build deps of install-deps.sh (missing: {missing})")
    check("-DCATSERVE_CUDA=" in build_runs and "cmake --build" in build_runs, "cmake with the CATSERVE_CUDA option")
    check("build/server/catserve " in build_runs and "build/server/catserve-cli" in build_runs,
          "installs build/server/catserve and catserve-cli")

    # Runtime stage: no compilers, non-root, entrypoint, ports, model path.
    rt_runs = " ".join(a for k, a in runtime if k == "RUN")
    check(not re.search(r"\b(build-essential|cmake|[a-z0-9+.-]+-dev)\b", rt_runs), "runtime stage installs no -dev/toolchain packages")
    values = yaml.safe_load((ROOT / "helm/catserve/values.yaml").read_text())
    users = [a for k, a in runtime if k == "USER"]
    uid = values["podSecurityContext"]["runAsUser"]
    check(users and users[-1] == f"{uid}:{values['podSecurityContext']['runAsGroup']}",
          f"runs as numeric non-root user {users[-1] if users else None} == chart runAsUser {uid}")
    exposed = {int(p) for k, a in runtime if k == "EXPOSE" for p in a.split()}
    check(exposed == {values["server"]["grpcPort"], values["server"]["httpPort"],
                      values["server"]["openaiPort"]},
          f"EXPOSE {sorted(exposed)} == chart ports")
    ep = [a for k, a in runtime if k == "ENTRYPOINT"]
    check(ep and shlex.split(ep[-1].strip("[]").replace(",", " ")) == ["/usr/local/bin/catserve"],
          "ENTRYPOINT /usr/local/bin/catserve")
    cmd = " ".join(a for k, a in runtime if k == "CMD")
    model_dir = f"{values['model']['mountPath']}/{values['model']['name']}"
    check(f"--model_dir={model_dir}" in cmd, f"CMD uses the chart's default model dir {model_dir}")
    check(args.get("MODEL_NAME") == values["model"]["name"], "MODEL_NAME default == chart model.name")
    copies = " ".join(a for k, a in runtime if k == "COPY")
    check("/out/models/ /models/" in copies and values["model"]["mountPath"] == "/models", "model baked at /models")
    ignore = (ROOT / "deploy/Dockerfile.dockerignore").read_text().split()
    check(".git" in ignore and "build" in ignore, "Dockerfile.dockerignore keeps .git and build/ out of the context")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
