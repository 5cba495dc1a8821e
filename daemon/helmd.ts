// helmd: loads the policy, loads the kernel programs, serves the control socket and
// drains decisions into the audit trail. The order of start() is the contract:
// nothing is reported as running until the kernel enforces a compiled policy.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { compilePolicy, type CompiledPolicy } from './policy/compile';
import { loadPolicies } from './policy/parse';
import type { Policy } from './policy/types';
import { KernelEnforcer, type GovernedAgent } from './kernel/enforcer';
import { native } from './kernel/native';
import { decodeEvent, C } from './kernel/layout';
import type { RingReader } from './kernel/bpf';
import { openAuditWriter, type AuditWriter } from './audit/writer';
import { toAuditRecord, rfc3339Nanos, AUDIT_SCHEMA_VERSION, type GenerationNames, type AuditContext } from './audit/record';
import { helmProto, socketAddress } from './control/proto';
import { inspectCgroup, cgroupHasProcesses, CgroupError } from './control/cgroups';
import { DnsForwarder, type DnsQueryAudit, type Upstream } from './net/dns-forwarder';
import { LearnedAddresses } from './net/learned';
import { nameMatches, type NameEntry } from './policy/compile-net';
import { labelBitsOf } from './policy/compile-cond';

export const VERSION = '0.1.0';

export interface HelmdOptions {
  policyPaths: string[];
  auditLog: string;
  dryRun: boolean;
  socket: string;
  bpfObject?: string;
  logger: Logger;
  /** Enforce network rules only (cgroup sock_addr programs), on kernels that refuse BPF LSM. */
  networkOnly?: boolean;
  /** Where agents' allowed DNS queries are resolved (default: the host's resolv.conf). */
  dnsUpstreams: Upstream[];
  /** Bounds on how long a learned address stays allowed, whatever the record's TTL. */
  dnsTtlMinSec: number;
  dnsTtlMaxSec: number;
}

interface AgentState {
  id: bigint;
  name: string;
  role: string;
  cgroupPath: string;
  cgroupId: bigint;
  dryRun: boolean;
  labels: Record<string, string>;
  /** Its labels as the kernel sees them (labelBitsOf under the generation's label ids). */
  labelBits: bigint;
  generation: number;
  dns?: DnsForwarder;
}

const ROLE_RE = /^[A-Za-z0-9_.-]+$/;
const LOST_POLL_MS = 1000;
const LEARNED_SWEEP_MS = 1000;
const DNS_TIMEOUT_MS = 3000;

export class Helmd {
  private enforcer?: KernelEnforcer;
  private events?: RingReader;
  private audit?: AuditWriter;
  private server?: grpc.Server;
  private lostTimer?: NodeJS.Timeout;
  private sweepTimer?: NodeJS.Timeout;
  private learned?: LearnedAddresses;
  /** role id → its host-name patterns, for the DNS forwarders. */
  private namesByRole = new Map<number, NameEntry[]>();
  private policies: Policy[] = [];
  private compiled?: CompiledPolicy;
  private readonly generations = new Map<number, GenerationNames>();
  private readonly agents = new Map<bigint, AgentState>(); // by cgroup id
  /** Indexes for naming events on the drain path: agent id → agent, role id → role name. */
  private readonly agentsById = new Map<bigint, AgentState>();
  private roleNames = new Map<number, string>();
  private nextAgentId = 1n;
  private seq = 0;
  private written = 0n;
  private lostReported = 0n;
  private lostSince = '';
  private realtimeOffset = 0n;
  private readonly log: Logger;

  constructor(private readonly opts: HelmdOptions) {
    this.log = opts.logger;
  }

