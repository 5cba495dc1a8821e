// Decision lines for a whole drained batch of ring records at once: the names helmd
// knows (agent, labels, role, policy, rule) as text, once per run of records with
// the same ids, then one native call (helm_format_decisions, native/audit_format.c)
// writes every line it can into the arena, byte for byte what formatDecision
// writes. The records it leaves (an exe to read from /proc, exec arguments, a host
// name learned from DNS, bytes above 0x7f in a string, IPv6, records that are no
// decision) are handed back, in order, for the per-record path.
import { C, LAYOUT } from '../kernel/layout';
import { HELM_PATH_BUF } from '../kernel/limits';
import { native } from '../kernel/native';
import { FormattedLine, LineArena, LineRun, namesText, type AuditContext } from './record';

type FormatDecisions = (
  recs: Buffer,
  nbytes: number,
  from: number,
  fromOff: number,
  names: Buffer,
  nameAt: Int32Array,
  nameIdx: Int32Array,
  out: Buffer,
  outOff: number,
  outCap: number,
  res: Int32Array,
  offSec: number | bigint,
  offNs: number | bigint,
) => number;

let loaded: FormatDecisions | null | undefined;

/** helm_format_decisions, or null where build/libhelm.so cannot be loaded. */
export function nativeFormatter(): FormatDecisions | null {
  if (loaded === undefined) {
    try {
      loaded = native().helm_format_decisions as FormatDecisions;
    } catch {
      loaded = null;
    }
  }
  return loaded;
}

const F = LAYOUT.helm_event.fields;
const SIZE = LAYOUT.helm_event.size;
/** Room helm_format_decisions wants for one line besides its names (its longest line: every string escaped). */
const LINE_ROOM = 6 * (3 * HELM_PATH_BUF + 16) + 2048;

export interface BatchSink {
  /** A decision line written natively: its decision (the kernel's number) and agent (sinks without `run`). */
  line(line: FormattedLine, decision: number, agentId: bigint): void;
  /**
   * Decision lines written natively, one after another, as one run (no object per line); then
   * decided() for each of them, in order. Where a sink has it, line() is not called.
   */
  run?(run: LineRun): void;
  /** Line i of the run last given to run(): its decision (the kernel's number) and agent. */
  decided?(decision: number, agentId: bigint, run: LineRun, i: number): void;
  /** A record left to the per-record path (decodeEvent, formatDecision), in its place in the batch. */
  record(view: DataView): void;
}

export class BatchFormatter {
  private offs = new Int32Array(256);
  private idx = new Int32Array(256);
  private res = new Int32Array(1024);
  private agents: bigint[] = [];
  private readonly offSec: bigint;
  private readonly offNs: bigint;
  private agentLo = -1;
  private agentHi = -1;
  private agentId = 0n;
  /** A record's address for ctx.hostOf (which keeps no reference to it): one buffer, not one per record. */
  private readonly addr16 = Buffer.alloc(16);

  constructor(
    private readonly fmt: FormatDecisions,
    private readonly ctx: AuditContext,
    realtimeOffsetNs: bigint,
    private readonly arena: LineArena,
  ) {
    let sec = realtimeOffsetNs / 1_000_000_000n;
    let ns = realtimeOffsetNs - sec * 1_000_000_000n;
    if (ns < 0n) {
      ns += 1_000_000_000n;
      sec -= 1n;
    }
    this.offSec = sec;
    this.offNs = ns;
  }

  private agent(view: DataView, at: number): bigint {
    const lo = view.getUint32(at + F.agent_id[0], true);
    const hi = view.getUint32(at + F.agent_id[0] + 4, true);
    if (lo !== this.agentLo || hi !== this.agentHi) {
      this.agentLo = lo;
      this.agentHi = hi;
      this.agentId = view.getBigUint64(at + F.agent_id[0], true);
    }
    return this.agentId;
  }

