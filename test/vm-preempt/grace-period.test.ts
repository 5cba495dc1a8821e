// helmd rewrites or frees a superseded generation's tables only after a kernel grace
// period: every decision that could have read them has returned (helm_sync_programs).
// The hard case is one CPU on a fully preemptible kernel: a decision preempted half-way
// sits on the run queue while helmd runs, and membarrier(GLOBAL), which helmd used
// before, returns at once when one CPU is online. Here a slow LSM decision
// (slow-decision.bpf.c) is caught running half-way, and the grace period must not end
// before it returns. scripts/test-all.sh boots this suite's VM with preempt=full and
// maxcpus=1.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { BpfObject, type BpfMap } from '../../daemon/kernel/bpf';
import { native } from '../../daemon/kernel/native';
import { ROOT, requireBpfLsm } from '../vm/harness';

t.setTimeout(600_000);
const OBJECT = path.join(ROOT, 'build', 'test', 'slow-decision.bpf.o');
const ATTEMPTS = 8;

const key = (k: number) => Buffer.from(Uint32Array.of(k).buffer);
const read = (m: BpfMap, k: number) => m.lookup(key(k), 8)!.readBigUInt64LE(0);
const write = (m: BpfMap, k: number, v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  m.update(key(k), b);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One slow decision: a shell that waits on its stdin, then execs cat, whose first
 * open spins in the chosen task's file_open. Polls until that decision is seen
 * running (started, not returned), then waits for a grace period. Undefined if the
 * decision returned before this process got the CPU to see it half-way.
 */
async function catchHalfWay(times: BpfMap): Promise<{ rc: number; end: bigint; graceEnded: bigint } | undefined> {
  write(times, 1, 0n);
  write(times, 2, 0n);
  const child = spawn('sh', ['-c', 'read _; exec cat /etc/hostname'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    write(times, 0, BigInt(child.pid!));
    child.stdin!.end('\n');
    for (let i = 0; i < 30_000; i++) {
      const start = read(times, 1);
      const end = read(times, 2);
      if (start && end) return undefined;
      if (start) {
        const rc = native().helm_sync_programs();
        return { rc, graceEnded: process.hrtime.bigint(), end: read(times, 2) };
      }
      await sleep(1);
    }
    return undefined;
  } finally {
    write(times, 0, 0n);
    await exited;
  }
}

async function main(): Promise<void> {
  const why = requireBpfLsm();
  if (why) return void t.fail(why);
  t.match(fs.readFileSync('/proc/cmdline', 'utf8'), /\bpreempt=full\b/, 'the kernel runs fully preemptible');
  t.equal(fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim(), '0', 'one CPU is online (else a preempted decision and the waiter never share a CPU)');

  const obj = BpfObject.load(OBJECT);
  t.teardown(() => obj.close());
  obj.attachAll(-1);
  const times = obj.map('times');

  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const caught = await catchHalfWay(times);
    if (!caught) {
      t.comment(`attempt ${attempt}: the decision returned before it was seen half-way; again`);
      continue;
    }
    t.equal(caught.rc, 0, 'the grace period was taken (no fallback to a timed wait)');
    t.not(caught.end, 0n, 'when the grace period ended, the decision that was running had returned');
    t.ok(caught.end !== 0n && caught.end <= caught.graceEnded, 'it returned before the grace period ended', { end: caught.end, graceEnded: caught.graceEnded });
    return;
  }
  t.fail(`in ${ATTEMPTS} attempts the slow decision was never seen running half-way: nothing was proven`);
}

void main();
