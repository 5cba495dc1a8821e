// Ring-buffer events and audit records: decodeEvent (daemon/kernel/layout.ts) against events encoded
// here from the LAYOUT offsets, toAuditRecord / rfc3339Nanos (daemon/audit/record.ts) against
// POLICY.md's audit line, and kernelDev's st_dev conversion.

import t from 'tap';
import * as fs from 'fs';
import { C, EventDecoder, LAYOUT, decodeEvent, kernelDev, type RawEvent } from '../../daemon/kernel/layout';
import { HELM_PATH_BUF } from '../../daemon/kernel/limits';
import { FormattedLine, LineArena, LineRun, formatDecision, rfc3339Nanos, toAuditRecord, type AuditContext } from '../../daemon/audit/record';
import { AuditTrail } from '../../daemon/audit/writer';
import { verifyChain } from '../../daemon/audit/chain';
import { trailOptions } from '../audit-fixtures';
import os from 'node:os';
import path from 'node:path';
import { BatchFormatter, nativeFormatter } from '../../daemon/audit/format-batch';
import { Rng } from '../rng';

// ---------------------------------------------------------------------------------------------
// An encoder for struct helm_event, written from LAYOUT's offsets

type Kind = 'u64' | 'u32' | 'i32' | 'u16' | 'u8' | 'str' | 'bytes' | 'strs' | 'len';
const KIND_SIZE: Record<Exclude<Kind, 'str' | 'bytes' | 'strs' | 'len'>, number> = { u64: 8, u32: 4, i32: 4, u16: 2, u8: 1 };

/** Every field of struct helm_event: the RawEvent property it decodes to, and its C type. */
const EVENT_FIELDS: Record<string, [keyof RawEvent, Kind]> = {
  ts_boot_ns: ['tsBootNs', 'u64'],
  cgroup_id: ['cgroupId', 'u64'],
  agent_id: ['agentId', 'u64'],
  ino: ['ino', 'u64'],
  type: ['type', 'u32'],
  pid: ['pid', 'u32'],
  tid: ['tid', 'u32'],
  ppid: ['ppid', 'u32'],
  uid: ['uid', 'u32'],
  gid: ['gid', 'u32'],
  role_id: ['roleId', 'u32'],
  generation: ['generation', 'u32'],
  dev: ['dev', 'u32'],
  policy_id: ['policyId', 'u16'],
  rule_id: ['ruleId', 'u16'],
  op: ['op', 'u8'],
  decision: ['decision', 'u8'],
  mode: ['mode', 'u8'],
  reason: ['reason', 'u8'],
  flags: ['flags', 'u32'],
  detail: ['detail', 'u32'],
  target_pid: ['targetPid', 'u32'],
  addr: ['addr', 'bytes'],
  port: ['port', 'u16'],
  proto: ['proto', 'u8'],
  family: ['family', 'u8'],
  path_len: ['pathLen', 'i32'],
  exe_len: ['exeLen', 'i32'],
  comm: ['comm', 'str'],
  path: ['path', 'str'],
  exe: ['exe', 'str'],
  ops: ['ops', 'u32'],
  argc: ['argc', 'i32'],
  argv_len: ['argv', 'len'], // the bytes argv's strings take, NUL-terminated
  parent_exe_len: ['parentExeLen', 'i32'],
  parent_exe: ['parentExe', 'str'],
  argv: ['argv', 'strs'],
};

/**
 * The event as the kernel would have written it. Strings are copied as UTF-8 whatever *_len says
 * (so a test can check that a negative length hides them); `undefined` leaves the bytes zero.
 */
function encodeEvent(e: RawEvent): Buffer {
  const buf = Buffer.alloc(LAYOUT.helm_event.size);
  const fields: Record<string, readonly [number, number]> = LAYOUT.helm_event.fields;
  for (const [name, [offset, size]] of Object.entries(fields)) {
    const [prop, kind] = EVENT_FIELDS[name];
    const v = e[prop];
    switch (kind) {
      case 'u64': buf.writeBigUInt64LE(v as bigint, offset); break;
      case 'u32': buf.writeUInt32LE(v as number, offset); break;
      case 'i32': buf.writeInt32LE(v as number, offset); break;
      case 'u16': buf.writeUInt16LE(v as number, offset); break;
      case 'u8': buf.writeUInt8(v as number, offset); break;
      case 'bytes':
        (v as Buffer).copy(buf, offset, 0, size);
        break;
      case 'str': {
        const bytes = Buffer.from((v as string | undefined) ?? '', 'utf8');
        if (bytes.length > size) throw new Error(`${name}: ${bytes.length} bytes do not fit in ${size}`);
        bytes.copy(buf, offset);
        break;
      }
      case 'strs': {
        const bytes = argvBytes(v as string[] | undefined);
        bytes.copy(buf, offset, 0, Math.min(size, bytes.length));
        break;
      }
      case 'len':
        buf.writeUInt32LE(Math.min(argvBytes(v as string[] | undefined).length, C.HELM_ARGV_BUF), offset);
        break;
    }
  }
  return buf;
}