  async start(): Promise<void> {
    // 1. The policy first: a bad file must stop us before we touch the kernel.
    const loaded = loadPolicies(this.opts.policyPaths);
    this.policies = loaded.policies;
    const compiled = compilePolicy(this.policies);
    for (const w of compiled.warnings) this.log.warn({ file: w.loc.file, line: w.loc.line }, w.message);
    this.log.info({ files: loaded.files, policies: this.policies.map((p) => p.name) }, 'policy compiled');

    // 2. The kernel: load and attach, or fail with the reason.
    this.enforcer = KernelEnforcer.load(this.opts.bpfObject, { networkOnly: this.opts.networkOnly });
    if (this.opts.networkOnly) {
      this.log.warn(
        'NETWORK-ONLY MODE: connect and bind rules are enforced; file (read/write/exec) rules and self-protection are NOT — this kernel does not run BPF LSM programs',
      );
    }
    this.realtimeOffset = BigInt(native().helm_realtime_offset_ns());
    const enforcer = this.enforcer;
    this.learned = new LearnedAddresses(enforcer, () => BigInt(native().helm_boottime_ns()));
    this.sweepTimer = setInterval(() => this.learned?.sweep(), LEARNED_SWEEP_MS);
    this.install(compiled);
    if (this.opts.dryRun) this.enforcer.setGlobalDryRun(true);

    // 3. The audit trail, then its source.
    this.audit = openAuditWriter(
      this.opts.auditLog,
      (e) => this.log.error({ err: e, file: this.opts.auditLog }, 'AUDIT WRITE FAILED: decisions are still enforced but not recorded'),
      () => this.log.warn({ file: this.opts.auditLog }, 'the audit trail ended in a line cut short (crash or power loss); recorded and continued'),
    );
    this.events = this.enforcer.openEvents();
    this.events.start((r) => this.onEvent(r), (e) => this.log.error({ err: e }, 'ring buffer drain failed'));
    this.lostSince = rfc3339Nanos(BigInt(Date.now()) * 1_000_000n);
    this.lostTimer = setInterval(() => this.reportLost(), LOST_POLL_MS);

    // 4. The control socket; then nothing of helm's own is reachable from a governed agent.
    await this.serve();
    this.enforcer.protect(this.ownFiles(loaded.files));
    this.log.info(
      { generation: this.enforcer.activeGeneration, socket: this.opts.socket, audit: this.opts.auditLog, dryRun: this.opts.dryRun },
      this.opts.dryRun ? 'helmd running in DRY-RUN: denials are audited as would_deny and NOT enforced' : 'helmd enforcing',
    );
  }

  /** Policies (and directories given as sources), the audit trail and its directory, the socket and its directory. */
  private ownFiles(policyFiles: string[]): string[] {
    const dirs = this.opts.policyPaths.filter((p) => fs.statSync(p).isDirectory());
    const own = [...policyFiles, ...dirs, this.opts.auditLog, path.dirname(this.opts.auditLog), this.opts.socket, path.dirname(this.opts.socket)];
    return [...new Set(own.map((p) => path.resolve(p)))];
  }

  private install(compiled: CompiledPolicy): number {
    // Agents get the bits of label pairs this generation names before it decides anything.
    // Pairs keep their ids, so the bits stay true for the generation still running.
    for (const a of this.agents.values()) {
      const bits = labelBitsOf(a.labels, compiled.labelIds);
      if (bits !== a.labelBits) {
        this.enforcer!.govern(a.cgroupId, this.governedAs(a, compiled, bits));
        a.labelBits = bits;
      }
    }
    const gen = this.enforcer!.applyGeneration(compiled);
    this.compiled = compiled;
    this.roleNames = new Map([...compiled.roles].map(([name, id]) => [id, name]));
    this.namesByRole = new Map();
    for (const e of compiled.nameEntries) this.namesByRole.set(e.roleId, [...(this.namesByRole.get(e.roleId) ?? []), e]);
    this.generations.set(gen, { policies: compiled.policies, rules: compiled.rules });
    // Keep names for the generations the kernel may still report events from.
    for (const g of this.generations.keys()) if (g <= gen - 2 * C.HELM_MAX_GENERATIONS) this.generations.delete(g);
    return gen;
  }

  private readonly auditContext: AuditContext = {
    roleName: (id) => this.roleNames.get(id) ?? null,
    agent: (agentId) => this.agentsById.get(agentId),
    generation: (gen) => this.generations.get(gen),
    hostOf: (agentId, addr16) => this.learned?.hostOf(agentId, addr16),
  };

  /** The ids of the host-name patterns that could allow something for this agent's role. */
  private allowedNameIds(agent: AgentState, name: string): number[] {
    const roleId = this.compiled?.roles.get(agent.role);
    if (roleId === undefined) return [];
    return (this.namesByRole.get(roleId) ?? []).filter((e) => e.allowsSomething && nameMatches(e.pattern, name)).map((e) => e.nameId);
  }

  private async startDns(agent: AgentState): Promise<DnsForwarder> {
    const fwd = new DnsForwarder({
      upstreams: this.opts.dnsUpstreams,
      ttlMinSec: this.opts.dnsTtlMinSec,
      ttlMaxSec: this.opts.dnsTtlMaxSec,
      timeoutMs: DNS_TIMEOUT_MS,
      decide: (name) => ({ nameIds: this.allowedNameIds(agent, name), dryRun: agent.dryRun || this.opts.dryRun }),
      learn: (addr16, name, ids, ttl) => this.learned!.learn(agent.id, addr16, name, ids, ttl),
      audit: (a) => this.auditDns(agent, a),
      onError: (e) => this.log.error({ err: e, agent: agent.name }, 'DNS forwarder error'),
    });
    await fwd.listen();
    return fwd;
  }

