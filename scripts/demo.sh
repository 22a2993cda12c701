#!/usr/bin/env bash
# demo.sh - `make demo`: train LeNet on the real Fashion-MNIST (60,000 images),
# evaluate the checkpoint, and classify two images from examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=build/lenet-fashion.safetensors
epochs=${EPOCHS:-2}
echo "== aspen demo: LeNet on Fashion-MNIST, $epochs epochs on $(nproc) cores"
build/aspen train models/lenet.cfg --data fashion-mnist --epochs "$epochs" --out "$ckpt"
echo
echo "== evaluating $ckpt"
build/aspen eval "$ckpt"
echo
echo "== predicting two test images (an ankle boot and a sneaker)"
build/aspen predict "$ckpt" examples/ankle-boot.png examples/sneaker.png