function argvBytes(argv: string[] | undefined): Buffer {
  return Buffer.concat((argv ?? []).map((a) => Buffer.from(`${a}\0`, 'utf8')));
}

const view = (b: Buffer): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const cLen = (s: string): number => Buffer.byteLength(s, 'utf8') + 1; // bytes including the NUL

/** Every field distinct and non-zero, at the edges of its type where it matters. */
function sampleEvent(): RawEvent {
  const p = '/srv/agent/out/report.csv';
  const exe = '/usr/bin/python3.12';
  return {
    tsBootNs: 0xfedcba9876543210n, // above 2^63: read unsigned
    cgroupId: 0xffffffffffffffffn,
    agentId: 42n,
    ino: 0x123456789abcdefn,
    type: C.HELM_EVENT_DECISION,
    pid: 0xfffffffe, // above 2^31: read unsigned
    tid: 4242,
    ppid: 1,
    uid: 0xffffffff,
    gid: 1001,
    roleId: 7,
    generation: 0x80000001,
    dev: 0xfff00001,
    policyId: 0xfffe,
    ruleId: 0x1234,
    op: C.HELM_OP_EXEC,
    decision: C.HELM_DECISION_WOULD_DENY,
    mode: C.HELM_MODE_DRY_RUN,
    reason: C.HELM_REASON_INODE_RULE,
    flags: C.HELM_EVENT_FLAG_DIR,
    detail: C.HELM_DETAIL_RENAME_TO,
    targetPid: 0xfffffff0,
    addr: Buffer.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe]),
    port: 0xfffe,
    proto: 17,
    family: 10,
    pathLen: cLen(p),
    exeLen: cLen(exe),
    comm: 'python3.12-work', // 15 characters: comm[16] with its NUL
    path: p,
    exe,
    ops: (1 << C.HELM_OP_EXEC) | (1 << C.HELM_OP_READ),
    argc: 3,
    argv: ['python3', '-c', 'print("ü")'],
    parentExeLen: cLen('/usr/bin/bash'),
    parentExe: '/usr/bin/bash',
  };
}

// ---------------------------------------------------------------------------------------------
// decodeEvent

t.test('the test encoder covers every field of struct helm_event', async (t) => {
  const inLayout = Object.keys(LAYOUT.helm_event.fields);
  t.same(inLayout.filter((f) => !(f in EVENT_FIELDS)), [], 'fields in LAYOUT that this test does not encode (update EVENT_FIELDS)');
  t.same(Object.keys(EVENT_FIELDS).filter((f) => !inLayout.includes(f)), [], 'fields this test encodes that LAYOUT lacks');
  const fields: Record<string, readonly [number, number]> = LAYOUT.helm_event.fields;
  for (const [name, [, kind]] of Object.entries(EVENT_FIELDS)) {
    if (!fields[name] || kind === 'str' || kind === 'bytes' || kind === 'strs') continue;
    t.equal(fields[name][1], kind === 'len' ? 4 : KIND_SIZE[kind], `${name} is a ${kind === 'len' ? 'u32' : kind}`);
  }
  t.same(Object.keys(sampleEvent()).sort(), [...new Set(Object.values(EVENT_FIELDS).map(([p]) => p))].sort(), 'every RawEvent property comes from a field');
});

t.test('every field round-trips', async (t) => {
  const e = sampleEvent();
  t.same(decodeEvent(view(encodeEvent(e))), e);
});

t.test('an event inside a larger buffer (a ring-buffer record) decodes from its own offset', async (t) => {
  const e = sampleEvent();
  const ring = Buffer.alloc(LAYOUT.helm_event.size + 24, 0xaa);
  encodeEvent(e).copy(ring, 8);
  t.same(decodeEvent(new DataView(ring.buffer, ring.byteOffset + 8, LAYOUT.helm_event.size)), e);
});

t.test('a record shorter than the struct is refused', async (t) => {
  const short = encodeEvent(sampleEvent()).subarray(0, LAYOUT.helm_event.size - 1);
  t.throws(() => decodeEvent(view(short)), RangeError);
});

