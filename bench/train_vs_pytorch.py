#!/usr/bin/python3
"""train_vs_pytorch.py - one training epoch on the full Fashion-MNIST, aspen
against PyTorch, side by side (see the shared BENCHMARKS.md).

Workloads (60,000 training images, batch 64, SGD lr 0.03 momentum 0.9):
  lenet  conv 5x5 32 -> relu -> maxpool 2 -> conv 5x5 64 -> relu -> maxpool 2
         -> fc 256 relu -> fc 10        (models/lenet.cfg), 2 threads
  mlp    784-256-128-10, relu           (models/mlp.cfg), 1 thread (PyTorch's
         best: with 2 threads its small GEMMs lose to threading overhead)
  mlp2   the same, aspen on 2 threads against PyTorch's best (1 thread)

aspen:   build/aspen train MODEL --data fashion-mnist --epochs 1 --threads T --json;
         "seconds" is the training time of the epoch, evaluation excluded.
PyTorch: /usr/bin/python3 (this script re-run as a worker), torch.set_num_threads(T),
         OMP_NUM_THREADS=T, OPENBLAS_CORETYPE=Cooperlake (OpenBLAS mis-detects these
         CPUs; PyTorch's linear layers go through it). The data is preloaded into one
         float tensor; only the loop over the epoch's batches is timed. Like aspen,
         each epoch is a seeded shuffle and the last incomplete batch is dropped
         (937 batches = 59,968 images). Test accuracy on the 10,000 test images after
         the epoch, not timed.

The two sides alternate, RUNS times each (env RUNS, default 3). Printed: the
median epoch time of each side, the ratio aspen/PyTorch (below 1: aspen faster),
the test accuracies after the epoch, and the peak RSS of each process (maximum
resident set size from /usr/bin/time -v, when it is installed). Each run's line
ends with the 1-minute load average: on a shared machine, runs with a load well
above the thread count were slowed by other work and should be repeated.

Usage: bench/train_vs_pytorch.sh   (builds aspen first), or
       RUNS=5 WORKLOADS=lenet /usr/bin/python3 bench/train_vs_pytorch.py
Env: RUNS, WORKLOADS (comma list, default lenet,mlp,mlp2), ASPEN (default build/aspen),
     FASHION_DIR (default /usr/share/datasets/fashion-mnist).
"""
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

from hostprobe import host_scaling, scaling_str

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.environ.get("FASHION_DIR", "/usr/share/datasets/fashion-mnist")
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

WORKLOADS = {
    # name: (aspen model file, aspen threads, PyTorch network, PyTorch threads)
    "lenet": ("models/lenet.cfg", 2, "lenet", 2),
    "mlp": ("models/mlp.cfg", 1, "mlp", 1),
    "mlp2": ("models/mlp.cfg", 2, "mlp", 1),
}
BATCH, LR, MOMENTUM, SEED = 64, 0.03, 0.9, 1


# ------------------------------------------------------------------ PyTorch worker

def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def load_split(torch, split):
    def find(base):
        for name in (base, base + ".gz"):
            p = os.path.join(FASHION, name)
            if os.path.exists(p):
                return p
        raise SystemExit("train_vs_pytorch: %s/%s[.gz] not found" % (FASHION, base))
    dims, img = read_idx(find(split + "-images-idx3-ubyte"))
    _, lab = read_idx(find(split + "-labels-idx1-ubyte"))
    x = torch.frombuffer(bytearray(img), dtype=torch.uint8).reshape(dims[0], 1, dims[1], dims[2])
    y = torch.frombuffer(bytearray(lab), dtype=torch.uint8).long()
    return x.float().div_(255.0).contiguous(), y


def torch_worker(workload, threads):
    import torch
    import torch.nn as nn
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    xtr, ytr = load_split(torch, "train")
    xte, yte = load_split(torch, "t10k")
    if workload == "lenet":
        model = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    n = xtr.shape[0]
    batches = n // BATCH
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(n)
    loss_sum = 0.0
    for b in range(batches):
        idx = perm[b * BATCH:(b + 1) * BATCH]
        xb, yb = xtr[idx], ytr[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        loss_sum += loss.item()
    seconds = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 1000):
            correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
    print(json.dumps({"seconds": seconds, "train_loss": loss_sum / batches,
                      "test_accuracy": correct / xte.shape[0],
                      "images_per_second": batches * BATCH / seconds}))


