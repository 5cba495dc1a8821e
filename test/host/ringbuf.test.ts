// Ring-buffer draining on the host kernel, through build/selftest.bpf.o: a raw_tp/sys_enter
// program that reports each getppid() of one target process through the same event layout
// and ring-buffer path helmd uses. Every triggered event is either drained or counted as lost.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import { BpfObject, RingReader, readPerCpuCounter, type BpfMap } from '../../daemon/kernel/bpf';
import { C, LAYOUT, decodeEvent, u32Key, type RawEvent } from '../../daemon/kernel/layout';
import { native } from '../../daemon/kernel/native';
import { BUILD, ensureKernelMounts, requireRoot, v2Mount, type Scope } from './host';

const SELFTEST = path.join(BUILD, 'selftest.bpf.o');
const RING_BYTES = 64 * 1024; // bpf/selftest.bpf.c: events
const RECORD = LAYOUT.helm_event.size;
/** Bytes a record takes in the ring: an 8-byte header, the event, padded to 8. */
const SLOT = 8 + ((RECORD + 7) & ~7);
/** The most records the ring can hold at once (the kernel keeps one byte free). */
const CAPACITY = Math.floor((RING_BYTES - 1) / SLOT);

interface Selftest {
  obj: BpfObject;
  events: BpfMap;
  lost: BpfMap;
  /** Reports this process's getppid() calls from now on. */
  target(pid: number): void;
}

function loadSelftest(scope: Scope): Selftest {
  const obj = BpfObject.load(SELFTEST);
  scope.teardown(() => obj.close());
  const links = obj.attachAll(-1);
  if (links !== 1) throw new Error(`expected 1 attached program, got ${links}`);
  const targetMap = obj.map('selftest_target');
  return {
    obj,
    events: obj.map('events'),
    lost: obj.map('lost_events'),
    target: (pid) => {
      const v = Buffer.alloc(4);
      v.writeUInt32LE(pid);
      targetMap.update(u32Key(0), v);
    },
  };
}

/** One getppid() system call from this process, by the means proven to make one. */
let getppid: () => number = () => process.ppid;
let triggerName = 'process.ppid';
function trigger(n: number): void {
  for (let i = 0; i < n; i++) getppid();
}

/** Every record currently in the ring, drained call by call. */
function drainAll(reader: RingReader, into: DataView[] = []): { records: DataView[]; calls: number[] } {
  const calls: number[] = [];
  for (;;) {
    const n = reader.drainOnce((r) => into.push(copy(r)));
    if (n === 0) break;
    calls.push(n);
  }
  return { records: into, calls };
}

