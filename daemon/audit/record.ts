// Turns a raw kernel event into an audit record: names for ids, wall-clock time,
// the acting executable. The JSON-lines field names follow POLICY.md; every line
// type and field is documented in docs/audit-schema.md (same version number).
import fs from 'node:fs';
import net from 'node:net';
import { C, type RawEvent } from '../kernel/layout';

export const AUDIT_SCHEMA_VERSION = 1;

const OPS = ['read', 'write', 'exec', 'bpf', 'signal', 'ptrace', 'mount', 'module', 'control', 'connect', 'bind'] as const;
/** What a write was, or the object of a self-protection denial, or how a network op was made. */
const DETAILS = ['open', 'create', 'mkdir', 'unlink', 'rmdir', 'rename-from', 'rename-to', 'link-from', 'link-to', 'symlink', 'chmod', 'chown', 'truncate', 'mmap-exec', 'receive', 'xattr', 'connect', 'sendmsg', 'bind', 'unix', 'raw', 'packet'] as const;
const PROTOS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp', 136: 'udplite' };
export const DECISIONS = ['allow', 'deny', 'would_deny'] as const;
const REASONS = ['rule', 'default', 'no-policy', 'path-error', 'no-table', 'inode-rule', 'self-protection'] as const;

/** What every line starts with; `seq` is given by the writer, in file order. */
export interface LineHead {
  v: number;
  ts: string;
  seq: number;
  type: string;
}

export interface AuditRecord extends LineHead {
  type: 'decision';
  decision: (typeof DECISIONS)[number];
  op: string;
  /** For file ops: how the object was touched (open, create, unlink, rename-from, ...). */
  detail?: string;
  /** For signal: the signal number; for bpf: the command. */
  arg?: number;
  /** The task signalled or traced. */
  target_pid?: number;
  path: string | null;
  dir?: boolean;
  /** Network ops: the address (IPv4 as dotted quad, also when an IPv6 socket used its mapped form). */
  addr?: string;
  port?: number;
  proto?: string;
  /** Network ops: the host name the agent's own DNS lookup returned this address for, when known. */
  host?: string;
  /** A packet socket's EtherType (0x0003: every protocol). */
  ethertype?: string;
  /** Every verb the operation needed, when more than `op` (an open for reading and writing). */
  ops?: string[];
  /** exec: the caller's arguments as the kernel read them at the decision (bounded). */
  argv?: string[];
  argv_truncated?: boolean;
  pid: number;
  tid: number;
  ppid: number;
  uid: number;
  gid: number;
  exe: string | null;
  parent_exe: string | null;
  comm: string;
  cgroup: { id: string; path: string | null };
  agent: string | null;
  labels: Record<string, string>;
  role: string | null;
  policy: string | null;
  rule: string;
  mode: 'enforce' | 'dry-run';
  reason: (typeof REASONS)[number];
  generation: number;
  inode?: { dev: number; ino: string };
  /** An allow logged by the per-agent sampler (allow-log level `sampled`). */
  sampled?: boolean;
}

/** Where lost events were lost. */
export type LossSource = 'deny-ring' | 'allow-ring' | 'decode' | 'disk';

export interface LostRecord extends LineHead {
  type: 'lost';
  source: LossSource;
  /** Lost in [since, ts]. */
  count: string;
  /** Lost from this source since helmd started. */
  total: string;
  since: string;
  error?: string;
}

/** Names for the ids of one compiled generation. */
export interface GenerationNames {
  policies: { name: string; mode: string }[]; // policy id - 1
  rules: { policy: string; rule: string }[]; // rule id - 1
}

export interface AuditContext {
  roleName(id: number): string | null;
  agent(agentId: bigint): { name: string; cgroupPath: string; labels?: Record<string, string> } | undefined;
  generation(gen: number): GenerationNames | undefined;
  /** The name(s) an agent's DNS lookups learned for an address (16 bytes, IPv4 mapped). */
  hostOf?(agentId: bigint, addr16: Buffer): string | undefined;
}

