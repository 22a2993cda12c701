#!/bin/bash
# onnx_roundtrip.sh - build aspen, then export torchvision ResNet-18/50,
# AlexNet, VGG-16 and SqueezeNet 1.0 (random weights, seed 0) with PyTorch to
# ONNX and compare aspen's logits with PyTorch's (bench/onnx_roundtrip.py).
#
#   bench/onnx_roundtrip.sh
#   bench/onnx_roundtrip.sh resnet18 alexnet
set -euo pipefail
cd "$(dirname "$0")/.."
make -s
if ! /usr/bin/python3 -c 'import torch, torchvision, onnx' 2>/dev/null; then
    echo "onnx_roundtrip: /usr/bin/python3 cannot import torch, torchvision and onnx" \
         "(Debian packages python3-torch, python3-torchvision, python3-onnx)" >&2
    exit 1
fi
exec /usr/bin/python3 bench/onnx_roundtrip.py "$@"
