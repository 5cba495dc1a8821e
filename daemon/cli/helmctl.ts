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
import { compilePolicy } from '../policy/compile';
import { PolicyError, formatDiagnostic } from '../policy/types';

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
  .option('--cgroup-parent <dir>', 'where to create the cgroup (default: <cgroup2 mount>/helm)')
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .argument('<cmd...>', 'the command and its arguments (after --)')
  .passThroughOptions()
  .action(async (cmd: string[], o) => {
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
      await call<AgentMessage>(o.socket, 'AgentService', 'Attach', { cgroup_path: cgroup, role: o.role, dry_run: o.dryRun, name });
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
  .option('--socket <path>', 'helmd control socket', DEFAULT_SOCKET)
  .action(async (o) => {
    const a = await call<AgentMessage>(o.socket, 'AgentService', 'Attach', { cgroup_path: o.cgroup, role: o.role, dry_run: o.dryRun, name: o.name ?? '' });
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

const policy = program.command('policy').description('work with policy files');
policy
  .command('lint')
  .description('validate and compile policy files; print errors as file:line:col and the canonical paths')
  .argument('<files...>')
  .action((files: string[]) => {
    try {
      const { policies } = loadPolicies(files);
      const compiled = compilePolicy(policies);
      for (const w of compiled.warnings) process.stdout.write(formatDiagnostic(w) + '\n');
      for (const p of policies) {
        for (const r of p.rules) {
          for (const [verb, targets] of Object.entries(r.verbs)) {
            for (const t of targets ?? []) {
              if (t.kind === 'path' && t.canonical !== t.written) {
                process.stdout.write(`${t.loc.file}:${t.loc.line}:${t.loc.col}: note: ${verb} ${t.written} is matched as ${t.canonical}\n`);
              }
            }
          }
        }
      }
      process.stdout.write(`ok: ${policies.length} policies, ${compiled.rules.length} rules, ${compiled.pathEntries.length} kernel path entries\n`);
    } catch (e) {
      if (e instanceof PolicyError) fail(e.message);
      throw e;
    }
  });

program.parseAsync().catch((e) => {
  if (e instanceof ControlError) fail(e.message);
  fail((e as Error).stack ?? String(e));
});