/** 16 address bytes (IPv4 mapped) as text: dotted quad for IPv4, RFC 5952 for IPv6. */
export function addressText(addr16: Buffer): string {
  const a = addr16;
  if (a[10] === 0xff && a[11] === 0xff && !(a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9])) return `${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr16.readUInt16BE(i).toString(16));
  // net.SocketAddress normalises the text (shortest form, `::` for the longest zero run).
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/** RFC 3339 with nanoseconds, UTC. */
export function rfc3339Nanos(epochNs: bigint): string {
  const ms = epochNs / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // ...T..:..:..mmmZ
  const nanos = (epochNs % 1_000_000_000n).toString().padStart(9, '0');
  return `${iso.slice(0, 19)}.${nanos}Z`;
}

/** The kernel's answer; /proc only when the kernel could not resolve it (the process may be gone: comm remains). */
function exeOf(e: RawEvent): string | null {
  if (e.exe !== undefined) return e.exe;
  try {
    return fs.readlinkSync(`/proc/${e.pid}/exe`);
  } catch {
    return null;
  }
}

function opName(op: number): string {
  return OPS[op] ?? `op${op}`;
}

/** The verbs in an ops bit set, when there is more than one. */
function opsList(bits: number): string[] | undefined {
  const ops: string[] = [];
  for (let i = 0; i < 32; i++) if (bits & (1 << i)) ops.push(opName(i));
  return ops.length > 1 ? ops : undefined;
}

/** An IP destination has addr/port/proto; a unix socket its path (or "@name"); raw and packet sockets their protocol. */
function isNetworkTarget(e: RawEvent): boolean {
  return (e.op === C.HELM_OP_CONNECT || e.op === C.HELM_OP_BIND) && e.detail !== C.HELM_DETAIL_UNIX;
}

/** The object's path as the trail reports it: the kernel matched directories as "<dir>/", the line names the directory itself. */
function reportedPath(e: RawEvent, isNet: boolean): string | null {
  const path = isNet ? null : e.path ?? null;
  if (path && e.flags & C.HELM_EVENT_FLAG_DIR && path.length > 1 && path.endsWith('/')) return path.slice(0, -1);
  return path;
}

export function toAuditRecord(e: RawEvent, seq: number, realtimeOffsetNs: bigint, ctx: AuditContext): AuditRecord {
  const names = ctx.generation(e.generation);
  const rule = e.ruleId ? names?.rules[e.ruleId - 1] : undefined;
  const agent = ctx.agent(e.agentId);
  const isNet = isNetworkTarget(e);
  const path = reportedPath(e, isNet);
  return {
    v: AUDIT_SCHEMA_VERSION,
    ts: rfc3339Nanos(e.tsBootNs + realtimeOffsetNs),
    seq,
    type: 'decision',
    decision: DECISIONS[e.decision] ?? 'deny',
    op: opName(e.op),
    ...detailFields(e),
    path,
    ...(e.flags & C.HELM_EVENT_FLAG_DIR ? { dir: true } : {}),
    ...(isNet ? netFields(e, ctx) : {}),
    ...(opsList(e.ops) ? { ops: opsList(e.ops) } : {}),
    ...(e.argv ? { argv: e.argv } : {}),
    ...(e.flags & C.HELM_EVENT_FLAG_ARGV_TRUNCATED ? { argv_truncated: true } : {}),
    pid: e.pid,
    tid: e.tid,
    ppid: e.ppid,
    uid: e.uid,
    gid: e.gid,
    exe: exeOf(e),
    parent_exe: e.parentExe ?? null,
    comm: e.comm,
    cgroup: { id: e.cgroupId.toString(), path: agent?.cgroupPath ?? null },
    agent: agent?.name ?? null,
    labels: agent?.labels ?? {},
    role: ctx.roleName(e.roleId),
    // A rule decided but its names are gone (a very old generation): say so rather than claim the default.
    policy: rule?.policy ?? (e.policyId ? `#${e.policyId}` : null),
    rule: rule?.rule ?? (e.ruleId ? `#${e.ruleId}` : 'default'),
    mode: e.mode === C.HELM_MODE_DRY_RUN ? 'dry-run' : 'enforce',
    reason: REASONS[e.reason] ?? 'rule',
    generation: e.generation,
    ...(isNet ? {} : { inode: { dev: e.dev, ino: e.ino.toString() } }),
    ...(e.flags & C.HELM_EVENT_FLAG_SAMPLED ? { sampled: true } : {}),
  };
}

