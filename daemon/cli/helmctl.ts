#!/usr/bin/env node
// helmctl — run and attach governed agents, check the host, lint policies.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Command, InvalidArgumentError } from 'commander';
import { VERSION } from '../helmd';
import { DEFAULT_SOCKET } from '../control/proto';
import { call, ControlError } from '../control/client';
import { cgroup2Mount, cgroupHasProcesses } from '../control/cgroups';
import { runChecks, formatChecks } from '../doctor';
import { buildDir } from '../kernel/native';
import { loadPolicies } from '../policy/parse';
import { PolicyError, VERBS, formatDiagnostic, type Policy, type PolicyDiagnostic, type Verb } from '../policy/types';
import { formatNote, lintPolicies } from '../policy/lint';
import { checkCaseRules, defaultCanonicalize, formatResult, isVerb, readCases, runCases, type TestCase } from '../policy/cases';
import { explain, formatExplanation, operationFromOptions } from '../policy/explain';
import { verifyChain } from '../audit/chain';

interface AgentMessage {
  id: string;
  name: string;
  role: string;
  cgroup_path: string;
  cgroup_id: string;
  dry_run: boolean;
  generation: number;
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
  const labels: Record<string, string> = {};
  for (const l of options) {
    const eq = l.indexOf('=');
    if (eq <= 0) fail(`--label must be KEY=VALUE, got ${JSON.stringify(l)}`);
    const key = l.slice(0, eq);
    if (Object.prototype.hasOwnProperty.call(labels, key)) fail(`--label ${key} is given twice`);
    labels[key] = l.slice(eq + 1);
  }
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

program
  .command('attach')
  .description('govern an existing cgroup (and every cgroup below it)')
  .requiredOption('--cgroup <path>', 'the cgroup v2 directory')
  .requiredOption('--role <role>', "the agent's role")
  .option('--dry-run', 'force this agent into dry-run', false)
  .option('--name <name>', 'agent name', agentName)
  .option('--label <key=value>', "one of the agent's labels, for contextual rules' when.label (repeatable)", collect, [] as string[])
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .action(async (o) => {
    const a = await call<AgentMessage>(o.socket, 'AgentService', 'Attach', { cgroup_path: o.cgroup, role: o.role, dry_run: o.dryRun, name: o.name ?? '', labels: labelsOf(o.label) });
    process.stdout.write(`governing ${a.cgroup_path} as agent ${a.name} (role ${a.role}${a.dry_run ? ', dry-run' : ''}, generation ${a.generation})\n`);
  });

program
  .command('detach')
  .description('stop governing a cgroup')
  .requiredOption('--cgroup <path>', 'the cgroup v2 directory')
  .option('--force', 'detach even if processes are still in it (they run ungoverned)', false)
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .action(async (o) => {
    const r = await call<{ detached: boolean }>(o.socket, 'AgentService', 'Detach', { cgroup_path: o.cgroup, force: o.force });
    if (!r.detached) fail(`${o.cgroup} was not governed`);
    process.stdout.write(`released ${o.cgroup}\n`);
  });

program
  .command('agents')
  .description('list governed agents')
  .option('--json', 'JSON output', false)
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .action(async (o) => {
    const r = await call<{ agents: AgentMessage[] }>(o.socket, 'AgentService', 'List', {});
    if (o.json) return void process.stdout.write(JSON.stringify(r.agents, null, 2) + '\n');
    for (const a of r.agents) process.stdout.write(`${a.name}\t${a.role}\t${a.dry_run ? 'dry-run' : 'enforce'}\t${a.cgroup_path}\n`);
  });

program
  .command('status')
  .description("helmd's state")
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .action(async (o) => {
    const s = await call<object>(o.socket, 'SystemService', 'Status', {});
    process.stdout.write(JSON.stringify(s, null, 2) + '\n');
  });

program
  .command('doctor')
  .description('check this host for what helm needs, and say how to fix what is missing')
  .option('--json', 'JSON output', false)
  .action((o) => {
    const checks = runChecks();
    process.stdout.write(o.json ? JSON.stringify(checks, null, 2) + '\n' : formatChecks(checks) + '\n');
    process.exit(checks.every((c) => c.ok) ? 0 : 1);
  });

const audit = program.command('audit').description('the audit trail');
audit
  .command('verify')
  .description('check the hash chain of audit files; names the first line deleted, moved or edited')
  .argument('<files...>')
  .action((files: string[]) => {
    let bad = 0;
    for (const f of files) {
      let text: string;
      try {
        text = fs.readFileSync(f, 'utf8');
      } catch (e) {
        process.stderr.write(`${f}: cannot read: ${(e as Error).message}\n`);
        bad++;
        continue;
      }
      const v = verifyChain(text);
      for (const n of v.notes) process.stdout.write(`${f}: note: ${n}\n`);
      if (v.ok) process.stdout.write(`${f}: ok, ${v.lines} lines chained\n`);
      else {
        process.stderr.write(`${f}:${v.line}: ${v.reason}\n`);
        bad++;
      }
    }
    process.exit(bad ? 1 : 0);
  });

const policy = program.command('policy').description('work with policy files: lint, test, explain');

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

policy
  .command('explain')
  .description('the decision for one operation and the chain of rules behind it (block, contextual, allow, default)')
  .usage('[options] FILE... VERB TARGET')
  .argument('<args...>', 'policy files or directories, then the verb (read, write, exec, connect, bind) and its target (a path, ADDRESS:PORT or HOST:PORT)')
  .requiredOption('--role <role>', "the agent's role")
  .option('--exe <path>', 'the acting executable (for when.exe)')
  .option('--uid <uid>', 'the acting uid (for when.uid)')
  .option('--label <key=value>', "one of the agent's labels (for when.label; repeatable)", (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--addr <ip>', 'with a HOST:PORT target: the address the name resolved to')
  .option('--dir', 'the path is a directory (as a trailing "/" says)', false)
  .option('--json', 'JSON output', false)
  .action((args: string[], o: { role: string; exe?: string; uid?: string; label: string[]; addr?: string; dir: boolean; json: boolean }) => {
    if (args.length < 3) fail('usage: helmctl policy explain FILE... --role ROLE VERB TARGET (e.g. read /etc/hostname)');
    const [verbText, targetText] = args.slice(-2);
    const files = args.slice(0, -2);
    if (!isVerb(verbText)) fail(`${JSON.stringify(verbText)} is not a verb: the last two arguments are the verb (${VERBS.join(', ')}) and its target`);
    const verb: Verb = verbText;
    const op = operationFromOptions(verb, targetText, o, defaultCanonicalize);
    if (typeof op === 'string') fail(op);
    const policies = loadOrFail(files);
    const e = explain(policies, op);
    process.stdout.write(o.json ? JSON.stringify(e, null, 2) + '\n' : formatExplanation(e, op) + '\n');
  });

program.parseAsync().catch((e) => {
  if (e instanceof ControlError) fail(e.message);
  fail((e as Error).stack ?? String(e));
});
