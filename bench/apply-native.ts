#!/usr/bin/env node
// Policy apply-to-live on this machine's kernel alone: the "apply" rows of make
// bench (bench/native.ts applyToLive), without the rest of the native half.
// For working on apply speed; make bench remains the published figure.
//   node dist/bench/apply-native.js [--smoke] [--scale F]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { applyToLive } from './native';
import { formatNs } from './stats';

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('must run as root (BPF maps)');
  const root = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'helm-apply-'));
  const data = path.join(root, 'data');
  fs.mkdirSync(data);
  try {
    const rows = await applyToLive(root, data, process.argv.includes('--smoke'));
    for (const r of rows) {
      const cell = r.time ? `${formatNs(r.time.median)} · p99 ${formatNs(r.time.p99)} (n=${r.time.n})` : `could not run: ${r.couldNotRun}`;
      process.stdout.write(`${r.op.padEnd(12)} ${r.variant.padEnd(10)} ${cell}${r.note ? ` (${r.note})` : ''}\n`);
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`apply-native: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
