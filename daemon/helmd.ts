// helmd: loads the policy, takes over the pinned kernel state (or creates it),
// serves the control API and drains decisions into the audit trail. The order of
// start() is the contract: nothing is reported as running until the kernel
// enforces a compiled policy. Enforcement is pinned under bpffs and outlives
// helmd: stop() (or a crash) leaves every governed agent governed by the last
// policy; only `helmctl uninstall` removes it.
//
// Every change of what the kernel enforces — an apply, a reload of the policy
// files, a mode switch, an attach that brings a new role — runs through one
// queue: it is validated and compiled completely, then switched in with one map
// update; if anything fails before that update nothing has changed (kernel maps,
// the policy in memory, modes), and the rejection is audited like the apply.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import type { CompiledPolicy } from './policy/compile';
import { IncrementalCompiler } from './policy/compile-incremental';
import { RuleCache, loadPolicies, loadPolicySources, type PolicySourceText } from './policy/parse';
import { PolicyError, formatDiagnostic, type Mode, type Policy, type PolicyDiagnostic } from './policy/types';
import { explain, formatExplanation, operationFromOptions } from './policy/explain';
import { defaultCanonicalize, isVerb } from './policy/cases';
import { PolicyWatcher } from './policy/watch';
import { KernelEnforcer, type GovernedEntry, type RingSizes } from './kernel/enforcer';
import type { AuditLevel, GovernedAgent, KernelBinding } from './kernel/binding';
import { C } from './kernel/layout';
import { KernelError, native } from './kernel/native';
import { RingReader, readPerCpuCounter } from './kernel/bpf';
import { DEFAULT_PIN_DIR, type CommitReport } from './kernel/pins';
import type { FsyncPolicy, RotationPolicy } from './audit/writer';
import { AuditRecorder, policyDigest, type RecordedAgent } from './audit/recorder';
import { AuditFeed } from './audit/feed';
import { rfc3339Nanos, AUDIT_SCHEMA_VERSION, type GenerationNames, type AuditContext } from './audit/record';
import { inspectCgroup, cgroupHasProcesses, findCgroupById, type CgroupInfo } from './control/cgroups';
import { SerialQueue } from './control/serial';
import { ControlServer, socketAnswers, type ControlPlane, type TlsListener } from './control/server';
import { aborted, alreadyExists, failedPrecondition, invalidArgument, notFound } from './control/status';
import { pinnedStateCheck, runChecks, type Check } from './doctor';
import { loadState, saveState, lockState, lockPath, statePath, type HelmdState, type PersistedAgent } from './state';
import { DnsForwarder, type DnsQueryAudit, type Upstream } from './net/dns-forwarder';
import { LearnedAddresses } from './net/learned';
import { nameMatches, type NameEntry } from './policy/compile-net';
import { labelBitsOf } from './policy/compile-cond';

export const VERSION = '0.1.0';

/** How the audit trail is written (docs/audit-schema.md); defaults in DEFAULT_AUDIT. */
export interface AuditSettings {
  level: AuditLevel;
  rings: RingSizes;
  fsync: FsyncPolicy;
  rotation: RotationPolicy;
  countersIntervalMs: number;
}

export const DEFAULT_AUDIT: AuditSettings = {
  level: { allows: 'none', rate: 10, burst: 20 },
  rings: { deny: C.HELM_DENY_RING_BYTES, allow: C.HELM_ALLOW_RING_BYTES },
  fsync: { kind: 'every-batch' },
  rotation: { maxBytes: 64 * 1024 * 1024, maxAgeMs: 24 * 3_600_000, compress: true },
  countersIntervalMs: 60_000,
};

export interface HelmdOptions {
  policyPaths: string[];
  auditLog: string;
  audit?: Partial<AuditSettings>;
  dryRun: boolean;
  socket: string;
  /** Group (name or gid) allowed to use the socket besides root. */
  socketGroup?: string;
  /** An extra TCP listener that requires mutual TLS; off unless given. */
  tls?: TlsListener;
  /** Largest request the control API accepts, in bytes. */
  maxRequestBytes?: number;
  /** Re-apply the policy files when they change (SIGHUP always does). */
  watch?: boolean;
  watchDebounceMs?: number;
  bpfObject?: string;
  /**
   * helmd's state between runs (names for kernel ids, counters) and its lock.
   * With the real kernel, enforcement is pinned at pinDir and this is where it is
   * described (default /var/lib/helm).
   */
  stateDir?: string;
  /** Where enforcement is pinned (bpffs); default /sys/fs/bpf/helm. */
  pinDir?: string;
  /** The configuration file these options came from, protected like the policies. */
  configFile?: string;
  logger: Logger;
  /** The kernel binding (tests pass a fake: nothing is then pinned, nothing persisted). */
  kernel?: () => KernelBinding;
  /** How cgroups are looked at (tests pass a fake). */
  cgroups?: { inspect(p: string): CgroupInfo; hasProcesses(dir: string): boolean };
  /** Enforce network rules only (cgroup sock_addr programs), on kernels that refuse BPF LSM. */
  networkOnly?: boolean;
  /** Where agents' allowed DNS queries are resolved (default: the host's resolv.conf). */
  dnsUpstreams: Upstream[];
  /** Bounds on how long a learned address stays allowed, whatever the record's TTL. */
  dnsTtlMinSec: number;
  dnsTtlMaxSec: number;
}

export interface AgentState {
  id: bigint;
  name: string;
  role: string;
  cgroupPath: string;
  cgroupId: bigint;
  dryRun: boolean;
  labels: Record<string, string>;
  /** Its labels as the kernel sees them (labelBitsOf under the label ids of the generations in force). */
  labelBits: bigint;
  generation: number;
  denied: bigint;
  wouldDeny: bigint;
  lastDecisionAt: string;
  dns?: DnsForwarder;
}

/** The policy in force and where it came from. */
interface RunningSet {
  sources: PolicySourceText[];
  policies: Policy[];
  origin: 'files' | 'api';
  appliedAt: string;
}

export type ApplySource = 'api' | 'files' | 'sighup';

export interface ApplyResult {
  generation: number;
  previousGeneration: number;
  policies: string[];
  rules: number;
  pathEntries: number;
  warnings: PolicyDiagnostic[];
}

export interface ValidateResult {
  valid: boolean;
  diagnostics: PolicyDiagnostic[];
  policies: string[];
  rules: number;
  pathEntries: number;
}

export type ModeTarget = { agent: string } | { policy: string } | { helmd: true };

export interface ExplainInput {
  role?: string;
  agent?: string;
  verb: string;
  target: string;
  exe?: string;
  uid?: number;
  labels: Record<string, string>;
  addr?: string;
  isDir: boolean;
  sources: PolicySourceText[];
}

