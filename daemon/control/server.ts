// The gRPC surface of helmd: the four helm.v1 services on a unix socket (root and
// one configurable group) and, when configured, on a TCP port that requires
// mutual TLS. This file checks requests and maps between wire messages and
// helmd's operations; what an operation does is helmd's business.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Helmd, ModeTarget } from '../helmd';
import type { Mode, PolicyDiagnostic } from '../policy/types';
import type { PolicySourceText } from '../policy/parse';
import { recordFilter } from '../audit/feed';
import { CgroupError } from './cgroups';
import { helmProto, socketAddress } from './proto';
import { invalidArgument, resourceExhausted, toServiceError, wireDiagnostic } from './status';

/** What the server asks of helmd. */
export type ControlPlane = Pick<
  Helmd,
  'apply' | 'validate' | 'policies' | 'explain' | 'attach' | 'detach' | 'agentList' | 'agentNames' | 'setMode' | 'status' | 'doctor' | 'version' | 'feed' | 'auditWritten'
>;

export interface TlsListener {
  /** HOST:PORT (port 0: any free port, see ControlServer.tlsPort). */
  listen: string;
  cert: string;
  key: string;
  /** The CA whose client certificates are accepted: only those. */
  ca: string;
}

export interface ServerOptions {
  socket: string;
  socketGroup?: string;
  tls?: TlsListener;
  maxRequestBytes?: number;
  logger: Logger;
  /**
   * Called with the socket bound under a hidden name, before it gets its own:
   * helmd protects it there, so no governed agent ever sees it unprotected.
   */
  beforePublish?: (boundAt: string) => void;
}

export const DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024;
const MAX_SOURCES = 10_000;
const MAX_FILE_NAME = 4096;
/** Records a Tail client may be behind before it is ended (the file has them all). */
const MAX_STREAM_BACKLOG = 10_000;
const MAX_TAIL_LAST = 100_000;

const MODES: Record<string, Mode> = { MODE_ENFORCE: 'enforce', MODE_DRY_RUN: 'dry-run' };
const WIRE_MODE: Record<Mode, string> = { enforce: 'MODE_ENFORCE', 'dry-run': 'MODE_DRY_RUN' };

/** A request protobuf could not decode: answered as INVALID_ARGUMENT by our handler, not INTERNAL by grpc-js. */
const MALFORMED = Symbol('malformed');
type Malformed = { [MALFORMED]: string };

export class ControlServer {
  private server?: grpc.Server;
  private boundTlsPort?: number;
  private readonly streams = new Set<() => void>();

  constructor(
    private readonly plane: ControlPlane,
    private readonly opts: ServerOptions,
  ) {}

  get tlsPort(): number | undefined {
    return this.boundTlsPort;
  }

