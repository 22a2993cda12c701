#!/bin/bash
# resnet50_vs_pytorch.sh - build aspen, then time ResNet-50 224x224 inference
# (batch 1) and a training step (batch 8) with aspen and PyTorch alternately
# on 2 threads, RUNS times each (default 5); prints medians and ratios. See
# bench/resnet50_vs_pytorch.py.
#
#   bench/resnet50_vs_pytorch.sh
#   RUNS=7 WORKLOADS=infer1 bench/resnet50_vs_pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make -s
if ! /usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null; then
    echo "resnet50_vs_pytorch: /usr/bin/python3 cannot import torch and torchvision" \
         "(Debian packages python3-torch, python3-torchvision)" >&2
    exit 1
fi
source bench/hostprobe.sh
exec /usr/bin/python3 bench/resnet50_vs_pytorch.py "$@"
