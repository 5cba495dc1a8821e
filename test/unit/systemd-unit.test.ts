// The systemd unit: systemd-analyze verify finds nothing to warn about (without a
// running systemd, as in CI containers), and the unit and the shipped
// configuration agree on where helmd writes, how it is started and notified.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadConfig } from '../../daemon/config';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const UNIT = fs.readFileSync(path.join(ROOT, 'systemd', 'helmd.service'), 'utf8');

/** Every value of a key in the unit (keys may repeat). */
function values(key: string): string[] {
  return UNIT.split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1));
}

t.test('systemd-analyze verify: no warnings (systemd need not be running)', async (t) => {
  const pid1 = fs.readFileSync('/proc/1/comm', 'utf8').trim();
  t.comment(`PID 1 here is ${pid1}`);
  const r = spawnSync('bash', [path.join(ROOT, 'scripts', 'verify-unit.sh')], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 0, `verify-unit.sh exits 0\n${r.stderr}`);
  t.equal(r.stderr, '', 'nothing on stderr');
  t.match(r.stdout, /verified/);
});

t.test('the check fails on what systemd would ignore', async (t) => {
  // The same script on a copy of the checkout's unit with a misspelt key: it must fail.
  fs.mkdirSync(path.join(ROOT, '.cache'), { recursive: true }); // a fresh clone has none yet
  const dir = fs.mkdtempSync(path.join(ROOT, '.cache', 'unit-check-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const f of ['Makefile', 'scripts', 'systemd', 'bin', 'policies', 'proto']) fs.cpSync(path.join(ROOT, f), path.join(dir, f), { recursive: true });
  for (const f of ['dist', 'build', 'node_modules']) fs.symlinkSync(path.join(ROOT, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'systemd', 'helmd.service'), UNIT.replace('ProtectHome=read-only', 'ProtectHome=read-only\nProtectHostName=yes'));
  const r = spawnSync('bash', [path.join(dir, 'scripts', 'verify-unit.sh')], { encoding: 'utf8', timeout: 120_000 });
  t.equal(r.status, 1, 'exit 1');
  t.match(r.stderr, /Unknown key 'ProtectHostName'/, 'names the problem');
});

t.test('started as a notify service, with the shipped configuration', async (t) => {
  t.same(values('Type'), ['notify'], 'Type=notify: helmd says READY=1 once it enforces');
  t.same(values('NotifyAccess'), ['main']);
  t.same(values('ExecStart'), ['/usr/local/bin/helmd --config /etc/helm/helmd.yaml']);
  t.same(values('Restart'), ['on-failure']);
});

t.test("the unit lets helmd write exactly where its configuration says it writes", async (t) => {
  const cfg = loadConfig(path.join(ROOT, 'systemd', 'helmd.yaml'));
  const writable = values('ReadWritePaths').flatMap((v) => v.split(/\s+/));
  t.same(values('ProtectSystem'), ['strict'], 'everything else is read-only');
  for (const [what, dir] of [
    ['the audit trail', path.dirname(cfg.audit.log)],
    ['the state', cfg.stateDir],
    ['the socket', path.dirname(cfg.socket.path)],
    ['the pins', path.dirname(cfg.pinDir)],
  ]) {
    t.ok(writable.includes(dir), `${what}: ${dir} is writable`);
  }
  t.same(writable.sort(), ['/run/helm', '/sys/fs/bpf', '/var/lib/helm', '/var/log/helm'], 'and nothing else');
});

t.test('capabilities: a bounded set, each one explained in the unit', async (t) => {
  const caps = values('CapabilityBoundingSet').flatMap((v) => v.split(/\s+/));
  t.ok(caps.length > 0 && caps.every((c) => /^CAP_[A-Z_]+$/.test(c)), caps.join(' '));
  t.notOk(caps.includes('CAP_SYS_MODULE') || caps.includes('CAP_SYS_PTRACE') || caps.includes('CAP_DAC_OVERRIDE'), 'none it does not need');
  for (const c of caps) t.match(UNIT, new RegExp(`^#\\s+${c}\\s+\\S`, 'm'), `${c} is explained`);
  t.same(values('NoNewPrivileges'), ['yes']);
});

t.test('helmd sees every path as agents do: nothing is mounted over files a policy may name', async (t) => {
  // Policies are compiled to the (device, inode) helmd's stat() finds: a path hidden behind
  // another node in helmd's mount namespace would be matched against the stand-in.
  for (const key of ['PrivateTmp', 'PrivateDevices', 'ProtectKernelLogs', 'ProtectKernelModules', 'InaccessiblePaths', 'TemporaryFileSystem', 'BindPaths', 'BindReadOnlyPaths', 'PrivateMounts']) {
    t.same(values(key), [], `no ${key}`);
  }
  t.notOk(values('ProtectHome').some((v) => v === 'yes' || v === 'tmpfs'), 'ProtectHome at most read-only (same files, read-only)');
  const allowed = values('SystemCallFilter').flatMap((v) => v.split(/\s+/));
  t.notOk(allowed.some((s) => /^(syslog|init_module|finit_module|delete_module|@module|@privileged)$/.test(s)), 'kernel logs and modules stay out of reach by the syscall filter');
  const caps = values('CapabilityBoundingSet').flatMap((v) => v.split(/\s+/));
  t.notOk(caps.includes('CAP_SYSLOG') || caps.includes('CAP_SYS_MODULE'), 'and by the capabilities');
});
