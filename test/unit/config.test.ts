// helmd's configuration file: every problem located file:line:col and reported at
// once, nothing guessed; the shipped /etc/helm/helmd.yaml is valid; helmd refuses a
// bad file before it does anything else; command-line options override the file.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ConfigError, DEFAULTS, groupId, loadConfig, parseConfig } from '../../daemon/config';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const HELMD = path.join(ROOT, 'bin', 'helmd');

/** The `file:line:col: message` lines of a rejected configuration. */
function errors(text: string): string[] {
  try {
    parseConfig(text, 'helmd.yaml');
  } catch (e) {
    if (e instanceof ConfigError) return e.message.split('\n');
    throw e;
  }
  return [];
}

t.test('the shipped configuration is valid and says what the defaults are', async (t) => {
  const cfg = loadConfig(path.join(ROOT, 'systemd', 'helmd.yaml'));
  t.same(cfg.policy, ['/etc/helm/policies/']);
  t.same({ ...cfg, policy: undefined, socket: { ...cfg.socket, group: undefined } }, { ...DEFAULTS, policy: undefined, socket: { ...DEFAULTS.socket, group: undefined } }, 'every other value is the default');
  t.equal(cfg.socket.group, 'helm', 'the socket belongs to the helm group make install creates');
});

t.test('a minimal file: only the policy, every default filled in', async (t) => {
  const cfg = parseConfig('policy: /etc/helm/policies/\n', 'm.yaml');
  t.same(cfg, { ...DEFAULTS, policy: ['/etc/helm/policies/'] });
  t.not(cfg.audit, DEFAULTS.audit, 'a copy: changing it cannot change the defaults');
});

t.test('every setting is read', async (t) => {
  const cfg = parseConfig(
    [
      'policy: [/a/, /b.yaml]',
      'audit: { log: /srv/audit/trail.jsonl, allows: none }',
      'socket: { path: /run/x/h.sock, group: agents }',
      'log: { level: debug }',
      'dryRun: true',
      'stateDir: /srv/state',
      'pinDir: /sys/fs/bpf/other',
      '',
    ].join('\n'),
    'c.yaml',
  );
  t.same(cfg, {
    policy: ['/a/', '/b.yaml'],
    audit: { log: '/srv/audit/trail.jsonl', allows: 'none' },
    socket: { path: '/run/x/h.sock', group: 'agents' },
    log: { level: 'debug' },
    dryRun: true,
    stateDir: '/srv/state',
    pinDir: '/sys/fs/bpf/other',
  });
});

t.test('every problem at once, in file order, each located', async (t) => {
  const got = errors(
    [
      'policy: [/etc/helm/policies/, relative/dir]', // 1
      'audit:', // 2
      '  log: /var/log/helm/audit.jsonl', // 3
      '  allows: every', // 4
      '  fsync: always', // 5
      'socket: { path: run/helm.sock, group: Helm }', // 6
      'log: { level: verbose }', // 7
      'dryrun: true', // 8
      'stateDir: 7', // 9
      'pinDir: [/sys/fs/bpf/helm]', // 10
      '',
    ].join('\n'),
  );
  t.same(got, [
    'helmd.yaml:1:31: a policy source must be an absolute path, got "relative/dir"',
    'helmd.yaml:4:11: audit.allows must be one of none, sampled, all, got "every"',
    'helmd.yaml:5:3: unknown key "fsync" in audit (expected one of: log, allows)',
    'helmd.yaml:6:17: socket.path must be an absolute path, got "run/helm.sock"',
    'helmd.yaml:6:39: socket.group must be a group name (^[a-z_][a-z0-9_-]{0,31}$), got "Helm"',
    'helmd.yaml:7:15: log.level must be one of trace, debug, info, warn, error, got "verbose"',
    'helmd.yaml:8:1: unknown key "dryrun" in the configuration (did you mean "dryRun"?)',
    'helmd.yaml:9:11: stateDir must be a non-empty string, got the number 7',
    'helmd.yaml:10:9: pinDir must be a non-empty string, got a list',
  ]);
});