/**
 * A line already serialised but for its `seq`, which the writer gives in file
 * order: the line's JSON is the bytes [start, at), the seq, then [at, end) of
 * `buf` (then the writer adds the chain).
 *
 * The bytes live in an arena outside the JS heap (see LineArena): a line waits
 * in the queue until its batch is written, tens of milliseconds under load, and
 * a string kept that long is promoted to V8's old generation, whose collections
 * cost far more than the young one's. This way a waiting line is 40 bytes of heap.
 */
export class FormattedLine {
  constructor(
    readonly buf: Buffer,
    readonly start: number,
    readonly at: number,
    readonly end: number,
    /** The arena that made it, if it wants to know when its bytes are copied out (LineArena.consumed). */
    readonly arena?: LineArena,
  ) {}

  /** A line from its text (`text` without the seq, which goes at character `at`), in a buffer of its own. */
  static fromText(text: string, at: number): FormattedLine {
    const head = Buffer.byteLength(text.slice(0, at));
    const buf = Buffer.from(text);
    return new FormattedLine(buf, 0, head, buf.length);
  }

  /** The line's `ts`. */
  get ts(): string {
    const start = this.buf.indexOf('"ts":"', this.start) + 6;
    return this.buf.toString('latin1', start, this.buf.indexOf(0x22, start));
  }

  withSeq(seq: number): string {
    return this.buf.toString('utf8', this.start, this.at) + seq + this.buf.toString('utf8', this.at, this.end);
  }
}

/**
 * Lines the native batch formatter wrote one after another into one arena chunk, as one
 * queued item: one heap object for the run rather than one per line (under a flood, an
 * object per line waiting for its batch's write was what promoted objects into V8's old
 * generation and grew it by tens of MB). Line i of the run is its `first + i`th entry of
 * `pos`, four ints an entry as helm_format_decisions gives them (`res`): {1, start,
 * where the seq goes, end}; lines are back to back in `buf`.
 */
export class LineRun {
  constructor(
    readonly buf: Buffer,
    readonly pos: Int32Array,
    readonly first: number,
    readonly count: number,
    /** The arena that made it, if it wants to know when its bytes are copied out (LineArena.consumedBuf). */
    readonly arena?: LineArena,
  ) {}

  /** Bytes of the run's lines, all together (without seq or chain). */
  get bytes(): number {
    return this.pos[4 * (this.first + this.count - 1) + 3] - this.pos[4 * this.first + 1];
  }

  /** The first `n` lines (0 < n < count) and the rest, as two runs. */
  split(n: number): [LineRun, LineRun] {
    return [new LineRun(this.buf, this.pos, this.first, n, this.arena), new LineRun(this.buf, this.pos, this.first + n, this.count - n, this.arena)];
  }

  /** Line i of the run as a FormattedLine (tests, and the per-line path). */
  line(i: number): FormattedLine {
    const k = 4 * (this.first + i);
    return new FormattedLine(this.buf, this.pos[k + 1], this.pos[k + 2], this.pos[k + 3]);
  }
}

/**
 * Where formatted lines are written: chunks of 1 MiB outside the JS heap, each
 * freed once no waiting line refers to it any more.
 *
 * With `reuse`, chunks are used again rather than freed (a fresh chunk costs
 * its page faults and, freed, an munmap and a collection): the writer calls
 * consumed() for each of the arena's lines once it has copied it out, in the
 * order they were made; once it reaches a line in another chunk, every line
 * of the chunk before is copied, and that chunk goes back to a small pool.
 * The lines of such an arena must go to that writer only, and not be read
 * after it took them.
 */