t.test('paths at the size limit', async (t) => {
  const longest = '/' + 'p'.repeat(HELM_PATH_BUF - 2); // HELM_PATH_BUF - 1 bytes, then the NUL
  t.equal(Buffer.byteLength(longest), HELM_PATH_BUF - 1);
  const e = { ...sampleEvent(), path: longest, pathLen: HELM_PATH_BUF, exe: longest.replace('/p', '/x'), exeLen: HELM_PATH_BUF };
  const d = decodeEvent(view(encodeEvent(e)));
  t.equal(d.path, longest, 'path of HELM_PATH_BUF-1 bytes');
  t.equal(d.exe, e.exe, 'exe of HELM_PATH_BUF-1 bytes');
  t.equal(d.comm, e.comm, 'the fields after path are not disturbed');

  // A buffer filled to the last byte (no NUL) stops at the end of the field, not in the next one.
  const full = '/' + 'q'.repeat(HELM_PATH_BUF - 1);
  const f = decodeEvent(view(encodeEvent({ ...sampleEvent(), path: full, pathLen: HELM_PATH_BUF, exe: '/x', exeLen: 3 })));
  t.equal(f.path, full, 'a path without NUL is cut at HELM_PATH_BUF bytes');
  t.equal(f.exe, '/x');
});

t.test('an empty or negative path_len means no path (and likewise exe_len)', async (t) => {
  for (const len of [0, -1, -2, -36]) {
    const d = decodeEvent(view(encodeEvent({ ...sampleEvent(), path: '/stale/bytes', pathLen: len, exe: '/stale/exe', exeLen: len })));
    t.equal(d.path, undefined, `path_len ${len}`);
    t.equal(d.pathLen, len, `path_len ${len} is read signed`);
    t.equal(d.exe, undefined, `exe_len ${len}`);
    t.equal(d.exeLen, len, `exe_len ${len} is read signed`);
  }
});

t.test('non-ASCII paths are UTF-8', async (t) => {
  const p = '/srv/données/日本語/🙂 x.txt';
  const d = decodeEvent(view(encodeEvent({ ...sampleEvent(), path: p, pathLen: cLen(p) })));
  t.equal(d.path, p);
  t.equal(Buffer.byteLength(p) + 1, d.pathLen);
});

t.test('exec arguments: as many as the kernel read, the last one possibly cut short', async (t) => {
  const none = decodeEvent(view(encodeEvent({ ...sampleEvent(), argc: 0, argv: undefined })));
  t.equal(none.argv, undefined, 'argc 0: no argv');
  const failed = decodeEvent(view(encodeEvent({ ...sampleEvent(), argc: -14, argv: undefined })));
  t.equal(failed.argv, undefined, 'a negative argc (the read failed): no argv');
  t.equal(failed.argc, -14, 'argc is read signed');
  // The kernel stops at HELM_ARGV_BUF bytes: the last string has no NUL of its own.
  const long = ['sh', '-c', 'x'.repeat(C.HELM_ARGV_BUF)];
  const buf = encodeEvent({ ...sampleEvent(), argc: 3, argv: undefined });
  const bytes = argvBytes(long).subarray(0, C.HELM_ARGV_BUF);
  bytes.copy(buf, LAYOUT.helm_event.fields.argv[0]);
  buf.writeUInt32LE(C.HELM_ARGV_BUF, LAYOUT.helm_event.fields.argv_len[0]);
  const cut = decodeEvent(view(buf));
  t.same(cut.argv, ['sh', '-c', 'x'.repeat(C.HELM_ARGV_BUF - 6)], 'the cut argument ends at the buffer, not in the next field');
  // argv_len beyond the buffer (it never is) is clamped to it
  buf.writeUInt32LE(0xffffffff, LAYOUT.helm_event.fields.argv_len[0]);
  t.same(decodeEvent(view(buf)).argv, cut.argv, 'argv_len is clamped to the field');
});

// ---------------------------------------------------------------------------------------------
// rfc3339Nanos

t.test('rfc3339Nanos: exact values', async (t) => {
  const cases: [bigint, string][] = [
    [0n, '1970-01-01T00:00:00.000000000Z'],
    [1n, '1970-01-01T00:00:00.000000001Z'],
    [999_999_999n, '1970-01-01T00:00:00.999999999Z'],
    [1_000_000_000n, '1970-01-01T00:00:01.000000000Z'],
    [1_700_000_000_123_456_789n, '2023-11-14T22:13:20.123456789Z'],
    [1_709_251_199_999_999_999n, '2024-02-29T23:59:59.999999999Z'],
    [2_147_483_648_000_000_001n, '2038-01-19T03:14:08.000000001Z'],
    [253_402_300_799_999_999_999n, '9999-12-31T23:59:59.999999999Z'],
  ];
  for (const [ns, want] of cases) t.equal(rfc3339Nanos(ns), want, `${ns}`);
});

// ---------------------------------------------------------------------------------------------
// toAuditRecord