t.test('allow logging: none, sampled or all', async (t) => {
  for (const level of ['none', 'sampled', 'all']) {
    t.same(errors(`policy: /p/\naudit: { allows: ${level} }\n`), [], level);
  }
});

t.test('structure: missing policy, empty list, wrong shapes, YAML errors, repeated keys', async (t) => {
  t.same(errors('audit: { log: /x }\n'), ['helmd.yaml:1:1: the configuration is missing required key "policy" (policy files or directories)']);
  t.same(errors('policy: []\n'), ['helmd.yaml:1:9: policy is an empty list; give at least one file or directory']);
  t.same(errors(''), ['helmd.yaml:1:1: the configuration must be a mapping, got nothing']);
  t.same(errors('- /a\n- /b\n'), ['helmd.yaml:1:1: the configuration must be a mapping, got a list']);
  t.same(errors('policy: /p/\nsocket: /run/helm.sock\n'), ['helmd.yaml:2:9: socket must be a mapping, got the string "/run/helm.sock"']);
  t.same(errors('policy: /p/\ndryRun: yes\n'), ['helmd.yaml:2:9: dryRun must be true or false, got the string "yes"']);
  t.same(errors('policy: /a/\npolicy: /b/\n'), ['helmd.yaml:2:1: Map keys must be unique']);
  const syntax = errors('policy: [/a\nlog: {\n');
  t.ok(syntax.length > 0 && syntax.every((l) => /^helmd\.yaml:\d+:\d+: /.test(l)), `a syntax error is located: ${syntax.join(' | ')}`);
});

t.test('a file that cannot be read is a located error too', async (t) => {
  t.throws(() => loadConfig('/nonexistent/helmd.yaml'), { name: 'ConfigError', message: '/nonexistent/helmd.yaml:1:1: cannot read the configuration: no such file' });
});

t.test('groupId reads /etc/group', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-group-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'group');
  fs.writeFileSync(file, 'root:x:0:\nhelm:x:998:alice,bob\nhelmet:x:12:\n');
  t.equal(groupId('helm', file), 998);
  t.equal(groupId('helmet', file), 12);
  t.equal(groupId('hel', file), undefined, 'names match whole');
});

t.test('helmd refuses a bad configuration before anything else, saying where', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const bad = path.join(dir, 'helmd.yaml');
  fs.writeFileSync(bad, `policy: ${dir}/policies/\nstateDir: ${dir}/state\naudit:\n  log: ${dir}/audit.jsonl\n  rotate: daily\n`);
  const r = spawnSync(HELMD, ['--config', bad], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 1, 'exit status 1');
  t.equal(r.stderr, `helmd: the configuration was rejected:\n${bad}:5:3: unknown key "rotate" in audit (expected one of: log, allows)\n`);
  t.same(fs.readdirSync(dir), ['helmd.yaml'], 'nothing created: no state, no trail');

  const none = spawnSync(HELMD, [], { encoding: 'utf8', timeout: 60_000 });
  t.equal(none.status, 1);
  t.match(none.stderr, /no policy: give --policy FILE\|DIR\.\.\. or a --config file that names one/);
});

t.test('command-line options override the file', async (t) => {
  // As a non-root user helmd stops right after reading its settings: enough to see which it read.
  if (process.getuid?.() === 0) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-override-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.writeFileSync(path.join(dir, 'helmd.yaml'), 'policy: /nonexistent-from-file/\n');
    const r = spawnSync(HELMD, ['--config', path.join(dir, 'helmd.yaml'), '--policy', path.join(dir, 'nonexistent-from-cli.yaml'), '--state-dir', path.join(dir, 'state')], { encoding: 'utf8', timeout: 60_000 });
    t.equal(r.status, 1);
    t.match(r.stderr, /nonexistent-from-cli\.yaml/, 'the policy given on the command line is the one read');
    t.notMatch(r.stderr, /nonexistent-from-file/);
  } else {
    t.pass('as root only: a non-root helmd stops before reading policies');
  }
});
