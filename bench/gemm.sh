#!/bin/bash
# bench/gemm.sh - build bench/gemm.c against aspen's GEMM sources and OpenBLAS,
# then run it: FMA peak, asp_sgemm vs cblas_sgemm, 1 and 2 threads.
# Arguments go to the benchmark (--quick, --samples N, --threads 1|2|12).
# ASPEN_ISA=avx512|avx2|generic picks aspen's kernel as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${TMPDIR:-/tmp}/aspen-bench-gemm"
mkdir -p "$out"
cc=${CC:-cc}
flags="-std=c11 -O2 -g -D_GNU_SOURCE -Iinclude -Isrc -pthread -fno-strict-aliasing -Wall -Wextra"
"$cc" $flags -mavx2 -mfma -c src/kernels/gemm_avx2.c -o "$out/gemm_avx2.o"
"$cc" $flags -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma \
    -c src/kernels/gemm_avx512.c -o "$out/gemm_avx512.o"
"$cc" $flags -o "$out/gemm" bench/gemm.c src/kernels/gemm.c src/core/core.c \
    "$out/gemm_avx2.o" "$out/gemm_avx512.o" -lopenblas -lm

# Debian's OpenBLAS mis-detects these CPUs and falls back to its generic
# Prescott kernels (see shared/BENCHMARKS.md); Cooperlake is the fair choice.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Cooperlake}
# Its idle threads spin 2^N cycles after each call; about 1 ms, not the default
# 2^28, so they do not steal a core from aspen's next sample.
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-22}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus"
exec "$out/gemm" "$@"
