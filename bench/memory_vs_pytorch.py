#!/usr/bin/env python3
"""memory_vs_pytorch.py - peak memory and step time of a training step, aspen
against PyTorch 1.13 on the same model, batch and threads, in one run.

Both sides train on synthetic input for a few steps; peak RSS comes from
/usr/bin/time -v (maximum resident set size), step time is the median of the
timed steps. aspen runs once per memory strategy (--recompute none/norm/auto,
and optional micro-batches), so the table shows what each strategy buys.
aspen's own prediction (aspen plan: peak_bytes) is printed beside its measured
RSS: they agree within 10% plus the fixed overhead of the process (binary,
libraries, thread stacks: measure it with --model mlp).

Usage: bench/memory_vs_pytorch.py [--model resnet50] [--batch 32] [--threads 2]
       [--steps 3] [--micro-batch 16] [--no-torch]
"""
import argparse, json, os, re, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASPEN = os.path.join(ROOT, "build", "aspen")

TORCH = r'''
import sys, time, torch, torchvision
name, batch, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
if name == "lenet":
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Conv2d(32, 64, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                            torch.nn.Flatten(), torch.nn.Linear(1024, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 10))
    shape, classes = (batch, 1, 28, 28), 10
elif name == "mlp":
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    shape, classes = (batch, 1, 28, 28), 10
else:
    m = getattr(torchvision.models, name)()
    shape, classes = (batch, 3, 224, 224), 1000
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
x = torch.rand(shape)
y = torch.randint(0, classes, (batch,))
loss_fn = torch.nn.CrossEntropyLoss()
times = []
for i in range(steps + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(m(x), y)
    loss.backward()
    opt.step()
    if i: times.append(time.perf_counter() - t0)
times.sort()
print("STEP", times[len(times) // 2])
'''


def max_rss_kb(stderr):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(m.group(1)) if m else None


def run_aspen(model, batch, threads, steps, extra):
    cmd = ["/usr/bin/time", "-v", ASPEN, "bench", model, "--train", "--batch", str(batch),
           "--threads", str(threads), "--steps", str(steps), "--warmup", "1", "--json"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("aspen bench failed: " + out.stderr.strip()[-400:])
    j = json.loads(out.stdout.strip().splitlines()[-1])
    plan = subprocess.run([ASPEN, "plan", model, "--train", "--batch", str(batch), "--threads",
                           str(threads), "--json"] + extra, capture_output=True, text=True)
    pj = json.loads(plan.stdout.strip().splitlines()[-1])
    return j["step_seconds"], max_rss_kb(out.stderr) * 1024, pj["peak_bytes"], pj["arena_bytes"]


def run_torch(name, batch, threads, steps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_CORETYPE="Cooperlake")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(TORCH)
    out = subprocess.run(["/usr/bin/time", "-v", "/usr/bin/python3", f.name, name, str(batch),
                          str(threads), str(steps)], capture_output=True, text=True, env=env)
    os.unlink(f.name)
    if out.returncode != 0:
        sys.exit("pytorch failed: " + out.stderr.strip()[-400:])
    step = float(re.search(r"STEP ([0-9.e-]+)", out.stdout).group(1))
    return step, max_rss_kb(out.stderr) * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    cfg = os.path.join(ROOT, "models", a.model + ".cfg")
    rows = []
    if not a.no_torch:
        t, rss = run_torch(a.model, a.batch, a.threads, a.steps)
        rows.append(("pytorch 1.13", t, rss, None, None))
    variants = [("aspen none", []), ("aspen norm", ["--recompute", "norm"]),
                ("aspen auto", ["--recompute", "auto"])]
    if a.micro_batch > 1:
        variants.append(("aspen micro-batch %d" % a.micro_batch, ["--micro-batch", str(a.micro_batch)]))
        variants.append(("aspen auto + micro %d" % a.micro_batch,
                         ["--recompute", "auto", "--micro-batch", str(a.micro_batch)]))
    for name, extra in variants:
        t, rss, pred, arena = run_aspen(cfg, a.batch, a.threads, a.steps, extra)
        rows.append((name, t, rss, pred, arena))
    base_t = rows[0][1]
    base_rss = rows[0][2]
    none_t = next(r[1] for r in rows if r[0] == "aspen none")
    none_arena = next(r[4] for r in rows if r[0] == "aspen none")
    print("\n%s training step, batch %d, %d threads (%d timed steps, medians)" % (a.model, a.batch, a.threads, a.steps))
    print("%-24s %9s %9s %12s %12s %10s %9s %9s" % ("", "step s", "vs peer", "peak RSS", "predicted", "arena", "RSS/peer", "t/none"))
    for name, t, rss, pred, arena in rows:
        print("%-24s %9.3f %9.2f %9.0f MiB %9s MiB %7s MiB %9.2f %9.2f" % (
            name, t, t / base_t, rss / 2**20, "%.0f" % (pred / 2**20) if pred else "-",
            "%.0f" % (arena / 2**20) if arena else "-", rss / base_rss, t / none_t))
    if none_arena:
        for name, t, rss, pred, arena in rows:
            if arena:
                print("  %-24s activation arena %.3f of none's" % (name, arena / none_arena))


if __name__ == "__main__":
    main()
