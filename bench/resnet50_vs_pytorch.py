#!/usr/bin/python3
"""resnet50_vs_pytorch.py - ResNet-50 at 224x224, aspen against PyTorch, side by
side on synthetic input (see the shared BENCHMARKS.md and issue 4).

Workloads (2 threads each):
  infer1   inference, batch 1: latency of one forward pass
  train8   training step, batch 8: forward, softmax cross-entropy, backward,
           SGD momentum update; images per second

aspen:   build/aspen bench MODEL --batch B [--train] --threads 2 --steps N
         --warmup W --json; MODEL is models/resnet50.cfg when it exists, else
         bench/resnet50_bench.cfg (torchvision's ResNet-50 v1.5 written as a cfg).
PyTorch: /usr/bin/python3 (this script re-run as a worker), torchvision's
         resnet50() with random weights, torch.set_num_threads(2),
         OMP_NUM_THREADS=2, OPENBLAS_CORETYPE=Cooperlake (OpenBLAS mis-detects these
         CPUs); inference in eval mode under torch.no_grad(), training with
         torch.optim.SGD(momentum=0.9) and CrossEntropyLoss on random labels.
Both sides time W warm-up steps untimed, then N steps one by one; a run's
figure is its median step. The sides alternate, RUNS times each (env RUNS,
default 5); printed: the median over runs of each side, and the ratio.

Usage: bench/resnet50_vs_pytorch.sh   (builds aspen first), or
       RUNS=5 WORKLOADS=infer1 /usr/bin/python3 bench/resnet50_vs_pytorch.py
Env: RUNS, WORKLOADS (comma list, default infer1,train8), STEPS, WARMUP,
     ASPEN (default build/aspen), MODEL (default as above), THREADS (default 2).
"""
import json
import os
import statistics
import subprocess
import sys
import time

from hostprobe import host_scaling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {
    # name: (batch, train, default steps, default warmup)
    "infer1": (1, False, 20, 3),
    "train8": (8, True, 5, 1),
}


def torch_worker(batch, train, threads, steps, warmup):
    import torch
    import torchvision
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = torchvision.models.resnet50()
    x = torch.rand(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    times = []
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"step_seconds": med, "images_per_second": batch / med}))


def run_aspen(aspen, model, batch, train, threads, steps, warmup):
    cmd = [aspen, "bench", model, "--batch", str(batch), "--threads", str(threads),
           "--steps", str(steps), "--warmup", str(warmup), "--json"]
    if train:
        cmd.append("--train")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["step_seconds"]


def run_torch(batch, train, threads, steps, warmup):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_CORETYPE="Cooperlake")
    cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--worker", str(batch),
           str(int(train)), str(threads), str(steps), str(warmup)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["step_seconds"]


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        b, t, th, st, wu = (int(v) for v in sys.argv[2:])
        torch_worker(b, bool(t), th, st, wu)
        return
    runs = int(os.environ.get("RUNS", "5"))
    threads = int(os.environ.get("THREADS", "2"))
    aspen = os.environ.get("ASPEN", os.path.join(ROOT, "build/aspen"))
    model = os.environ.get("MODEL")
    if not model:
        zoo = os.path.join(ROOT, "models/resnet50.cfg")
        model = zoo if os.path.exists(zoo) else os.path.join(ROOT, "bench/resnet50_bench.cfg")
    names = os.environ.get("WORKLOADS", "infer1,train8").split(",")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    print("machine: %s, %d cpus; model %s; %d threads; %d runs each, alternating"
          % (cpu, os.cpu_count(), os.path.relpath(model, ROOT), threads, runs))
    for name in names:
        batch, train, steps, warmup = WORKLOADS[name]
        steps = int(os.environ.get("STEPS", steps))
        warmup = int(os.environ.get("WARMUP", warmup))
        a, p, sc = [], [], []
        for _ in range(runs):
            sc.append(host_scaling())
            a.append(run_aspen(aspen, model, batch, train, threads, steps, warmup))
            p.append(run_torch(batch, train, threads, steps, warmup))
        ma, mp = statistics.median(a), statistics.median(p)
        print("%-7s batch %d %-9s aspen %8.1f ms (%6.2f img/s)   PyTorch %8.1f ms (%6.2f img/s)"
              "   time ratio aspen/PyTorch %.2f, speed ratio %.2fx"
              % (name, batch, "train" if train else "inference", ma * 1e3, batch / ma,
                 mp * 1e3, batch / mp, ma / mp, mp / ma))
        print("        runs (ms): aspen %s   PyTorch %s"
              % (" ".join("%.1f" % (v * 1e3) for v in a), " ".join("%.1f" % (v * 1e3) for v in p)))
        print("        host before each pair (2-thread scaling/round trip ns): %s"
              % " ".join("?" if s is None else "%.2f/%.0f" % s for s in sc))


if __name__ == "__main__":
    main()
