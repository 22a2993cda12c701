#!/bin/bash
# train_vs_pytorch.sh - build aspen, then run one training epoch of LeNet
# (2 threads) and of the MLP (1 thread) on the full Fashion-MNIST with aspen
# and with PyTorch alternately, RUNS times each (default 3), and print medians,
# test accuracies, peak RSS and the ratio aspen/PyTorch. See
# bench/train_vs_pytorch.py and the shared BENCHMARKS.md.
#
#   bench/train_vs_pytorch.sh                 # both workloads, 3 runs each
#   RUNS=5 WORKLOADS=lenet bench/train_vs_pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s
if [ ! -x /usr/bin/time ]; then
    echo "note: /usr/bin/time is missing (Debian package 'time'): no peak RSS figures" >&2
fi
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    echo "train_vs_pytorch: /usr/bin/python3 cannot import torch (Debian package python3-torch)" >&2
    exit 1
fi
source bench/hostprobe.sh
exec /usr/bin/python3 bench/train_vs_pytorch.py "$@"
