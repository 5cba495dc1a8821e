// Refuse to pretend: on a kernel that refuses BPF LSM programs, helmd exits non-zero with an
// actionable message and leaves nothing behind, and `helmctl doctor` reports the same failure.
// Whether this host refuses them is decided at run time; where it accepts them the opposite is
// asserted (helmd enforces), so either way the test checks something real.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BpfObject } from '../../daemon/kernel/bpf';
import { KernelError } from '../../daemon/kernel/native';
import { BUILD, REPO, ensureKernelMounts, requireRoot, run, scratchDir } from './host';
import { scratchPins } from '../support/scratch-pins';

const HELMD = path.join(REPO, 'bin/helmd');
const HELMCTL = path.join(REPO, 'bin/helmctl');
const POLICY = path.join(REPO, 'policies/default.yaml');
const HELM_OBJ = path.join(BUILD, 'helm.bpf.o');
const BOUND_MS = 60_000;

/** Does this kernel refuse helm's LSM programs? Any other load failure is a broken build. */
function hostRefusesLsm(): { refuses: boolean; message: string } {
  try {
    BpfObject.load(HELM_OBJ).close();
    return { refuses: false, message: '' };
  } catch (e) {
    if (e instanceof KernelError && e.errno === 1) return { refuses: true, message: e.message };
    throw e;
  }
}

interface Doctor {
  code: number | null;
  text: string;
  detail?: string;
  fix?: string;
  pass: boolean;
}

async function doctorText(): Promise<Doctor> {
  const r = await run(HELMCTL, ['doctor'], { timeoutMs: BOUND_MS });
  const lines = r.stdout.split('\n');
  const i = lines.findIndex((l) => /^(PASS|FAIL)\s+BPF LSM programs load\s/.test(l));
  const m = i >= 0 ? /^(PASS|FAIL)\s+BPF LSM programs load\s+(.*)$/.exec(lines[i]) : null;
  const fix = i >= 0 ? /^\s+fix: (.*)$/.exec(lines[i + 1] ?? '') : null;
  return { code: r.code, text: r.stdout + r.stderr, detail: m?.[2], fix: fix?.[1], pass: m?.[1] === 'PASS' };
}

