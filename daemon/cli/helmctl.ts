#!/usr/bin/env node
// helmctl — run and attach governed agents, check the host, lint policies.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, InvalidArgumentError, Option } from 'commander';
import { VERSION } from '../helmd';
import { DEFAULT_SOCKET } from '../control/proto';
import { call, ControlError, type Endpoint } from '../control/client';
import { tailAudit, formatStreamed } from '../control/audit-stream';
import { cgroup2Mount, cgroupHasProcesses } from '../control/cgroups';
import { runAllChecks, formatChecks } from '../doctor';
import { ConfigError, DEFAULT_CONFIG, DEFAULTS, loadConfig, type HelmdConfig } from '../config';
import { unitCgroup } from '../control/units';
import { uninstall } from '../uninstall';
import { buildDir } from '../kernel/native';
import { loadPolicies, parsePolicySource, readPolicySources } from '../policy/parse';
import { PolicyError, VERBS, formatDiagnostic, type Policy, type PolicyDiagnostic, type Verb } from '../policy/types';
import { formatNote, lintPolicies } from '../policy/lint';
import { checkCaseRules, defaultCanonicalize, formatResult, isVerb, readCases, runCases, type TestCase } from '../policy/cases';
import { explain, formatExplanation, labelsFromOptions, operationFromOptions } from '../policy/explain';
import { verifyTrails } from '../audit/verify';
import { parseTime, type AuditLineData, type LineFilter } from '../audit/filter';
import { followTrail } from '../audit/follow';
import { formatTable, queryTrail, tableRow } from '../audit/query';
import { buildReport, reportMarkdown, type Period } from '../audit/report';
import { readLines, trailFiles } from '../audit/files';
import { suggestPolicy } from '../policy/suggest';
import { evaluateOperation } from '../policy/evaluate';

interface AgentMessage {
  id: string;
  name: string;
  role: string;
  cgroup_path: string;
  cgroup_id: string;
  dry_run: boolean;
  generation: number;
  mode: string;
  labels: Record<string, string>;
  counters: { denied: string; would_deny: string; last_decision_at: string };
}

/** Options every command that talks to helmd takes: the socket, or a TCP address with mutual TLS. */
function connects(cmd: Command): Command {
  return cmd
    .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
    .option('--server <host:port>', "reach helmd's TCP listener instead (mutual TLS: needs --tls-cert, --tls-key, --tls-ca)")
    .option('--tls-cert <file>', 'client certificate (PEM) for --server')
    .option('--tls-key <file>', 'client private key (PEM) for --server')
    .option('--tls-ca <file>', "CA (PEM) that signed helmd's certificate, for --server");
}

function endpoint(o: { socket: string; server?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string }): Endpoint {
  if (!o.server) {
    if (o.tlsCert || o.tlsKey || o.tlsCa) fail('--tls-cert, --tls-key and --tls-ca go with --server HOST:PORT');
    return { socket: o.socket };
  }
  if (!o.tlsCert || !o.tlsKey || !o.tlsCa) fail('--server needs --tls-cert, --tls-key and --tls-ca: helmd accepts TCP clients only with mutual TLS');
  return { socket: o.socket, tls: { server: o.server, cert: o.tlsCert, key: o.tlsKey, ca: o.tlsCa } };
}

function fail(message: string, code = 1): never {
  process.stderr.write(`helmctl: ${message}\n`);
  process.exit(code);
}

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
function agentName(v: string): string {
  if (!NAME_RE.test(v)) throw new InvalidArgumentError(`must match ${NAME_RE.source}`);
  return v;
}

/** --label KEY=VALUE options as the agent's labels (matched by contextual rules' when.label). */
function labelsOf(options: string[]): Record<string, string> {
  const labels = labelsFromOptions(options);
  if (typeof labels === 'string') fail(labels);
  return labels;
}

const collect = (v: string, prev: string[]) => [...prev, v];

function defaultCgroupParent(): string {
  const mount = cgroup2Mount();
  if (!mount) fail('no cgroup v2 hierarchy is mounted; run `helmctl doctor`');
  return path.join(mount, 'helm');
}

const program = new Command().name('helmctl').description('Control helm: governed agents, host checks, policies').version(VERSION).showHelpAfterError().enablePositionalOptions();