const CGROUP = '/sys/fs/cgroup/helm/agent-1';
const ctx: AuditContext = {
  roleName: (id) => (id === 7 ? 'payments' : null),
  agent: (id) => (id === 42n ? { name: 'agent-1', cgroupPath: CGROUP, labels: { team: 'payments', ticket: 'PAY-1' } } : undefined),
  generation: (g) =>
    g === 3
      ? {
          policies: [
            { name: 'base', mode: 'enforce' },
            { name: 'trial', mode: 'dry-run' },
          ],
          rules: [
            { policy: 'base', rule: 'system' },
            { policy: 'base', rule: 'secrets' },
            { policy: 'trial', rule: 'no-home' },
          ],
        }
      : undefined,
};

/** A deny of a write to /etc/shadow by rule 2 (base/secrets) of generation 3. */
function denyEvent(over: Partial<RawEvent> = {}): RawEvent {
  return {
    ...sampleEvent(),
    tsBootNs: 5_000_000_123n,
    cgroupId: 0xffffffffffffffffn,
    pid: 1234,
    tid: 1235,
    ppid: 1000,
    uid: 1001,
    gid: 1002,
    generation: 3,
    dev: (8 << 20) | 1,
    ino: 2n ** 60n + 1n,
    policyId: 1,
    ruleId: 2,
    op: C.HELM_OP_WRITE,
    decision: C.HELM_DECISION_DENY,
    mode: C.HELM_MODE_ENFORCE,
    reason: C.HELM_REASON_RULE,
    flags: 0,
    path: '/etc/shadow',
    pathLen: cLen('/etc/shadow'),
    comm: 'python3',
    ops: 1 << C.HELM_OP_WRITE,
    argc: 0,
    argv: undefined,
    ...over,
  };
}

const REALTIME_OFFSET = 1_700_000_000_000_000_000n; // boot time, in ns since the epoch

/** The record as it will be written: through JSON, as the audit writer does. */
function record(e: RawEvent, seq = 17): Record<string, unknown> {
  return JSON.parse(JSON.stringify(toAuditRecord(decodeEvent(view(encodeEvent(e))), seq, REALTIME_OFFSET, ctx)));
}

t.test('a rule deny carries every field POLICY.md requires', async (t) => {
  const r = record(denyEvent());
  t.hasStrict(r, {
    ts: '2023-11-14T22:13:25.000000123Z',
    seq: 17,
    decision: 'deny',
    op: 'write',
    path: '/etc/shadow',
    pid: 1234,
    ppid: 1000,
    uid: 1001,
    exe: '/usr/bin/python3.12',
    cgroup: { id: '18446744073709551615', path: CGROUP },
    agent: 'agent-1',
    role: 'payments',
    policy: 'base',
    rule: 'secrets',
    mode: 'enforce',
    generation: 3,
  });
  t.hasStrict(r, { type: 'decision', tid: 1235, gid: 1002, comm: 'python3', reason: 'rule', inode: { dev: (8 << 20) | 1, ino: '1152921504606846977' } }, 'and the rest');
  t.hasStrict(r, { v: 1, parent_exe: '/usr/bin/bash', labels: { team: 'payments', ticket: 'PAY-1' } }, 'and what the schema adds: parent exe, agent labels');
  t.notOk('dir' in r, 'no dir flag for a file');
  t.notOk('ops' in r, 'no ops list for a single verb');
  t.notOk('argv' in r, 'no argv for a write');
  t.notOk('sampled' in r, 'not a sample');
  t.same(Object.keys(r).slice(0, 4), ['v', 'ts', 'seq', 'type'], 'every line starts with v, ts, seq, type');
});

t.test('exec, several verbs, sampled allows', async (t) => {
  const exec = record(denyEvent({ op: C.HELM_OP_EXEC, ops: 1 << C.HELM_OP_EXEC, argc: 2, argv: ['/usr/bin/curl', 'https://example.invalid'], flags: C.HELM_EVENT_FLAG_ARGV_TRUNCATED }));
  t.hasStrict(exec, { op: 'exec', argv: ['/usr/bin/curl', 'https://example.invalid'], argv_truncated: true });
  const rw = record(denyEvent({ ops: (1 << C.HELM_OP_READ) | (1 << C.HELM_OP_WRITE) }));
  t.same(rw.ops, ['read', 'write'], 'an open for reading and writing names both verbs');
  const sampled = record(denyEvent({ decision: C.HELM_DECISION_ALLOW, flags: C.HELM_EVENT_FLAG_SAMPLED }));
  t.hasStrict(sampled, { decision: 'allow', sampled: true });
  const noParent = record(denyEvent({ parentExe: undefined, parentExeLen: -2 }));
  t.equal(noParent.parent_exe, null, 'a parent without an executable: null');
  const stranger = record(denyEvent({ agentId: 99n }));
  t.same(stranger.labels, {}, 'an unknown agent has no labels');
});