const ROLE_RE = /^[A-Za-z0-9_.-]+$/;
const AGENT_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const LABEL_KEY_RE = /^[A-Za-z0-9_.\/-]{1,63}$/;
const MAX_LABELS = 64;
const MAX_LABEL_VALUE = 256;
/** How often agents whose cgroup was removed are released. */
const RECONCILE_MS = 30_000;
/** Names of this many past generations go into the state file (events of the downtime name them). */
const PERSIST_GENERATION_NAMES = 2 * C.HELM_MAX_GENERATIONS;
/** Role name for governed cgroups whose role no record names: no policy names it, so it may do nothing. */
const UNKNOWN_ROLE = 'unknown';
const DEFAULT_STATE_DIR = '/var/lib/helm';
const LEARNED_SWEEP_MS = 1000;
/** How long a detached agent's name stays known, for its events still in the rings. */
const DETACHED_NAMES_MS = 60_000;
const DNS_TIMEOUT_MS = 3000;
/** Names of this many past generations are kept for events drained late. */
const KEEP_GENERATION_NAMES = 64;
/** Located errors copied into a `reject` audit line. */
const AUDITED_ERRORS = 20;

export class Helmd implements ControlPlane {
  private kernel?: KernelBinding;
  private recorder?: AuditRecorder;
  private server?: ControlServer;
  private watcher?: PolicyWatcher;
  private sweepTimer?: NodeJS.Timeout;
  private learned?: LearnedAddresses;
  /** role id to its host-name patterns, for the DNS forwarders. */
  private namesByRole = new Map<number, NameEntry[]>();
  private running?: RunningSet;
  /** Policy modes switched at run time (SetMode), by policy name; they outlive applies that keep the policy. */
  private policyModes = new Map<string, Mode>();
  private compiled?: CompiledPolicy;
  /** Compiles each policy edit from what the compile before computed: an edit of one rule costs about one rule. */
  private readonly compiler = new IncrementalCompiler();
  /** The rules of the last policy parsed, for the next parse to reuse (a large policy's edit reads the rules it changed). */
  private readonly ruleCache = new RuleCache();
  private dryRun: boolean;
  private readonly queue = new SerialQueue();
  readonly feed = new AuditFeed();
  private readonly generations = new Map<number, GenerationNames>();
  private readonly agents = new Map<bigint, AgentState>(); // by cgroup id
  /** Indexes for naming events on the drain path: agent id to agent, role id to role name. */
  private readonly agentsById = new Map<bigint, AgentState>();
  private roleNames = new Map<number, string>();
  /** Role ids ever handed out (state and kernel): kept stable across generations and restarts. */
  private roleIds = new Map<string, number>();
  /** Label pair ids, kept like role ids (agents' label bits in the pinned map name them). */
  private labelIds = new Map<string, number>();
  private nextAgentId = 1n;
  /** The real kernel (pinned); undefined with a fake binding. */
  private enforcer?: KernelEnforcer;
  private state?: HelmdState;
  private lockFd?: number;
  private createdStateDir = false;
  private reconcileTimer?: NodeJS.Timeout;
  /** Started and serving: stop() then records that it stops. */
  private serving = false;
  private realtimeOffset = 0n;
  private lastApply?: { at: string; ok: boolean; source: string; generation: number; error: string };
  private readonly log: Logger;
  private readonly cgroups: { inspect(p: string): CgroupInfo; hasProcesses(dir: string): boolean };

  constructor(private readonly opts: HelmdOptions) {
    this.log = opts.logger;
    this.dryRun = opts.dryRun;
    this.cgroups = opts.cgroups ?? { inspect: (p) => inspectCgroup(p), hasProcesses: cgroupHasProcesses };
  }

  private get stateDir(): string {
    return this.opts.stateDir ?? DEFAULT_STATE_DIR;
  }

  private get pinDir(): string {
    return this.opts.pinDir ?? DEFAULT_PIN_DIR;
  }