program
  .command('run')
  .description('run CMD as a governed agent in a fresh cgroup; exits with its status')
  .requiredOption('--role <role>', "the agent's role: which policies govern it")
  .option('--dry-run', 'force this agent into dry-run: denials are audited as would_deny, not enforced', false)
  .option('--name <name>', 'agent name (default: the command name and pid)', agentName)
  .option('--label <key=value>', "one of the agent's labels, for contextual rules' when.label (repeatable)", collect, [] as string[])
  .option('--cgroup-parent <dir>', 'where to create the cgroup (default: <cgroup2 mount>/helm)')
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .argument('<cmd...>', 'the command and its arguments (after --)')
  .passThroughOptions()
  .action(async (cmd: string[], o) => {
    const labels = labelsOf(o.label);
    const parent = o.cgroupParent ?? defaultCgroupParent();
    const name = o.name ?? `${path.basename(cmd[0]).replace(/[^A-Za-z0-9_.-]/g, '_')}-${process.pid}`;
    const cgroup = path.join(parent, name);
    fs.mkdirSync(parent, { recursive: true });
    try {
      fs.mkdirSync(cgroup);
    } catch (e) {
      fail(`cannot create cgroup ${cgroup}: ${(e as Error).message}`);
    }
    try {
      await call<AgentMessage>(o.socket, 'AgentService', 'Attach', { cgroup_path: cgroup, role: o.role, dry_run: o.dryRun, name, labels });
    } catch (e) {
      fs.rmdirSync(cgroup);
      fail(`not starting the agent: helmd did not govern it: ${(e as Error).message}`);
    }
    // helm-enter joins the cgroup and then execs CMD: nothing of the agent runs outside.
    const child = spawn(path.join(buildDir(), 'helm-enter'), [cgroup, '--', ...cmd], { stdio: 'inherit' });
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
    const status: number = await new Promise((resolve) => {
      child.on('error', (e) => {
        process.stderr.write(`helmctl: cannot start helm-enter: ${e.message}\n`);
        resolve(125);
      });
      child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? (require('node:os').constants.signals[signal] ?? 0) : 0)));
    });
    if (cgroupHasProcesses(cgroup)) {
      process.stderr.write(`helmctl: processes the agent started are still running in ${cgroup}; it stays governed\n`);
    } else {
      try {
        await call(o.socket, 'AgentService', 'Detach', { cgroup_path: cgroup, force: false });
        fs.rmdirSync(cgroup);
      } catch (e) {
        process.stderr.write(`helmctl: could not release ${cgroup}: ${(e as Error).message}\n`);
      }
    }
    process.exit(status);
  });

connects(
  program
    .command('attach')
    .description("govern an existing cgroup (and every cgroup below it), or a systemd unit's")
    .option('--cgroup <path>', 'the cgroup v2 directory')
    .option('--unit <name>', 'a systemd unit (NAME.service): its cgroup, as systemctl show -p ControlGroup says')
    .requiredOption('--role <role>', "the agent's role")
    .option('--dry-run', 'force this agent into dry-run', false)
    .option('--name <name>', 'agent name (default: the cgroup or unit name)', agentName)
    .option('--label <key=value>', "one of the agent's labels, for contextual rules' when.label (repeatable)", collect, [] as string[]),
).action(async (o) => {
  if (!!o.cgroup === !!o.unit) fail('give one of --cgroup PATH or --unit NAME.service');
  const labels = labelsOf(o.label);
  let cgroup: string = o.cgroup;
  let name: string = o.name ?? '';
  if (o.unit) {
    try {
      cgroup = unitCgroup(o.unit).path;
    } catch (e) {
      fail((e as Error).message);
    }
    if (!name) name = o.unit.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64);
  }
  const a = await call<AgentMessage>(endpoint(o), 'AgentService', 'Attach', { cgroup_path: cgroup, role: o.role, dry_run: o.dryRun, name, labels });
  process.stdout.write(`governing ${a.cgroup_path} as agent ${a.name} (id ${a.id}, role ${a.role}${a.dry_run ? ', dry-run' : ''}, generation ${a.generation})\n`);
});

connects(
  program
    .command('detach')
    .description('stop governing a cgroup')
    .requiredOption('--cgroup <path>', 'the cgroup v2 directory')
    .option('--force', 'detach even if processes are still in it (they run ungoverned)', false),
).action(async (o) => {
  await call(endpoint(o), 'AgentService', 'Detach', { cgroup_path: o.cgroup, force: o.force });
  process.stdout.write(`released ${o.cgroup}\n`);
});

connects(program.command('agents').description('list governed agents: id, name, role, mode, denials so far, cgroup').option('--json', 'JSON output', false)).action(async (o) => {
  const r = await call<{ agents: AgentMessage[] }>(endpoint(o), 'AgentService', 'List', {});
  if (o.json) return void process.stdout.write(JSON.stringify(r.agents, null, 2) + '\n');
  const rows = [['ID', 'NAME', 'ROLE', 'MODE', 'DENIED', 'WOULD_DENY', 'CGROUP']];
  for (const a of r.agents) rows.push([a.id, a.name, a.role, a.dry_run ? 'dry-run' : 'enforce', a.counters.denied, a.counters.would_deny, a.cgroup_path]);
  process.stdout.write(table(rows));
});