t.test('decisions, ops, modes and reasons by name', async (t) => {
  const dry = record(denyEvent({ decision: C.HELM_DECISION_WOULD_DENY, mode: C.HELM_MODE_DRY_RUN, op: C.HELM_OP_READ, ruleId: 3, policyId: 2 }));
  t.hasStrict(dry, { decision: 'would_deny', mode: 'dry-run', op: 'read', policy: 'trial', rule: 'no-home' });
  t.hasStrict(record(denyEvent({ op: C.HELM_OP_EXEC })), { op: 'exec' });
  t.hasStrict(record(denyEvent({ decision: C.HELM_DECISION_ALLOW })), { decision: 'allow' });

  const byDefault = record(denyEvent({ ruleId: 0, policyId: 0, reason: C.HELM_REASON_DEFAULT }));
  t.hasStrict(byDefault, { rule: 'default', policy: null, reason: 'default' }, 'the default deny');
  t.hasStrict(record(denyEvent({ ruleId: 0, policyId: 0, reason: C.HELM_REASON_NO_POLICY })), { rule: 'default', reason: 'no-policy' });
  t.hasStrict(record(denyEvent({ ruleId: 0, policyId: 0, reason: C.HELM_REASON_PATH_ERROR, path: undefined, pathLen: -36 })), { path: null, reason: 'path-error' });
  t.hasStrict(record(denyEvent({ ruleId: 0, policyId: 0, reason: C.HELM_REASON_NO_TABLE })), { reason: 'no-table' });
  t.hasStrict(record(denyEvent({ reason: C.HELM_REASON_INODE_RULE })), { rule: 'secrets', reason: 'inode-rule' });
});

t.test('directory events report the directory without the trailing "/"', async (t) => {
  const dir = record(denyEvent({ flags: C.HELM_EVENT_FLAG_DIR, path: '/srv/data/', pathLen: cLen('/srv/data/'), op: C.HELM_OP_READ }));
  t.hasStrict(dir, { path: '/srv/data', dir: true });
  const root = record(denyEvent({ flags: C.HELM_EVENT_FLAG_DIR, path: '/', pathLen: 2 }));
  t.hasStrict(root, { path: '/', dir: true }, 'the root directory stays "/"');
  const file = record(denyEvent({ flags: 0, path: '/srv/data/x', pathLen: cLen('/srv/data/x') }));
  t.hasStrict(file, { path: '/srv/data/x' });
});

t.test('unknown ids give nulls, never a wrong name', async (t) => {
  const r = record(denyEvent({ agentId: 99n, roleId: 8 }));
  t.hasStrict(r, { agent: null, role: null, cgroup: { id: '18446744073709551615', path: null } });
});

t.test('exe: the kernel\'s answer first, /proc only when the kernel had none', async (t) => {
  const own = record(denyEvent({ exe: undefined, exeLen: -2, pid: process.pid }));
  t.equal(own.exe, fs.readlinkSync(`/proc/${process.pid}/exe`), 'a live process: read from /proc');
  const gone = record(denyEvent({ exe: undefined, exeLen: -2, pid: 0xffffffff }));
  t.equal(gone.exe, null, 'a process that is gone: null');
  const kernel = record(denyEvent({ exe: '/opt/agent/bin/run', exeLen: cLen('/opt/agent/bin/run'), pid: process.pid }));
  t.equal(kernel.exe, '/opt/agent/bin/run', 'the kernel resolved it: /proc is not consulted');
});

// ---------------------------------------------------------------------------------------------
// formatDecision: the drain's fast path writes exactly what toAuditRecord describes

