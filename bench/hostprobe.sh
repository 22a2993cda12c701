#!/bin/bash
# bench/hostprobe.sh - build bench/hostprobe.c once into $TMPDIR and print its
# path (sourced by the benchmark wrappers, which export it as ASPEN_HOSTPROBE).
probe_dir="${TMPDIR:-/tmp}/aspen-bench-probe"
mkdir -p "$probe_dir"
if "${CC:-cc}" -O2 -mavx2 -mfma -pthread bench/hostprobe.c -o "$probe_dir/hostprobe" 2>/dev/null; then
    export ASPEN_HOSTPROBE="$probe_dir/hostprobe"
fi