connects(program.command('status').description("helmd's state: generation, policies, modes, audit counters (JSON)")).action(async (o) => {
  const s = await call<object>(endpoint(o), 'SystemService', 'Status', {});
  process.stdout.write(JSON.stringify(s, null, 2) + '\n');
});

connects(program.command('version').description("helmctl's version, and the running helmd's")).action(async (o) => {
  process.stdout.write(`helmctl ${VERSION}\n`);
  const v = await call<{ version: string; api: string; node: string; kernel: string; generation: number }>(endpoint(o), 'SystemService', 'Version', {});
  process.stdout.write(`helmd ${v.version} (${v.api}; node ${v.node}; kernel ${v.kernel}; generation ${v.generation})\n`);
});

const MODE_WORDS: Record<string, string> = { enforce: 'MODE_ENFORCE', 'dry-run': 'MODE_DRY_RUN' };
connects(
  program
    .command('mode')
    .description('switch an agent, a policy, or all of helmd between enforce and dry-run (audited)')
    .argument('<mode>', 'enforce or dry-run')
    .option('--agent <id>', 'an agent (id or name, see helmctl agents)')
    .option('--policy <name>', 'a policy (recompiled into a new generation)')
    .option('--helmd', 'every decision helmd makes', false),
).action(async (mode: string, o) => {
  if (!MODE_WORDS[mode]) fail(`mode must be enforce or dry-run, got ${JSON.stringify(mode)}`);
  const targets = [o.agent !== undefined, o.policy !== undefined, o.helmd].filter(Boolean).length;
  if (targets !== 1) fail('say what to switch: exactly one of --agent ID, --policy NAME, --helmd');
  const req = o.agent !== undefined ? { agent: o.agent } : o.policy !== undefined ? { policy: o.policy } : { helmd: true };
  const r = await call<{ target: string; previous: string; mode: string; generation: number }>(endpoint(o), 'AgentService', 'SetMode', { ...req, mode: MODE_WORDS[mode] });
  const word = (m: string) => (m === 'MODE_DRY_RUN' ? 'dry-run' : 'enforce');
  process.stdout.write(`${r.target}: ${word(r.previous)} → ${word(r.mode)} (generation ${r.generation})\n`);
});

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

/** helmd's configuration as helmctl sees it: --config, else /etc/helm/helmd.yaml if there is one, else the defaults. */
function daemonConfig(file: string | undefined): { config: HelmdConfig; file?: string; error?: string } {
  const path_ = file ?? (fs.existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined);
  const defaults = { ...structuredClone(DEFAULTS), policy: [] };
  if (!path_) return { config: defaults };
  try {
    return { config: loadConfig(path_), file: path_ };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return { config: defaults, file: path_, error: e.message };
  }
}

program
  .command('doctor')
  .description('check this host for what helm needs, and say how to fix what is missing')
  .option('--json', 'JSON output', false)
  .option('--config <file>', `helmd's configuration (default: ${DEFAULT_CONFIG} if present)`)
  .option('--socket <path>', 'helmd control socket (default: from the configuration)')
  .action(async (o) => {
    const c = daemonConfig(o.config);
    const checks = await runAllChecks({ config: c.config, configFile: c.file, configError: c.error, socket: o.socket });
    process.stdout.write(o.json ? JSON.stringify(checks, null, 2) + '\n' : formatChecks(checks) + '\n');
    process.exit(checks.every((c) => c.ok) ? 0 : 1);
  });

program
  .command('uninstall')
  .description('remove enforcement: stop helmd, record it in the audit trail, then unpin every program and map (agents run ungoverned)')
  .option('--config <file>', `helmd's configuration (default: ${DEFAULT_CONFIG} if present)`)
  .option('--pin-dir <dir>', 'where enforcement is pinned (default: from the configuration)')
  .option('--state-dir <dir>', "helmd's state directory (default: from the configuration)")
  .option('--audit-log <path>', 'the audit trail to record the removal in (default: from the configuration)')
  .action(async (o) => {
    if (process.getuid?.() !== 0) fail('uninstall must run as root');
    const c = daemonConfig(o.config);
    if (c.error) fail(`the configuration was rejected:\n${c.error}`);
    const r = await uninstall({
      pinDir: o.pinDir ?? c.config.pinDir,
      stateDir: o.stateDir ?? c.config.stateDir,
      auditLog: o.auditLog ?? c.config.audit.log,
      say: (l) => process.stdout.write(`${l}\n`),
    }).catch((e: Error) => fail(e.message));
    if (!r.removed) {
      process.stdout.write(`nothing is pinned at ${o.pinDir ?? c.config.pinDir}: no enforcement to remove\n`);
      return;
    }
    for (const a of r.released) process.stdout.write(`released ${a.agent} (role ${a.role}, ${a.cgroup}): it now runs ungoverned\n`);
    process.stdout.write(`enforcement removed (${r.set ?? 'an unfinished install'}); recorded in ${o.auditLog ?? c.config.audit.log}\n`);
    if (r.stoppedHelmd) process.stdout.write('helmd was stopped; under systemd, also: systemctl disable helmd (or make uninstall)\n');
  });