  async start(): Promise<void> {
    // 1. The policy first: a bad file must stop us before we touch the kernel.
    const loaded = loadPolicies(this.opts.policyPaths, { ruleCache: this.ruleCache });
    const pinned = !this.opts.kernel;
    if (pinned) {
      // 2. One helmd at a time: from here the state and the pins are ours.
      if (await socketAnswers(this.opts.socket)) throw new Error(`another helmd is already serving ${this.opts.socket}`);
      this.createdStateDir = !fs.existsSync(this.stateDir);
      this.lockFd = lockState(this.stateDir);
      this.state = loadState(this.stateDir);
      this.roleIds = new Map(Object.entries(this.state.roles));
      this.labelIds = new Map(Object.entries(this.state.labels));
    }
    const previousRun = !this.state ? 'none' : this.state.running ? 'crashed' : this.state.instance ? 'stopped' : 'none';
    // Compiled once, with the role ids earlier runs handed out (a compile walks blocked trees: not cheap).
    let compiled = this.compileFor(loaded.policies, new Map());
    for (const w of compiled.warnings) this.log.warn({ file: w.loc.file, line: w.loc.line }, w.message);
    this.log.info({ files: loaded.files, policies: loaded.policies.map((p) => p.name) }, 'policy compiled');

    // 3. The kernel: take over what is pinned, or load the programs (attached in 6), or fail with the reason.
    const audit = { ...DEFAULT_AUDIT, ...this.opts.audit };
    if (this.opts.kernel) this.kernel = this.opts.kernel();
    else {
      this.enforcer = KernelEnforcer.open({ objectPath: this.opts.bpfObject, pinDir: this.pinDir, version: VERSION, networkOnly: this.opts.networkOnly, rings: audit.rings });
      this.kernel = this.enforcer;
    }
    if (this.opts.networkOnly) {
      this.log.warn(
        'NETWORK-ONLY MODE: connect and bind rules are enforced; file (read/write/exec) rules and self-protection are NOT — this kernel does not run BPF LSM programs',
      );
    }
    this.realtimeOffset = this.kernel.realtimeOffsetNs();
    const kernel = this.kernel;
    this.learned = new LearnedAddresses(kernel, () => kernel.boottimeNs());
    this.sweepTimer = setInterval(() => this.learned?.sweep(), LEARNED_SWEEP_MS);

    // 4. Who is governed, and names for every id the kernel may report.
    const relearned = this.enforcer ? this.relearn() : { vanished: [] };
    const byId = new Map([...compiled.roles].map(([name, id]) => [id, name]));
    if ([...this.roleIds].some(([name, id]) => byId.has(id) && byId.get(id) !== name)) {
      // A role id the kernel holds but no record named went to a new role: compile again around it.
      compiled = this.compileFor(loaded.policies, new Map());
    }

    // 5. The audit trail, and the rings drained into it: first whatever they kept while no helmd ran.
    const pins = this.enforcer?.pins;
    const samePins = !!(this.state && pins && this.state.instance === pins.pinnedMeta?.instance);
    let backlog = 0n;
    if (this.enforcer) {
      for (const ring of ['deny', 'allow'] as const) {
        const r = this.enforcer.openEvents(ring);
        backlog += r.pendingBytes();
        r.close();
      }
    }
    this.recorder = await AuditRecorder.start(
      {
        file: this.opts.auditLog,
        ...audit,
        version: VERSION,
        logger: this.log,
        onDecision: (decision, ts, agentId, count) => this.counted(decision, ts, agentId, count),
        onWritten: (lines) => this.feed.publish(lines),
        // The pinned loss counters outlive helmd: what earlier runs wrote is not reported again.
        lostBaseline: samePins ? { deny: BigInt(this.state!.lostReported), allow: BigInt(this.state!.lostReportedAllow), since: this.state!.lostSince } : undefined,
        onLostReported: this.state
          ? (ring, total, since) => {
              if (ring === 'deny') this.state!.lostReported = total.toString();
              else this.state!.lostReportedAllow = total.toString();
              this.state!.lostSince = since;
              this.saveState();
            }
          : undefined,
      },
      this.kernel,
      this.auditContext,
      this.realtimeOffset,
    );
    for (const a of this.agents.values()) this.recorder.agentAttached(recordedAgent(a), { adopted: true });

    // 6. This helmd's policy as the next generation; the agents get their DNS forwarders
    //    (and new maps their entries); then the programs run on these maps.
    if (this.state) this.enforcer!.continueFrom(this.state.generation);
    const previousGeneration = this.generation;
    const generation = this.install(compiled);
    this.running = { sources: loaded.sources, policies: loaded.policies, origin: 'files', appliedAt: now() };
    this.kernel.setGlobalDryRun(this.dryRun);
    for (const a of this.agents.values()) {
      a.dns = await this.startDns(a);
      this.kernel.govern(a.cgroupId, this.governedAs(a, this.compiled!));
    }
    // What exists of helm's own files is protected before the programs can change.
    this.kernel.setProtected(this.ownFiles());
    let report: CommitReport | undefined;
    let upgradeLoss: bigint | undefined;
    if (this.enforcer) {
      report = this.enforcer.commit();
      this.state!.instance = this.enforcer.pins!.instance;
      if (!samePins) {
        // Another set's counters: nothing of them is in the trail yet.
        this.state!.lostReported = '0';
        this.state!.lostReportedAllow = '0';
      }
      this.saveState();
      if (this.enforcer.pins!.previous) upgradeLoss = this.drainPrevious();
    }
    this.control({ action: 'apply', source: 'startup', generation, previous_generation: previousGeneration, policies: names(loaded.policies), digest: policyDigest(loaded.policies), files: loaded.files, dry_run: this.dryRun });
    this.lastApply = { at: now(), ok: true, source: 'startup', generation, error: '' };
    this.recorder.reportLost();
    if (this.enforcer) this.reconcileTimer = setInterval(() => void this.reconcile().catch((e) => this.log.error({ err: e }, 'reconcile failed')), RECONCILE_MS);

    // 8. The control API; then nothing of helm's own is reachable from a governed agent.
    this.server = new ControlServer(this, {
      socket: this.opts.socket,
      socketGroup: this.opts.socketGroup,
      tls: this.opts.tls,
      maxRequestBytes: this.opts.maxRequestBytes,
      logger: this.log,
      // Agents may already be governed (re-adopted): the socket is protected before it has its name.
      beforePublish: (hidden) => this.kernel!.setProtected([...this.ownFiles(), hidden]),
    });
    await this.server.start();
    this.kernel.setProtected(this.ownFiles());

    // 9. Policy files are watched: a change is applied like any other, or rejected and audited.
    if (this.opts.watch !== false) {
      this.watcher = new PolicyWatcher(
        this.opts.policyPaths,
        () => void this.reload('files').catch(() => undefined),
        (e, dir) => this.log.error({ err: e, dir }, 'cannot watch policy sources; SIGHUP still reloads them'),
        this.opts.watchDebounceMs,
      );
      this.watcher.start();
    }
    this.serving = true;
    if (this.state && pins) {
      this.state.running = true;
      this.saveState();
      this.control({
        action: 'start',
        version: VERSION,
        previous: previousRun,
        pins: { dir: this.pinDir, set: pins.setName, outcome: pins.outcome, layout: pins.identity.layout, object: pins.identity.object, ...programsChanged(report!) },
        generation,
        agents: this.agentList().map((a) => ({ agent: a.name, agent_id: a.id.toString(), role: a.role, cgroup: a.cgroupPath })),
        ...(relearned.vanished.length ? { vanished: relearned.vanished } : {}),
        ...(upgradeLoss ? { upgrade_lost: upgradeLoss.toString() } : {}),
        backlog_bytes: backlog.toString(),
      });
      const what = { adopted: 're-adopted the pinned enforcement', replaced: 'replaced the pinned programs', rebuilt: 'rebuilt the pinned maps for a new layout', fresh: 'pinned new enforcement' }[pins.outcome];
      this.log.info({ pins: `${this.pinDir}/${pins.setName}`, outcome: pins.outcome, agents: this.agents.size, vanished: relearned.vanished.length, ...programsChanged(report!) }, `helmd ${what}`);
    }
    // The start and its apply are in the trail before helmd says it enforces (and systemd hears
    // READY=1): whoever acts on that finds them there, and a crash right after cannot lose them.
    await this.recorder.written();
    this.log.info(
      { generation: this.kernel.activeGeneration, socket: this.opts.socket, tls: this.opts.tls?.listen, audit: this.opts.auditLog, dryRun: this.dryRun },
      this.dryRun ? 'helmd running in DRY-RUN: denials are audited as would_deny and NOT enforced' : 'helmd enforcing',
    );
    notify(`READY=1\nSTATUS=${this.dryRun ? 'dry-run' : 'enforcing'}: generation ${this.generation}, ${this.agents.size} agents`);
  }

