#!/usr/bin/env python3
"""depth_under_budget.py - the deepest plain ResNet-style network (CIFAR ResNet-6n+2,
models/resnet20_cifar.cfg with n blocks per stage) whose training step at batch 32
fits a memory budget (default 2 GiB), under three memory strategies:

  naive      every tensor its own buffer (aspen plan --naive)
  planned    liveness, in place, one arena (aspen plan)
  all        planned + recomputation (sqrt(n) segments) + micro-batches of 1

The figure is aspen's predicted peak (aspen plan --json: peak_bytes = arena +
parameters and optimizer state + I/O + scratch); tests/test_memplan.c and
bench/memory_vs_pytorch.py check predictions against measured RSS.
Usage: bench/depth_under_budget.py [--budget GiB] [--max-n N]
"""
import argparse, json, os, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASPEN = os.path.join(ROOT, "build", "aspen")
TEMPLATE = open(os.path.join(ROOT, "models", "resnet20_cifar.cfg")).read()

MODES = {
    "naive": ["--naive"],
    "planned": [],
    "all": ["--recompute", "all", "--micro-batch", "32"],
}


def cfg(n):
    s = TEMPLATE.replace("name=layer1\ncount=3", "name=layer1\ncount=%d" % n)
    s = s.replace("start=1\ncount=2", "start=1\ncount=%d" % (n - 1))
    assert s.count("count=%d" % (n - 1)) == 2 or n == 3
    return s


def peak(n, mode, tmp):
    path = os.path.join(tmp, "resnet%d.cfg" % (6 * n + 2))
    with open(path, "w") as f:
        f.write(cfg(n))
    t0 = time.time()
    out = subprocess.run([ASPEN, "plan", path, "--train", "--batch", "32", "--threads", "2",
                          "--json"] + MODES[mode], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("aspen plan failed: " + out.stderr.strip())
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["peak_bytes"], time.time() - t0


def deepest(mode, budget, max_n, tmp):
    lo, hi = 1, 2  # n >= 2: the generated stages need one block after the first
    while hi <= max_n:
        p, secs = peak(hi, mode, tmp)
        print("  %-8s n=%-5d depth %-6d peak %8.1f MiB  (plan %.1f s)" % (mode, hi, 6 * hi + 2, p / 2**20, secs), flush=True)
        if p > budget:
            break
        lo, hi = hi, hi * 2
    else:
        return lo, True  # capped
    while hi - lo > 1:
        mid = (lo + hi) // 2
        p, _ = peak(mid, mode, tmp)
        if p <= budget:
            lo = mid
        else:
            hi = mid
    return lo, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=2.0, help="GiB")
    ap.add_argument("--max-n", type=int, default=512, help="largest n tried (depth 6n+2)")
    a = ap.parse_args()
    budget = int(a.budget * 2**30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            n, capped = deepest(mode, budget, a.max_n, tmp)
            rows.append((mode, n, 6 * n + 2 if n else 0, capped))
    print("\ndeepest CIFAR ResNet (6n+2 layers) whose batch-32 training step fits %.1f GiB:" % a.budget)
    print("  %-8s %6s %8s" % ("mode", "n", "layers"))
    for mode, n, depth, capped in rows:
        print("  %-8s %6d %8d%s" % (mode, n, depth, "  (search capped: fits at the cap)" if capped else ""))
    base = rows[0][2] or 1
    print("ratio all/naive: %.1fx" % (rows[-1][2] / base))


if __name__ == "__main__":
    main()