const audit = program.command('audit').description('the audit trail: verify, tail, query, report (files, rotated and compressed ones included)');

/** Collects a repeatable option into a list; commas separate several values in one. */
const list = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), ...v.split(',').filter(Boolean)];

/** Options that select lines, shared by tail, query and report. */
function withFilters(c: Command, what: { types: boolean }): Command {
  c.option('--since <time>', 'from this time: RFC 3339, a date, or a span ago (15m, 2h, 7d)')
    .option('--until <time>', 'up to (not including) this time')
    .option('--agent <name>', 'this agent (repeatable)', list)
    .option('--role <role>', 'this role (repeatable)', list)
    .option('--decision <d>', 'allow, deny or would_deny (repeatable)', list)
    .option('--op <verb>', 'read, write, exec, connect, bind, ... (repeatable)', list)
    .option('--prefix <p>', 'paths starting with this, or addresses in this address/CIDR, or host names starting with this (repeatable)', list);
  if (what.types) c.option('--type <t>', 'line types: decision, dns, control, lost, counters, start, stop, file, recovered, or all (repeatable; default: decision)', list);
  return c;
}

interface FilterFlags {
  since?: string;
  until?: string;
  agent?: string[];
  role?: string[];
  decision?: string[];
  op?: string[];
  prefix?: string[];
  type?: string[];
}

const DECISIONS = ['allow', 'deny', 'would_deny'];

const nonEmpty = (v: string[] | undefined): string[] | undefined => (v && v.length ? v : undefined);

function filterFrom(o: FilterFlags, defaultTypes: string[] | undefined): LineFilter {
  const f: LineFilter = {};
  try {
    if (o.since) f.since = parseTime(o.since);
    if (o.until) f.until = parseTime(o.until);
  } catch (e) {
    fail((e as Error).message);
  }
  if (f.since !== undefined && f.until !== undefined && f.until <= f.since) fail('--until must be later than --since');
  for (const d of o.decision ?? []) if (!DECISIONS.includes(d)) fail(`--decision ${JSON.stringify(d)}: expected one of ${DECISIONS.join(', ')}`);
  Object.assign(f, { agent: o.agent, role: o.role, decision: o.decision, op: o.op, prefix: o.prefix });
  const types = o.type ?? defaultTypes;
  if (types && !types.includes('all')) f.type = types;
  return f;
}

audit
  .command('verify')
  .description('check the hash chain through audit files in trail order (rotated, compressed, then active); names the first line deleted, moved or edited')
  .argument('<files...>', 'audit files, or directories (every trail file in them)')
  .action(async (files: string[]) => {
    let verdicts;
    try {
      verdicts = await verifyTrails(files);
    } catch (e) {
      fail((e as Error).message);
    }
    let bad = 0;
    for (const v of verdicts) {
      const name = v.files.length === 1 ? v.files[0] : `${v.trail} (${v.files.length} files)`;
      for (const n of v.notes) process.stdout.write(`${name}: note: ${n}\n`);
      if (v.ok) process.stdout.write(`${name}: ok, ${v.lines} lines chained\n`);
      else {
        process.stderr.write(`${v.broken!.file}:${v.broken!.line}: ${v.broken!.reason}\n`);
        bad++;
      }
    }
    process.exit(bad ? 1 : 0);
  });

