#!/usr/bin/python3
"""record_zoo.py - record the golden values that tests/test_golden_zoo.c compares aspen against:
one training step of a ResNet-50 and an AlexNet, torchvision's own modules at reduced width.

Run once, from anywhere, with Debian's PyTorch and torchvision (python3-torch 1.13,
python3-torchvision 0.14):

    /usr/bin/python3 tests/golden/record_zoo.py

It writes tests/data/golden/resnet50_small.safetensors and
tests/data/golden/alexnet_small.safetensors (the layout and the f32 writer are record.py's).
The test itself needs no Python.

The networks (their cfg files are tests/data/golden/<name>.cfg, whose layer and parameter names
are torchvision's state_dict names):

  resnet50_small  torchvision.models.resnet.ResNet's own _make_layer, Bottleneck (v1.5: the stride
                  on the 3x3 conv; downsample = 1x1 conv with the stride + BN) and forward, blocks
                  [3, 4, 6, 3], with every channel count divided by 16: stem 4, bottleneck widths
                  4/8/16/32, outputs 16/32/64/128, fc 128 -> 10. ResNet's constructor hard-codes
                  the stem's 64 channels and the planes 64/128/256/512, so ResNet.__init__ is
                  replaced by one that sets the same attributes with these widths (class SmallResNet
                  below); everything else, state_dict names included, is torchvision's code.
                  Input (2, 3, 64, 64): layer4 then works on 2x2 maps, so its batch norms see 8
                  values per channel (on 1x1 maps, 2 values, the normalised output would be +-1
                  whatever the input and the gradients through it pure rounding noise).
  alexnet_small   torchvision.models.AlexNet(num_classes=10, dropout=0.0) with the layers narrowed:
                  features' convolutions 4-12-24-16-16 (torchvision's / 16), classifier 576 -> 64
                  -> 64 -> 10. Input (2, 3, 224, 224), where AdaptiveAvgPool2d((6, 6)) is the
                  identity (asserted), as models/alexnet.cfg assumes. Dropout: p = 0 on both sides
                  (the cfg says probability=0), because aspen's dropout masks (a counter-based
                  hash) are not PyTorch's; both treat p = 0 as the identity.

Initialisation (seed SEED): convolutions and linear layers as torchvision initialises them
(ResNet: Kaiming-normal fan_out conv weights; AlexNet: PyTorch's defaults). Batch-norm weight,
bias, running mean and running variance are then drawn at random (U(0.5, 1.5), U(-0.2, 0.2),
N(0, 0.1^2), U(0.5, 1.5)) instead of torchvision's 1, 0, 0, 1, so that every per-channel term
is exercised; the input is N(0, 1) and the labels uniform in 0..9, from the same generator.

Conditioning. With every residual branch at full strength (bn3.weight ~ 1), this 1/16-width
ResNet-50 at initialisation is so ill-conditioned (the error of a float32 forward pass grows
about 1.3x per bottleneck, batch statistics of a few channels couple everything) that PyTorch's
own float32 step differs from its float64 step by ~6e-5 in the logits and up to ~1e-3 in the
gradients: no float32 implementation could be held to 1e-5 / 1e-4 there. So the last batch norm
of each bottleneck (bn3.weight) is drawn from U(0.05, 0.15), damping the residual branches as
torchvision's zero_init_residual=True does, but not to zero, so every branch still gets
gradients. Then float32 PyTorch is within ~2e-6 (logits) and ~1e-5 (gradients) of float64.
record() measures this each time (PyTorch's float32 step against the float64 reference, with
the test's metric), refuses to write values for which it exceeds 2e-6 (logits, loss) or 2e-5
(the rest), and stores the figures in the metadata ("golden.torch_float32_error").

Training mode: batch norm normalises with the batch's statistics (biased variance) and updates
its running statistics with momentum 0.1 and the unbiased variance. Recorded, all as F32
(<name> = torchvision's state_dict name, num_batches_tracked left out):

    param/<name>    the initial parameters (trainable tensors)
    state/<name>    the initial batch-norm running_mean / running_var
    input           (2, C, H, W)
    labels          (2) the class labels, as floats
    logits          (2, 10) the forward pass
    loss            (1) mean softmax cross-entropy
    grad/<name>     d loss / d param (loss.backward())
    updated/<name>  after one SGD step (lr 0.1, momentum 0.9): every parameter, and every running
                    statistic as the training forward pass left it
    loss2           (1) the loss of a second training-mode forward pass with the updated
                    parameters (batch statistics again, so the running statistics do not enter)

The parameters, statistics and inputs are float32 values; everything computed from them is
computed in float64 and rounded to float32 only when written, so the reference carries no float32
rounding error of its own and the test's tolerances measure aspen alone. Running it twice gives
identical files.
"""
import collections
import copy
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import AlexNet
from torchvision.models.resnet import Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import OUT, f32, write_safetensors  # noqa: E402  (the same writer, the same layout)