  /**
   * Rebuilds the agent table from what the kernel governs (the pinned map, or the
   * replaced set's) with names from the state file, and releases agents whose
   * cgroup is gone. After a fresh start (a reboot, an uninstall) nothing is governed.
   */
  private relearn(): { vanished: string[] } {
    const st = this.state!;
    const pins = this.enforcer!.pins!;
    for (const [g, names] of Object.entries(st.generations)) this.generations.set(Number(g), names);
    const known = new Map(st.agents.map((a) => [a.cgroupId, a]));
    let entries: GovernedEntry[] = [];
    if (pins.outcome === 'adopted' || pins.outcome === 'replaced') {
      entries = this.enforcer!.governedEntries();
      const forgotten = this.enforcer!.forgetAllLearned();
      if (forgotten) this.log.info({ addresses: forgotten }, 'learned addresses forgotten: agents look their names up again');
    } else if (pins.outcome === 'rebuilt') entries = this.previousAgents(known);
    else if (st.agents.length) {
      this.log.warn({ agents: st.agents.map((a) => a.name) }, 'agents of an earlier run are not governed any more (nothing was pinned: a reboot or helmctl uninstall); attach them again');
    }
    const idToRole = new Map([...this.roleIds].map(([name, id]) => [id, name]));
    const vanished: string[] = [];
    let maxAgent = BigInt(st.nextAgentId) - 1n;
    for (const e of entries) {
      const k = known.get(e.cgroupId.toString());
      if (e.agentId > maxAgent) maxAgent = e.agentId;
      const cgroupPath = k?.cgroupPath ?? findCgroupById(e.cgroupId);
      if (!cgroupPath || !cgroupIs(cgroupPath, e.cgroupId)) {
        vanished.push(k?.name ?? `cgroup-${e.cgroupId}`);
        if (pins.outcome !== 'rebuilt') {
          this.enforcer!.release(e.cgroupId);
          this.enforcer!.forgetAgent(e.agentId); // its decision counters
        }
        continue;
      }
      let role = k?.role ?? idToRole.get(e.roleId);
      if (role === undefined) {
        // A role id no record names: keep it taken, under a name no policy uses.
        role = `${UNKNOWN_ROLE}-${e.roleId}`;
        this.roleIds.set(role, e.roleId);
      }
      const agent: AgentState = {
        id: e.agentId,
        name: k?.name ?? path.basename(cgroupPath),
        role,
        cgroupPath,
        cgroupId: e.cgroupId,
        dryRun: e.dryRun,
        labels: k?.labels ?? {},
        labelBits: e.labelBits,
        generation: k?.generation ?? 0,
        denied: 0n,
        wouldDeny: 0n,
        lastDecisionAt: '',
      };
      this.agents.set(agent.cgroupId, agent);
      this.agentsById.set(agent.id, agent);
    }
    this.nextAgentId = maxAgent + 1n;
    this.roleNames = new Map([...this.roleIds].map(([name, id]) => [id, name]));
    if (vanished.length) this.log.info({ vanished }, 'released agents whose cgroups are gone');
    return { vanished };
  }

  /** The agents the replaced set governed, by its map's keys (the values' layout may have changed) and the state. */
  private previousAgents(known: Map<string, PersistedAgent>): GovernedEntry[] {
    const old = this.enforcer!.pins!.previous!.map('governed_cgroups');
    const fromState = (a: PersistedAgent) => ({ cgroupId: BigInt(a.cgroupId), agentId: BigInt(a.id), roleId: this.roleIds.get(a.role) ?? 0, dryRun: a.dryRun, labelBits: labelBitsOf(a.labels, this.labelIds) });
    if (!old || old.keySize !== 8) {
      this.log.warn('the replaced set has no readable governed_cgroups map: agents come from the state file alone');
      return [...known.values()].map(fromState);
    }
    let next = BigInt(this.state!.nextAgentId);
    return old.keys().map((key) => {
      const cgroupId = key.readBigUInt64LE(0);
      const k = known.get(cgroupId.toString());
      return k ? fromState(k) : { cgroupId, agentId: next++, roleId: 0, dryRun: false, labelBits: 0n };
    });
  }

  /**
   * After a rebuild the old programs are gone; what their rings still hold was
   * written in a layout this helmd may not read. Counted, and recorded as lost.
   */
  private drainPrevious(): bigint {
    const previous = this.enforcer!.pins!.previous!;
    let count = 0n;
    for (const name of ['events', 'deny_events', 'allow_events']) {
      const events = previous.map(name);
      if (!events) continue;
      const ring = new RingReader(events, 1 << 16);
      try {
        while (ring.drainOnce(() => count++, 0) > 0) {
          /* count them all */
        }
      } finally {
        ring.close();
      }
    }
    const lost = previous.map('lost_events');
    if (lost && lost.valueSize === 8) {
      // One per-CPU counter per ring (one ring before the deny/allow split).
      let total = 0n;
      for (let i = 0; i < lost.maxEntries; i++) total += readPerCpuCounter(lost, i);
      const same = this.state!.instance === previous.meta.instance;
      const reported = same ? BigInt(this.state!.lostReported) + BigInt(this.state!.lostReportedAllow) : 0n;
      if (total > reported) count += total - reported;
    }
    previous.close();
    if (count > 0n) {
      const at = now();
      this.recorder!.record({ v: AUDIT_SCHEMA_VERSION, ts: at, seq: 0, type: 'lost', source: 'upgrade', count: count.toString(), total: count.toString(), since: this.state!.lostSince || at, reason: "the replaced programs' undrained events (another layout)" });
      this.log.warn({ count: count.toString() }, 'events of the replaced programs recorded as lost');
    }
    return count;
  }

  /** Releases agents whose cgroup was removed (a stopped unit, a finished run). */
  private reconcile(): Promise<void> {
    return this.queue.run(() => {
      for (const a of [...this.agents.values()]) {
        if (cgroupIs(a.cgroupPath, a.cgroupId)) continue;
        this.kernel!.release(a.cgroupId);
        this.agents.delete(a.cgroupId);
        this.agentsById.delete(a.id);
        a.dns?.close();
        this.learned?.forgetAgent(a.id);
        this.saveState();
        this.recorder?.agentDetached(recordedAgent(a));
        this.control({ action: 'release', subject: subjectOf(a), reason: 'the cgroup was removed' });
        this.log.info({ agent: a.name, cgroup: a.cgroupPath }, 'agent released: its cgroup was removed');
      }
    });
  }

  /** The state file, before the kernel change it describes (no-op with a fake kernel). */
  private saveState(): void {
    const st = this.state;
    if (!st) return;
    st.agents = [...this.agents.values()].map(persisted);
    st.nextAgentId = this.nextAgentId.toString();
    st.roles = Object.fromEntries(this.roleIds);
    saveState(this.stateDir, st);
    // The file was replaced (a new inode): protect the new one.
    if (this.serving) this.kernel!.setProtected(this.ownFiles());
  }

  get generation(): number {
    return this.kernel?.activeGeneration ?? 0;
  }

  /** Policies (and directories given as sources, with every policy file now in them), the audit trail and its directory, the socket and its directory, the TLS files. */
  private ownFiles(): string[] {
    const own: string[] = [];
    for (const p of this.opts.policyPaths) {
      own.push(p);
      try {
        if (fs.statSync(p).isDirectory()) {
          for (const n of fs.readdirSync(p)) if (/\.(ya?ml|json)$/.test(n)) own.push(path.join(p, n));
        }
      } catch {
        /* gone: nothing to protect */
      }
    }
    own.push(this.opts.auditLog, path.dirname(this.opts.auditLog), this.opts.socket, path.dirname(this.opts.socket));
    if (this.state) {
      // The state names the roles behind kernel ids: rewritten, it would hand an agent another role's policy at the next start.
      own.push(this.stateDir, statePath(this.stateDir), lockPath(this.stateDir));
    }
    if (this.opts.configFile) own.push(this.opts.configFile);
    // With the TCP listener: its key, and what decides who may connect.
    if (this.opts.tls) own.push(this.opts.tls.key, this.opts.tls.cert, this.opts.tls.ca);
    return [...new Set(own.map((p) => path.resolve(p)))];
  }