/** A random event: every op, decision, detail and flag, odd strings, known and unknown ids. */
function randomEvent(rng: Rng): RawEvent {
  const str = (max: number) => {
    const pool = ['/', 'a', 'é', '"', '\\', '\n', '\u0001', '𝄞', ' ', 'x/'];
    let out = '';
    for (let i = rng.int(12); i > 0 && Buffer.byteLength(out) < max - 8; i--) out += rng.pick(pool);
    return out;
  };
  const path = rng.chance(0.85) ? `/${str(200)}${rng.chance(0.3) ? '/' : ''}` : undefined;
  const exe = rng.chance(0.85) ? `/usr/bin/${str(100)}` : undefined;
  const parentExe = rng.chance(0.7) ? `/bin/${str(100)}` : undefined;
  const argv = rng.chance(0.3) ? Array.from({ length: rng.int(4) }, () => str(40)) : undefined;
  const v4 = rng.chance(0.6);
  const addr = Buffer.alloc(16);
  if (v4) addr.set([0xff, 0xff, rng.int(256), rng.int(256), rng.int(256), rng.int(256)], 10);
  else for (let i = 0; i < 16; i++) addr[i] = rng.chance(0.4) ? 0 : rng.int(256);
  const flags = rng.int(8);
  return {
    ...sampleEvent(),
    tsBootNs: BigInt(rng.int(2 ** 31)) * BigInt(rng.int(2 ** 31)) + BigInt(rng.int(1000)),
    cgroupId: BigInt(rng.int(2 ** 31)) << BigInt(rng.int(33)),
    agentId: rng.pick([42n, 99n]),
    ino: BigInt(rng.int(2 ** 31)) << BigInt(rng.int(33)),
    pid: rng.chance(0.5) ? 0xffffffff : rng.int(1 << 22), // mostly gone: exe falls back to null
    tid: rng.int(1 << 22),
    ppid: rng.int(1 << 22),
    uid: rng.pick([0, 1000, 0xffffffff]),
    gid: rng.int(70000),
    roleId: rng.pick([7, 8]),
    generation: rng.pick([3, 4]),
    dev: rng.int(2 ** 31) * 2,
    policyId: rng.int(4),
    ruleId: rng.int(5),
    op: rng.int(12),
    decision: rng.int(4),
    mode: rng.int(2),
    reason: rng.int(8),
    flags,
    detail: rng.int(24),
    targetPid: rng.int(1 << 22),
    addr,
    port: rng.int(65536),
    proto: rng.pick([6, 17, 1, 58, 132, 136, 99]),
    family: v4 ? 2 : 10,
    pathLen: path ? cLen(path) : -rng.int(40),
    exeLen: exe ? cLen(exe) : -2,
    comm: str(15).slice(0, 5),
    path,
    exe,
    ops: rng.chance(0.5) ? 1 << rng.int(11) : rng.int(2 ** 31) * 2 + rng.int(2),
    argc: argv ? argv.length : rng.pick([0, -14]),
    argv,
    parentExeLen: parentExe ? cLen(parentExe) : -2,
    parentExe,
  };
}

t.test('EventDecoder decodes what decodeEvent does, through runs of repeated and changed events in one drain buffer', async (t) => {
  const rng = new Rng(11);
  const dec = new EventDecoder();
  const size = LAYOUT.helm_event.size;
  let mismatches = 0;
  let checked = 0;
  for (let round = 0; round < 40; round++) {
    // One drain buffer of records, as the ring reader hands them over; runs of the same event with a new ts and pid.
    const events: Buffer[] = [];
    while (events.length < 60) {
      const e = randomEvent(rng);
      for (let k = rng.int(5); k >= 0; k--) events.push(encodeEvent({ ...e, tsBootNs: e.tsBootNs + BigInt(k), pid: rng.chance(0.5) ? e.pid : rng.int(1 << 22) }));
    }
    const buf = Buffer.alloc(events.length * size);
    events.forEach((b, i) => b.copy(buf, i * size));
    for (let i = 0; i < events.length; i++) {
      const v = new DataView(buf.buffer, buf.byteOffset + i * size, size);
      const want = decodeEvent(v);
      const got = dec.decode(v);
      checked++;
      if (!t.same({ ...got, addr: Buffer.from(got.addr) }, want, `round ${round} event ${i}`, { diagnostic: false }) && mismatches++ > 3) return;
    }
  }
  t.equal(mismatches, 0, `${checked} events, field for field`);
  t.throws(() => dec.decode(new DataView(new ArrayBuffer(size - 1))), RangeError, 'a short record is refused');
});

t.test('formatDecision writes the very text of JSON.stringify(toAuditRecord(...)), for random events', async (t) => {
  const rng = new Rng(7);
  const hostCtx: AuditContext = { ...ctx, hostOf: (agentId, addr16) => (agentId === 42n && addr16[15] % 2 ? 'api.example.com' : undefined) };
  let mismatches = 0;
  for (let i = 0; i < 3000; i++) {
    // Through the kernel's bytes and the decoder, as the drain sees them.
    const e = decodeEvent(view(encodeEvent(randomEvent(rng))));
    const seq = 1 + rng.int(2 ** 40);
    const want = JSON.stringify(toAuditRecord(e, seq, REALTIME_OFFSET, hostCtx));
    const line = formatDecision(e, REALTIME_OFFSET, hostCtx);
    const got = line.withSeq(seq);
    if (got !== want && mismatches++ < 3) t.equal(got, want, `event ${i}`);
    if (line.ts !== JSON.parse(want).ts) t.fail(`event ${i}: ts ${line.ts}`);
  }
  t.equal(mismatches, 0, '3000 random events, byte for byte');
});