const repeatable = (v: string, prev: string[] | undefined) => [...(prev ?? []), v];
connects(
  audit
    .command('tail')
    .description("audit records as they are written: from helmd's stream, or from an audit file (across rotations): the last few, then with --follow every new one")
    .argument('[file]', 'an audit file (or its directory) instead of the running helmd')
    .option('-n, --last <n>', 'recent records to show first', (v: string) => {
      if (!/^(0|[1-9][0-9]*)$/.test(v)) throw new InvalidArgumentError('must be a number');
      return Number(v);
    }, 10)
    .option('-f, --follow', 'keep streaming new records until interrupted', false)
    .option('--agent <name>', 'only this agent (name or id; repeatable)', repeatable, [] as string[])
    .option('--role <role>', 'only this role (repeatable)', repeatable, [] as string[])
    .option('--decision <d>', 'only deny or would_deny (repeatable)', repeatable, [] as string[])
    .option('--op <op>', 'only this operation: read, write, exec, ... (repeatable)', repeatable, [] as string[])
    .option('--type <type>', 'only this line type: decision, control, lost, recovered (repeatable)', repeatable, [] as string[])
    .option('--since <time>', 'with a file: from this time (RFC 3339, a date, or a span ago: 15m, 2h)')
    .option('--until <time>', 'with a file: up to this time')
    .option('--prefix <p>', 'with a file: paths starting with this, addresses in this CIDR, host names starting with this (repeatable)', repeatable)
    .option('--json', 'the lines exactly as in the audit file (chain included)', false),
).action(async (file: string | undefined, o) => {
  const stop = new AbortController();
  process.on('SIGINT', () => stop.abort());
  process.on('SIGTERM', () => stop.abort());
  if (file !== undefined) {
    // A file (or its directory): read it, and follow it across rotations (daemon/audit/follow.ts).
    const filter = filterFrom({ ...o, agent: nonEmpty(o.agent), role: nonEmpty(o.role), decision: nonEmpty(o.decision), op: nonEmpty(o.op), type: nonEmpty(o.type) }, undefined);
    try {
      await followTrail(file, {
        backlog: o.last,
        follow: o.follow,
        filter,
        signal: stop.signal,
        // One line as it comes (no column widths to wait for): the table's non-empty cells.
        each: (l, text) => process.stdout.write((o.json ? text : tableRow(l).filter(Boolean).join('  ')) + '\n'),
        onNote: (m) => process.stderr.write(`helmctl: ${m}\n`),
      });
    } catch (e) {
      fail((e as Error).message);
    }
    return;
  }
  if (o.since || o.until || o.prefix) fail('--since, --until and --prefix read files: give the audit file (or use helmctl audit query)');
  await tailAudit(endpoint(o), { last: o.last, follow: o.follow, agent: o.agent, role: o.role, decision: o.decision, op: o.op, type: o.type }, (r) => process.stdout.write((o.json ? r.line : formatStreamed(r)) + '\n'), stop.signal);
});

withFilters(
  audit
    .command('query')
    .description('the lines of audit files (rotated and compressed ones too) that match every filter given')
    .argument('<files...>', 'audit files, or directories (every trail file in them)')
    .option('--json', 'JSON lines, exactly as in the trail (default: a table)', false)
    .option('--limit <n>', 'stop after this many lines', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a whole number above 0');
      return n;
    }),
  { types: true },
).action(async (files: string[], o: FilterFlags & { json: boolean; limit?: number }) => {
  const filter = filterFrom(o, ['decision']);
  const rows: string[][] = [];
  let r;
  try {
    r = await queryTrail(files, filter, (l, text) => (o.json ? process.stdout.write(text + '\n') : rows.push(tableRow(l))), o.limit);
  } catch (e) {
    fail((e as Error).message);
  }
  if (!o.json) process.stdout.write(formatTable(rows));
  process.stderr.write(`${r.matched} of ${r.read} lines matched${r.unreadable ? `; ${r.unreadable} lines are not JSON (run helmctl audit verify)` : ''}\n`);
});

withFilters(
  audit
    .command('report')
    .description('a compliance summary per period: decisions by agent, role, rule and op; most denied targets; dry-run would-denials; kernel counters; losses; policy generations in force')
    .argument('<files...>', 'audit files, or directories (every trail file in them)')
    .addOption(new Option('--period <p>', 'one section per').choices(['day', 'week', 'month', 'all']).default('day'))
    .addOption(new Option('--format <f>', 'output').choices(['markdown', 'json']).default('markdown'))
    .option('--top <n>', 'targets listed in the "most denied" tables', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a whole number above 0');
      return n;
    }, 10),
  { types: false },
).action(async (files: string[], o: FilterFlags & { period: Period; format: 'markdown' | 'json'; top: number }) => {
  if (o.decision || o.op || o.prefix) fail('report summarises every decision: --decision, --op and --prefix are for audit query');
  const filter = filterFrom(o, undefined);
  let r;
  try {
    r = await buildReport(files, { period: o.period, filter, top: o.top });
  } catch (e) {
    fail((e as Error).message);
  }
  process.stdout.write(o.format === 'json' ? JSON.stringify(r, null, 2) + '\n' : reportMarkdown(r));
});

const policy = program.command('policy').description('policy files (lint, test, explain) and the policy running in helmd (apply, validate, get, list, explain)');

