#!/usr/bin/python3
"""onnx_check.py - validate ONNX files written by `aspen export` with ONNX's
own checker (onnx.checker.check_model, full_check: the graph, the types and
shape inference), Debian's python3-onnx.

    bench/onnx_check.py MODEL.onnx...        check the files
    bench/onnx_check.py                      train a LeNet briefly on
        tests/data/fashion-mnist-slice, export it to build/lenet_export.onnx,
        check that

Prints one line per file, exits non-zero when one fails.
"""
import os
import subprocess
import sys

import onnx

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def export_lenet():
    aspen = os.path.join(ROOT, "build", "aspen")
    ckpt = os.path.join(ROOT, "build", "lenet_export.safetensors")
    out = os.path.join(ROOT, "build", "lenet_export.onnx")
    subprocess.run([aspen, "train", os.path.join(ROOT, "models", "lenet.cfg"), "--data",
                    os.path.join(ROOT, "tests", "data", "fashion-mnist-slice"), "--epochs", "1",
                    "--quiet", "--out", ckpt], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([aspen, "export", ckpt, "-o", out], check=True, stdout=subprocess.DEVNULL)
    return out


def main():
    paths = sys.argv[1:] or [export_lenet()]
    bad = 0
    for p in paths:
        try:
            m = onnx.load(p)
            onnx.checker.check_model(m, full_check=True)
            ops = sorted({n.op_type for n in m.graph.node})
            opset = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")]
            print("ok    %s: opset %s, %d nodes (%s), %d initializers" %
                  (p, opset[0] if opset else "?", len(m.graph.node), ", ".join(ops),
                   len(m.graph.initializer)))
        except Exception as e:  # the checker raises several exception types
            bad += 1
            print("FAIL  %s: %s" % (p, str(e).splitlines()[0] if str(e) else type(e).__name__))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
