#!/usr/bin/env bash
# make-corpus.sh - regenerate the committed seed corpora in tests/fuzz/corpus/
# (docs/hardening.md). Needs build/aspen (`make`), python3 and Debian's
# libonnx-testdata. Seeds are kept small: fuzzing speed falls with input size.
#   cfg         models/*.cfg, three small darknet cfgs, the [repeat] example
#   idx         harness layout (flags, label length, labels, images): 3 images
#               of the Fashion-MNIST slice, raw, gzipped by the harness, and as
#               real gzip bytes
#   image       the three example PNGs, PGM/PPM in ASCII, binary and 16-bit
#   checkpoint  a tiny trained checkpoint (conv + batch norm + dense, 28x28)
#   onnx        per supported op type the smallest backend node test model,
#               a few PyTorch-converted ones, the tiny model exported
#   cli         NUL-separated argument lists
set -euo pipefail
cd "$(dirname "$0")/../.."
C=tests/fuzz/corpus
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
rm -rf "$C"
mkdir -p "$C"/{cfg,idx,image,checkpoint,onnx,cli}

cp models/*.cfg tests/data/graph-repeat.cfg "$C/cfg/"
for f in tiny strided cifar; do cp "tests/data/darknet/$f.cfg" "$C/cfg/darknet-$f.cfg"; done

cat >"$T/tiny.cfg" <<'CFG'
[net]
channels=1
height=28
width=28

[convolutional]
filters=2
size=3
stride=1
pad=1
batch_normalize=1
activation=leaky

[maxpool]
size=2
stride=2

[maxpool]
size=2
stride=2

[connected]
output=10
activation=linear

[softmax]
CFG
cp "$T/tiny.cfg" "$C/cfg/tiny.cfg"
build/aspen train "$T/tiny.cfg" --data tests/data/fashion-mnist-slice --limit 64 --batch 16 \
    --threads 1 --quiet --out "$C/checkpoint/tiny.safetensors"
build/aspen export "$C/checkpoint/tiny.safetensors" -o "$C/onnx/tiny-export.onnx"

python3 - "$C" <<'PY'
import gzip, os, struct, sys, zlib
C = sys.argv[1]
d = "tests/data/fashion-mnist-slice"
img = gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()
lab = gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()
n = 3
images = struct.pack(">IIII", 0x803, n, 28, 28) + img[16:16 + n * 784]
labels = struct.pack(">II", 0x801, n) + lab[8:8 + n]
def idx(flags, l, i):
    return bytes([flags]) + struct.pack("<H", len(l)) + l + i
def w(path, b):
    open(os.path.join(C, path), "wb").write(b)
w("idx/raw", idx(0, labels, images))
w("idx/harness-gzip", idx(3, labels, images))
w("idx/real-gzip", idx(0, gzip.compress(labels, 9, mtime=0), gzip.compress(images, 9, mtime=0)))
small = struct.pack(">IIII", 0x803, 2, 2, 3) + bytes(range(0, 240, 20))
w("idx/small", idx(0, struct.pack(">II", 0x801, 2) + b"\x01\x09", small))
# images: 3 bytes of (channels, height, width) choice, then the file
pre1, pre3 = b"\x00\x1b\x1b", b"\x01\x0f\x13"
for f in sorted(os.listdir("examples")):
    if f.endswith(".png"):
        w(f"image/{f}", pre1 + open(f"examples/{f}", "rb").read())
w("image/p5.pgm", pre1 + b"P5\n# a comment\n4 3\n255\n" + bytes(range(0, 240, 20)))
w("image/p2.pgm", pre3 + b"P2\n3 2\n15\n0 5 10\n15 3 7\n")
w("image/p5-16bit.pgm", pre1 + b"P5 2 2 65535\n" + struct.pack(">4H", 0, 1000, 40000, 65535))
w("image/p6.ppm", pre3 + b"P6\n2 2\n255\n" + bytes(range(0, 240, 20)))
w("image/p3.ppm", pre1 + b"P3\n1 2\n255\n255 0 0  0 0 255\n")
# cli: argument lists separated by NUL
for i, args in enumerate([
        ["model.cfg", "--epochs", "5", "--json"],
        ["--memory", "2GiB", "--lr=0.01", "--seed", "18446744073709551615"],
        ["--memory=1.5G", "--out", "x.safetensors", "--", "--epochs"],
        ["--epochs", "0", "--memory", "512MiB"], ["--memory", "1e3KB", "all", "auto"],
        ["-h", "--json=1", "--bogus"], ["--memory", "9e18", "norm", "none"]]):
    w(f"cli/args{i}", b"\0".join(a.encode() for a in args))
PY

# ONNX: per supported op type (the handler table of src/io/onnx_ops.c) the
# smallest node test model holding a node of that type (NodeProto.op_type is
# field 4: tag byte 0x22, a length byte, the name)
N=/usr/share/libonnx-testdata/data
ops=$(grep -o '{"[A-Za-z]*", h_' src/io/onnx_ops.c | sed 's/{"\([A-Za-z]*\)".*/\1/')
python3 - "$C" "$N" "$ops" <<'PY'
import os, shutil, sys
C, N, ops = sys.argv[1], sys.argv[2], sys.argv[3].split()
models = []
for t in sorted(os.listdir(f"{N}/node")):
    p = f"{N}/node/{t}/model.onnx"
    if os.path.exists(p) and os.path.getsize(p) <= 2048:
        models.append((os.path.getsize(p), t, open(p, "rb").read()))
models.sort()
for op in ops:
    tag = bytes([0x22, len(op)]) + op.encode()
    for sz, t, data in models:
        if tag in data:
            shutil.copy(f"{N}/node/{t}/model.onnx", f"{C}/onnx/{t}.onnx")
            break
for t in ["test_Conv2d", "test_Linear", "test_BatchNorm2d_eval", "test_MaxPool2d",
          "test_AvgPool2d", "test_softmax_lastdim", "test_PixelShuffle", "test_ConstantPad2d"]:
    p = f"{N}/pytorch-converted/{t}/model.onnx"
    if os.path.exists(p) and os.path.getsize(p) <= 32768:
        shutil.copy(p, f"{C}/onnx/pytorch-{t[5:]}.onnx")
PY
du -sh "$C"/*
