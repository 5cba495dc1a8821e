// Pinned enforcement on this kernel (which refuses LSM programs but runs cgroup and
// tracing programs): daemon/kernel/pins.ts, driven by child processes that exit
// after each step, on a fixture object with one cgroup/connect4 program and one
// raw_tp program (test/host/pinning.bpf.c). What the programs decide survives the
// process that attached them; a restart adopts without attaching again; a new
// object swaps each link's program; a new layout rebuilds the maps in a new set;
// an agent connecting in a loop meanwhile is refused every single time; unusable
// pinned state is reported and left alone; removing the pins ends enforcement.
import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { BpfMap, linkInfo, openPinned, closeFd } from '../../daemon/kernel/bpf';
import { readPins, removePins } from '../../daemon/kernel/pins';
import { pinnedStateCheck } from '../../daemon/doctor';
import { scratchPins } from '../support/scratch-pins';
import { u32Key } from '../../daemon/kernel/layout';
import { BUILD, REPO, ensureKernelMounts, requireRoot, run, scratchCgroup } from './host';

const HELM_ENTER = path.join(BUILD, 'helm-enter');
const V = (n: number) => path.join(BUILD, 'test', `pinning-v${n}.bpf.o`);
const DIST = path.join(REPO, 'dist');

/** One helmd-like step in its own process: open what is pinned, fill fresh maps, commit, exit. */
const STEP = `
const { PinnedKernel } = require(${JSON.stringify(DIST)} + '/daemon/kernel/pins.js');
const [objectPath, pinDir, cgroupRoot, port] = process.argv.slice(1);
try {
  const k = PinnedKernel.open({ objectPath, pinDir, cgroupRoot, version: 'pin-test' });
  if (k.outcome === 'fresh' || k.outcome === 'rebuilt') {
    const m = k.map('blocked_ports');
    const key = Buffer.alloc(2); key.writeUInt16LE(Number(port));
    const value = Buffer.alloc(m.valueSize); value.writeUInt8(1);
    m.update(key, value);
  }
  const report = k.commit();
  k.close();
  console.log(JSON.stringify({ outcome: k.outcome, report }));
} catch (e) {
  console.log(JSON.stringify({ error: e.name + ': ' + e.message }));
  process.exit(3);
}
`;

interface Step {
  outcome?: string;
  error?: string;
  report?: { attached: string[]; updated: string[]; replaced: string[]; released: string[]; removedSets: string[] };
}

async function step(object: string, pinDir: string, cgroup: string, port: number): Promise<Step> {
  const r = await run(process.execPath, ['-e', STEP, object, pinDir, cgroup, String(port)], { timeoutMs: 120_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Step;
  } catch {
    return { error: `step printed ${JSON.stringify(r.stdout)} / ${r.stderr}` };
  }
}

/** Connects from inside the cgroup in a loop until `stop` exists; counts each outcome. */
const LOOP = `
const net = require('net'); const fs = require('fs');
const [port, stop, ready] = process.argv.slice(1);
const counts = {};
let n = 0;
function once() {
  if (fs.existsSync(stop) && n > 0) { console.log(JSON.stringify({ n, counts })); return; }
  const s = net.connect(Number(port), '127.0.0.1');
  const done = (what) => { counts[what] = (counts[what] || 0) + 1; n++; if (n === 1) fs.writeFileSync(ready, ''); s.destroy(); setImmediate(once); };
  s.once('connect', () => done('connected'));
  s.once('error', (e) => done(e.code));
}
once();
`;

function connectLoop(cgroup: string, port: number, dir: string): { ready: Promise<void>; finish: () => Promise<{ n: number; counts: Record<string, number> }> } {
  const stop = path.join(dir, `stop-${Date.now()}`);
  const ready = `${stop}.ready`;
  const child = spawn(HELM_ENTER, [cgroup, '--', process.execPath, '-e', LOOP, String(port), stop, ready], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    ready: (async () => {
      while (!fs.existsSync(ready) && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    })(),
    finish: async () => {
      fs.writeFileSync(stop, '');
      await exited;
      return JSON.parse(out.trim().split('\n').pop() ?? '{}');
    },
  };
}

/** One connect from inside the cgroup: "connected" or the error code. */
async function connectOnce(cgroup: string, port: number): Promise<string> {
  const js = `const s=require('net').connect(${port},'127.0.0.1');s.once('connect',()=>{console.log('connected');s.destroy()});s.once('error',e=>console.log(e.code))`;
  const r = await run(HELM_ENTER, [cgroup, '--', process.execPath, '-e', js], { timeoutMs: 30_000 });
  return r.stdout.trim();
}

function links(pinDir: string): Record<string, { id: number; progId: number }> {
  const out: Record<string, { id: number; progId: number }> = {};
  const dir = path.join(pinDir, 'current', 'links');
  for (const name of fs.readdirSync(dir)) {
    const fd = openPinned(path.join(dir, name))!;
    try {
      const i = linkInfo(fd);
      out[name] = { id: i.id, progId: i.progId };
    } finally {
      closeFd(fd);
    }
  }
  return out;
}

function hits(pinDir: string): bigint[] {
  const m = BpfMap.pinned(path.join(pinDir, 'current', 'maps', 'hits'), 'hits');
  try {
    return [0, 1, 2, 3].map((i) => m.lookup(u32Key(i), 8)!.readBigUInt64LE(0));
  } finally {
    m.close();
  }
}

/** getppid() calls by this process, as the pinned raw_tp program counts them (hits[2] += its variant). */
function countGetppid(pinDir: string): bigint {
  const target = BpfMap.pinned(path.join(pinDir, 'current', 'maps', 'target'), 'target');
  try {
    target.update(u32Key(0), u32Key(process.pid));
    const before = hits(pinDir)[2];
    void process.ppid; // one getppid() system call
    return hits(pinDir)[2] - before;
  } finally {
    target.close();
  }
}

function listen(): Promise<{ port: number; close: () => void }> {
  return new Promise((resolve) => {
    const server = net.createServer((s) => s.destroy());
    server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as net.AddressInfo).port, close: () => server.close() }));
  });
}

