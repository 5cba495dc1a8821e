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
const DECISIONS = ['allow', 'deny', 'would_deny'] as const;
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
  if (addr16.subarray(0, 10).every((b) => b === 0) && addr16[10] === 0xff && addr16[11] === 0xff) return [...addr16.subarray(12)].join('.');
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

export function toAuditRecord(e: RawEvent, seq: number, realtimeOffsetNs: bigint, ctx: AuditContext): AuditRecord {
  const names = ctx.generation(e.generation);
  const rule = e.ruleId ? names?.rules[e.ruleId - 1] : undefined;
  const agent = ctx.agent(e.agentId);
  // An IP destination has addr/port/proto; a unix socket its path (or "@name"); raw and packet sockets their protocol.
  const isNet = (e.op === C.HELM_OP_CONNECT || e.op === C.HELM_OP_BIND) && e.detail !== C.HELM_DETAIL_UNIX;
  let path = isNet ? null : e.path ?? null;
  // The kernel matched directories as "<dir>/"; report the directory's own path.
  if (path && e.flags & C.HELM_EVENT_FLAG_DIR && path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
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