export class LineArena {
  private buf: Buffer = Buffer.allocUnsafeSlow(0);
  private used = 0;
  private readonly pool: Buffer[] = [];
  private lastConsumed: Buffer | undefined;

  constructor(
    private readonly chunk = 1 << 20,
    /** Chunks kept for reuse at most (0: none, every chunk is left to the collector). */
    private readonly reuse = 0,
  ) {}

  /** `text` (a line without its seq, which goes at character `at`; `at` counts ASCII characters only) as a FormattedLine. */
  line(text: string, at: number): FormattedLine {
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (this.buf.length - this.used < text.length * 3) {
      const need = text.length * 3;
      this.buf = (need <= this.chunk && this.pool.pop()) || Buffer.allocUnsafeSlow(Math.max(this.chunk, need));
      this.used = 0;
    }
    const start = this.used;
    const n = this.buf.write(text, start);
    this.used = start + n;
    return new FormattedLine(this.buf, start, start + at, start + n, this.reuse ? this : undefined);
  }

  /** The current chunk, with at least `bytes` free after `used` (a new chunk if need be): for writers other than line(). */
  room(bytes: number): { buf: Buffer; used: number } {
    if (this.buf.length - this.used < bytes) {
      this.buf = (bytes <= this.chunk && this.pool.pop()) || Buffer.allocUnsafeSlow(Math.max(this.chunk, bytes));
      this.used = 0;
    }
    return { buf: this.buf, used: this.used };
  }

  /** After room(): the current chunk is used up to `used`; lines written there are this arena's (made with line()'s arena argument). */
  commit(used: number): void {
    this.used = used;
  }

  /** The arena to give the FormattedLines written into it after room(). */
  get owner(): LineArena | undefined {
    return this.reuse ? this : undefined;
  }

  /** `line`, one of this arena's, has been copied out (see the class comment). */
  consumed(line: FormattedLine): void {
    this.consumedBuf(line.buf);
  }

  /** Lines of this arena up to and in `buf` (a chunk) have been copied out, in order: consumed() for a LineRun. */
  consumedBuf(buf: Buffer): void {
    const done = this.lastConsumed;
    if (buf === done) return;
    this.lastConsumed = buf;
    if (done && done !== this.buf && done.length === this.chunk && this.pool.length < this.reuse) this.pool.push(done);
  }

  /** Chunks waiting to be reused. */
  get pooled(): number {
    return this.pool.length;
  }
}

/** The arena formatDecision writes into when it is given none. */
const defaultArena = new LineArena();

/** Memo of the last second formatted: decisions come in bursts within the same second. */
let lastSecond = -1;
let lastSecondText = '';

/** rfc3339Nanos(bootNs + offset), faster: in doubles while exact, the time of day formatted once per second. */
function tsText(bootNs: bigint, offset: { sec: number; ns: number; big: bigint }): string {
  const boot = Number(bootNs);
  if (boot > Number.MAX_SAFE_INTEGER) return rfc3339Nanos(bootNs + offset.big); // after 104 days of uptime
  const bootSec = Math.floor(boot / 1e9);
  let ns = boot - bootSec * 1e9 + offset.ns;
  let sec = bootSec + offset.sec;
  if (ns >= 1e9) {
    ns -= 1e9;
    sec++;
  }
  if (sec !== lastSecond) {
    lastSecondText = new Date(sec * 1000).toISOString().slice(0, 19);
    lastSecond = sec;
  }
  return `${lastSecondText}.${ns < 100_000_000 ? String(ns).padStart(9, '0') : ns}Z`;
}

/** An offset in ns as whole seconds and the nanoseconds left (0 to 1e9 - 1), for tsText. */
const offsets = new Map<bigint, { sec: number; ns: number; big: bigint }>();
function splitOffset(big: bigint): { sec: number; ns: number; big: bigint } {
  let o = offsets.get(big);
  if (!o) {
    let sec = big / 1_000_000_000n;
    let ns = big - sec * 1_000_000_000n;
    if (ns < 0n) {
      ns += 1_000_000_000n;
      sec -= 1n;
    }
    o = { sec: Number(sec), ns: Number(ns), big };
    offsets.set(big, o);
  }
  return o;
}