  /** DNS lines: a refused name never left the host; an answered one says what was learned. */
  private auditDns(agent: AgentState, a: DnsQueryAudit): void {
    this.pending.push({
      v: AUDIT_SCHEMA_VERSION,
      ts: rfc3339Nanos(BigInt(Date.now()) * 1_000_000n),
      seq: ++this.seq,
      type: 'dns',
      decision: a.decision,
      op: 'connect',
      detail: 'dns-query',
      host: a.name,
      qtype: a.qtype,
      outcome: a.outcome,
      addresses: a.addresses,
      ...(a.ttl !== undefined ? { ttl: a.ttl } : {}),
      ...(a.error ? { error: a.error } : {}),
      cgroup: { id: agent.cgroupId.toString(), path: agent.cgroupPath },
      agent: agent.name,
      role: agent.role,
      rule: a.outcome === 'refused' ? 'default' : null,
      mode: a.decision === 'would_deny' ? 'dry-run' : 'enforce',
      generation: this.enforcer?.activeGeneration ?? 0,
    });
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  private pending: object[] = [];
  private flushQueued = false;

  private onEvent(record: DataView): void {
    const raw = decodeEvent(record);
    if (raw.type !== C.HELM_EVENT_DECISION) return;
    this.pending.push(toAuditRecord(raw, ++this.seq, this.realtimeOffset, this.auditContext));
    // One write per drained batch: the batch's records arrive synchronously.
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    const batch = this.pending;
    this.pending = [];
    this.audit?.append(batch);
    this.written += BigInt(batch.length);
  }

  private reportLost(): void {
    if (!this.enforcer) return;
    // Lost in the kernel (ring full) or here (a record that could not be decoded): both are counted.
    const total = this.enforcer.lostEvents() + (this.events?.undelivered ?? 0n);
    if (total === this.lostReported) return;
    const now = rfc3339Nanos(BigInt(Date.now()) * 1_000_000n);
    const count = total - this.lostReported;
    this.pending.push({ v: AUDIT_SCHEMA_VERSION, ts: now, seq: ++this.seq, type: 'lost', count: count.toString(), total: total.toString(), since: this.lostSince });
    this.flush();
    this.log.error({ count: count.toString(), total: total.toString() }, 'audit events lost: the ring buffer was full');
    this.lostReported = total;
    this.lostSince = now;
  }

  private async serve(): Promise<void> {
    const proto = helmProto();
    const server = new grpc.Server();
    const wrap =
      <Req, Res>(fn: (req: Req) => Res | Promise<Res>) =>
      (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
        const fail = (e: unknown) => {
          const code = (e as { grpcCode?: number }).grpcCode ?? (e instanceof CgroupError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL);
          cb({ code, details: (e as Error).message });
        };
        try {
          Promise.resolve(fn(call.request)).then((res) => cb(null, res), fail);
        } catch (e) {
          fail(e);
        }
      };
    server.addService(proto.AgentService.service, {
      Attach: wrap((req: AttachRequest) => this.attach(req)),
      Detach: wrap((req: { cgroup_path: string; force: boolean }) => ({ detached: this.detach(req.cgroup_path, req.force) })),
      List: wrap(() => ({ agents: [...this.agents.values()].map(agentMessage) })),
    });
    server.addService(proto.SystemService.service, {
      Status: wrap(() => ({
        version: VERSION,
        generation: this.enforcer?.activeGeneration ?? 0,
        policies: this.policies.map((p) => p.name),
        dry_run: this.opts.dryRun,
        network_only: !!this.opts.networkOnly,
        audit_log: this.opts.auditLog,
        events_written: this.written.toString(),
        events_lost: ((this.enforcer?.lostEvents() ?? 0n) + (this.events?.undelivered ?? 0n)).toString(),
        agents: this.agents.size,
      })),
    });
    fs.mkdirSync(path.dirname(this.opts.socket), { recursive: true, mode: 0o750 });
    if (await socketAnswers(this.opts.socket)) {
      throw new Error(`another helmd is already serving ${this.opts.socket}`);
    }
    fs.rmSync(this.opts.socket, { force: true }); // a stale socket from a crashed helmd
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(socketAddress(this.opts.socket), grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    fs.chmodSync(this.opts.socket, 0o660);
    this.server = server;
  }

  async attach(req: AttachRequest): Promise<object> {
    if (!ROLE_RE.test(req.role ?? '')) throw invalid(`role must match ${ROLE_RE.source}, got ${JSON.stringify(req.role)}`);
    const cg = inspectCgroup(req.cgroup_path);
    if (this.agents.has(cg.id)) throw Object.assign(new Error(`${cg.path} is already governed`), { grpcCode: grpc.status.ALREADY_EXISTS });

    // A role no generation knows yet gets entries (or none: deny all) before the cgroup is governed.
    if (!this.compiled!.roles.has(req.role)) {
      const roles = new Set([...this.agents.values()].map((a) => a.role).concat(req.role));
      const c = this.compiled!;
      this.install(compilePolicy(this.policies, { roleIds: c.roles, nameIds: c.nameIds, labelIds: c.labelIds, extraRoles: roles }));
    }
    const agent: AgentState = {
      id: this.nextAgentId++,
      name: req.name || path.basename(cg.path),
      role: req.role,
      cgroupPath: cg.path,
      cgroupId: cg.id,
      dryRun: !!req.dry_run,
      labels: req.labels ?? {},
      labelBits: labelBitsOf(req.labels ?? {}, this.compiled!.labelIds),
      generation: this.enforcer!.activeGeneration,
    };
    // Its DNS forwarder first: from the moment the cgroup is governed, its DNS goes there.
    agent.dns = await this.startDns(agent);
    if (this.agents.has(cg.id)) {
      agent.dns.close();
      throw Object.assign(new Error(`${cg.path} is already governed`), { grpcCode: grpc.status.ALREADY_EXISTS });
    }
    this.enforcer!.govern(cg.id, this.governedAs(agent, this.compiled!, agent.labelBits));
    this.agents.set(cg.id, agent);
    this.agentsById.set(agent.id, agent);
    this.log.info({ agent: agent.name, role: agent.role, cgroup: agent.cgroupPath, dryRun: agent.dryRun }, 'agent attached');
    return agentMessage(agent);
  }

  private governedAs(a: AgentState, compiled: CompiledPolicy, labelBits: bigint): GovernedAgent {
    return { agentId: a.id, roleId: compiled.roles.get(a.role)!, dryRun: a.dryRun, dnsPort: a.dns?.port ?? 0, labelBits };
  }

  detach(cgroupPath: string, force: boolean): boolean {
    const cg = inspectCgroup(cgroupPath);
    const agent = this.agents.get(cg.id);
    if (!agent) return false;
    // Releasing a cgroup with processes in it would leave them ungoverned.
    if (!force && cgroupHasProcesses(cg.path)) {
      throw Object.assign(new Error(`${cg.path} still has processes; they would run ungoverned (use force to detach anyway)`), { grpcCode: grpc.status.FAILED_PRECONDITION });
    }
    this.enforcer!.release(cg.id);
    this.agents.delete(cg.id);
    this.agentsById.delete(agent.id);
    agent.dns?.close();
    this.learned?.forgetAgent(agent.id);
    this.log.info({ agent: agent.name, cgroup: agent.cgroupPath, forced: force }, 'agent detached');
    return true;
  }

  async stop(): Promise<void> {
    if (this.lostTimer) clearInterval(this.lostTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const a of this.agents.values()) a.dns?.close();
    if (this.server) await new Promise<void>((r) => this.server!.tryShutdown(() => r()));
    if (this.events) {
      await this.events.stop((r) => this.onEvent(r));
      this.events.close();
    }
    this.flush();
    this.reportLost();
    this.audit?.close();
    this.enforcer?.close();
    if (this.server) {
      fs.rmSync(this.opts.socket, { force: true });
      this.log.info('helmd stopped; enforcement ended with it (pinning arrives with the production issue)');
    }
  }
}

interface AttachRequest {
  cgroup_path: string;
  role: string;
  dry_run: boolean;
  name: string;
  labels: Record<string, string>;
}

function socketAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function invalid(message: string): Error {
  return Object.assign(new Error(message), { grpcCode: grpc.status.INVALID_ARGUMENT });
}

function agentMessage(a: AgentState): object {
  return {
    id: a.id.toString(),
    name: a.name,
    role: a.role,
    cgroup_path: a.cgroupPath,
    cgroup_id: a.cgroupId.toString(),
    dry_run: a.dryRun,
    labels: a.labels,
    generation: a.generation,
    dns_port: a.dns?.port ?? 0,
  };
}