BATCH = 2
CLASSES = 10
SEED = 20240502
LR = 0.1
MOMENTUM = 0.9


class SmallResNet(ResNet):
    """torchvision's ResNet with all channel counts divided by `div`: ResNet.__init__ with its
    hard-coded 64 (stem) and 64/128/256/512 (planes) scaled, the rest of torchvision's code
    (_make_layer, Bottleneck, forward, weight initialisation) unchanged."""

    def __init__(self, block, layers, num_classes, div):
        nn.Module.__init__(self)
        norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = 64 // div
        self.dilation = 1
        self.groups = 1
        self.base_width = 64       # Bottleneck's width = planes * base_width / 64 = planes
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64 // div, layers[0])
        self.layer2 = self._make_layer(block, 128 // div, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256 // div, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512 // div, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 // div * block.expansion, num_classes)
        for m in self.modules():   # ResNet.__init__'s initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def resnet50_small():
    net = SmallResNet(Bottleneck, [3, 4, 6, 3], CLASSES, 16)
    assert [net.layer1[0].conv1.out_channels, net.layer2[0].conv1.out_channels,
            net.layer3[0].conv1.out_channels, net.layer4[0].conv1.out_channels] == [4, 8, 16, 32]
    assert net.fc.in_features == 128
    return net, (3, 64, 64)


def alexnet_small():
    net = AlexNet(num_classes=CLASSES, dropout=0.0)
    f, c = net.features, net.classifier
    f[0] = nn.Conv2d(3, 4, kernel_size=11, stride=4, padding=2)
    f[3] = nn.Conv2d(4, 12, kernel_size=5, padding=2)
    f[6] = nn.Conv2d(12, 24, kernel_size=3, padding=1)
    f[8] = nn.Conv2d(24, 16, kernel_size=3, padding=1)
    f[10] = nn.Conv2d(16, 16, kernel_size=3, padding=1)
    c[1] = nn.Linear(16 * 6 * 6, 64)
    c[4] = nn.Linear(64, 64)
    c[6] = nn.Linear(64, CLASSES)
    assert c[0].p == 0.0 and c[3].p == 0.0
    return net, (3, 224, 224)


def randomise_batchnorm(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                assert m.momentum == 0.1 and m.eps == 1e-5
        for m in net.modules():    # damped residual branches (see the module docstring)
            if isinstance(m, Bottleneck):
                m.bn3.weight.uniform_(0.05, 0.15)


def train_step(net, x, y, states):
    """One training step of net (in its dtype) on (x, y): the recorded quantities, by key."""
    net.train()
    out = collections.OrderedDict()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    opt.zero_grad()
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)
    for k, v in net.named_parameters():
        out["grad/" + k] = v.grad.detach().clone()
    opt.step()
    for k, v in net.named_parameters():
        out["updated/" + k] = v.detach().clone()
    buffers = dict(net.named_buffers())
    for k in states:
        out["updated/" + k] = buffers[k].detach().clone()
    with torch.no_grad():
        out["loss2"] = F.cross_entropy(net(x), y).reshape(1)
    return out


def rel_error(got, want):
    """The test's metric: max |got - want| / max |want|."""
    got, want = got.double(), want.double()
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)