/** Policy errors: one `file:line:col: message` per line on stderr (no prefix: editors parse them), then exit 1. */
function failWithDiagnostics(diags: PolicyDiagnostic[], summary?: string): never {
  for (const d of diags) process.stderr.write(formatDiagnostic(d) + '\n');
  if (summary) process.stderr.write(`helmctl: ${summary}\n`);
  process.exit(1);
}

function loadOrFail(files: string[]): Policy[] {
  try {
    return loadPolicies(files).policies;
  } catch (e) {
    if (e instanceof PolicyError) failWithDiagnostics(e.diagnostics);
    throw e;
  }
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

policy
  .command('lint')
  .description('check policy files: errors (exit 1) and warnings, each as file:line:col; canonical paths as notes')
  .argument('<files...>', 'policy files or directories')
  .option('--no-kernel', "check the language alone: do not compile for this helmd (what does not fit the kernel's tables is then not an error)")
  .option('--strict', 'exit 1 on warnings too', false)
  .action((files: string[], o: { kernel: boolean; strict: boolean }) => {
    const r = lintPolicies(files, { kernel: o.kernel });
    const warnings = r.warnings.map((w) => ({ loc: w.loc, line: formatDiagnostic(w) }));
    const notes = r.notes.map((n) => ({ loc: n.loc, line: formatNote(n) }));
    const order = new Map(r.files.map((f, i) => [f, i]));
    const out = [...warnings, ...notes].sort(
      (a, b) => (order.get(a.loc.file) ?? 0) - (order.get(b.loc.file) ?? 0) || a.loc.line - b.loc.line || a.loc.col - b.loc.col,
    );
    for (const f of r.skipped) process.stdout.write(`${f}:1:1: note: holds test cases (for helmctl policy test --cases), not a policy; not linted\n`);
    for (const x of out) process.stdout.write(x.line + '\n');
    if (r.errors.length) {
      failWithDiagnostics(r.errors, `${plural(r.errors.length, 'error')}${r.warnings.length ? `, ${plural(r.warnings.length, 'warning')}` : ''}`);
    }
    const rules = r.policies.reduce((n, p) => n + p.rules.length, 0);
    const what = r.compiled ? `${rules} rules, ${r.compiled.pathEntries.length} kernel path entries` : `${rules} rules (language only: not compiled for the kernel)`;
    if (o.strict && r.warnings.length) {
      process.stderr.write(`helmctl: ${plural(r.warnings.length, 'warning')} (--strict)\n`);
      process.exit(1);
    }
    process.stdout.write(`ok: ${r.policies.length} policies, ${what}${r.warnings.length ? `; ${plural(r.warnings.length, 'warning')}` : ''}\n`);
  });

policy
  .command('test')
  .description('run cases (operations with expected decisions) against the reference evaluator; exit 1 if any fails')
  .argument('<files...>', 'policy files or directories')
  .option('--cases <file>', 'a YAML list of cases (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .action((files: string[], o: { cases: string[] }) => {
    if (o.cases.length === 0) fail('give the cases to run: --cases CASES.yaml');
    const policies = loadOrFail(files);
    const cases: TestCase[] = [];
    const diags: PolicyDiagnostic[] = [];
    for (const file of o.cases) {
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (e) {
        diags.push({ severity: 'error', loc: { file, line: 1, col: 1, pointer: '' }, message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}` });
        continue;
      }
      const read = readCases(text, file);
      cases.push(...read.cases);
      diags.push(...read.errors);
    }
    // Every problem at once, in file and source order.
    const order = new Map(o.cases.map((f, i) => [f, i]));
    diags.push(...checkCaseRules(policies, cases));
    diags.sort((a, b) => (order.get(a.loc.file) ?? 0) - (order.get(b.loc.file) ?? 0) || a.loc.line - b.loc.line || a.loc.col - b.loc.col);
    if (diags.length) failWithDiagnostics(diags);
    const results = runCases(policies, cases);
    for (const r of results) process.stdout.write(formatResult(r) + '\n');
    const failed = results.filter((r) => !r.pass).length;
    process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
    process.exit(failed ? 1 : 0);
  });

connects(
  policy
    .command('explain')
    .description('the decision for one operation and the chain of rules behind it (block, contextual, allow, default); without FILE, under the policy running in helmd')
    .usage('[options] [FILE...] VERB TARGET')
    .argument('<args...>', 'policy files or directories (none: ask helmd), then the verb (read, write, exec, connect, bind) and its target (a path, ADDRESS:PORT or HOST:PORT)')
    .option('--role <role>', "the agent's role")
    .option('--agent <id>', "with helmd: a governed agent (id or name), whose role, labels and mode are used")
    .option('--exe <path>', 'the acting executable (for when.exe)')
    .option('--uid <uid>', 'the acting uid (for when.uid)')
    .option('--label <key=value>', "one of the agent's labels (for when.label; repeatable)", (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--addr <ip>', 'with a HOST:PORT target: the address the name resolved to')
    .option('--dir', 'the path is a directory (as a trailing "/" says)', false)
    .option('--json', 'JSON output', false),
).action(async (args: string[], o: { role?: string; agent?: string; exe?: string; uid?: string; label: string[]; addr?: string; dir: boolean; json: boolean; socket: string }) => {
  if (args.length < 2) fail('usage: helmctl policy explain [FILE...] --role ROLE VERB TARGET (e.g. read /etc/hostname)');
  const [verbText, targetText] = args.slice(-2);
  const files = args.slice(0, -2);
  if (!isVerb(verbText)) fail(`${JSON.stringify(verbText)} is not a verb: the last two arguments are the verb (${VERBS.join(', ')}) and its target`);
  if (files.length === 0) {
    // The running policy, as helmd has it (modes as switched; the agent's and helmd's dry-run included).
    if (!o.role && !o.agent) fail('give --role ROLE or --agent ID');
    if (o.uid !== undefined && !/^(0|[1-9][0-9]*)$/.test(o.uid)) fail(`--uid must be a uid, got ${JSON.stringify(o.uid)}`);
    const labels = labelsOf(o.label);
    const r = await call<{ text: string; json: string; generation: number }>(endpoint(o), 'PolicyService', 'Explain', {
      role: o.role ?? '',
      agent: o.agent ?? '',
      verb: verbText,
      target: targetText,
      exe: o.exe ?? '',
      ...(o.uid !== undefined && { uid: Number(o.uid) }),
      labels,
      addr: o.addr ?? '',
      is_dir: o.dir,
      sources: [],
    });
    process.stdout.write(o.json ? JSON.stringify({ generation: r.generation, ...JSON.parse(r.json) }, null, 2) + '\n' : `${r.text}\n(helmd, generation ${r.generation})\n`);
    return;
  }
  if (o.agent) fail('--agent asks helmd: give no FILE');
  if (!o.role) fail('give --role ROLE');
  const verb: Verb = verbText as Verb;
  const op = operationFromOptions(verb, targetText, { ...o, role: o.role }, defaultCanonicalize);
  if (typeof op === 'string') fail(op);
  const policies = loadOrFail(files);
  const e = explain(policies, op);
  process.stdout.write(o.json ? JSON.stringify(e, null, 2) + '\n' : formatExplanation(e, op) + '\n');
});

// ---------------------------------------------------------------------------------------------
// The running policy (helmd over gRPC)

/** Policy files (directories expanded) as sources for helmd, named as given; unreadable ones fail here. */
function sourcesFrom(files: string[]): { file: string; content: string }[] {
  const { sources, diags } = readPolicySources(files);
  if (diags.length) failWithDiagnostics(diags);
  if (sources.length === 0) fail(`no policy files in ${files.join(' ')}`);
  return sources.map((s) => ({ file: s.file, content: s.text }));
}

interface WireDiag {
  severity: string;
  text: string;
}

connects(
  policy
    .command('apply')
    .description('replace the policy running in helmd with these files, atomically; a policy with errors changes nothing')
    .argument('<files...>', 'policy files or directories')
    .option('--expect-generation <n>', 'refuse (and change nothing) unless helmd still runs this generation', (v: string) => {
      if (!/^(0|[1-9][0-9]*)$/.test(v)) throw new InvalidArgumentError('must be a generation number');
      return Number(v);
    }),
).action(async (files: string[], o) => {
  const r = await call<{ generation: number; previous_generation: number; policies: string[]; rules: number; path_entries: number; warnings: WireDiag[] }>(endpoint(o), 'PolicyService', 'Apply', {
    sources: sourcesFrom(files),
    ...(o.expectGeneration !== undefined && { expected_generation: o.expectGeneration }),
  });
  for (const w of r.warnings) process.stderr.write(w.text + '\n');
  process.stdout.write(`applied: generation ${r.generation} (was ${r.previous_generation}): ${r.policies.length} ${r.policies.length === 1 ? 'policy' : 'policies'} (${r.policies.join(', ')}), ${plural(r.rules, 'rule')}, ${r.path_entries} kernel path entries\n`);
});

connects(
  policy.command('validate').description('check files exactly as helmd would apply them (its compiler, its host), without applying').argument('<files...>', 'policy files or directories'),
).action(async (files: string[], o) => {
  const r = await call<{ valid: boolean; diagnostics: WireDiag[]; policies: string[]; rules: number; path_entries: number }>(endpoint(o), 'PolicyService', 'Validate', { sources: sourcesFrom(files) });
  for (const d of r.diagnostics) (d.severity === 'error' ? process.stderr : process.stdout).write(d.text + '\n');
  if (!r.valid) fail(`${plural(r.diagnostics.filter((d) => d.severity === 'error').length, 'error')}: helmd would reject this`);
  process.stdout.write(`valid: ${r.policies.join(', ')}; ${plural(r.rules, 'rule')}, ${r.path_entries} kernel path entries\n`);
});

connects(
  policy.command('get').description('the sources of the policy running in helmd, as applied').option('--json', 'JSON output', false),
).action(async (o) => {
  const r = await call<{ generation: number; sources: { file: string; content: string }[]; origin: string; applied_at: string }>(endpoint(o), 'PolicyService', 'Get', {});
  if (o.json) return void process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  process.stdout.write(`# generation ${r.generation}, from ${r.origin === 'api' ? 'helmctl policy apply' : "helmd's policy files"}, applied ${r.applied_at}\n`);
  for (const s of r.sources) process.stdout.write(`# --- ${s.file}\n${s.content}${s.content.endsWith('\n') ? '' : '\n'}`);
});

connects(policy.command('list').description('the policies running in helmd: roles, mode, rules, where defined').option('--json', 'JSON output', false)).action(async (o) => {
  const r = await call<{ generation: number; policies: { name: string; roles: string[]; mode: string; source_mode: string; rules: number; file: string; line: number }[] }>(endpoint(o), 'PolicyService', 'List', {});
  if (o.json) return void process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  const word = (m: string) => (m === 'MODE_DRY_RUN' ? 'dry-run' : 'enforce');
  const rows = [['NAME', 'ROLES', 'MODE', 'RULES', 'SOURCE']];
  for (const p of r.policies) rows.push([p.name, p.roles.join(','), word(p.mode) + (p.mode !== p.source_mode ? ` (switched; source: ${word(p.source_mode)})` : ''), String(p.rules), `${p.file}:${p.line}`]);
  process.stdout.write(`generation ${r.generation}\n` + table(rows));
});

policy
  .command('suggest')
  .description('draft allow rules that would admit what a dry-run agent did (its would_deny lines), for review')
  .requiredOption('--from <audit...>', 'audit files or directories (rotated and compressed ones too)')
  .requiredOption('--role <role>', 'the role to draft rules for')
  .option('--threshold <n>', 'paths directly in one directory from which the directory is suggested as a subtree (dir/)', (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 2) throw new InvalidArgumentError('a whole number of at least 2');
    return n;
  }, 5)
  .option('--name <name>', 'metadata.name of the drafted policy (default: suggested-ROLE)')
  .option('--policy <files...>', 'the policies in force: say which suggested operations they would still not admit')
  .action(async (o: { from: string[]; role: string; threshold: number; name?: string; policy?: string[] }) => {
    const lines: AuditLineData[] = [];
    try {
      for (const g of trailFiles(o.from)) {
        for (const f of g.files) {
          await readLines(f, ({ text }) => {
            try {
              lines.push(JSON.parse(text) as AuditLineData);
            } catch {
              /* a line cut short: not an operation */
            }
          });
        }
      }
    } catch (e) {
      fail((e as Error).message);
    }
    const s = suggestPolicy(lines, { role: o.role, threshold: o.threshold, name: o.name, sources: o.from });
    process.stdout.write(s.yaml);
    if (s.lines === 0) process.stderr.write(`helmctl: no would_deny lines for role ${o.role} in ${o.from.join(', ')}\n`);
    if (o.policy) {
      const current = loadOrFail(o.policy);
      const draft = loadDraft(s.yaml);
      const still = s.rules.flatMap((r) => r.targets.flatMap((t) => t.covers)).filter((c) => evaluateOperation([...current, ...draft], c.operation).decision !== 'allow');
      for (const c of still) process.stderr.write(`helmctl: with ${o.policy.join(', ')}, still not admitted: ${JSON.stringify(c.operation)}\n`);
      if (still.length) process.exit(1);
    }
  });

/** The drafted policy, parsed as helmd would parse it. */
function loadDraft(yaml: string): Policy[] {
  try {
    return parsePolicySource(yaml, '<suggested>');
  } catch (e) {
    if (e instanceof PolicyError) failWithDiagnostics(e.diagnostics, 'the drafted policy does not parse (a bug in helmctl)');
    throw e;
  }
}

program.parseAsync().catch((e) => {
  if (e instanceof ControlError) {
    if (e.diagnostics.length) {
      // The located list, one per line (editors parse these), then what helmd said.
      for (const d of e.diagnostics) process.stderr.write(d.text + '\n');
      fail(e.message.split('\n')[0]);
    }
    fail(e.message);
  }
  fail((e as Error).stack ?? String(e));
});