  async start(): Promise<void> {
    const proto = helmProto();
    const server = new grpc.Server({
      'grpc.max_receive_message_length': this.opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    });
    const p = this.plane;
    server.addService(tolerant(proto.PolicyService.service), {
      Apply: unary(async (req: { sources: WireSource[]; expected_generation?: number }, call) => {
        const r = await p.apply(sourcesOf(req.sources), req.expected_generation, peerOf(call));
        return { generation: r.generation, previous_generation: r.previousGeneration, policies: r.policies, rules: r.rules, path_entries: r.pathEntries, warnings: r.warnings.map(wireDiagnostic) };
      }),
      Get: unary(() => {
        const r = p.policies();
        return { generation: r.generation, sources: r.sources.map((s) => ({ file: s.file, content: s.text })), origin: r.origin, applied_at: r.appliedAt };
      }),
      List: unary(() => {
        const r = p.policies();
        return {
          generation: r.generation,
          policies: r.list.map((x) => ({ name: x.name, roles: x.roles, mode: WIRE_MODE[x.mode], source_mode: WIRE_MODE[x.sourceMode], rules: x.rules, file: x.file, line: x.line })),
        };
      }),
      Validate: unary((req: { sources: WireSource[] }) => {
        const r = p.validate(sourcesOf(req.sources));
        return { valid: r.valid, diagnostics: sortDiagnostics(r.diagnostics).map(wireDiagnostic), policies: r.policies, rules: r.rules, path_entries: r.pathEntries };
      }),
      Explain: unary((req: WireExplain) => {
        const r = p.explain({
          role: req.role || undefined,
          agent: req.agent || undefined,
          verb: req.verb,
          target: req.target,
          exe: req.exe || undefined,
          uid: req.uid,
          labels: req.labels ?? {},
          addr: req.addr || undefined,
          isDir: !!req.is_dir,
          sources: req.sources.length ? sourcesOf(req.sources) : [],
        });
        const e = r.explanation;
        return {
          decision: e.decision,
          action: e.action,
          mode: WIRE_MODE[e.mode],
          policy: e.policy ?? '',
          rule: e.rule ?? '',
          reason: e.reason,
          decided_by: e.decidedBy,
          text: r.text,
          json: JSON.stringify(e),
          generation: r.generation,
          notes: e.notes,
        };
      }),
    });
    server.addService(tolerant(proto.AgentService.service), {
      Attach: unary(async (req: { cgroup_path: string; role: string; dry_run: boolean; name: string; labels: Record<string, string> }, call) => {
        const a = await p.attach({ cgroupPath: req.cgroup_path, role: req.role, dryRun: !!req.dry_run, name: req.name, labels: req.labels ?? {} }, peerOf(call));
        return agentMessage(a);
      }),
      Detach: unary(async (req: { cgroup_path: string; force: boolean }, call) => {
        await p.detach(req.cgroup_path, !!req.force, peerOf(call));
        return { detached: true };
      }),
      List: unary(() => ({ agents: p.agentList().map(agentMessage) })),
      SetMode: unary(async (req: { target?: string; agent?: string; policy?: string; helmd?: boolean; mode: string }, call) => {
        const mode = MODES[req.mode];
        if (!mode) throw invalidArgument(`mode must be MODE_ENFORCE or MODE_DRY_RUN, got ${JSON.stringify(req.mode)}`);
        let target: ModeTarget;
        if (req.target === 'agent' && req.agent) target = { agent: req.agent };
        else if (req.target === 'policy' && req.policy) target = { policy: req.policy };
        else if (req.target === 'helmd' && req.helmd === true) target = { helmd: true };
        else throw invalidArgument('say what to switch: an agent (id or name), a policy (name), or helmd (true)');
        const r = await p.setMode(target, mode, peerOf(call));
        return { target: r.target, previous: WIRE_MODE[r.previous], mode: WIRE_MODE[r.mode], generation: r.generation };
      }),
    });
    server.addService(tolerant(proto.AuditService.service), { Tail: (call: grpc.ServerWritableStream<WireTail, object>) => this.tail(call) });
    server.addService(tolerant(proto.SystemService.service), {
      Status: unary(() => {
        const s = p.status();
        return {
          version: s.version,
          generation: s.generation,
          policies: s.policies,
          dry_run: s.dryRun,
          audit_log: s.auditLog,
          events_written: s.eventsWritten.toString(),
          events_lost: s.eventsLost.toString(),
          agents: s.agents,
          network_only: s.networkOnly,
          policy_origin: s.policyOrigin,
          policy_paths: s.policyPaths,
          last_apply: s.lastApply ?? null,
          live_generations: s.liveGenerations,
          audit: s.audit ?? null,
        };
      }),
      Doctor: unary(() => {
        const checks = p.doctor();
        return { ok: checks.every((c) => c.ok), checks: checks.map((c) => ({ ...c, fix: c.fix ?? '' })) };
      }),
      Version: unary(() => p.version()),
    });

    await this.bindUnix(server);
    if (this.opts.tls) await this.bindTls(server, this.opts.tls);
    this.server = server;
  }

