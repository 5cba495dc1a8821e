// Where a test's or the benchmark's helmd pins its enforcement and keeps its
// state: a directory of its own under bpffs and under /run, so that it never
// takes over (or leaves behind) an installed helmd's enforcement, and removed
// — audited, with helmctl uninstall — once that helmd has stopped.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const HELMCTL = path.resolve(__dirname, '..', '..', '..', 'bin', 'helmctl');
let count = 0;

export interface ScratchPins {
  pinDir: string;
  stateDir: string;
  /** helmd's options for them. */
  args: string[];
  /** Unpins (enforcement ends) and removes the state; the removal is a line in `audit`. */
  remove(audit: string): { status: number | null; output: string };
}

export function scratchPins(tag: string): ScratchPins {
  const name = `helm-${tag}-${process.pid}-${count++}`;
  const pinDir = path.join('/sys/fs/bpf', name);
  fs.mkdirSync('/run/helm-test', { recursive: true, mode: 0o700 });
  const stateDir = path.join('/run/helm-test', name);
  return {
    pinDir,
    stateDir,
    args: ['--pin-dir', pinDir, '--state-dir', stateDir],
    remove(audit: string) {
      const r = spawnSync(HELMCTL, ['uninstall', '--pin-dir', pinDir, '--state-dir', stateDir, '--audit-log', audit], { encoding: 'utf8', timeout: 180_000 });
      fs.rmSync(stateDir, { recursive: true, force: true });
      return { status: r.status, output: `${r.stdout}${r.stderr}` };
    },
  };
}
