#!/usr/bin/env node
// helmd — the helm daemon. Runs in the foreground; systemd (or a shell) supervises it.
// Settings come from --config (the systemd unit passes /etc/helm/helmd.yaml), and
// any option given on the command line overrides the file.
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import { DEFAULT_AUDIT, Helmd, VERSION, type AuditSettings } from '../helmd';
import { parseDuration, parseFsyncPolicy, parseSize } from '../audit/writer';
import { ringSizeProblem } from '../kernel/enforcer';
import { DEFAULT_SOCKET } from '../control/proto';
import { DEFAULT_MAX_REQUEST_BYTES } from '../control/server';
import { PolicyError } from '../policy/types';
import { KernelError } from '../kernel/native';
import { PinError } from '../kernel/pins';
import { ConfigError, DEFAULTS, LOG_LEVELS, loadConfig, type HelmdConfig } from '../config';
import { LockError, StateError } from '../state';
import fs from 'node:fs';
import { parseUpstream, upstreamsFromResolvConf, type Upstream } from '../net/dns-forwarder';

function readOrEmpty(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function seconds(flag: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n > 7 * 24 * 3600) throw new Error(`${flag} must be whole seconds up to a week, got ${JSON.stringify(text)}`);
  return n;
}

const program = new Command()
  .name('helmd')
  .description('Kernel-enforced, fail-closed guardrails for AI agents')
  .version(VERSION)
  .option('--config <file>', 'configuration file (e.g. /etc/helm/helmd.yaml); options given here override it')
  .option('--policy <path...>', 'policy file(s) or directories of *.yaml / *.yml / *.json')
  .option('--audit-log <path>', 'JSON-lines audit trail', DEFAULTS.audit.log)
  .addOption(new Option('--audit-allows <level>', 'which allowed operations get a line (all are counted)').choices(['none', 'sampled', 'all']).default(DEFAULT_AUDIT.level.allows))
  .option('--audit-sample-rate <n>', 'sampled: allow lines per second per agent', (v) => positiveInt('--audit-sample-rate', v), DEFAULT_AUDIT.level.rate)
  .option('--audit-sample-burst <n>', 'sampled: allow lines an agent may log at once', (v) => positiveInt('--audit-sample-burst', v), DEFAULT_AUDIT.level.burst)
  .option('--audit-fsync <policy>', 'every-batch | interval:MS | none', wrap(parseFsyncPolicy), DEFAULT_AUDIT.fsync)
  .option('--audit-rotate-size <size>', 'rotate the trail at this size (e.g. 64M; 0: never)', wrap(parseSize), DEFAULT_AUDIT.rotation.maxBytes)
  .option('--audit-rotate-age <duration>', 'rotate the trail at this age (e.g. 24h; 0: never)', wrap(parseDuration), DEFAULT_AUDIT.rotation.maxAgeMs)
  .option('--no-audit-compress', 'keep rotated files uncompressed (default: gzip)')
  .option('--audit-deny-ring <size>', 'the ring denials and would-denials travel on: a power of two (how many it holds: docs/audit-schema.md)', wrap(ringSize), DEFAULT_AUDIT.rings.deny)
  .option('--audit-allow-ring <size>', 'the ring logged allows travel on: a power of two', wrap(ringSize), DEFAULT_AUDIT.rings.allow)
  .option('--audit-counters-interval <duration>', "how often each agent's decision counters are written", wrap(parseDuration), DEFAULT_AUDIT.countersIntervalMs)
  .option('--dry-run', 'decide everything but enforce nothing: denials are audited as would_deny', false)
  .option('--socket <path>', 'control socket (gRPC), mode 0660, owner root', DEFAULT_SOCKET)
  .option('--socket-group <group>', 'group (name or gid) that may use the control socket besides root')
  .option('--state-dir <dir>', "helmd's state between runs (names for the kernel's ids, counters, its lock)", DEFAULTS.stateDir)
  .option('--pin-dir <dir>', 'where enforcement is pinned (on bpffs)', DEFAULTS.pinDir)
  .option('--no-watch', 'do not re-apply the policy files when they change (SIGHUP still does)')
  .option('--max-request-bytes <n>', 'largest control request accepted', (v) => positiveInt('--max-request-bytes', v), DEFAULT_MAX_REQUEST_BYTES)
  .option('--tls-listen <host:port>', 'also serve the control API on TCP, requiring mutual TLS (off by default)')
  .option('--tls-cert <file>', "helmd's certificate (PEM) for --tls-listen")
  .option('--tls-key <file>', "helmd's private key (PEM) for --tls-listen")
  .option('--tls-ca <file>', 'CA (PEM) whose client certificates --tls-listen accepts: no other client can connect')
  .option('--bpf-object <path>', 'compiled BPF object (default: build/helm.bpf.o of this installation)')
  .option('--network-only', 'enforce network rules only (cgroup sock_addr programs), for kernels without BPF LSM: file and exec rules are NOT enforced', false)
  .option('--dns-upstream <addr...>', "resolvers for agents' allowed DNS queries, ADDRESS[:PORT] (default: the nameservers of /etc/resolv.conf)")
  .option('--dns-ttl-min <seconds>', 'a learned address stays allowed at least this long', '5')
  .option('--dns-ttl-max <seconds>', 'and at most this long, whatever the record says (answers are capped to it too)', '3600')
  .addOption(new Option('--log-level <level>', 'operational log level').choices([...LOG_LEVELS]).default(DEFAULTS.log.level))
  .showHelpAfterError();