  // -------------------------------------------------------------------------------------------
  // Generations

  private compileFor(policies: Policy[], modes: Map<string, Mode>, extraRole?: string): CompiledPolicy {
    const roles = new Set([...this.agents.values()].map((a) => a.role));
    if (extraRole) roles.add(extraRole);
    const withModes = policies.map((p) => (modes.has(p.name) ? { ...p, mode: modes.get(p.name)! } : p));
    // Ids that the kernel's other tables hold keep their meaning across generations, and across
    // helmd runs (the tables are pinned): role ids (agent entries), host-name pattern ids (learned
    // addresses) and label pair ids (agents' label bits), while a superseded generation may still be deciding.
    const c = this.compiled;
    return this.compiler.compile(withModes, { roleIds: this.roleIds, nameIds: c?.nameIds, labelIds: c?.labelIds ?? this.labelIds, extraRoles: roles });
  }

  /** Switches the kernel to a compiled generation (throws having changed nothing), then names it for the audit trail. */
  private install(compiled: CompiledPolicy): number {
    const next = this.kernel!.activeGeneration + 1;
    const st = this.state;
    const stBefore = st && { generation: st.generation, roles: st.roles, labels: st.labels, generations: st.generations };
    if (st) {
      // Names first: a helmd killed right after the switch must find them.
      const names = new Map(Object.entries(st.generations).map(([g, n]) => [Number(g), n]));
      names.set(next, { policies: compiled.policies, rules: compiled.rules });
      st.generation = next;
      st.generations = Object.fromEntries([...names].filter(([g]) => g > next - PERSIST_GENERATION_NAMES).map(([g, n]) => [String(g), n]));
      for (const [name, id] of compiled.roles) this.roleIds.set(name, id);
      st.labels = Object.fromEntries(compiled.labelIds);
      this.saveState();
    }
    // Agents get the bits of label pairs this generation names before it decides anything.
    // Pairs keep their ids, so the bits stay true for the generation still running; if the
    // switch fails, the bits go back to what they were.
    const before: [AgentState, bigint][] = [];
    for (const a of this.agents.values()) {
      const bits = labelBitsOf(a.labels, compiled.labelIds);
      if (bits === a.labelBits) continue;
      this.kernel!.govern(a.cgroupId, this.governedAs(a, compiled, { labelBits: bits }));
      before.push([a, a.labelBits]);
      a.labelBits = bits;
    }
    let gen: number;
    try {
      gen = this.kernel!.applyGeneration(compiled);
    } catch (e) {
      if (st && stBefore) Object.assign(st, stBefore);
      for (const [a, bits] of before) {
        this.kernel!.govern(a.cgroupId, this.governedAs(a, compiled, { labelBits: bits }));
        a.labelBits = bits;
      }
      throw e;
    }
    for (const [name, id] of compiled.roles) this.roleIds.set(name, id);
    this.labelIds = new Map(compiled.labelIds);
    this.compiled = compiled;
    this.roleNames = new Map([...compiled.roles].map(([name, id]) => [id, name]));
    this.namesByRole = new Map();
    for (const e of compiled.nameEntries) this.namesByRole.set(e.roleId, [...(this.namesByRole.get(e.roleId) ?? []), e]);
    this.generations.set(gen, { policies: compiled.policies, rules: compiled.rules });
    for (const g of this.generations.keys()) if (g <= gen - KEEP_GENERATION_NAMES) this.generations.delete(g);
    return gen;
  }

  /** Frees the superseded generation once nothing can be using it; the queue waits for it. */
  private retire(hold: (p: Promise<unknown>) => void): void {
    hold(this.kernel!.retire().catch((e) => this.log.error({ err: e }, 'could not free a superseded generation (it stays in the kernel)')));
  }

  /** PolicyService.Apply: the whole set is replaced, or nothing is. */
  apply(sources: PolicySourceText[], expectedGeneration: number | undefined, who: string): Promise<ApplyResult> {
    return this.recorded(this.queue.run((hold) => this.applySet(sources, 'api', expectedGeneration, who, hold)));
  }

  /** Re-reads the policy paths helmd was given and applies them (a file change, or SIGHUP). */
  reload(source: 'files' | 'sighup'): Promise<ApplyResult | undefined> {
    return this.recorded(this.queue.run((hold) => {
      let loaded: ReturnType<typeof loadPolicies>;
      try {
        loaded = loadPolicies(this.opts.policyPaths, { ruleCache: this.ruleCache });
      } catch (e) {
        this.rejected(e, source, 'helmd', this.opts.policyPaths);
        this.kernel!.setProtected(this.ownFiles());
        throw e;
      }
      // An event that changed no text (a touch, an editor's temporary file) is not a new policy.
      if (source === 'files' && this.running?.origin === 'files' && sameSources(loaded.sources, this.running.sources)) return undefined;
      try {
        // Parsed already: a large policy's parse is a good part of an apply.
        return this.applySet(loaded.sources, source, undefined, 'helmd', hold, loaded.policies);
      } finally {
        this.kernel!.setProtected(this.ownFiles());
      }
    }));
  }

  /** `parsed`: the policies of `sources`, when the caller has parsed them (see reload). */
  private applySet(sources: PolicySourceText[], source: ApplySource, expected: number | undefined, who: string, hold: (p: Promise<unknown>) => void, parsed?: Policy[]): ApplyResult {
    const previous = this.generation;
    try {
      if (expected !== undefined && expected !== previous) {
        throw aborted(`expected generation ${expected}, but generation ${previous} is loaded (another change came first); get the policy again and retry`);
      }
      const loaded = parsed !== undefined ? { policies: parsed } : loadPolicySources(sources, { ruleCache: this.ruleCache });
      const modes = new Map([...this.policyModes].filter(([name]) => loaded.policies.some((p) => p.name === name)));
      const compiled = this.compileFor(loaded.policies, modes);
      const generation = this.install(compiled);
      // Only now, with the kernel switched, does anything else change.
      this.policyModes = modes;
      this.running = { sources, policies: loaded.policies, origin: source === 'api' ? 'api' : 'files', appliedAt: now() };
      this.retire(hold);
      const files = sources.map((s) => s.file);
      this.control({ action: 'apply', source, by: who, generation, previous_generation: previous, policies: names(loaded.policies), digest: policyDigest(loaded.policies), files, warnings: compiled.warnings.length });
      this.lastApply = { at: now(), ok: true, source, generation, error: '' };
      this.log.info({ generation, previous, source, policies: names(loaded.policies), files }, 'policy applied');
      return {
        generation,
        previousGeneration: previous,
        policies: names(loaded.policies),
        rules: loaded.policies.reduce((n, p) => n + p.rules.length, 0),
        pathEntries: compiled.pathEntries.length,
        warnings: compiled.warnings,
      };
    } catch (e) {
      this.rejected(e, source, who, sources.map((s) => s.file));
      if (e instanceof PolicyError) throw invalidArgument(`the policy was rejected (${e.diagnostics.length} error${e.diagnostics.length === 1 ? '' : 's'}); generation ${previous} stays in force`, e.diagnostics);
      throw e;
    }
  }