  /**
   * The records in buf[0, bytes) (as the ring reader copies them), each to `sink`, in order.
   * Throws only before the first goes to the sink (then none has).
   */
  format(buf: Buffer, bytes: number, sink: BatchSink): void {
    const view = new DataView(buf.buffer, buf.byteOffset, bytes);
    // 1. Where each record is, and the names text each decision gets (-1: the per-record path).
    let n = 0;
    const texts: string[] = [];
    let last = '';
    let lastIds = { agentId: 0n, roleId: 0, generation: 0, ruleId: 0, policyId: 0 };
    for (let off = 0; off + 8 <= bytes; n++) {
      const len = view.getUint32(off, true);
      if (n === this.offs.length) this.grow();
      this.offs[n] = off;
      this.idx[n] = -1;
      const at = off + 8;
      off += 8 + ((len + 7) & ~7);
      if (len < SIZE || at + SIZE > bytes) continue;
      if (view.getUint32(at + F.type[0], true) !== C.HELM_EVENT_DECISION) continue;
      if (view.getInt32(at + F.exe_len[0], true) <= 0 || view.getInt32(at + F.argc[0], true) > 0) continue;
      const agentId = this.agent(view, at);
      this.agents[n] = agentId;
      const op = view.getUint8(at + F.op[0]);
      const detail = view.getUint32(at + F.detail[0], true);
      if ((op === C.HELM_OP_CONNECT || op === C.HELM_OP_BIND) && detail !== C.HELM_DETAIL_UNIX && detail !== C.HELM_DETAIL_RAW && detail !== C.HELM_DETAIL_PACKET) {
        if (this.ctx.hostOf) {
          const a = this.addr16;
          for (let i = 0, p = at + F.addr[0]; i < 16; i++) a[i] = buf[p + i];
          if (this.ctx.hostOf(agentId, a)) continue;
        }
      }
      const roleId = view.getUint32(at + F.role_id[0], true);
      const generation = view.getUint32(at + F.generation[0], true);
      const ruleId = view.getUint16(at + F.rule_id[0], true);
      const policyId = view.getUint16(at + F.policy_id[0], true);
      // The same ids as the record before: the same names (nothing changes them during one batch).
      if (!texts.length || agentId !== lastIds.agentId || roleId !== lastIds.roleId || generation !== lastIds.generation || ruleId !== lastIds.ruleId || policyId !== lastIds.policyId) {
        lastIds = { agentId, roleId, generation, ruleId, policyId };
        const text = namesText(lastIds, this.ctx);
        if (text !== last || !texts.length) {
          texts.push(text);
          last = text;
        }
      }
      this.idx[n] = texts.length - 1;
    }
    if (n === 0) return;
    // 2. The names as one buffer.
    const nameAt = new Int32Array(2 * texts.length);
    let nb = 0;
    for (let i = 0; i < texts.length; i++) {
      nameAt[2 * i] = nb;
      nb += Buffer.byteLength(texts[i]);
      nameAt[2 * i + 1] = nb;
    }
    const names = Buffer.from(texts.join(''));
    let maxNames = 0;
    for (let i = 0; i < texts.length; i++) maxNames = Math.max(maxNames, nameAt[2 * i + 1] - nameAt[2 * i]);
    if (this.res.length < 4 * n) this.res = new Int32Array(4 * n);
    // 3. The lines, into the arena's chunk (a new one when it is full); then each record to the sink in order.
    const res = this.res;
    const owner = this.arena.owner;
    let k = 0;
    while (k < n) {
      const { buf: out, used } = this.arena.room(LINE_ROOM + maxNames);
      const done = this.fmt(buf, bytes, k, this.offs[k], names, nameAt, this.idx, out, used, out.length, res, this.offSec, this.offNs);
      if (done <= 0) {
        // Not expected (the room asked for fits a line): what is left goes the per-record way.
        for (let j = k; j < n; j++) {
          const off = this.offs[j];
          sink.record(new DataView(buf.buffer, buf.byteOffset + off + 8, view.getUint32(off, true)));
        }
        return;
      }
      let end = used;
      if (sink.run && sink.decided) {
        // Runs of lines between the records left to the per-record path: one LineRun each.
        const pos = res.slice(4 * k, 4 * (k + done));
        let from = -1;
        for (let j = k; j <= k + done; j++) {
          if (j < k + done && res[4 * j] === 1) {
            end = res[4 * j + 3];
            if (from < 0) from = j;
            continue;
          }
          if (from >= 0) {
            const run = new LineRun(out, pos, from - k, j - from, owner);
            sink.run(run);
            for (let i = from; i < j; i++) sink.decided(view.getUint8(this.offs[i] + 8 + F.decision[0]), this.agents[i], run, i - from);
            from = -1;
          }
          if (j < k + done) {
            const off = this.offs[j];
            sink.record(new DataView(buf.buffer, buf.byteOffset + off + 8, view.getUint32(off, true)));
          }
        }
      } else {
        for (let j = k; j < k + done; j++) {
          if (res[4 * j] === 1) {
            end = res[4 * j + 3];
            sink.line(new FormattedLine(out, res[4 * j + 1], res[4 * j + 2], end, owner), view.getUint8(this.offs[j] + 8 + F.decision[0]), this.agents[j]);
          } else {
            const off = this.offs[j];
            sink.record(new DataView(buf.buffer, buf.byteOffset + off + 8, view.getUint32(off, true)));
          }
        }
      }
      this.arena.commit(end);
      k += done;
    }
  }

  private grow(): void {
    const offs = new Int32Array(this.offs.length * 2);
    offs.set(this.offs);
    this.offs = offs;
    const idx = new Int32Array(this.idx.length * 2);
    idx.set(this.idx);
    this.idx = idx;
  }
}
