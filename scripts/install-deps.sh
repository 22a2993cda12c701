#!/usr/bin/env bash
# install-deps.sh - `make deps`: the Debian packages aspen needs to build, test
# and run its demo. Installs only what is missing (checked with dpkg -s), runs
# apt-get update first only when something is missing, quietly. Works as root,
# or through sudo when not root and sudo exists. npm counts as present when the
# npm command exists (NodeSource's nodejs package ships it and conflicts with
# Debian's npm package).
set -euo pipefail

pkgs=(build-essential zlib1g-dev libpng-dev libcjson-dev dataset-fashion-mnist
      nodejs npm graphviz libprotobuf-c-dev protobuf-c-compiler libonnx-dev
      libonnx-testdata
      clang libclang-rt-14-dev)   # clang + libFuzzer: make fuzz, fuzz-ci (docs/hardening.md)

missing=()
for p in "${pkgs[@]}"; do
    [[ $p == npm ]] && command -v npm >/dev/null && continue
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [[ ${#missing[@]} == 0 ]]; then
    echo "deps: all present (${pkgs[*]})"
    exit 0
fi

if [[ $(id -u) == 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "deps: missing ${missing[*]}; run this script as root (no sudo found)" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
echo "deps: done"