  private rejected(e: unknown, source: ApplySource, who: string, files: string[]): void {
    const diags = e instanceof PolicyError ? e.diagnostics : [];
    const error = diags.length ? `${diags.length} error${diags.length === 1 ? '' : 's'} in the policy` : (e as Error).message;
    this.control({
      action: 'reject',
      source,
      by: who,
      generation: this.generation,
      files,
      error,
      ...(diags.length ? { errors: diags.slice(0, AUDITED_ERRORS).map(formatDiagnostic), errors_total: diags.length } : {}),
    });
    this.lastApply = { at: now(), ok: false, source, generation: this.generation, error: diags.length ? diags.slice(0, 5).map(formatDiagnostic).join('\n') : error };
    this.log.error({ source, files, generation: this.generation, errors: diags.slice(0, AUDITED_ERRORS).map(formatDiagnostic) }, `policy rejected, generation ${this.generation} stays in force: ${error}`);
  }

  validate(sources: PolicySourceText[]): ValidateResult {
    try {
      const loaded = loadPolicySources(sources, { ruleCache: this.ruleCache });
      const compiled = this.compileFor(loaded.policies, this.policyModes);
      return {
        valid: true,
        diagnostics: compiled.warnings,
        policies: names(loaded.policies),
        rules: loaded.policies.reduce((n, p) => n + p.rules.length, 0),
        pathEntries: compiled.pathEntries.length,
      };
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      return { valid: false, diagnostics: e.diagnostics, policies: [], rules: 0, pathEntries: 0 };
    }
  }

  policies() {
    const r = this.running!;
    return {
      generation: this.generation,
      sources: r.sources,
      origin: r.origin,
      appliedAt: r.appliedAt,
      list: r.policies.map((p) => ({
        name: p.name,
        roles: p.roles,
        mode: this.policyModes.get(p.name) ?? p.mode,
        sourceMode: p.mode,
        rules: p.rules.length,
        file: p.loc.file,
        line: p.loc.line,
      })),
    };
  }

  explain(req: ExplainInput) {
    let role = req.role ?? '';
    let labels = req.labels;
    let agent: AgentState | undefined;
    if (req.agent) {
      agent = this.findAgent(req.agent);
      if (role && role !== agent.role) throw invalidArgument(`agent ${agent.name} has role ${agent.role}, not ${role}`);
      role = agent.role;
      if (Object.keys(labels).length === 0) labels = agent.labels;
    }
    if (!role) throw invalidArgument('give a role or an agent');
    if (!isVerb(req.verb)) throw invalidArgument(`${JSON.stringify(req.verb)} is not a verb (read, write, exec, connect, bind)`);
    const op = operationFromOptions(
      req.verb,
      req.target,
      { role, exe: req.exe || undefined, uid: req.uid === undefined ? undefined : String(req.uid), label: Object.entries(labels).map(([k, v]) => `${k}=${v}`), addr: req.addr || undefined, dir: req.isDir },
      defaultCanonicalize,
    );
    if (typeof op === 'string') throw invalidArgument(op);
    let policies: Policy[];
    if (req.sources.length) {
      try {
        policies = loadPolicySources(req.sources).policies;
      } catch (e) {
        if (e instanceof PolicyError) throw invalidArgument('the policy sources were rejected', e.diagnostics);
        throw e;
      }
    } else {
      policies = this.running!.policies.map((p) => (this.policyModes.has(p.name) ? { ...p, mode: this.policyModes.get(p.name)! } : p));
    }
    const e = explain(policies, op);
    // The kernel adds dry-run for a whole agent or for all of helmd on top of the policy's mode.
    if (!req.sources.length && e.action === 'deny' && (this.dryRun || agent?.dryRun)) {
      e.decision = 'would_deny';
      e.mode = 'dry-run';
      e.notes.push(this.dryRun ? 'helmd runs in dry-run: this denial is not enforced' : `agent ${agent!.name} is in dry-run: this denial is not enforced`);
    }
    return { explanation: e, text: formatExplanation(e, op), generation: req.sources.length ? 0 : this.generation };
  }

  // -------------------------------------------------------------------------------------------
  // Agents and modes

  attach(req: { cgroupPath: string; role: string; dryRun: boolean; name: string; labels: Record<string, string> }, who: string): Promise<AgentState> {
    if (!ROLE_RE.test(req.role)) throw invalidArgument(`role must match ${ROLE_RE.source}, got ${JSON.stringify(req.role)}`);
    if (req.name && !AGENT_NAME_RE.test(req.name)) throw invalidArgument(`agent name must match ${AGENT_NAME_RE.source}, got ${JSON.stringify(req.name)}`);
    checkLabels(req.labels);
    return this.recorded(this.queue.run(async (hold) => {
      const cg = this.cgroups.inspect(req.cgroupPath);
      if (this.agents.has(cg.id)) throw alreadyExists(`${cg.path} is already governed`);
      // A role no generation knows yet gets entries (or none: deny all) before the cgroup is governed.
      if (!this.compiled!.roles.has(req.role)) {
        const previous = this.generation;
        const generation = this.install(this.compileFor(this.running!.policies, this.policyModes, req.role));
        this.retire(hold);
        this.control({ action: 'apply', source: 'attach', by: who, generation, previous_generation: previous, policies: names(this.running!.policies), digest: policyDigest(this.running!.policies), new_role: req.role });
      }
      const name = req.name || path.basename(cg.path);
      const agent: AgentState = {
        id: this.nextAgentId++,
        name,
        role: req.role,
        cgroupPath: cg.path,
        cgroupId: cg.id,
        dryRun: req.dryRun,
        labels: req.labels,
        labelBits: labelBitsOf(req.labels, this.compiled!.labelIds),
        generation: this.generation,
        denied: 0n,
        wouldDeny: 0n,
        lastDecisionAt: '',
      };
      // Its DNS forwarder first: from the moment the cgroup is governed, its DNS goes there.
      agent.dns = await this.startDns(agent);
      // Recorded first: a helmd killed right after the kernel update still knows the agent.
      this.agents.set(cg.id, agent);
      this.agentsById.set(agent.id, agent);
      try {
        this.saveState();
        this.kernel!.govern(cg.id, this.governedAs(agent, this.compiled!));
      } catch (e) {
        agent.dns.close();
        this.agents.delete(cg.id);
        this.agentsById.delete(agent.id);
        this.saveState();
        throw e;
      }
      this.recorder?.agentAttached(recordedAgent(agent));
      this.control({ action: 'attach', by: who, subject: subjectOf(agent), mode: modeOf(agent.dryRun), generation: this.generation });
      this.log.info({ agent: agent.name, role: agent.role, cgroup: agent.cgroupPath, dryRun: agent.dryRun }, 'agent attached');
      return agent;
    }));
  }