/** The reader's buffer is reused by the next drain: keep a copy. */
function copy(v: DataView): DataView {
  const b = Buffer.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** This process's cgroup v2 id: the inode of its directory in the v2 hierarchy. */
function ownCgroupId(): bigint {
  const line = fs
    .readFileSync('/proc/self/cgroup', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  if (!line) throw new Error('no cgroup v2 line in /proc/self/cgroup');
  return fs.statSync(path.join(v2Mount(), line.slice(3)), { bigint: true }).ino;
}

const comm = fs.readFileSync(`/proc/${process.pid}/task/${process.pid}/comm`, 'utf8').trim();

/** Checks that records are exactly `n` selftest events of this process, in time order. */
function checkEvents(t: tap.Test, records: DataView[], n: number, window?: { fromNs: bigint; toNs: bigint }): RawEvent[] {
  t.equal(records.length, n, `${n} records`);
  const sizes = new Set(records.map((r) => r.byteLength));
  t.same([...sizes], n ? [RECORD] : [], `every record is ${RECORD} bytes (the layout of helm.h)`);
  const events = records.map(decodeEvent);
  const bad = events.filter((e) => e.type !== C.HELM_EVENT_SELFTEST || e.pid !== process.pid || e.tid !== process.pid || e.comm !== comm);
  t.same(bad.slice(0, 3), [], `all of type HELM_EVENT_SELFTEST from pid ${process.pid}, comm ${comm}`);
  let ordered = true;
  for (let i = 1; i < events.length; i++) if (events[i].tsBootNs < events[i - 1].tsBootNs) ordered = false;
  t.ok(ordered, 'timestamps never decrease');
  if (window && events.length) {
    const offset = BigInt(native().helm_realtime_offset_ns());
    const first = events[0].tsBootNs + offset;
    const last = events[events.length - 1].tsBootNs + offset;
    const slack = 50_000_000n; // 50 ms for clock reads at either end
    t.ok(first >= window.fromNs - slack && last <= window.toNs + slack, 'timestamps are boot-clock times of the calls');
  }
  return events;
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

function main(): void {
  ensureKernelMounts();

  t.test('each trigger is one getppid system call, seen by the program', async (t) => {
    const st = loadSelftest(t);
    const reader = new RingReader(st.events, RECORD);
    t.teardown(() => reader.close());
    st.target(process.pid);
    t.equal(drainAll(reader).records.length, 0, 'nothing before the first call');

    trigger(1);
    let got = drainAll(reader).records.length;
    if (got !== 1) {
      // Node answered from a cache: call libc's getppid() directly.
      t.comment(`process.ppid made ${got} system calls; using libc getppid() through koffi`);
      const libc = koffi.load('libc.so.6');
      getppid = libc.func('int getppid(void)') as () => number;
      triggerName = 'libc getppid()';
      trigger(1);
      got = drainAll(reader).records.length;
    }
    t.equal(got, 1, `one ${triggerName} is one event`);
    trigger(5);
    t.equal(drainAll(reader).records.length, 5, `five ${triggerName} are five events`);
    t.equal(getppid(), process.ppid, 'and it answers our parent');
    drainAll(reader);

    st.target(process.pid + 1_000_000); // not us
    trigger(5);
    t.equal(drainAll(reader).records.length, 0, 'another target sees none of our calls');
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');
  });

  t.test('N calls give exactly N events with our pid, comm, cgroup and times', async (t) => {
    const st = loadSelftest(t);
    const reader = new RingReader(st.events, RECORD);
    t.teardown(() => reader.close());
    const N = Math.min(100, CAPACITY - 1);
    const fromNs = nowNs();
    st.target(process.pid);
    trigger(N);
    const toNs = nowNs();
    const { records } = drainAll(reader);
    const events = checkEvents(t, records, N, { fromNs, toNs });
    const cg = ownCgroupId();
    t.ok(events.every((e) => e.cgroupId === cg), `cgroup id is our cgroup's inode (${cg})`);
    t.ok(events.every((e) => e.uid === process.getuid!()), 'uid');
    t.ok(events.every((e) => e.pathLen === -1 && e.path === undefined), 'no path');
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');
  });

  t.test('overflow: drained + lost equals triggered, exactly', async (t) => {
    const st = loadSelftest(t);
    const reader = new RingReader(st.events, RECORD);
    t.teardown(() => reader.close());
    const M = CAPACITY * 20;
    st.target(process.pid);
    trigger(M); // no draining meanwhile: the ring fills after CAPACITY records
    const { records } = drainAll(reader);
    const lost = readPerCpuCounter(st.lost);
    t.comment(`triggered ${M}, drained ${records.length}, lost ${lost} (ring of ${RING_BYTES} bytes, ${SLOT} bytes a record)`);
    t.equal(BigInt(records.length) + lost, BigInt(M), 'drained + lost == triggered');
    t.ok(lost > 0n, 'the overflow was counted');
    t.ok(records.length > 0 && records.length <= CAPACITY, `the ring held at most ${CAPACITY}`);
    checkEvents(t, records, records.length);

    // Drained, the ring takes records again and the counter does not move.
    trigger(10);
    t.equal(drainAll(reader).records.length, 10, 'after draining, new calls are delivered');
    t.equal(readPerCpuCounter(st.lost), lost, 'the lost counter did not move');
  });

  t.test('a small caller buffer drains every record over several calls', async (t) => {
    const st = loadSelftest(t);
    const perCall = 3;
    const small = new RingReader(st.events, RECORD, perCall * (RECORD + 8));
    t.teardown(() => small.close());
    const N = Math.min(50, CAPACITY - 1);
    st.target(process.pid);

    // Smaller than one record: refused, and nothing is consumed.
    const tiny = new RingReader(st.events, RECORD, RECORD);
    t.teardown(() => tiny.close());
    trigger(N);
    t.throws(() => tiny.drainOnce(() => undefined), { name: 'KernelError', errno: 22 }, 'a buffer that cannot hold one record is refused');

    const { records, calls } = drainAll(small);
    t.same(
      calls,
      Array.from({ length: Math.ceil(N / perCall) }, (_, i) => Math.min(perCall, N - i * perCall)),
      `${perCall} records a call until the last (${calls.length} calls)`,
    );
    checkEvents(t, records, N);
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');
  });

  t.test('start/stop: the async drain delivers every record, without blocking the event loop', async (t) => {
    const st = loadSelftest(t);
    const reader = new RingReader(st.events, RECORD);
    t.teardown(() => reader.close());
    const got: DataView[] = [];
    const errors: Error[] = [];
    st.target(process.pid);
    const pollMs = 1000;
    reader.start((r) => got.push(copy(r)), (e) => errors.push(e), { pollMs });

    // The drain waits on koffi's worker thread: timers still run meanwhile.
    await new Promise((r) => setTimeout(r, 50));
    const before = Date.now();
    await new Promise((r) => setTimeout(r, 10));
    t.ok(Date.now() - before < pollMs / 2, 'a 10 ms timer fires while the drain waits');

    let triggered = 0;
    const batch = Math.floor(CAPACITY / 2);
    for (let round = 0; round < 5; round++) {
      trigger(batch);
      triggered += batch;
      const deadline = Date.now() + 5000;
      while (got.length < triggered && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      t.equal(got.length, triggered, `round ${round + 1}: delivered while running`);
    }
    trigger(batch); // still in the ring when stop() is called
    triggered += batch;
    await reader.stop((r) => got.push(copy(r)));
    checkEvents(t, got, triggered);
    t.same(errors, [], 'no drain errors');
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');

    trigger(3);
    await new Promise((r) => setTimeout(r, 50));
    t.equal(got.length, triggered, 'after stop() nothing more is delivered');
    t.equal(drainAll(reader).records.length, 3, 'the records wait in the ring');
  });

  t.test('start: a backlog many drains long is delivered whole and in order, drain after drain without waiting', async (t) => {
    const st = loadSelftest(t);
    // Three records a drain: the backlog takes hundreds of drains, all but the first made
    // on the event loop while records keep coming (RingReader's busy path).
    const reader = new RingReader(st.events, RECORD, 3 * SLOT + 8);
    t.teardown(() => reader.close());
    st.target(process.pid);
    const n = Math.floor(CAPACITY / 2);
    trigger(n);
    const got: DataView[] = [];
    const errors: Error[] = [];
    const t0 = Date.now();
    reader.start((r) => got.push(copy(r)), (e) => errors.push(e), { pollMs: 1000 });
    const deadline = Date.now() + 20_000;
    while (got.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    t.ok(Date.now() - t0 < 20_000, `${Math.ceil(n / 3)} drains took ${Date.now() - t0} ms: none waited out its poll`);
    await reader.stop((r) => got.push(copy(r)));
    const events = checkEvents(t, got, n);
    t.ok(events.every((e, i) => i === 0 || e.tsBootNs >= events[i - 1].tsBootNs), 'in the order they were made');
    t.same(errors, [], 'no drain errors');
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');
  });

  t.test('records that wrap around the end of the ring arrive whole (the data is mapped once, a wrapping record copied in two pieces)', async (t) => {
    const st = loadSelftest(t);
    st.target(process.pid);
    const reader = new RingReader(st.events, RECORD);
    t.teardown(() => reader.close());
    const rounds = 4;
    const per = CAPACITY - 1;
    let straddling = 0;
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < per; i++) {
        const at = (round * per + i) * SLOT; // a fresh ring starts at position 0
        if (Math.floor(at / RING_BYTES) !== Math.floor((at + SLOT - 1) / RING_BYTES)) straddling++;
      }
      trigger(per);
      const { records } = drainAll(reader);
      checkEvents(t, records, per);
    }
    t.ok(straddling >= rounds - 1, `${straddling} records crossed the end of the ring`);
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');
  });

  t.test('start: the next batch is drained while the one before is being written; each is given back once written, in order', async (t) => {
    const st = loadSelftest(t);
    st.target(process.pid);
    const reader = new RingReader(st.events, RECORD, 4 * SLOT); // four records a drain
    t.teardown(() => reader.close());
    const got: DataView[] = [];
    const written: (() => void)[] = [];
    trigger(8);
    reader.start(
      (r) => got.push(copy(r)),
      (e) => t.fail(e.message),
      { pollMs: 20, onBatch: () => new Promise<void>((resolve) => written.push(resolve)) },
    );
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
    };
    await until(() => got.length === 8);
    t.equal(got.length, 8, 'both batches delivered while the first is not yet written');
    t.equal(written.length, 2, 'two batches handed over');
    t.equal(reader.pendingBytes(), BigInt(8 * SLOT), 'none given back yet');
    written[1]();
    await new Promise((r) => setTimeout(r, 50));
    t.equal(reader.pendingBytes(), BigInt(8 * SLOT), 'the second written first: still nothing given back (in order)');
    written[0]();
    await until(() => reader.pendingBytes() === 0n);
    t.equal(reader.pendingBytes(), 0n, 'both given back once the first is written too');
    await reader.stop((r) => got.push(copy(r)));
    checkEvents(t, got, 8);
  });

  t.test('commit_to gives back only what was drained before a position, and never moves back', async (t) => {
    const st = loadSelftest(t);
    st.target(process.pid);
    const err = Buffer.alloc(4096);
    const ring = native().helm_ring_open(st.events.fd, RECORD, err, err.length);
    t.teardown(() => native().helm_ring_close(ring));
    const buf = Buffer.alloc(1 << 16);
    trigger(3);
    t.equal(native().helm_ring_drain(ring, buf, buf.length, 0), 3 * SLOT, 'three drained');
    const first = native().helm_ring_position(ring);
    trigger(2);
    t.equal(native().helm_ring_drain(ring, buf, buf.length, 0), 2 * SLOT, 'two more drained');
    const second = native().helm_ring_position(ring);
    t.equal(BigInt(native().helm_ring_pending(ring)), BigInt(5 * SLOT), 'nothing committed yet');
    native().helm_ring_commit_to(ring, first);
    t.equal(BigInt(native().helm_ring_pending(ring)), BigInt(2 * SLOT), 'the first three given back, the two after them not');
    native().helm_ring_commit_to(ring, second);
    t.equal(BigInt(native().helm_ring_pending(ring)), 0n, 'then the rest');
    native().helm_ring_commit_to(ring, first);
    t.equal(BigInt(native().helm_ring_pending(ring)), 0n, 'an older position does not move it back');
  });

  t.test('a reader that dies before committing leaves its records for the next reader', async (t) => {
    const st = loadSelftest(t);
    st.target(process.pid);
    trigger(5);
    // The first reader copies the records out and is "killed" before it commits.
    const err = Buffer.alloc(4096);
    const first = native().helm_ring_open(st.events.fd, RECORD, err, err.length);
    t.ok(first, 'opened');
    const buf = Buffer.alloc(1 << 16);
    const bytes = native().helm_ring_drain(first, buf, buf.length, 0);
    t.equal(bytes, 5 * SLOT, 'it copied all five');
    native().helm_ring_close(first);

    const next = new RingReader(st.events, RECORD);
    t.teardown(() => next.close());
    t.equal(next.pendingBytes(), BigInt(5 * SLOT), 'the kernel still counts them as unread');
    const { records } = drainAll(next);
    checkEvents(t, records, 5);
    t.equal(next.pendingBytes(), 0n, 'committed once delivered');
    t.equal(readPerCpuCounter(st.lost), 0n, 'nothing lost');

    // Committed records are not delivered again.
    const again = new RingReader(st.events, RECORD);
    t.teardown(() => again.close());
    t.equal(drainAll(again).records.length, 0, 'a third reader gets nothing twice');
  });
}

if (requireRoot()) main();