def record(name, make):
    torch.manual_seed(SEED)
    net, (c, h, w) = make()                    # float32 init
    randomise_batchnorm(net)
    x = torch.randn(BATCH, c, h, w, dtype=torch.float32)
    y = torch.randint(0, CLASSES, (BATCH,), dtype=torch.int64)

    params = collections.OrderedDict((k, f32(v)) for k, v in net.named_parameters())
    states = collections.OrderedDict((k, f32(v)) for k, v in net.named_buffers()
                                     if k.endswith((".running_mean", ".running_var")))
    net32 = copy.deepcopy(net)
    net = net.double()                         # exact widening of the float32 values

    if name == "alexnet_small":               # the adaptive pool must be the identity
        with torch.no_grad():
            feat = net.features(x.double())
        assert tuple(feat.shape[2:]) == (6, 6), feat.shape

    tensors = collections.OrderedDict()
    for k, v in params.items():
        tensors["param/" + k] = v
    for k, v in states.items():
        tensors["state/" + k] = v
    tensors["input"] = x.numpy()
    tensors["labels"] = y.numpy().astype(np.float32)

    ref = train_step(net, x.double(), y, states)
    for k, v in ref.items():
        tensors[k] = f32(v)

    # PyTorch's own float32 step against the float64 reference: the error any float32
    # implementation of this network may be expected to show. Recorded in the metadata, and
    # bounded so that the test's tolerances (1e-5 values, 1e-4 gradients) stay meaningful.
    got = train_step(net32, x, y, states)
    worst = collections.OrderedDict()
    for k in ref:
        kind = k.split("/")[0] if "/" in k else k
        if k.startswith("updated/") and k in tensors and k[8:] in states:
            kind = "running"
        e = rel_error(got[k], ref[k])
        if e >= worst.get(kind, (-1.0, ""))[0]:
            worst[kind] = (e, k)
    for kind, (e, k) in worst.items():
        limit = 2e-6 if kind in ("logits", "loss") else 2e-5 if kind != "loss2" else 1e-5
        assert e <= limit, f"{name}: PyTorch float32 {kind} error {e:.3g} ({k}) > {limit:g}"
    f32_err = ", ".join(f"{kind} {e:.2g}" for kind, (e, k) in worst.items())

    meta = {
        "golden.model": f"tests/data/golden/{name}.cfg",
        "golden.torch": torch.__version__,
        "golden.torchvision": torchvision.__version__,
        "golden.seed": str(SEED),
        "golden.batch": str(BATCH),
        "golden.input": f"{c}x{h}x{w} N(0,1)",
        "golden.sgd": f"lr={LR} momentum={MOMENTUM}",
        "golden.batchnorm": "training mode, momentum 0.1, eps 1e-5",
        "golden.torch_float32_error": f32_err,
        "golden.params": ",".join(params),
        "golden.states": ",".join(states),
    }
    path = os.path.join(OUT, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    n = sum(v.size for v in params.values())
    print(f"{path}: {len(params)} parameter tensors, {n} parameters, {len(states)} running "
          f"statistics, loss {ref['loss'].item():.6f}, loss2 {ref['loss2'].item():.6f}, "
          f"{os.path.getsize(path)} bytes\n  PyTorch float32 vs float64 (worst): {f32_err}")


def main():
    if sys.byteorder != "little":
        sys.exit("record_zoo.py: a little-endian host is needed")
    torch.set_num_threads(1)
    record("resnet50_small", resnet50_small)
    record("alexnet_small", alexnet_small)


if __name__ == "__main__":
    main()
