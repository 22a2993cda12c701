#!/bin/bash
# darknet_vs_aspen.sh - darknet's own `speed` benchmark against `aspen bench`
# on the same model file (default darknet's ResNet-50, 256x256, batch 1),
# alternating RUNS times each (default 5); prints the medians of the seconds
# per forward pass and the speed ratio. darknet as Debian builds it (OpenMP,
# OpenBLAS; OPENBLAS_CORETYPE=Cooperlake as for every OpenBLAS peer, see
# shared/BENCHMARKS.md) uses all cores; aspen runs THREADS threads (default 2)
# and, for reference, 1.
#
#   bench/darknet_vs_aspen.sh
#   RUNS=7 CFG=/usr/share/darknet/cfg/resnet18.cfg bench/darknet_vs_aspen.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s
CFG=${CFG:-/usr/share/darknet/cfg/resnet50.cfg}
RUNS=${RUNS:-5}
THREADS=${THREADS:-2}
TICS=${TICS:-3}
ASPEN=${ASPEN:-build/aspen}
if ! command -v darknet >/dev/null; then
    echo "darknet_vs_aspen: darknet is not installed (Debian package 'darknet')" >&2
    exit 1
fi
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
aspen_secs() {
    "$ASPEN" bench "$CFG" --threads "$1" --steps 10 --warmup 2 --json | tail -1 |
        sed 's/.*"step_seconds":\([0-9.eE+-]*\).*/\1/'
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus"
echo "model: $CFG, batch 1; $RUNS runs each, alternating"
source bench/hostprobe.sh
d=() a=() a1=() sc=()
for _ in $(seq "$RUNS"); do
    sc+=("$("${ASPEN_HOSTPROBE:-false}" 2>/dev/null | tr ' ' / || echo '?')")
    d+=("$(OPENBLAS_CORETYPE=Cooperlake darknet speed "$CFG" "$TICS" 2>&1 | awk '/sec\/eval/ {print $2}')")
    a+=("$(aspen_secs "$THREADS")")
    a1+=("$(aspen_secs 1)")
done
md=$(printf '%s\n' "${d[@]}" | median)
ma=$(printf '%s\n' "${a[@]}" | median)
ma1=$(printf '%s\n' "${a1[@]}" | median)
echo "host before each run (2-thread scaling/round trip ns; bench/hostprobe.c): ${sc[*]}"
printf 'darknet speed        %8.1f ms/forward   runs: %s\n' "$(echo "$md*1000" | bc -l)" "${d[*]}"
printf 'aspen bench %d thr    %8.1f ms/forward   runs: %s\n' "$THREADS" "$(echo "$ma*1000" | bc -l)" "${a[*]}"
printf 'aspen bench 1 thr    %8.1f ms/forward   runs: %s\n' "$(echo "$ma1*1000" | bc -l)" "${a1[*]}"
printf 'speed ratio aspen/darknet: %.1fx (%d threads), %.1fx (1 thread)\n' \
    "$(echo "$md/$ma" | bc -l)" "$THREADS" "$(echo "$md/$ma1" | bc -l)"