const json = JSON.stringify;
type AgentNames = NonNullable<ReturnType<AuditContext['agent']>>;
/** An agent's part of its lines, by agent object (kept while its names stay the same). */
const agentTexts = new WeakMap<object, { of: [string, string, object | undefined]; text: string }>();

/** `<cgroup path>},"agent":<name>,"labels":<labels>` as JSON, from the cgroup's path on. */
function agentText(a: AgentNames): string {
  const memo = agentTexts.get(a);
  if (memo && memo.of[0] === a.cgroupPath && memo.of[1] === a.name && memo.of[2] === a.labels) return memo.text;
  const text = `${orNull(a.cgroupPath)}},"agent":${orNull(a.name)},"labels":${json(a.labels ?? {})}`;
  agentTexts.set(a, { of: [a.cgroupPath, a.name, a.labels], text });
  return text;
}
/** `v ?? null` as JSON. */
const orNull = (v: string | null | undefined): string => (v === undefined || v === null ? 'null' : json(v));

/**
 * The decision line of `e`, exactly as JSON.stringify(toAuditRecord(e, seq, ...))
 * writes it (same fields, same order: test/unit/audit-format.test.ts holds them
 * to it), built as text without the intermediate object: this is the drain's
 * hot path, one call per event. `info`, if given, gets the line's ts.
 */
export function formatDecision(e: RawEvent, realtimeOffsetNs: bigint, ctx: AuditContext, arena: LineArena = defaultArena, info?: { ts: string }): FormattedLine {
  const isNet = isNetworkTarget(e);
  const path = reportedPath(e, isNet);
  // One string by concatenation (written into the arena at once, then garbage of the young generation).
  const ts = tsText(e.tsBootNs, splitOffset(realtimeOffsetNs));
  if (info) info.ts = ts;
  const head = `{"v":${AUDIT_SCHEMA_VERSION},"ts":"${ts}","seq":`;
  let t = `,"type":"decision","decision":"${DECISIONS[e.decision] ?? 'deny'}","op":${json(opName(e.op))}`;
  if (e.op < C.HELM_FILE_OPS || e.op === C.HELM_OP_CONTROL || e.op === C.HELM_OP_CONNECT || e.op === C.HELM_OP_BIND) t += `,"detail":${json(DETAILS[e.detail] ?? `detail${e.detail}`)}`;
  else if (e.op === C.HELM_OP_SIGNAL || e.op === C.HELM_OP_PTRACE) t += `,"arg":${e.detail},"target_pid":${e.targetPid}`;
  else t += `,"arg":${e.detail}`;
  t += `,"path":${orNull(path)}`;
  if (e.flags & C.HELM_EVENT_FLAG_DIR) t += ',"dir":true';
  if (isNet) {
    if (e.detail === C.HELM_DETAIL_RAW) t += `,"proto":${json(PROTOS[e.proto] ?? String(e.proto))}`;
    else if (e.detail === C.HELM_DETAIL_PACKET) t += `,"ethertype":"0x${e.port.toString(16).padStart(4, '0')}"`;
    else {
      const host = ctx.hostOf?.(e.agentId, e.addr);
      t += `,"addr":"${addressText(e.addr)}","port":${e.port},"proto":${json(PROTOS[e.proto] ?? String(e.proto))}`;
      if (host) t += `,"host":${json(host)}`;
    }
  }
  const ops = e.ops & (e.ops - 1) ? opsList(e.ops) : undefined; // more than one bit
  if (ops) t += `,"ops":${json(ops)}`;
  if (e.argv) t += `,"argv":${json(e.argv)}`;
  if (e.flags & C.HELM_EVENT_FLAG_ARGV_TRUNCATED) t += ',"argv_truncated":true';
  const exe = exeOf(e);
  t += `,"pid":${e.pid},"tid":${e.tid},"ppid":${e.ppid},"uid":${e.uid},"gid":${e.gid},"exe":${exe === null ? 'null' : memoExe(exe)}`;
  t += `,"parent_exe":${e.parentExe === undefined ? 'null' : memoParentExe(e.parentExe)},"comm":${memoComm(e.comm)}`;
  t += `,"cgroup":{"id":"${cgroupIdText(e.cgroupId)}","path":${namesText(e, ctx)}`;
  t += `,"mode":"${e.mode === C.HELM_MODE_DRY_RUN ? 'dry-run' : 'enforce'}","reason":"${REASONS[e.reason] ?? 'rule'}","generation":${e.generation}`;
  if (!isNet) t += `,"inode":{"dev":${e.dev},"ino":"${e.ino}"}`;
  if (e.flags & C.HELM_EVENT_FLAG_SAMPLED) t += ',"sampled":true';
  return arena.line(`${head}${t}}`, head.length);
}