  detach(cgroupPath: string, force: boolean, who: string): Promise<void> {
    return this.recorded(this.queue.run(() => {
      const cg = this.cgroups.inspect(cgroupPath);
      const agent = this.agents.get(cg.id);
      if (!agent) throw notFound(`${cg.path} is not governed by helmd`);
      // Releasing a cgroup with processes in it would leave them ungoverned.
      if (!force && this.cgroups.hasProcesses(cg.path)) {
        throw failedPrecondition(`${cg.path} still has processes; they would run ungoverned (use force to detach anyway)`);
      }
      this.kernel!.release(cg.id);
      this.agents.delete(cg.id);
      // Its last counters, before the detach line; its last events may still be in the rings: keep its name a while.
      this.recorder?.agentDetached(recordedAgent(agent));
      setTimeout(() => {
        if (this.agentsById.get(agent.id) === agent) this.agentsById.delete(agent.id);
      }, DETACHED_NAMES_MS).unref();
      this.saveState();
      agent.dns?.close();
      this.learned?.forgetAgent(agent.id);
      this.control({ action: 'detach', by: who, subject: subjectOf(agent), forced: force });
      this.log.info({ agent: agent.name, cgroup: agent.cgroupPath, forced: force }, 'agent detached');
    }));
  }

  /** An agent's kernel entry under a generation's ids (role id; label bits as the agent has them unless given). */
  private governedAs(a: AgentState, compiled: CompiledPolicy, change: { dryRun?: boolean; labelBits?: bigint } = {}): GovernedAgent {
    return {
      agentId: a.id,
      roleId: compiled.roles.get(a.role)!,
      dryRun: change.dryRun ?? a.dryRun,
      dnsPort: a.dns?.port ?? 0,
      labelBits: change.labelBits ?? a.labelBits,
    };
  }

  agentList(): AgentState[] {
    return [...this.agents.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** An agent by id or by its name (which must then be unique). */
  findAgent(ref: string): AgentState {
    if (/^[0-9]+$/.test(ref)) {
      const byId = this.agentsById.get(BigInt(ref));
      if (byId) return byId;
    }
    const byName = [...this.agents.values()].filter((a) => a.name === ref);
    if (byName.length === 1) return byName[0];
    if (byName.length > 1) throw invalidArgument(`${byName.length} agents are named ${ref} (ids ${byName.map((a) => a.id).join(', ')}): give the id`);
    throw notFound(`no agent ${JSON.stringify(ref)} (helmctl agents lists them)`);
  }

  /** Agent names for references that may be ids (for audit filters). */
  agentNames(refs: string[]): string[] {
    return refs.flatMap((r) => {
      const byId = /^[0-9]+$/.test(r) ? this.agentsById.get(BigInt(r)) : undefined;
      return byId ? [r, byId.name] : [r];
    });
  }

  setMode(target: ModeTarget, mode: Mode, who: string): Promise<{ target: string; previous: Mode; mode: Mode; generation: number }> {
    return this.recorded(this.queue.run((hold) => {
      if ('agent' in target) {
        const agent = this.findAgent(target.agent);
        const previous = modeOf(agent.dryRun);
        this.kernel!.govern(agent.cgroupId, this.governedAs(agent, this.compiled!, { dryRun: mode === 'dry-run' }));
        agent.dryRun = mode === 'dry-run';
        this.saveState();
        return this.modeSwitched(`agent ${agent.name}`, { target: 'agent', subject: subjectOf(agent) }, previous, mode, who);
      }
      if ('policy' in target) {
        const policy = this.running!.policies.find((p) => p.name === target.policy);
        if (!policy) throw notFound(`no policy named ${JSON.stringify(target.policy)} is loaded (helmctl policy list shows them)`);
        const previous = this.policyModes.get(policy.name) ?? policy.mode;
        const modes = new Map(this.policyModes);
        // Switching back to what the source says drops the override.
        if (mode === policy.mode) modes.delete(policy.name);
        else modes.set(policy.name, mode);
        const before = this.generation;
        try {
          this.install(this.compileFor(this.running!.policies, modes));
        } catch (e) {
          this.control({ action: 'reject', source: 'mode', by: who, target: 'policy', subject: { policy: policy.name }, mode, generation: before, error: (e as Error).message });
          throw e;
        }
        this.policyModes = modes;
        this.retire(hold);
        return this.modeSwitched(`policy ${policy.name}`, { target: 'policy', subject: { policy: policy.name }, previous_generation: before }, previous, mode, who);
      }
      const previous = modeOf(this.dryRun);
      this.kernel!.setGlobalDryRun(mode === 'dry-run');
      this.dryRun = mode === 'dry-run';
      if (this.dryRun) this.log.warn('helmd switched to DRY-RUN: denials are audited as would_deny and NOT enforced');
      return this.modeSwitched('helmd', { target: 'helmd' }, previous, mode, who);
    }));
  }

  private modeSwitched(name: string, fields: object, previous: Mode, mode: Mode, who: string) {
    this.control({ action: 'mode', by: who, ...fields, mode, previous_mode: previous, generation: this.generation });
    this.log.info({ target: name, mode, previous, generation: this.generation }, 'mode switched');
    return { target: name, previous, mode, generation: this.generation };
  }

  // -------------------------------------------------------------------------------------------
  // System

  status() {
    return {
      version: VERSION,
      generation: this.generation,
      policies: this.running ? names(this.running.policies) : [],
      dryRun: this.dryRun,
      networkOnly: !!this.opts.networkOnly,
      auditLog: this.opts.auditLog,
      eventsWritten: this.recorder?.status().decisions ?? 0n,
      // Since this helmd started (earlier runs reported theirs); the downtime's loss counts here.
      eventsLost: this.recorder?.totalLost() ?? 0n,
      agents: this.agents.size,
      audit: this.auditStatus(),
      policyOrigin: this.running?.origin ?? 'files',
      policyPaths: this.opts.policyPaths,
      lastApply: this.lastApply,
      liveGenerations: this.kernel?.liveGenerations ?? [],
    };
  }

  doctor(): Check[] {
    // helmd is running, so the programs loaded: what is asked is the rest of the host.
    const checks = runChecks({ tryLoad: false });
    checks.push({ name: 'helmd enforcing', ok: !!this.kernel, detail: `generation ${this.generation} loaded${this.dryRun ? ', helmd-wide DRY-RUN' : ''}` });
    if (this.enforcer) checks.push(pinnedStateCheck(this.pinDir, this.opts.bpfObject));
    return checks;
  }

  version() {
    return { version: VERSION, api: 'helm.v1', node: process.version, kernel: `${os.release()} (${os.arch()})`, generation: this.generation };
  }

  // -------------------------------------------------------------------------------------------
  // The audit trail

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
      // Read at every query: modes switched at run time apply to DNS at once.
      decide: (name) => ({ nameIds: this.allowedNameIds(agent, name), dryRun: agent.dryRun || this.dryRun }),
      learn: (addr16, name, ids, ttl) => this.learned!.learn(agent.id, addr16, name, ids, ttl),
      audit: (a) => this.auditDns(agent, a),
      onError: (e) => this.log.error({ err: e, agent: agent.name }, 'DNS forwarder error'),
    });
    await fwd.listen();
    return fwd;
  }

  /** DNS lines: a refused name never left the host; an answered one says what was learned. */
  private auditDns(agent: AgentState, a: DnsQueryAudit): void {
    this.recorder?.record({
      v: AUDIT_SCHEMA_VERSION,
      ts: now(),
      seq: 0,
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
      generation: this.generation,
    });
  }

  /** Per-agent figures for the agent list, from each decision line as it is made. */
  private counted(decision: string, ts: string, agentId: bigint, count: number): void {
    const agent = this.agentsById.get(agentId);
    if (!agent) return;
    if (decision === 'deny') agent.denied += BigInt(count);
    else if (decision === 'would_deny') agent.wouldDeny += BigInt(count);
    agent.lastDecisionAt = ts;
  }

  /** Resolves once every audit line recorded so far is written (or counted lost). */
  auditWritten(): Promise<void> {
    return this.recorder?.written() ?? Promise.resolve();
  }

  /** A change is acknowledged once its control lines are written: a caller that reads the trail after the reply finds them. */
  private async recorded<T>(p: Promise<T>): Promise<T> {
    try {
      return await p;
    } finally {
      await this.auditWritten();
    }
  }

  /** A line about helmd itself (an apply, a rejection, a mode switch, an agent attached or detached). */
  private control(fields: Record<string, unknown>): void {
    this.recorder?.record({ v: AUDIT_SCHEMA_VERSION, ts: now(), seq: 0, type: 'control', ...fields });
  }

  /** The audit trail's state for Status: a failing disk shows here as well as in the log. */
  private auditStatus() {
    if (!this.recorder) return undefined;
    const s = this.recorder.status();
    return {
      file: s.trail.file,
      state: s.trail.state,
      error: s.trail.error ?? '',
      failing_since: s.trail.failingSince ?? '',
      lines_written: String(s.trail.linesWritten),
      lost_deny_ring: s.lost['deny-ring'].toString(),
      lost_allow_ring: s.lost['allow-ring'].toString(),
      lost_decode: s.lost.decode.toString(),
      lost_disk: s.lost.disk.toString(),
      allow_log: s.level.allows,
      fsync: s.fsync,
      rotations: s.trail.rotations,
      backlog: String(s.trail.backlog),
    };
  }

  /**
   * Stops helmd, not enforcement: the pinned programs keep deciding with the last
   * policy, and what they report waits in the ring for the next helmd.
   */
  async stop(): Promise<void> {
    if (this.serving) notify('STOPPING=1');
    this.watcher?.close();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    for (const a of this.agents.values()) a.dns?.close();
    await this.server?.stop();
    await this.queue.idle().catch(() => undefined);
    await this.recorder?.stop({
      before: () => {
        if (this.serving && this.state) {
          this.control({ action: 'stop', generation: this.generation, agents: this.agents.size, enforcement: `continues, pinned at ${this.pinDir}` });
          this.state.running = false;
          this.saveState();
          this.log.info({ pins: this.pinDir, agents: this.agents.size }, 'helmd stopped; enforcement continues (pinned): helmctl uninstall removes it');
        }
      },
    });
    this.kernel?.close();
    if (this.lockFd !== undefined) fs.closeSync(this.lockFd);
    this.lockFd = undefined;
    if (!this.serving) this.undoStateDir();
    this.serving = false;
  }

  /** A helmd that failed before pinning anything leaves no state directory it made. */
  private undoStateDir(): void {
    if (!this.createdStateDir || this.enforcer?.outcome) return;
    const left = fs.existsSync(this.stateDir) ? fs.readdirSync(this.stateDir) : [];
    if (left.every((f) => f === 'helmd.lock')) fs.rmSync(this.stateDir, { recursive: true, force: true });
  }
}