/** The file's settings, with every option given on the command line in their place. */
function settings(): HelmdConfig {
  const o = program.opts();
  const fromCli = (name: string) => program.getOptionValueSource(name) === 'cli';
  const cfg: HelmdConfig = o.config ? loadConfig(o.config) : { ...structuredClone(DEFAULTS), policy: [] };
  if (fromCli('policy')) cfg.policy = o.policy;
  if (fromCli('auditLog') || !o.config) cfg.audit.log = o.auditLog;
  if (fromCli('dryRun')) cfg.dryRun = o.dryRun;
  if (fromCli('socket') || !o.config) cfg.socket.path = o.socket;
  if (fromCli('socketGroup')) cfg.socket.group = o.socketGroup;
  if (fromCli('stateDir') || !o.config) cfg.stateDir = o.stateDir;
  if (fromCli('pinDir') || !o.config) cfg.pinDir = o.pinDir;
  if (fromCli('logLevel') || !o.config) cfg.log.level = o.logLevel;
  return cfg;
}

function positiveInt(flag: string, v: string): number {
  if (!/^[1-9][0-9]*$/.test(v)) throw new InvalidArgumentError(`${flag} must be a positive integer`);
  return Number(v);
}

/** A commander argument parser from a function that throws with a message. */
function wrap<T>(parse: (v: string) => T): (v: string) => T {
  return (v) => {
    try {
      return parse(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

function ringSize(v: string): number {
  const n = parseSize(v);
  const problem = ringSizeProblem(n);
  if (problem) throw new Error(problem);
  return n;
}

async function main(): Promise<void> {
  program.parse();
  const o = program.opts();
  const tlsFlags = [o.tlsListen, o.tlsCert, o.tlsKey, o.tlsCa];
  if (tlsFlags.some((f) => f !== undefined) && tlsFlags.some((f) => f === undefined)) {
    process.stderr.write('helmd: --tls-listen needs --tls-cert, --tls-key and --tls-ca (mutual TLS is the only way onto TCP)\n');
    process.exit(2);
  }
  let cfg: HelmdConfig;
  try {
    cfg = settings();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`helmd: the configuration was rejected:\n${e.message}\n`);
    process.exit(1);
  }
  if (cfg.policy.length === 0) {
    process.stderr.write('helmd: no policy: give --policy FILE|DIR... or a --config file that names one\n');
    process.exit(1);
  }
  // Synchronous: a killed helmd has written every line it logged (the journal gets them in order).
  const logger = pino({ name: 'helmd', level: cfg.log.level }, pino.destination({ dest: 1, sync: true }));
  if (process.getuid?.() !== 0) {
    process.stderr.write('helmd: must run as root (it loads BPF programs and governs cgroups)\n');
    process.exit(1);
  }
  let dnsUpstreams: Upstream[];
  let dnsTtlMinSec: number;
  let dnsTtlMaxSec: number;
  if (o.auditCountersInterval < 1000) {
    process.stderr.write('helmd: --audit-counters-interval must be at least 1s\n');
    process.exit(1);
  }
  const audit: AuditSettings = {
    // The configuration's audit.allows, unless --audit-allows was given.
    level: { allows: program.getOptionValueSource('auditAllows') === 'cli' || !o.config ? o.auditAllows : cfg.audit.allows, rate: o.auditSampleRate, burst: o.auditSampleBurst },
    rings: { deny: o.auditDenyRing, allow: o.auditAllowRing },
    fsync: o.auditFsync,
    rotation: { maxBytes: o.auditRotateSize, maxAgeMs: o.auditRotateAge, compress: o.auditCompress },
    countersIntervalMs: o.auditCountersInterval,
  };
  try {
    dnsUpstreams = o.dnsUpstream ? (o.dnsUpstream as string[]).map(parseUpstream) : upstreamsFromResolvConf(readOrEmpty('/etc/resolv.conf'));
    dnsTtlMinSec = seconds('--dns-ttl-min', o.dnsTtlMin);
    dnsTtlMaxSec = seconds('--dns-ttl-max', o.dnsTtlMax);
    if (dnsTtlMinSec > dnsTtlMaxSec) throw new Error(`--dns-ttl-min (${dnsTtlMinSec}) is above --dns-ttl-max (${dnsTtlMaxSec})`);
  } catch (e) {
    process.stderr.write(`helmd: ${(e as Error).message}\n`);
    process.exit(2);
  }
  if (dnsUpstreams.length === 0) logger.warn('no upstream resolver (none in /etc/resolv.conf, no --dns-upstream): agents\' DNS queries will fail');
  const helmd = new Helmd({
    policyPaths: cfg.policy,
    auditLog: cfg.audit.log,
    audit,
    dryRun: cfg.dryRun,
    socket: cfg.socket.path,
    socketGroup: cfg.socket.group,
    stateDir: cfg.stateDir,
    pinDir: cfg.pinDir,
    configFile: o.config,
    tls: o.tlsListen ? { listen: o.tlsListen, cert: o.tlsCert, key: o.tlsKey, ca: o.tlsCa } : undefined,
    maxRequestBytes: o.maxRequestBytes,
    watch: o.watch,
    bpfObject: o.bpfObject,
    logger,
    networkOnly: o.networkOnly,
    dnsUpstreams,
    dnsTtlMinSec,
    dnsTtlMaxSec,
  });
  try {
    // SIGHUP re-reads the policy files: applied atomically, or rejected (logged, audited) with
    // the running policy kept. Handled from the start: its default action would end helmd.
    let started = false;
    let hupDuringStart = false;
    process.on('SIGHUP', () => {
      if (started) void helmd.reload('sighup').catch(() => undefined);
      else hupDuringStart = true;
    });
    await helmd.start();
    started = true;
    if (hupDuringStart) void helmd.reload('sighup').catch(() => undefined);
  } catch (e) {
    if (e instanceof PolicyError) {
      process.stderr.write(`helmd: the policy was rejected:\n${e.message}\n`);
    } else if (e instanceof KernelError) {
      process.stderr.write(`helmd: NOT ENFORCING — ${e.message}\n`);
    } else if (e instanceof PinError || e instanceof StateError || e instanceof LockError) {
      // Whatever is pinned keeps enforcing: say so, and what to do.
      process.stderr.write(`helmd: cannot start: ${e.message}\n`);
    } else {
      process.stderr.write(`helmd: cannot start: ${(e as Error).stack ?? e}\n`);
    }
    await helmd.stop().catch(() => undefined);
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    helmd.stop().then(
      () => process.exit(0),
      (e) => {
        logger.error({ err: e }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

void main();