async function main(): Promise<void> {
  ensureKernelMounts();
  for (const v of [1, 2, 3]) if (!fs.existsSync(V(v))) t.fail(`${V(v)} is missing: run make`);
  const pinDir = `/sys/fs/bpf/helm-pin-test-${process.pid}`;
  const cgroup = scratchCgroup(t, 'pin');
  const blocked = await listen();
  const open = await listen();
  fs.mkdirSync(path.join(REPO, '.cache'), { recursive: true }); // a fresh clone has none yet
  const scratch = fs.mkdtempSync(path.join(REPO, '.cache', 'pin-test-'));
  t.teardown(() => {
    removePins(pinDir);
    blocked.close();
    open.close();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  t.test('a fresh set: every map and every link pinned; enforcement outlives the process that attached it', async (t) => {
    const s = await step(V(1), pinDir, cgroup, blocked.port);
    t.equal(s.error, undefined, 'the step ran');
    t.equal(s.outcome, 'fresh');
    t.same(s.report?.attached.sort(), ['pin_connect4', 'pin_getppid'], 'both programs attached');
    const status = readPins(pinDir);
    t.equal(status.current, 'set-1', 'current names set-1');
    t.same(status.maps, ['blocked_ports', 'hits', 'target'], 'every map the object declares is pinned, none of its internal ones');
    t.same(status.links, ['pin_connect4', 'pin_getppid'], 'every program has a pinned link');
    t.equal(status.meta?.state, 1, 'the set is READY');
    t.equal(status.meta?.version, 'pin-test');
    t.equal(await connectOnce(cgroup, blocked.port), 'EPERM', 'the attaching process is gone; the blocked port is still refused');
    t.equal(await connectOnce(cgroup, open.port), 'connected', 'an unlisted port connects');
    t.equal(countGetppid(pinDir), 1n, 'the tracing program runs too (variant 1)');
  });

  t.test('the same object again: adopted, nothing attached a second time', async (t) => {
    const before = links(pinDir);
    const s = await step(V(1), pinDir, cgroup, blocked.port);
    t.equal(s.outcome, 'adopted');
    t.same(s.report, { attached: [], updated: [], replaced: [], released: [], removedSets: [] }, 'no link touched');
    t.same(links(pinDir), before, 'the same links run the same programs');
    t.equal(countGetppid(pinDir), 1n, 'exactly one tracing program runs');
  });

  t.test('a new object, same layout: each link gets the new program, refused every time meanwhile', async (t) => {
    const before = links(pinDir);
    const loop = connectLoop(cgroup, blocked.port, scratch);
    await loop.ready;
    const s = await step(V(2), pinDir, cgroup, blocked.port);
    const seen = await loop.finish();
    t.equal(s.outcome, 'replaced', s.error ?? '');
    t.same(s.report?.updated, ['pin_connect4'], 'the cgroup link was updated in place (BPF_LINK_UPDATE)');
    t.same(s.report?.replaced, ['pin_getppid'], 'the tracing link was replaced: the new one attached before the old one went');
    const after = links(pinDir);
    t.equal(after.pin_connect4.id, before.pin_connect4.id, 'same cgroup link');
    t.not(after.pin_connect4.progId, before.pin_connect4.progId, 'running a new program');
    t.not(after.pin_getppid.id, before.pin_getppid.id, 'a new tracing link');
    t.same(Object.keys(seen.counts), ['EPERM'], `every connect during the swap was refused (${seen.n} attempts: ${JSON.stringify(seen.counts)})`);
    t.ok(seen.n > 1, 'the loop ran across the swap');
    const h = hits(pinDir);
    t.equal(await connectOnce(cgroup, blocked.port), 'EPERM', 'refused afterwards');
    t.ok(hits(pinDir)[1] > h[1], 'decided by variant 2 (it counts in hits[1])');
    t.equal(countGetppid(pinDir), 2n, 'only the new tracing program runs (variant 2 adds 2)');
    t.equal(readPins(pinDir).meta?.state, 1, 'READY again');
  });

  t.test('an interrupted replacement is finished by the next start', async (t) => {
    const meta = BpfMap.pinned(path.join(pinDir, 'current', 'meta'), 'meta');
    const v = meta.lookup(u32Key(0), meta.valueSize)!;
    v.writeUInt32LE(2, 4); // HELM_PIN_CHANGING
    meta.update(u32Key(0), v);
    meta.close();
    const s = await step(V(2), pinDir, cgroup, blocked.port);
    t.equal(s.outcome, 'replaced', 'the same object is not simply adopted while the set is marked CHANGING');
    t.equal(readPins(pinDir).meta?.state, 1, 'READY');
    t.equal(countGetppid(pinDir), 2n, 'one tracing program');
  });

  t.test('a new layout: new maps in a new set, filled, links moved over, refused every time meanwhile', async (t) => {
    const before = links(pinDir);
    const loop = connectLoop(cgroup, blocked.port, scratch);
    await loop.ready;
    const s = await step(V(3), pinDir, cgroup, blocked.port);
    const seen = await loop.finish();
    t.equal(s.outcome, 'rebuilt', s.error ?? '');
    t.same(s.report?.updated, ['pin_connect4'], 'cgroup link updated to the new program on the new maps');
    t.same(s.report?.replaced, ['pin_getppid']);
    t.same(s.report?.removedSets, ['set-1'], 'the old set is gone');
    const status = readPins(pinDir);
    t.equal(status.current, 'set-2');
    t.same(status.leftovers, [], 'no other set left');
    t.equal(links(pinDir).pin_connect4.id, before.pin_connect4.id, 'still the same cgroup link');
    t.same(Object.keys(seen.counts), ['EPERM'], `every connect during the rebuild was refused (${seen.n} attempts)`);
    const h = hits(pinDir);
    t.equal(await connectOnce(cgroup, blocked.port), 'EPERM', 'the new maps hold the blocked port');
    t.ok(hits(pinDir)[3] > h[3], 'decided by variant 3');
    t.equal(countGetppid(pinDir), 3n, 'only the variant 3 tracing program runs');
  });

  t.test('unusable pinned state is reported and left alone, still enforcing', async (t) => {
    const meta = BpfMap.pinned(path.join(pinDir, 'current', 'meta'), 'meta');
    const good = meta.lookup(u32Key(0), meta.valueSize)!;
    const bad = Buffer.from(good);
    bad.writeUInt32LE(99, 0); // a pin format from the future
    meta.update(u32Key(0), bad);
    const before = links(pinDir);
    const s = await step(V(3), pinDir, cgroup, blocked.port);
    t.match(s.error, /PinError: the pinned state is unusable: .*pinned by a newer helm .*format 99.*helmctl uninstall/, 'says why and what to do');
    t.same(links(pinDir), before, 'no link touched');
    t.equal(await connectOnce(cgroup, blocked.port), 'EPERM', 'still enforcing');
    meta.update(u32Key(0), good);
    meta.close();
  });

  t.test('removing the pins ends enforcement', async (t) => {
    removePins(pinDir);
    t.notOk(fs.existsSync(pinDir), 'nothing pinned');
    t.equal(await connectOnce(cgroup, blocked.port), 'connected', 'the blocked port connects again');
  });

  t.test("doctor judges a helmd's pins as that helmd loads them: its rings' sizes, network programs only", async (t) => {
    const pins = scratchPins('doctor');
    const policy = path.join(scratch, 'egress.yaml');
    fs.writeFileSync(policy, 'apiVersion: helm/v1\nkind: Policy\nmetadata: { name: egress }\nspec:\n  roles: [agent]\n  allow:\n    - { connect: ["127.0.0.1:443"] }\n');
    const audit = path.join(scratch, 'doctor.jsonl');
    const args = ['--network-only', '--policy', policy, '--audit-log', audit, '--socket', path.join(scratch, 'doctor.sock'), '--no-watch', '--audit-deny-ring', '1M', '--audit-allow-ring', '64K', ...pins.args];
    t.teardown(() => pins.remove(audit));
    // One helmd run: started, stopped with SIGTERM once enforcing (its pins stay); its log.
    const once = async (): Promise<string> => {
      const child = spawn(path.join(REPO, 'bin', 'helmd'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      const exited = new Promise((r) => child.once('exit', r));
      const deadline = Date.now() + 180_000;
      while (!/helmd enforcing/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      return out;
    };
    t.match(await once(), /helmd pinned new enforcement/, 'the first helmd pins its set');
    const check = pinnedStateCheck(pins.pinDir, path.join(BUILD, 'helm.bpf.o'));
    t.equal(check.ok, true, check.detail);
    t.match(check.detail, /the installed helmd re-adopts it as it is \(started with --audit-deny-ring 1048576 --audit-allow-ring 65536;/, check.detail);
    t.match(await once(), /helmd re-adopted the pinned enforcement/, 'and a helmd started the same way does re-adopt it');
  });
}

if (requireRoot()) void main();