  /** root and the configured group may connect (0660); created 0600 so it is never wider, even for an instant. */
  private async bindUnix(server: grpc.Server): Promise<void> {
    const socket = this.opts.socket;
    const gid = this.opts.socketGroup === undefined ? undefined : groupId(this.opts.socketGroup);
    const dir = path.dirname(socket);
    fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
    if (gid !== undefined) {
      // The group needs to traverse the socket's directory too.
      fs.chownSync(dir, 0, gid);
      fs.chmodSync(dir, 0o750);
    }
    if (await socketAnswers(socket)) throw new Error(`another helmd is already serving ${socket}`);
    // Bound under an unguessable name in its (protected) directory, then renamed over
    // the name clients use: that replaces a stale socket of a crashed helmd too.
    const hidden = path.join(dir, `.helmd-${crypto.randomBytes(8).toString('hex')}.sock`);
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) =>
        server.bindAsync(socketAddress(hidden), grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
      );
    } finally {
      process.umask(umask);
    }
    if (gid !== undefined) fs.chownSync(hidden, 0, gid);
    fs.chmodSync(hidden, 0o660);
    this.opts.beforePublish?.(hidden);
    fs.renameSync(hidden, socket);
  }

  private async bindTls(server: grpc.Server, tls: TlsListener): Promise<void> {
    const read = (what: string, file: string) => {
      try {
        return fs.readFileSync(file);
      } catch (e) {
        throw new Error(`--tls-${what} ${file}: ${(e as Error).message}`);
      }
    };
    // checkClientCertificate: a client must present a certificate signed by this CA, or the handshake fails.
    const creds = grpc.ServerCredentials.createSsl(read('ca', tls.ca), [{ cert_chain: read('cert', tls.cert), private_key: read('key', tls.key) }], true);
    this.boundTlsPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(tls.listen, creds, (err, port) => (err ? reject(new Error(`cannot listen on ${tls.listen}: ${err.message}`)) : resolve(port))),
    );
    this.opts.logger.warn({ listen: tls.listen, port: this.boundTlsPort }, 'control API also listening on TCP (mutual TLS: only clients with a certificate from the configured CA)');
  }

  private tail(call: grpc.ServerWritableStream<WireTail, object>): void {
    const req = call.request as WireTail | Malformed;
    if (MALFORMED in req) return void call.emit('error', toServiceError(invalidArgument(`malformed request: ${req[MALFORMED]}`)));
    if (req.last > MAX_TAIL_LAST) return void call.emit('error', toServiceError(invalidArgument(`last is at most ${MAX_TAIL_LAST}`)));
    const filter = recordFilter({ agent: this.plane.agentNames(req.agent), role: req.role, decision: req.decision, op: req.op, type: req.type });
    // The recent records include every one helmd had when the call came in: wait for those to be written.
    this.plane.auditWritten().then(
      () => this.stream(call, req, filter),
      (e) => call.emit('error', toServiceError(e)),
    );
  }

  private stream(call: grpc.ServerWritableStream<WireTail, object>, req: WireTail, filter: ReturnType<typeof recordFilter>): void {
    if (call.cancelled) return;
    const feed = this.plane.feed;
    for (const r of feed.last(req.last, filter)) call.write(auditMessage(r.record, r.line));
    if (!req.follow) return void call.end();
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      unsubscribe();
      this.streams.delete(close);
    };
    const close = () => {
      finish();
      call.end();
    };
    const unsubscribe = feed.subscribe(filter, (r) => {
      if (ended) return;
      if (call.writableLength >= MAX_STREAM_BACKLOG) {
        finish();
        call.emit('error', toServiceError(resourceExhausted(`this client fell more than ${MAX_STREAM_BACKLOG} records behind; the audit file has every record`)));
        return;
      }
      call.write(auditMessage(r.record, r.line));
    });
    this.streams.add(close);
    call.on('cancelled', finish);
    call.on('close', finish);
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    for (const close of [...this.streams]) close();
    const server = this.server;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    fs.rmSync(this.opts.socket, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

interface WireSource {
  file: string;
  content: string;
}

interface WireExplain {
  role: string;
  agent: string;
  verb: string;
  target: string;
  exe: string;
  uid?: number;
  labels: Record<string, string>;
  addr: string;
  is_dir: boolean;
  sources: WireSource[];
}

interface WireTail {
  last: number;
  follow: boolean;
  agent: string[];
  role: string[];
  decision: string[];
  op: string[];
  type: string[];
}

function sourcesOf(sources: WireSource[]): PolicySourceText[] {
  if (sources.length === 0) throw invalidArgument('no policy sources in the request');
  if (sources.length > MAX_SOURCES) throw invalidArgument(`at most ${MAX_SOURCES} sources in one request, got ${sources.length}`);
  return sources.map((s, i) => {
    if (!s.file) throw invalidArgument(`source ${i + 1} has no file name (it locates errors: e.g. "payments.yaml")`);
    if (s.file.length > MAX_FILE_NAME || /[\u0000-\u001f]/.test(s.file)) throw invalidArgument(`source ${i + 1}: the file name must be at most ${MAX_FILE_NAME} printable characters`);
    return { file: s.file, text: s.content };
  });
}

function sortDiagnostics(d: PolicyDiagnostic[]): PolicyDiagnostic[] {
  return [...d].sort((a, b) => (a.severity === b.severity ? 0 : a.severity === 'error' ? -1 : 1));
}

/** Who asked, for the audit trail: the client certificate's subject on TCP, else the unix socket. */
function peerOf(call: grpc.ServerUnaryCall<unknown, unknown>): string {
  const auth = call.getAuthContext();
  if (auth.transportSecurityType === 'ssl') {
    const cert = auth.sslPeerCertificate as { subject?: { CN?: string } } | undefined;
    return `tls:${cert?.subject?.CN ?? 'unnamed'}`;
  }
  return 'unix';
}

/** The service definition with request decoding that never throws: a malformed request reaches the handler as such. */
function tolerant(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, def] of Object.entries(service)) {
    out[name] = {
      ...def,
      requestDeserialize: (b: Buffer) => {
        try {
          return def.requestDeserialize(b);
        } catch (e) {
          return { [MALFORMED]: (e as Error).message } as Malformed;
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/** A unary handler: malformed requests and thrown errors become status codes. */
function unary<Req, Res>(fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>) {
  return (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
    const req = call.request as Req | Malformed;
    if (req && typeof req === 'object' && MALFORMED in req) {
      cb(toServiceError(invalidArgument(`malformed request: ${(req as Malformed)[MALFORMED]}`)) as grpc.ServiceError);
      return;
    }
    Promise.resolve()
      .then(() => fn(req as Req, call))
      .then(
        (res) => cb(null, res),
        (e) => cb(toServiceError(e, e instanceof CgroupError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL) as grpc.ServiceError),
      );
  };
}

// ---------------------------------------------------------------------------------------------
// Responses

function agentMessage(a: ReturnType<ControlPlane['agentList']>[number]): object {
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
    mode: a.dryRun ? 'MODE_DRY_RUN' : 'MODE_ENFORCE',
    counters: { denied: a.denied.toString(), would_deny: a.wouldDeny.toString(), last_decision_at: a.lastDecisionAt },
  };
}

function auditMessage(r: Record<string, unknown>, line: string): object {
  const str = (v: unknown) => (v === null || v === undefined ? '' : String(v));
  return {
    seq: str(r.seq),
    ts: str(r.ts),
    type: str(r.type),
    decision: str(r.decision),
    op: str(r.op),
    path: str(r.path),
    agent: str(r.agent),
    role: str(r.role),
    policy: str(r.policy),
    rule: str(r.rule),
    mode: str(r.mode),
    generation: typeof r.generation === 'number' ? r.generation : 0,
    pid: typeof r.pid === 'number' ? r.pid : 0,
    line,
  };
}

// ---------------------------------------------------------------------------------------------
// The socket

function groupId(group: string): number {
  if (/^[0-9]+$/.test(group)) return Number(group);
  try {
    // getent asks NSS, so groups from LDAP and the like resolve too.
    const line = execFileSync('getent', ['group', group], { encoding: 'utf8' }).trim();
    const gid = Number(line.split(':')[2]);
    if (Number.isInteger(gid)) return gid;
  } catch {
    /* reported below */
  }
  throw new Error(`--socket-group ${group}: no such group`);
}

/** Whether something (another helmd) accepts connections on the unix socket. */
export function socketAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