/**
 * A decision line's JSON from the value of the cgroup's path to the rule's value: what helmd
 * knows of the event's ids (the agent, its labels, the role, policy and rule names).
 */
export function namesText(e: Pick<RawEvent, 'agentId' | 'roleId' | 'generation' | 'ruleId' | 'policyId'>, ctx: AuditContext): string {
  const names = ctx.generation(e.generation);
  const rule = e.ruleId ? names?.rules[e.ruleId - 1] : undefined;
  const agent = ctx.agent(e.agentId);
  const role = ctx.roleName(e.roleId);
  // A rule decided but its names are gone (a very old generation): say so rather than claim the default.
  const policy = rule?.policy ?? (e.policyId ? `#${e.policyId}` : null);
  return (
    `${agent ? agentText(agent) : 'null},"agent":null,"labels":{}'},"role":${role === null ? 'null' : memoRole(role)},"policy":${policy === null ? 'null' : memoPolicy(policy)}` +
    `,"rule":${memoRule(rule?.rule ?? (e.ruleId ? `#${e.ruleId}` : 'default'))}`
  );
}

/** JSON.stringify of a string, remembering the last one: a flood repeats the same exe, comm, rule. */
function lastJson(): (s: string) => string {
  let last: string | undefined;
  let text = '';
  return (s) => {
    if (s !== last) {
      text = json(s);
      last = s;
    }
    return text;
  };
}
const memoExe = lastJson();
const memoParentExe = lastJson();
const memoComm = lastJson();
const memoRole = lastJson();
const memoPolicy = lastJson();
const memoRule = lastJson();

let lastCgroupId = -1n;
let lastCgroupText = '';
function cgroupIdText(id: bigint): string {
  if (id !== lastCgroupId) {
    lastCgroupText = id.toString();
    lastCgroupId = id;
  }
  return lastCgroupText;
}

function netFields(e: RawEvent, ctx: AuditContext): Pick<AuditRecord, 'addr' | 'port' | 'proto' | 'host' | 'ethertype'> {
  if (e.detail === C.HELM_DETAIL_RAW) return { proto: PROTOS[e.proto] ?? String(e.proto) };
  if (e.detail === C.HELM_DETAIL_PACKET) return { ethertype: `0x${e.port.toString(16).padStart(4, '0')}` };
  const host = ctx.hostOf?.(e.agentId, e.addr);
  return { addr: addressText(e.addr), port: e.port, proto: PROTOS[e.proto] ?? String(e.proto), ...(host ? { host } : {}) };
}

function detailFields(e: RawEvent): Pick<AuditRecord, 'detail' | 'arg' | 'target_pid'> {
  if (e.op < C.HELM_FILE_OPS || e.op === C.HELM_OP_CONTROL || e.op === C.HELM_OP_CONNECT || e.op === C.HELM_OP_BIND) return { detail: DETAILS[e.detail] ?? `detail${e.detail}` };
  if (e.op === C.HELM_OP_SIGNAL || e.op === C.HELM_OP_PTRACE) return { arg: e.detail, target_pid: e.targetPid };
  return { arg: e.detail };
}
