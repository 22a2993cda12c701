#!/usr/bin/python3
"""record.py - record the golden values that tests/test_golden.c compares aspen against.

Run once, from anywhere, with Debian's PyTorch (python3-torch, 1.13):

    /usr/bin/python3 tests/golden/record.py

It writes tests/data/golden/mlp.safetensors and tests/data/golden/lenet.safetensors. The test
itself needs no Python: it reads these files.

For each of models/mlp.cfg and models/lenet.cfg it builds the same network in PyTorch (module
names = aspen's parameter names, docs/model-format.md), initialises it from a fixed torch seed,
and takes the first 8 training images of the committed Fashion-MNIST slice
(tests/data/fashion-mnist-slice, pixel / 255 as float32). Recorded, all as F32:

    param/<name>    the initial parameters (float32, as initialised)
    input           (8, 1, 28, 28) the images
    labels          (8) the class labels, as floats
    logits          (8, 10) the forward pass
    loss            (1) mean softmax cross-entropy
    grad/<name>     d loss / d param (loss.backward())
    updated/<name>  the parameters after one SGD step, lr 0.1, momentum 0.9
    loss2           (1) the loss of a second forward pass with the updated parameters

The parameters and inputs are float32 values; everything computed from them is computed in
float64 and rounded to float32 only when written, so the reference carries no float32 rounding
error of its own and the test's tolerances measure aspen alone.

Darknet semantics that matter here: [maxpool] size=2 stride=2 has a default total padding of
size-1 = 1, of which padding/2 = 0 goes on the top and left, and an output size of
(in + 1 - 2)/2 + 1, which for the even sizes of LeNet (24, 8) is exactly PyTorch's
MaxPool2d(2, 2). [connected] flattens NCHW, as torch's flatten does. Both maxpools break ties
on the first maximum in scan order.

The safetensors file is written by hand (docs/checkpoint-format.md): an 8-byte little-endian
header length, a JSON header padded with spaces to a multiple of 8 bytes, the raw little-endian
f32 data back to back.
"""
import collections
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SLICE = os.path.join(ROOT, "tests", "data", "fashion-mnist-slice")
OUT = os.path.join(ROOT, "tests", "data", "golden")

BATCH = 8
SEED = 20240501
LR = 0.1
MOMENTUM = 0.9


def read_idx(path):
    """An IDX file (gzip) as a numpy array of uint8."""
    with gzip.open(path, "rb") as f:
        buf = f.read()
    magic, = struct.unpack(">I", buf[:4])
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, buf[4:4 + 4 * ndim])
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def batch():
    images = read_idx(os.path.join(SLICE, "train-images-idx3-ubyte.gz"))[:BATCH]
    labels = read_idx(os.path.join(SLICE, "train-labels-idx1-ubyte.gz"))[:BATCH]
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(BATCH, 1, 28, 28)
    return torch.from_numpy(x.copy()), torch.from_numpy(labels.astype(np.int64))


class MLP(nn.Module):
    """models/mlp.cfg: [connected] 256 relu, 128 relu, 10 linear, [softmax] (layers 0..3)."""

    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(784, 256)
        self.fc1 = nn.Linear(256, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc0(x))
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class LeNet(nn.Module):
    """models/lenet.cfg: conv0 32x5x5 relu, maxpool1 2/2, conv2 64x5x5 relu, maxpool3 2/2,
    fc4 1024->256 relu, fc5 256->10 linear, [softmax] (layers 0..6)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(1, 32, 5, stride=1, padding=0)
        self.conv2 = nn.Conv2d(32, 64, 5, stride=1, padding=0)
        self.fc4 = nn.Linear(64 * 4 * 4, 256)
        self.fc5 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv0(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc4(x))
        return self.fc5(x)


def f32(t):
    return t.detach().to(torch.float32).contiguous().numpy().copy()


def record(name, make):
    torch.manual_seed(SEED)
    net = make()                               # float32 init, PyTorch's defaults
    params = collections.OrderedDict((k, f32(v)) for k, v in net.named_parameters())
    net = net.double()                         # exact widening of the float32 values

    x, y = batch()
    tensors = collections.OrderedDict()
    for k, v in params.items():
        tensors["param/" + k] = v
    tensors["input"] = x.numpy()
    tensors["labels"] = y.numpy().astype(np.float32)

    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    opt.zero_grad()
    logits = net(x.double())
    loss = F.cross_entropy(logits, y)
    loss.backward()
    tensors["logits"] = f32(logits)
    tensors["loss"] = f32(loss.reshape(1))
    for k, v in net.named_parameters():
        tensors["grad/" + k] = f32(v.grad)
    opt.step()
    for k, v in net.named_parameters():
        tensors["updated/" + k] = f32(v)
    with torch.no_grad():
        loss2 = F.cross_entropy(net(x.double()), y)
    tensors["loss2"] = f32(loss2.reshape(1))

    meta = {
        "golden.model": f"models/{name}.cfg",
        "golden.torch": torch.__version__,
        "golden.seed": str(SEED),
        "golden.batch": str(BATCH),
        "golden.sgd": f"lr={LR} momentum={MOMENTUM}",
        "golden.data": "tests/data/fashion-mnist-slice train images 0..7, pixel/255",
        "golden.params": ",".join(params),
    }
    path = os.path.join(OUT, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    n = sum(v.size for v in params.values())
    print(f"{path}: {len(params)} parameter tensors, {n} parameters, "
          f"loss {loss.item():.6f}, loss2 {loss2.item():.6f}")


def write_safetensors(path, tensors, meta):
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape),
                     "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    if sys.byteorder != "little":
        sys.exit("record.py: a little-endian host is needed")
    torch.set_num_threads(1)
    record("mlp", MLP)
    record("lenet", LeNet)


if __name__ == "__main__":
    main()