t.test('the native batch formatter writes what formatDecision writes, and hands back in place what it leaves', async (t) => {
  const fmt = nativeFormatter();
  if (!fmt) return t.fail('build/libhelm.so has no helm_format_decisions');
  const rng = new Rng(23);
  // Labels and names above 0x7f are helmd's text, copied as they are; unknown ids too.
  const names: AuditContext = {
    ...ctx,
    agent: (id) => (id === 42n ? { name: 'agent-é', cgroupPath: CGROUP, labels: { team: 'payments', 'ticket"': 'PAY-1\n' } } : undefined),
    hostOf: (agentId, addr16) => (agentId === 42n && addr16[15] % 5 === 0 ? 'api.example.com' : undefined),
  };
  const ascii = (s: string | undefined) => (s === undefined ? s : s.replace(/[^\x00-\x7f]/g, 'q'));
  const size = LAYOUT.helm_event.size;
  const span = 8 + ((size + 7) & ~7);
  const arena = new LineArena(1 << 16, 2); // small chunks: a batch spans several
  const batcher = new BatchFormatter(fmt, names, REALTIME_OFFSET, arena);
  let native = 0;
  let perRecord = 0;
  let mismatches = 0;
  let count = 0;
  for (let round = 0; round < 30; round++) {
    const events: RawEvent[] = [];
    for (let i = 0; i < 150; i++) {
      let e = randomEvent(rng);
      // Mostly strings without bytes above 0x7f (what the native path takes), some with.
      if (rng.chance(0.8)) {
        e = { ...e, path: ascii(e.path), exe: ascii(e.exe), parentExe: ascii(e.parentExe), comm: ascii(e.comm)! };
        e = { ...e, pathLen: e.path ? cLen(e.path) : e.pathLen, exeLen: e.exe ? cLen(e.exe) : e.exeLen, parentExeLen: e.parentExe ? cLen(e.parentExe) : e.parentExeLen };
      }
      if (rng.chance(0.05)) e = { ...e, type: 2 }; // not a decision
      if (rng.chance(0.1)) e = { ...e, tsBootNs: BigInt(rng.int(2 ** 31)) * 1_000_000_000n + 999_999_999n }; // the end of a second
      events.push(e);
    }
    const buf = Buffer.alloc(events.length * span + 64);
    events.forEach((e, i) => {
      buf.writeUInt32LE(size, i * span);
      encodeEvent(e).copy(buf, i * span + 8);
    });
    const got: (FormattedLine | DataView)[] = [];
    batcher.format(buf, events.length * span, { line: (l) => void got.push(l), record: (v) => void got.push(v) });
    if (got.length !== events.length) return t.fail(`round ${round}: ${got.length} of ${events.length} records came back`);
    for (let i = 0; i < events.length; i++) {
      const g = got[i];
      const v = new DataView(buf.buffer, buf.byteOffset + i * span + 8, size);
      if (g instanceof DataView) {
        perRecord++;
        if (g.byteOffset !== v.byteOffset) return t.fail(`round ${round}: record ${i} handed back out of place`);
        continue;
      }
      native++;
      count++;
      const e = decodeEvent(v);
      if (e.type !== C.HELM_EVENT_DECISION) return t.fail('a record that is no decision was formatted');
      const seq = 1 + rng.int(2 ** 40);
      const want = formatDecision(e, REALTIME_OFFSET, names).withSeq(seq);
      if (g.withSeq(seq) !== want && mismatches++ < 3) t.equal(g.withSeq(seq), want, `round ${round} event ${i}`);
    }
  }
  t.equal(mismatches, 0, `${count} lines formatted natively, byte for byte`);
  t.ok(native > 1500 && perRecord > 500, `both paths taken (${native} native, ${perRecord} per record)`);
});