function main(): void {
  ensureKernelMounts();
  const host = hostRefusesLsm();
  t.comment(host.refuses ? `this kernel refuses BPF LSM programs: ${host.message.split('\n')[0]}` : 'this kernel accepts BPF LSM programs');

  t.test('bundles exist (make ts)', async (t) => {
    for (const f of ['dist/bundle/helmd.js', 'dist/bundle/helmctl.js']) t.ok(fs.existsSync(path.join(REPO, f)), f);
  });

  if (host.refuses) {
    t.test('helmd refuses to start, says why and what to do, and leaves nothing behind', async (t) => {
      const dir = scratchDir(t, 'refusal');
      const audit = path.join(dir, 'audit.jsonl');
      const socket = path.join(dir, 'helmd.sock');
      // Its own state and pin directories: a test never touches the host's /var/lib/helm.
      const pins = scratchPins('refusal');
      const r = await run(HELMD, ['--policy', POLICY, '--audit-log', audit, '--socket', socket, ...pins.args], { timeoutMs: BOUND_MS });
      t.comment(`helmd exited ${r.code} after ${r.ms} ms`);
      t.equal(r.timedOut, false, `exits within ${BOUND_MS / 1000} s`);
      t.not(r.code, 0, 'exit status is non-zero');
      t.equal(r.code, 1, 'exit status 1');
      t.match(r.stderr, /NOT ENFORCING/, 'says it is not enforcing');
      t.match(r.stderr, /Operation not permitted|EPERM/, 'names the refusal');
      t.match(r.stderr, /make demo/, 'says how to proceed: make demo');
      t.match(r.stderr, /\bVM\b/, 'mentions the VM');
      t.notMatch(r.stdout + r.stderr, /helmd enforcing|DRY-RUN/, 'never claims to run');
      t.notOk(fs.existsSync(socket), 'no socket file left behind');
      t.ok(!fs.existsSync(audit) || fs.readFileSync(audit, 'utf8') === '', 'no audit content written');
      t.same(fs.readdirSync(dir), [], 'nothing created in its directory');
      t.notOk(fs.existsSync(pins.stateDir), 'no state directory left behind');
      t.notOk(fs.existsSync(pins.pinDir), 'nothing pinned');

      const doc = await doctorText();
      t.equal(doc.code, 1, 'helmctl doctor exits 1');
      t.equal(doc.pass, false, 'doctor shows FAIL for "BPF LSM programs load"');
      t.match(doc.detail ?? '', /Operation not permitted|EPERM/, `doctor names the refusal: ${doc.detail}`);
      t.ok(doc.detail && r.stderr.includes(doc.detail), 'helmd and doctor give the same reason');
      t.match(doc.fix ?? '', /make demo|VM/, `doctor gives a fix: ${doc.fix}`);
    });
  } else {
    t.test('helmd starts and enforces, and stops cleanly', async (t) => {
      const dir = scratchDir(t, 'accept');
      const audit = path.join(dir, 'audit.jsonl');
      const socket = path.join(dir, 'helmd.sock');
      const pins = scratchPins('accept');
      const child = spawn(HELMD, ['--policy', POLICY, '--audit-log', audit, '--socket', socket, ...pins.args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
      t.teardown(() => {
        if (child.exitCode === null) child.kill('SIGKILL');
        pins.remove(audit); // its enforcement outlives it: not on this host
      });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      const deadline = Date.now() + BOUND_MS;
      while (!/helmd enforcing/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      t.match(out, /helmd enforcing/, 'prints helmd enforcing');
      t.ok(fs.existsSync(socket), 'serves its socket');
      child.kill('SIGTERM');
      t.equal(await exited, 0, 'exits 0 on SIGTERM');
      t.notOk(fs.existsSync(socket), 'removes its socket');

      const doc = await doctorText();
      t.equal(doc.pass, true, 'doctor shows PASS for "BPF LSM programs load"');
    });
  }

  t.test('helmctl doctor --json is valid JSON with the same verdict', async (t) => {
    const r = await run(HELMCTL, ['doctor', '--json'], { timeoutMs: BOUND_MS });
    let checks: { name: string; ok: boolean; detail: string; fix?: string }[] = [];
    t.doesNotThrow(() => (checks = JSON.parse(r.stdout)), 'parses as JSON');
    t.ok(Array.isArray(checks) && checks.length > 0, 'an array of checks');
    t.ok(checks.every((c) => typeof c.name === 'string' && typeof c.ok === 'boolean' && typeof c.detail === 'string'), 'each has name, ok, detail');
    const load = checks.find((c) => c.name === 'BPF LSM programs load');
    t.ok(load, 'has the load check');
    t.equal(load?.ok, !host.refuses, `load check ok=${!host.refuses}`);
    t.equal(r.code, checks.every((c) => c.ok) ? 0 : 1, 'exit status follows the checks');
    if (host.refuses) {
      t.match(load?.detail ?? '', /Operation not permitted|EPERM/, 'names the refusal');
      t.match(load?.fix ?? '', /make demo/, 'gives the fix');
      const text = await doctorText();
      t.equal(load?.detail, text.detail, 'same detail as the text output');
    }
  });

  t.test('a bad policy stops helmd with file:line:col before it touches the kernel', async (t) => {
    const dir = scratchDir(t, 'badpolicy');
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, ['apiVersion: helm/v1', 'kind: Policy', 'metadata:', '  name: bad', 'spec:', '  roles: [agent]', '  allow:', '    - id: x', '      read: [/tmp/]', '      raed: [/tmp/]', ''].join('\n'));
    const good = POLICY;
    // With no build directory any kernel access fails loudly ("native shim not found").
    const env = { ...process.env, HELM_BUILD_DIR: path.join(dir, 'no-build') };
    const args = (policy: string) => ['--policy', policy, '--audit-log', path.join(dir, 'audit.jsonl'), '--socket', path.join(dir, 'helmd.sock')];

    const r = await run(HELMD, args(bad), { env, timeoutMs: BOUND_MS });
    t.equal(r.code, 1, 'exit status 1');
    t.match(r.stderr, /the policy was rejected/, 'says the policy was rejected');
    t.match(r.stderr, new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:10:7: unknown key "raed"`, 'm'), 'file:line:col: message');
    t.notMatch(r.stderr, /NOT ENFORCING|native shim|libbpf/, 'never reached the kernel');
    t.same(fs.readdirSync(dir), ['bad.yaml'], 'created nothing');

    // Control: a good policy with the same environment does reach for the kernel.
    const c = await run(HELMD, args(good), { env, timeoutMs: BOUND_MS });
    t.equal(c.code, 1, 'control: exits 1 without a build');
    t.match(c.stderr, /NOT ENFORCING.*native shim not found/, 'control: a valid policy gets as far as the kernel');

    // And no bpf() system call at all, where strace is there to see it.
    const strace = spawnSync('strace', ['-V']).status === 0;
    if (!strace) {
      t.comment('strace not installed: bpf() syscalls not traced');
      return;
    }
    const trace = path.join(dir, 'trace');
    const s = await run('strace', ['-f', '-qq', '-e', 'trace=bpf', '-o', trace, HELMD, ...args(bad)], { timeoutMs: BOUND_MS });
    t.equal(s.code, 1, 'traced: exit status 1');
    t.notMatch(fs.readFileSync(trace, 'utf8'), /\bbpf\(/, 'traced: no bpf() system call');
    if (host.refuses) {
      // Control: where the kernel refuses, a valid policy still gets as far as loading programs.
      const sc = await run('strace', ['-f', '-qq', '-e', 'trace=bpf', '-o', trace, HELMD, '--policy', good, '--audit-log', path.join(dir, 'a2'), '--socket', path.join(dir, 's2')], { timeoutMs: BOUND_MS });
      t.equal(sc.code, 1, 'traced control: exit status 1');
      t.match(fs.readFileSync(trace, 'utf8'), /\bbpf\(BPF_PROG_LOAD/, 'traced control: a valid policy makes bpf() calls');
    }
  });
}

if (requireRoot()) main();