# ------------------------------------------------------------------ driver

def run_measured(cmd, env=None):
    """Run cmd (under /usr/bin/time -v when present); return (last JSON line, peak RSS KiB)."""
    full = [TIME, "-v"] + cmd if TIME else cmd
    p = subprocess.run(full, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit("train_vs_pytorch: %s exited %d" % (" ".join(cmd), p.returncode))
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    result = json.loads(lines[-1])
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return result, int(m.group(1)) if m else None


def run_aspen(aspen, model, threads):
    return run_measured([aspen, "train", model, "--data", FASHION_SPEC, "--epochs", "1",
                         "--threads", str(threads), "--json"])


def run_torch(workload, threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_CORETYPE"] = "Cooperlake"
    return run_measured(["/usr/bin/python3", os.path.abspath(__file__), "--torch-worker",
                         workload, str(threads)], env=env)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load():
    """The 1-minute load average: above the thread count, other work shared the cores."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def mib(kib):
    return "%.0f" % (kib / 1024.0) if kib else "n/a"


FASHION_SPEC = "fashion-mnist"


def main():
    global FASHION_SPEC
    runs = int(os.environ.get("RUNS", "3"))
    names = [w for w in os.environ.get("WORKLOADS", "lenet,mlp,mlp2").split(",") if w]
    aspen = os.environ.get("ASPEN", os.path.join(ROOT, "build", "aspen"))
    if FASHION != "/usr/share/datasets/fashion-mnist":
        FASHION_SPEC = FASHION
    for w in names:
        if w not in WORKLOADS:
            raise SystemExit("train_vs_pytorch: unknown workload '%s' (lenet, mlp, mlp2)" % w)
    if not os.access(aspen, os.X_OK):
        raise SystemExit("train_vs_pytorch: %s not built (run make)" % aspen)
    print("machine: %s, %d cores; %d runs each, alternating; RSS from %s" %
          (cpu_name(), os.cpu_count() or 0, runs, TIME + " -v" if TIME else "nothing "
           "(/usr/bin/time missing: apt-get install time)"))
    rows = []
    for w in names:
        model, threads, net, torch_threads = WORKLOADS[w]
        res = {"aspen": [], "pytorch": []}
        for r in range(runs):
            print("  %s run %d: %s" % (w, r + 1, scaling_str(host_scaling())), flush=True)
            a = run_aspen(aspen, model, threads)
            res["aspen"].append(a)
            print("  %s run %d aspen:   %.2f s  test %.2f%%  peak RSS %s MiB  load %.1f" %
                  (w, r + 1, a[0]["seconds"], 100 * a[0]["test_accuracy"], mib(a[1]), load()),
                  flush=True)
            t = run_torch(net, torch_threads)
            res["pytorch"].append(t)
            print("  %s run %d pytorch: %.2f s  test %.2f%%  peak RSS %s MiB  load %.1f" %
                  (w, r + 1, t[0]["seconds"], 100 * t[0]["test_accuracy"], mib(t[1]), load()),
                  flush=True)
        med = {k: statistics.median(x[0]["seconds"] for x in v) for k, v in res.items()}
        acc = {k: statistics.median(x[0]["test_accuracy"] for x in v) for k, v in res.items()}
        rss = {k: (statistics.median(x[1] for x in v) if all(x[1] for x in v) else None)
               for k, v in res.items()}
        rows.append((w, "%d/%d" % (threads, torch_threads), med, acc, rss))
    print()
    print("one epoch of Fashion-MNIST (60,000 images), batch 64, SGD momentum 0.9; "
          "medians of %d runs" % runs)
    print("| workload | threads aspen/PyTorch | aspen s | PyTorch s | aspen/PyTorch | aspen test acc | "
          "PyTorch test acc | aspen peak RSS MiB | PyTorch peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w, threads, med, acc, rss in rows:
        print("| %s | %s | %.2f | %.2f | %.2f | %.2f%% | %.2f%% | %s | %s |" %
              (w, threads, med["aspen"], med["pytorch"], med["aspen"] / med["pytorch"],
               100 * acc["aspen"], 100 * acc["pytorch"], mib(rss["aspen"]), mib(rss["pytorch"])))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--torch-worker":
        torch_worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