t.test('native lines queued as runs and placed with their seq (natively, or in JS): the same trail as every line formatted by formatDecision', async (t) => {
  const fmt = nativeFormatter();
  if (!fmt) return t.fail('build/libhelm.so has no helm_format_decisions');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-runs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const names: AuditContext = {
    ...ctx,
    agent: (id) => (id === 42n ? { name: 'agent-\u00e9', cgroupPath: CGROUP, labels: { team: 'payments', 'ticket"': 'PAY-1\n' } } : undefined),
    hostOf: (agentId, addr16) => (agentId === 42n && addr16[15] % 5 === 0 ? 'api.example.com' : undefined),
  };
  const ascii = (s: string | undefined) => (s === undefined ? s : s.replace(/[^\x00-\x7f]/g, 'q'));
  const size = LAYOUT.helm_event.size;
  const span = 8 + ((size + 7) & ~7);
  const rng = new Rng(31);
  // Drained batches of 1 to 200 records, mostly what the native path takes, some it leaves.
  const batches: { buf: Buffer; bytes: number }[] = [];
  for (let round = 0; round < 40; round++) {
    const n = 1 + rng.int(200);
    const buf = Buffer.alloc(n * span);
    for (let i = 0; i < n; i++) {
      let e = randomEvent(rng);
      if (rng.chance(0.85)) {
        e = { ...e, path: ascii(e.path), exe: ascii(e.exe), parentExe: ascii(e.parentExe), comm: ascii(e.comm)! };
        e = { ...e, pathLen: e.path ? cLen(e.path) : e.pathLen, exeLen: e.exe ? cLen(e.exe) : e.exeLen, parentExeLen: e.parentExe ? cLen(e.parentExe) : e.parentExeLen };
      }
      if (rng.chance(0.03)) e = { ...e, type: 2 }; // not a decision: no line
      buf.writeUInt32LE(size, i * span);
      encodeEvent(e).copy(buf, i * span + 8);
    }
    batches.push({ buf, bytes: n * span });
  }
  const at = new Date('2026-12-01T08:00:00Z');
  const perRecord = (view: DataView): FormattedLine | undefined => {
    const e = decodeEvent(view);
    return e.type === C.HELM_EVENT_DECISION ? formatDecision(e, REALTIME_OFFSET, names) : undefined;
  };
  // `runs`: through BatchFormatter as helmd's recorder takes it; otherwise every record by formatDecision.
  const write = async (name: string, runs: boolean, chain: 'native' | 'js'): Promise<{ text: string; runs: number; decided: number }> => {
    const file = path.join(dir, name, 'audit.jsonl');
    // Small writes: runs are split between batches.
    const w = await AuditTrail.open(trailOptions(file, { chain, maxBatch: 37, now: () => at }));
    const batcher = new BatchFormatter(fmt, names, REALTIME_OFFSET, new LineArena(1 << 16, 3));
    let nRuns = 0;
    let decided = 0;
    for (const [b, { buf, bytes }] of batches.entries()) {
      const pending: (FormattedLine | LineRun)[] = [];
      if (runs) {
        batcher.format(buf, bytes, {
          line: () => t.fail('line() called where the sink takes runs'),
          run: (r) => void (nRuns++, pending.push(r)),
          decided: (_d, _a, r, i) => {
            if (r !== pending[pending.length - 1] || i >= r.count) t.fail('decided() for a line of another run');
            decided++;
          },
          record: (v) => void ((l) => l && pending.push(l))(perRecord(v)),
        });
      } else {
        for (let off = 0; off < bytes; off += span) {
          const l = perRecord(new DataView(buf.buffer, buf.byteOffset + off + 8, size));
          if (l) pending.push(l);
        }
      }
      w.append(pending);
      if (b % 3 === 0) await w.written();
    }
    await w.close();
    return { text: fs.readFileSync(file, 'utf8'), runs: nRuns, decided };
  };
  const want = await write('per-record', false, 'js');
  const nat = await write('runs-native', true, 'native');
  const js = await write('runs-js', true, 'js');
  const lines = want.text.split('\n').length - 2;
  t.ok(lines > 3000 && nat.runs > 40, `${lines} lines, ${nat.runs} runs`);
  t.ok(nat.decided > 1500 && nat.decided < lines, `${nat.decided} lines written natively`);
  t.equal(nat.text, want.text, 'runs placed natively: byte for byte');
  t.equal(js.text, want.text, 'runs placed in JS: byte for byte');
  t.hasStrict(verifyChain(nat.text), { ok: true }, 'and the trail verifies');
});

t.test('formatDecision: the time of day is formatted once per second, the nanoseconds every time', async (t) => {
  const at = (ns: bigint) => JSON.parse(formatDecision(denyEvent({ tsBootNs: ns }), REALTIME_OFFSET, ctx).withSeq(1)).ts;
  t.equal(at(5_000_000_123n), '2023-11-14T22:13:25.000000123Z');
  t.equal(at(5_999_999_999n), '2023-11-14T22:13:25.999999999Z', 'the same second');
  t.equal(at(6_000_000_000n), '2023-11-14T22:13:26.000000000Z', 'the next one');
  t.equal(at(5_000_000_001n), '2023-11-14T22:13:25.000000001Z', 'and back: no stale second');
});

// ---------------------------------------------------------------------------------------------
// kernelDev

t.test('kernelDev converts userspace st_dev to the kernel dev_t', async (t) => {
  const cases: [bigint, number, string][] = [
    [0n, 0, 'makedev(0, 0)'],
    [0x801n, (8 << 20) | 1, 'makedev(8, 1) = 0x801'],
    [0x11032cn, 0x1030012c, 'makedev(259, 300): a minor above 255'],
    [0xfc00n, 252 << 20, 'makedev(252, 0): a device-mapper major'],
    [0xffffffffn, 0xffffffff, 'makedev(4095, 0xfffff): the largest kernel dev_t, unsigned'],
    [0x100000n, 0x100, 'makedev(0, 0x100): minor bits above the low 8 sit at bit 20 of st_dev'],
  ];
  for (const [stDev, want, what] of cases) t.equal(kernelDev(stDev), want, what);
});