/** Does the cgroup at p still have this id (not removed, or removed and made again)? */
function cgroupIs(p: string, id: bigint): boolean {
  try {
    return fs.statSync(p, { bigint: true }).ino === id;
  } catch {
    return false;
  }
}

function persisted(a: AgentState): PersistedAgent {
  return { id: a.id.toString(), name: a.name, role: a.role, cgroupPath: a.cgroupPath, cgroupId: a.cgroupId.toString(), dryRun: a.dryRun, labels: a.labels, generation: a.generation };
}

/** What changed of the programs, for the log and the trail (empty lists left out). */
function programsChanged(r: CommitReport): Partial<CommitReport> {
  return Object.fromEntries(Object.entries(r).filter(([, v]) => (v as string[]).length > 0));
}

/** Tells systemd (Type=notify) how we are; nothing when not started by it. */
function notify(message: string): void {
  try {
    const rc = native().helm_sd_notify(message);
    if (rc < 0) process.stderr.write(`helmd: cannot notify systemd (errno ${-rc})\n`);
  } catch (e) {
    if (!(e instanceof KernelError)) throw e; // no native library (a fake kernel's tests): nobody to tell
  }
}


function now(): string {
  return rfc3339Nanos(BigInt(Date.now()) * 1_000_000n);
}

function names(policies: Policy[]): string[] {
  return policies.map((p) => p.name);
}

/**
 * Whom a control line is about. Nested, so that readers looking for an agent's decisions
 * (`agent`, `role` at the top of decision lines) do not mistake it for one.
 */
function subjectOf(a: AgentState): { agent: string; agent_id: string; role: string; cgroup: string } {
  return { agent: a.name, agent_id: a.id.toString(), role: a.role, cgroup: a.cgroupPath };
}

function modeOf(dryRun: boolean): Mode {
  return dryRun ? 'dry-run' : 'enforce';
}

function sameSources(a: PolicySourceText[], b: PolicySourceText[]): boolean {
  return a.length === b.length && a.every((s, i) => s.file === b[i].file && s.text === b[i].text);
}

function checkLabels(labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalidArgument(`at most ${MAX_LABELS} labels, got ${entries.length}`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY_RE.test(k) || k === '__proto__') throw invalidArgument(`label key must match ${LABEL_KEY_RE.source} and not be "__proto__", got ${JSON.stringify(k)}`);
    if (v.length > MAX_LABEL_VALUE || /[\u0000-\u001f]/.test(v)) throw invalidArgument(`label ${k}: value must be at most ${MAX_LABEL_VALUE} printable characters`);
  }
}

function recordedAgent(a: AgentState): RecordedAgent {
  return { id: a.id, name: a.name, role: a.role, cgroupPath: a.cgroupPath, cgroupId: a.cgroupId, labels: a.labels };
}
