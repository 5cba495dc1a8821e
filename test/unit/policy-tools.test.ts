// The policy tools: the whole-language reference evaluator (evaluateOperation), lint warnings,
// the cases runner (`helmctl policy test`), explain, and the shipped examples, the last through
// the real CLI (dist/bundle/helmctl.js, built by `make ts`).
//
// Paths are canonicalised by the identity and the host's filesystem is replaced by a table,
// except where a test is about the host (the examples, and lint's default existence check on a
// temporary directory).

import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { checkCaseRules, formatResult, parseCases, runCases, type TestCase } from '../../daemon/policy/cases';
import { evaluateOperation, traceOperation, type Operation, type Outcome } from '../../daemon/policy/evaluate';
import { explain, formatExplanation, operationFromOptions, type ExplainOptions } from '../../daemon/policy/explain';
import { lintPolicies, type LintOptions } from '../../daemon/policy/lint';
import { nestingTooDeep, parsePolicySource } from '../../daemon/policy/parse';
import { PolicyError, formatDiagnostic, type Policy } from '../../daemon/policy/types';

// Tests run from dist/test/unit.
const ROOT = path.resolve(__dirname, '../../..');
const HELMCTL = path.join(ROOT, 'dist/bundle/helmctl.js');
const EXAMPLES = path.join(ROOT, 'policies/examples');

const id = (p: string): string => p;

function parse(text: string, file = 'p.yaml'): Policy[] {
  return parsePolicySource(text, file, { canonicalize: id });
}

/** A policy document; `body` is the YAML under spec (indented by 2), starting at line 6. */
function doc(name: string, roles: string, body: string, mode = 'enforce'): string {
  return `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: ${name} }\nspec:\n  roles: ${roles}\n  mode: ${mode}\n${body}`;
}

/** The decision in one string: "allow by p/r", "deny by default", "would_deny by p/r"... */
function show(o: Outcome): string {
  if (o.reason === 'no-policy') return `${o.decision} (no policy)`;
  return `${o.decision} by ${o.policy === undefined ? 'default' : `${o.policy}/${o.rule}`}`;
}

function decide(policies: Policy[], op: Operation): string {
  return show(evaluateOperation(policies, op));
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-policy-tools-'));
// HELM_KEEP_TMP=1 keeps the files, to look at what a failing test linted.
t.teardown(() => process.env.HELM_KEEP_TMP || fs.rmSync(tmp, { recursive: true, force: true }));
let fileCount = 0;
/** Writes `text` to a fresh file in the temporary directory; returns its path. */
function write(text: string, name = `f${++fileCount}.yaml`): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

/** Runs the CLI as a user would (without tap's NODE_OPTIONS hooks, which only slow it down). */
function helmctl(args: string[], cwd = ROOT): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, [HELMCTL, ...args], { cwd, env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// =============================================================================================
// evaluateOperation: network targets

const NET = parse(
  doc(
    'net',
    '[r]',
    `  allow:
    - id: v4
      connect: [192.0.2.10:443]
    - id: v4-cidr
      connect: [10.0.0.0/8:8000-8999]
    - id: v6
      connect: ["[2001:db8::1]:443"]
    - id: v6-cidr
      connect: ["[fd00::/8]:*"]
    - id: any-dns
      connect: ["*:53"]
    - id: host
      connect: [api.example.com:443]
    - id: domain
      connect: ["*.github.com:443"]
    - id: mapped
      connect: ["[::ffff:198.51.100.0/120]:80"]
    - id: all-v6
      connect: ["[::/0]:7000"]
    - id: listen
      bind: ["0.0.0.0:8080", "[::1]:9000-9001"]
`,
  ),
);

t.test('network: every target form', async (t) => {
  const c = (addr: string | undefined, port: number, host?: string): string =>
    decide(NET, { role: 'r', verb: 'connect', port, ...(addr !== undefined && { addr }), ...(host !== undefined && { host }) });
  // IPv4 address: exactly that address and port.
  t.equal(c('192.0.2.10', 443), 'allow by net/v4');
  t.equal(c('192.0.2.11', 443), 'deny by default');
  t.equal(c('192.0.2.10', 444), 'deny by default');
  // IPv4 CIDR and a port range, both ends included.
  t.equal(c('10.255.1.2', 8000), 'allow by net/v4-cidr');
  t.equal(c('10.0.0.0', 8999), 'allow by net/v4-cidr');
  t.equal(c('10.1.1.1', 7999), 'deny by default');
  t.equal(c('10.1.1.1', 9000), 'deny by default');
  t.equal(c('11.0.0.1', 8000), 'deny by default');
  // IPv6 address, in any text form.
  t.equal(c('2001:db8::1', 443), 'allow by net/v6');
  t.equal(c('2001:DB8:0:0:0:0:0:1', 443), 'allow by net/v6');
  t.equal(c('2001:db8::2', 443), 'deny by default');
  // IPv6 CIDR with any port (0 included).
  t.equal(c('fd12:3456::1', 1), 'allow by net/v6-cidr');
  t.equal(c('fdff::', 65535), 'allow by net/v6-cidr');
  t.equal(c('fd00::1', 0), 'allow by net/v6-cidr');
  t.equal(c('fe00::1', 1), 'deny by default');
  // "*": any address of either family, and an operation known only by its host name.
  t.equal(c('8.8.8.8', 53), 'allow by net/any-dns');
  t.equal(c('2001:4860:4860::8888', 53), 'allow by net/any-dns');
  t.equal(c(undefined, 53, 'dns.example'), 'allow by net/any-dns');
  t.equal(c('8.8.8.8', 54), 'deny by default');
});

t.test('network: host names and *.domain', async (t) => {
  const c = (host: string, port = 443, addr?: string): string => decide(NET, { role: 'r', verb: 'connect', port, host, ...(addr !== undefined && { addr }) });
  t.equal(c('api.example.com'), 'allow by net/host');
  t.equal(c('API.Example.COM'), 'allow by net/host', 'case-insensitive');
  t.equal(c('api.example.com.'), 'allow by net/host', 'a trailing dot is the same name');
  t.equal(c('api.example.com', 80), 'deny by default');
  t.equal(c('x.api.example.com'), 'deny by default', 'a host name does not cover its subdomains');
  t.equal(c('api.example.co'), 'deny by default');
  t.equal(c('api.github.com'), 'allow by net/domain');
  t.equal(c('a.b.github.com'), 'allow by net/domain', 'any depth of subdomain');
  t.equal(c('github.com'), 'deny by default', '*.domain is subdomains only');
  t.equal(c('evilgithub.com'), 'deny by default', 'a suffix is matched at a label boundary');
  t.equal(c('github.com.evil.example'), 'deny by default');
  // The host's address does not make a host rule match, nor does a name an address rule.
  t.equal(c('unknown.example', 443, '192.0.2.10'), 'allow by net/v4');
  t.equal(decide(NET, { role: 'r', verb: 'connect', port: 443, addr: '192.0.2.99', host: 'api.example.com' }), 'allow by net/host');
  t.equal(c('192.0.2.10.example'), 'deny by default');
});

t.test('network: IPv4-mapped IPv6 addresses match as IPv4', async (t) => {
  const c = (addr: string, port: number): string => decide(NET, { role: 'r', verb: 'connect', addr, port });
  t.equal(c('::ffff:192.0.2.10', 443), 'allow by net/v4');
  t.equal(c('::ffff:c000:20a', 443), 'allow by net/v4', 'hex form of the same address');
  t.equal(c('::FFFF:10.9.8.7', 8080), 'allow by net/v4-cidr');
  // A rule written as a mapped network is the IPv4 network it maps.
  t.equal(c('198.51.100.7', 80), 'allow by net/mapped');
  t.equal(c('::ffff:198.51.100.255', 80), 'allow by net/mapped');
  t.equal(c('198.51.101.1', 80), 'deny by default');
  // [::/0] is every IPv6 address, not the IPv4 ones mapped into it ("*" is both).
  t.equal(c('2001:db8::7', 7000), 'allow by net/all-v6');
  t.equal(c('192.0.2.1', 7000), 'deny by default');
  t.equal(c('::ffff:192.0.2.1', 7000), 'deny by default');
  // An IPv4-compatible (not mapped) address is IPv6.
  t.equal(c('::192.0.2.10', 443), 'deny by default');
});

t.test('network: bind matches bind targets only, and connect connect targets', async (t) => {
  t.equal(decide(NET, { role: 'r', verb: 'bind', addr: '0.0.0.0', port: 8080 }), 'allow by net/listen');
  t.equal(decide(NET, { role: 'r', verb: 'bind', addr: '::1', port: 9001 }), 'allow by net/listen');
  t.equal(decide(NET, { role: 'r', verb: 'bind', addr: '::1', port: 9002 }), 'deny by default');
  t.equal(decide(NET, { role: 'r', verb: 'bind', addr: '192.0.2.10', port: 443 }), 'deny by default', 'a connect rule does not allow bind');
  t.equal(decide(NET, { role: 'r', verb: 'connect', addr: '0.0.0.0', port: 8080 }), 'deny by default', 'a bind rule does not allow connect');
  // A network operation never matches a path rule and a file operation never a network rule.
  const mixed = parse(doc('m', '[r]', '  allow:\n    - read: /\n      connect: ["*:*"]\n'));
  t.equal(decide(mixed, { role: 'r', verb: 'bind', addr: '127.0.0.1', port: 1 }), 'deny by default');
  t.equal(decide(mixed, { role: 'r', verb: 'write', path: '/x' }), 'deny by default');
});

t.test('network: bad operations are refused, never matched loosely', async (t) => {
  t.throws(() => evaluateOperation(NET, { role: 'r', verb: 'connect', port: 443 }), /needs an address or a host name/);
  t.throws(() => evaluateOperation(NET, { role: 'r', verb: 'connect', addr: '10.0.0.300', port: 443 }), /not an IP address/);
  t.throws(() => evaluateOperation(NET, { role: 'r', verb: 'connect', addr: 'fe80::1%eth0', port: 443 }), /not an IP address/);
  t.throws(() => evaluateOperation(NET, { role: 'r', verb: 'connect', addr: '10.0.0.1', port: 65536 }), /bad port/);
});

// =============================================================================================
// evaluateOperation: precedence and modes, network too

const PRECEDENCE = parse(
  doc(
    'main',
    '[r, s]',
    `  allow:
    - id: web
      connect: ["*:443"]
      read: [/srv/]
  block:
    - id: metadata
      connect: ["169.254.169.254:*"]
      read: [/srv/secret/]
  contextual:
    - id: payments
      connect: [api.stripe.com:443]
      read: [/srv/pay/]
      when: { role: r }
`,
  ) +
    '---\n' +
    doc('trial', '["*"]', '  block:\n    - id: trial-block\n      connect: ["203.0.113.0/24:*"]\n      read: /srv/trial/\n', 'dry-run'),
);

t.test('precedence: block > contextual > allow > default, for network and files alike', async (t) => {
  const net = (role: string, port: number, addr?: string, host?: string): string =>
    decide(PRECEDENCE, { role, verb: 'connect', port, ...(addr !== undefined && { addr }), ...(host !== undefined && { host }) });
  const read = (role: string, p: string): string => decide(PRECEDENCE, { role, verb: 'read', path: p });
  // block beats an allow that also matches
  t.equal(net('r', 443, '169.254.169.254'), 'deny by main/metadata');
  t.equal(read('r', '/srv/secret/k'), 'deny by main/metadata');
  // contextual: its when holds → allow; it does not → deny, although an allow matches
  t.equal(net('r', 443, undefined, 'api.stripe.com'), 'allow by main/payments');
  t.equal(net('s', 443, undefined, 'api.stripe.com'), 'deny by main/payments');
  t.equal(read('r', '/srv/pay/x'), 'allow by main/payments');
  t.equal(read('s', '/srv/pay/x'), 'deny by main/payments');
  // allow, then the default
  t.equal(net('s', 443, '192.0.2.1'), 'allow by main/web');
  t.equal(net('s', 80, '192.0.2.1'), 'deny by default');
  t.equal(read('s', '/etc/hostname'), 'deny by default');
  // a block in a dry-run policy: would_deny, and still beats the allow
  t.equal(net('s', 443, '203.0.113.9'), 'would_deny by trial/trial-block');
  t.equal(read('s', '/srv/trial/x'), 'would_deny by trial/trial-block');
  // a role only the dry-run policy governs: its default is dry-run too
  t.equal(net('guest', 443, '192.0.2.1'), 'would_deny by default');
  // no policy governs the role at all
  t.equal(decide(parse(doc('only', '[r]', '')), { role: 'x', verb: 'connect', addr: '192.0.2.1', port: 1 }), 'deny (no policy)');
  // the deciding rule and mode are in the outcome
  t.same(evaluateOperation(PRECEDENCE, { role: 's', verb: 'connect', host: 'api.stripe.com', port: 443 }), {
    decision: 'deny', action: 'deny', mode: 'enforce', reason: 'rule', policy: 'main', rule: 'payments',
  });
});

// =============================================================================================
// evaluateOperation: when

const WHEN = parse(
  doc(
    'w',
    '[r, s, t]',
    `  contextual:
    - id: by-role
      read: /d/role
      when: { role: [r, s] }
    - id: by-exe
      read: /d/exe
      when: { exe: [/usr/bin/python3, /opt/tools/] }
    - id: by-label
      read: /d/label
      when: { label: { team: pay, env: prod } }
    - id: by-uid
      read: /d/uid
      when: { uid: [0, 1000] }
    - id: all-of-them
      read: /d/all
      when: { role: r, exe: /opt/tools/, label: { team: pay }, uid: 1000 }
    - id: either-a
      read: /d/either
      when: { uid: 1 }
    - id: either-b
      read: /d/either
      when: { uid: 2 }
`,
  ),
);

t.test('when: each key', async (t) => {
  const r = (p: string, extra: Partial<Operation> = {}, role = 'r'): string => decide(WHEN, { role, verb: 'read', path: p, ...extra } as Operation);
  t.equal(r('/d/role'), 'allow by w/by-role');
  t.equal(r('/d/role', {}, 's'), 'allow by w/by-role', 'a list is OR');
  t.equal(r('/d/role', {}, 't'), 'deny by w/by-role');

  t.equal(r('/d/exe', { exe: '/usr/bin/python3' }), 'allow by w/by-exe', 'exact executable');
  t.equal(r('/d/exe', { exe: '/opt/tools/bin/fmt' }), 'allow by w/by-exe', 'under a "/" directory');
  t.equal(r('/d/exe', { exe: '/usr/bin/python3.11' }), 'deny by w/by-exe', 'an exact path is exact');
  t.equal(r('/d/exe', { exe: '/opt/toolsx' }), 'deny by w/by-exe', 'a directory is matched at a "/" boundary');
  t.equal(r('/d/exe', { exe: '/opt/tools' }), 'deny by w/by-exe', 'the directory itself is not an executable below it');
  t.equal(r('/d/exe'), 'deny by w/by-exe', 'an unknown executable never holds');

  t.equal(r('/d/label', { labels: { team: 'pay', env: 'prod' } }), 'allow by w/by-label');
  t.equal(r('/d/label', { labels: { team: 'pay', env: 'prod', extra: 'x' } }), 'allow by w/by-label', 'other labels do not matter');
  t.equal(r('/d/label', { labels: { team: 'pay' } }), 'deny by w/by-label', 'every key: value must match');
  t.equal(r('/d/label', { labels: { team: 'pay', env: 'Prod' } }), 'deny by w/by-label', 'values are exact');
  t.equal(r('/d/label'), 'deny by w/by-label', 'no labels');

  t.equal(r('/d/uid', { uid: 0 }), 'allow by w/by-uid');
  t.equal(r('/d/uid', { uid: 1000 }), 'allow by w/by-uid');
  t.equal(r('/d/uid', { uid: 1001 }), 'deny by w/by-uid');
  t.equal(r('/d/uid'), 'deny by w/by-uid', 'an unknown uid never holds');
});

t.test('when: keys are ANDed, and any of several matching contextual rules will do', async (t) => {
  const all = { exe: '/opt/tools/x', labels: { team: 'pay' }, uid: 1000 };
  const r = (extra: Partial<Operation>, role = 'r'): string => decide(WHEN, { role, verb: 'read', path: '/d/all', ...extra } as Operation);
  t.equal(r(all), 'allow by w/all-of-them');
  t.equal(r(all, 's'), 'deny by w/all-of-them', 'role fails');
  t.equal(r({ ...all, exe: '/usr/bin/x' }), 'deny by w/all-of-them', 'exe fails');
  t.equal(r({ ...all, labels: { team: 'ops' } }), 'deny by w/all-of-them', 'label fails');
  t.equal(r({ ...all, uid: 0 }), 'deny by w/all-of-them', 'uid fails');
  const e = (uid: number): string => decide(WHEN, { role: 'r', verb: 'read', path: '/d/either', uid });
  t.equal(e(1), 'allow by w/either-a');
  t.equal(e(2), 'allow by w/either-b');
  t.equal(e(3), 'deny by w/either-a', 'none holds: deny, reported by the first rule');

  // Why, condition by condition.
  const trace = traceOperation(WHEN, { role: 'r', verb: 'read', path: '/d/all', exe: '/usr/bin/x', uid: 1000 });
  t.same(trace.contextual[0].when, {
    holds: false,
    checks: [
      { key: 'role', holds: true, detail: 'role "r" is one of [r]' },
      { key: 'exe', holds: false, detail: 'exe /usr/bin/x matches none of [/opt/tools/]' },
      { key: 'label', holds: false, detail: 'label team is not set (needs "pay")' },
      { key: 'uid', holds: true, detail: 'uid 1000 is one of [1000]' },
    ],
  });
});

// =============================================================================================
// lint

/** Lint options independent of the host: identity canonicalisation, a table for what exists. */
function lintOpts(existing: Record<string, 'dir' | 'file' | 'unknown'> = {}, kernel = false): LintOptions {
  return { kernel, canonicalize: id, pathKind: (p) => existing[p], compile: { stat: () => undefined, readdir: () => [] } };
}

/** Formatted warnings of linting these files. */
function warnings(files: string[], existing: Record<string, 'dir' | 'file' | 'unknown'>): string[] {
  const r = lintPolicies(files, lintOpts(existing));
  if (r.errors.length) throw new PolicyError(r.errors);
  return r.warnings.map(formatDiagnostic);
}

/** Whether anything exists cannot be told (as on EACCES): no existence warnings. */
const ALL_FILES = new Proxy({}, { get: () => 'unknown' }) as Record<string, 'unknown'>;

t.test('lint: an allow or contextual target that a block covers for every role it applies to', async (t) => {
  const f = write(
    doc(
      'a',
      '[r, s]',
      `  allow:
    - id: ssh-config
      read: [/etc/ssh/ssh_config, /etc/ssh/, /etc/sshd, /etc/ssh]
      connect: ["[::ffff:10.1.2.3]:443", 10.1.2.3:443-444, api.github.com:443, github.com:443]
  block:
    - id: ssh
      read: /etc/ssh/
      connect: ["10.0.0.0/8:443", "*.github.com:*"]
  contextual:
    - id: only-r
      read: /etc/ssh/moduli
      write: /etc/ssh/moduli
      when: { role: r }
`,
    ),
  );
  t.same(warnings([f], ALL_FILES), [
    `${f}:9:14: warning: read /etc/ssh/ssh_config in allow rule "ssh-config" never allows anything: block rule "ssh" (read /etc/ssh/ at ${f}:13:13) denies it for every role it applies to`,
    `${f}:9:35: warning: read /etc/ssh/ in allow rule "ssh-config" never allows anything: block rule "ssh" (read /etc/ssh/ at ${f}:13:13) denies it for every role it applies to`,
    `${f}:10:17: warning: connect [::ffff:10.1.2.3]:443 in allow rule "ssh-config" never allows anything: block rule "ssh" (connect 10.0.0.0/8:443 at ${f}:14:17) denies it for every role it applies to`,
    `${f}:10:60: warning: connect api.github.com:443 in allow rule "ssh-config" never allows anything: block rule "ssh" (connect *.github.com:* at ${f}:14:35) denies it for every role it applies to`,
    `${f}:17:13: warning: read /etc/ssh/moduli in contextual rule "only-r" never allows anything: block rule "ssh" (read /etc/ssh/ at ${f}:13:13) denies it for role "r"`,
  ]);
  // Not shadowed: /etc/sshd (a sibling), /etc/ssh without "/" (the directory may be listed, the
  // block covers what is below), 443-444 (444 is not blocked), github.com (the apex is not a
  // subdomain), the contextual write (no write block).
});

t.test('lint: shadowing needs a block for every role', async (t) => {
  const blockR = doc('blocks-r', '[r]', '  block:\n    - id: b\n      read: /x/\n');
  const star = doc('blocks-all', '["*"]', '  block:\n    - id: b\n      read: /y/\n');
  const f = write(
    [
      blockR,
      star,
      doc('allows', '[r, s]', '  allow:\n    - id: a\n      read: [/x/1, /y/1]\n'),
      doc('allows-all', '["*"]', '  allow:\n    - id: a\n      read: [/x/2, /y/2]\n  contextual:\n    - id: c\n      read: /x/3\n      when: { role: r }\n'),
    ].join('---\n'),
  );
  // /x/1: role s is not blocked; /x/2: neither is any role but r; /y/*: the "*" block covers every role;
  // /x/3: the contextual rule allows for r only, and r is blocked.
  t.same(warnings([f], ALL_FILES), [
    `${f}:29:20: warning: read /y/1 in allow rule "a" never allows anything: block rule "b" of policy "blocks-all" (read /y/ at ${f}:19:13) denies it for every role it applies to`,
    `${f}:39:20: warning: read /y/2 in allow rule "a" never allows anything: block rule "b" of policy "blocks-all" (read /y/ at ${f}:19:13) denies it for every role`,
    `${f}:42:13: warning: read /x/3 in contextual rule "c" never allows anything: block rule "b" of policy "blocks-r" (read /x/ at ${f}:9:13) denies it for role "r"`,
  ]);
  // A block in a dry-run policy shadows too (the operation is audited as would_deny); it says so.
  const d = write([doc('trial', '[r]', '  block:\n    - id: b\n      exec: /bin/\n', 'dry-run'), doc('al', '[r]', '  allow:\n    - id: a\n      exec: /bin/sh\n')].join('---\n'));
  t.same(warnings([d], ALL_FILES), [
    `${d}:19:13: warning: exec /bin/sh in allow rule "a" never allows anything: block rule "b" of policy "trial" (exec /bin/ at ${d}:9:13, dry-run) denies it for role "r"`,
  ]);
  // Two blocks that together cover both roles are both named.
  const g = write(
    [doc('br', '[r]', '  block:\n    - id: br\n      write: /z/\n'), doc('bs', '[s]', '  block:\n    - id: bs\n      write: /z/\n'), doc('al', '[r, s]', '  allow:\n    - id: a\n      write: /z/q\n')].join('---\n'),
  );
  t.same(warnings([g], ALL_FILES), [
    `${g}:29:14: warning: write /z/q in allow rule "a" never allows anything: block rule "br" of policy "br" (write /z/ at ${g}:9:14) and block rule "bs" of policy "bs" (write /z/ at ${g}:19:14) denies it for every role it applies to`,
  ]);
});

t.test('lint: paths that do not exist here, files written as directories and directories as files', async (t) => {
  const f = write(
    doc(
      'a',
      '[r]',
      `  allow:
    - read: [/present/file, /missing, /missing/dir/, /present/file/, /present/dir, /present/dir/]
      exec: /present/dir
  contextual:
    - read: /present/file
      when: { exe: [/present/dir, /gone/tool] }
`,
    ),
  );
  const existing: Record<string, 'dir' | 'file'> = { '/present/file': 'file', '/present/dir': 'dir' };
  t.same(warnings([f], existing), [
    `${f}:8:29: warning: read /missing does not exist on this host`,
    `${f}:8:39: warning: read /missing/dir/ does not exist on this host`,
    `${f}:8:54: warning: read /present/file/ ends with "/" but is not a directory on this host: it matches nothing (without the "/" it would match the file)`,
    `${f}:8:70: warning: read /present/dir is a directory on this host: without a trailing "/" the target covers the directory itself, not what is in it (/present/dir/ covers everything below)`,
    `${f}:9:13: warning: exec /present/dir is a directory on this host: without a trailing "/" the target covers the directory itself, not what is in it (/present/dir/ covers everything below)`,
    `${f}:12:21: warning: when.exe /present/dir is a directory on this host: without a trailing "/" the condition holds for no executable (/present/dir/ holds for those below it)`,
    `${f}:12:35: warning: when.exe /gone/tool does not exist on this host`,
  ]);
});

t.test('lint: existence on the real host, and the canonical form in the message', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'host-'));
  fs.writeFileSync(path.join(dir, 'file'), '');
  fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));
  const f = write(doc('h', '[r]', `  allow:\n    - read: [${dir}/file, ${dir}/, ${dir}/absent, ${dir}/dangling]\n`));
  const r = lintPolicies([f], { kernel: false });
  const line8 = fs.readFileSync(f, 'utf8').split('\n')[7];
  t.same(r.warnings.map(formatDiagnostic), [
    `${f}:8:${line8.indexOf(`${dir}/absent`) + 1}: warning: read ${dir}/absent does not exist on this host`,
    `${f}:8:${line8.indexOf(`${dir}/dangling`) + 1}: warning: read ${dir}/dangling does not exist on this host (matched as ${dir}/nowhere)`,
  ]);
  t.same(r.errors, []);
});

t.test('lint: a target repeated in one policy', async (t) => {
  const f = write(
    doc(
      'a',
      '[r]',
      `  allow:
    - id: one
      read: [/x, /x, /lib/y]
      connect: [Api.Example.com:443]
    - id: two
      read: /usr/lib/y
      write: /x
      connect: ["api.example.com:443", "10.0.0.0/8:1-2", "[::ffff:10.0.0.0/104]:1-2"]
  block:
    - id: b
      read: /x
  contextual:
    - id: c1
      read: /c
      when: { role: r, uid: [1, 0] }
    - id: c2
      read: /c
      when: { uid: [0, 1], role: [r] }
    - id: c3
      read: /c
      when: { uid: 2 }
`,
    ),
  );
  const lib = { canonicalize: (p: string) => (p === '/lib/y' ? '/usr/lib/y' : p) };
  const r = lintPolicies([f], { ...lintOpts(ALL_FILES), ...lib });
  t.same(r.warnings.map(formatDiagnostic), [
    `${f}:9:14: warning: read /x in allow rule "one" never allows anything: block rule "b" (read /x at ${f}:17:13) denies it for role "r"`,
    `${f}:9:18: warning: read /x in allow rule "one" never allows anything: block rule "b" (read /x at ${f}:17:13) denies it for role "r"`,
    `${f}:9:18: warning: read /x repeats read /x at ${f}:9:14, earlier in this rule`,
    `${f}:12:13: warning: read /usr/lib/y repeats read /lib/y at ${f}:9:22, in allow rule "one" (both are matched as /usr/lib/y)`,
    `${f}:14:17: warning: connect api.example.com:443 repeats connect Api.Example.com:443 at ${f}:10:17, in allow rule "one" (the same destinations)`,
    `${f}:14:58: warning: connect [::ffff:10.0.0.0/104]:1-2 repeats connect 10.0.0.0/8:1-2 at ${f}:14:40, earlier in this rule (the same destinations)`,
    `${f}:23:13: warning: read /c repeats read /c at ${f}:20:13, in contextual rule "c1" (with the same when)`,
  ]);
  // Not repeated: write /x (another verb), block read /x (another kind: it shadows the allow
  // instead), c3 (another when).
  t.same(r.notes.map((n) => n.message), ['read /lib/y is matched as /usr/lib/y']);
  // Across policies the same target is not a repeat: a base policy and a role's policy often share some.
  const g = write([doc('p1', '[r]', '  allow:\n    - read: /x\n'), doc('p2', '[r]', '  allow:\n    - read: /x\n')].join('---\n'));
  t.same(warnings([g], ALL_FILES), []);
});

t.test('lint: a when.role that no policy names', async (t) => {
  const f = write(
    [
      doc('named', '[payment_processor, analyst]', ''),
      doc(
        'everyone',
        '["*"]',
        `  contextual:
    - id: stripe
      connect: [api.stripe.com:443]
      when: { role: payment_procesor }
    - id: reports
      read: /r/
      when:
        role: [analyst, zzz]
`,
      ),
    ].join('---\n'),
  );
  t.same(warnings([f], ALL_FILES), [
    `${f}:17:21: warning: when.role "payment_procesor" of contextual rule "stripe" is a role no policy names in spec.roles (only "*" policies govern it); did you mean "payment_processor"?`,
    `${f}:21:25: warning: when.role "zzz" of contextual rule "reports" is a role no policy names in spec.roles (only "*" policies govern it); is it misspelt?`,
  ]);
  // In JSON, located the same way (through the JSON Pointer).
  const j = write(
    JSON.stringify([
      { apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'n' }, spec: { roles: ['ops'] } },
      { apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'e' }, spec: { roles: ['*'], contextual: [{ read: '/a', when: { role: ['ops', 'opz'] } }] } },
    ]),
    'roles.json',
  );
  const w = warnings([j], ALL_FILES);
  t.equal(w.length, 1);
  const col = fs.readFileSync(j, 'utf8').indexOf('"opz"') + 1;
  t.equal(w[0], `${j}:1:${col}: warning: when.role "opz" of contextual rule "contextual[0]" is a role no policy names in spec.roles (only "*" policies govern it); did you mean "ops"? (at /1/spec/contextual/0/when/role/1)`);
});

/** Nine contextual rules with uid conditions on one target: one more than the kernel tries for it. */
const NINE_CONDITIONS = Array.from({ length: 9 }, (_, i) => `    - { id: c${i}, read: /etc/hostname, when: { uid: ${i} } }\n`).join('');
/** Where the ninth rule's `when` is: the first that does not fit, and where the error points. */
const NINTH_WHEN_COL = NINE_CONDITIONS.split('\n')[8].indexOf('{ uid') + 1;

t.test('lint: kernel errors stay errors; --no-kernel checks the language alone', async (t) => {
  const f = write(doc('n', '[r]', `  allow:\n    - connect: [api.example.com:443]\n  contextual:\n${NINE_CONDITIONS}`));
  const withKernel = lintPolicies([f], lintOpts(ALL_FILES, true));
  t.same(withKernel.errors.map(formatDiagnostic), [
    `${f}:18:${NINTH_WHEN_COL}: for role "r", 9 contextual rules with exe, label or uid conditions cover the same target (c0, c1, c2, c3, c4, c5, c6, c7, c8); the kernel tries at most 8 for one target`,
  ]);
  t.equal(withKernel.compiled, undefined);
  const languageOnly = lintPolicies([f], lintOpts(ALL_FILES, false));
  t.same(languageOnly.errors, []);
  t.equal(languageOnly.policies.length, 1);
  // Parse errors are errors either way, and nothing else is reported then.
  const bad = write(doc('b', '[r]', '  allow:\n    - read: relative\n'));
  for (const kernel of [true, false]) {
    const r = lintPolicies([bad], lintOpts(ALL_FILES, kernel));
    t.same(r.errors.map(formatDiagnostic), [`${bad}:8:13: rule allow[0]: read target "relative" is a relative path; paths must be absolute (start with "/")`]);
    t.same(r.warnings, []);
  }
});

t.test('lint CLI: output, exit codes, --strict, --no-kernel, cases files passed over', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'cli-'));
  fs.writeFileSync(path.join(dir, 'ok.yaml'), doc('ok', '[r]', '  allow:\n    - read: /etc/hostname\n'));
  const clean = helmctl(['policy', 'lint', 'ok.yaml'], dir);
  t.same(clean, { status: 0, stdout: 'ok: 1 policies, 1 rules, 3 kernel path entries\n', stderr: '' });

  fs.writeFileSync(path.join(dir, 'warn.yaml'), doc('warn', '[s]', '  allow:\n    - read: [/etc/hostname, /etc/hostname]\n'));
  const warned = helmctl(['policy', 'lint', 'warn.yaml'], dir);
  t.same(warned, {
    status: 0,
    stdout: 'warn.yaml:8:29: warning: read /etc/hostname repeats read /etc/hostname at warn.yaml:8:14, earlier in this rule\nok: 1 policies, 1 rules, 3 kernel path entries; 1 warning\n',
    stderr: '',
  });
  const strict = helmctl(['policy', 'lint', '--strict', 'warn.yaml'], dir);
  t.equal(strict.status, 1);
  t.equal(strict.stdout, 'warn.yaml:8:29: warning: read /etc/hostname repeats read /etc/hostname at warn.yaml:8:14, earlier in this rule\n');
  t.equal(strict.stderr, 'helmctl: 1 warning (--strict)\n');

  fs.writeFileSync(path.join(dir, 'net.yaml'), doc('net', '[r]', `  contextual:\n${NINE_CONDITIONS}`));
  const refused = helmctl(['policy', 'lint', 'net.yaml'], dir);
  t.equal(refused.status, 1);
  t.equal(refused.stdout, '');
  // Errors are `file:line:col: message` from the first line on (no prefix), then a count.
  t.equal(
    refused.stderr,
    `net.yaml:16:${NINTH_WHEN_COL}: for role "r", 9 contextual rules with exe, label or uid conditions cover the same target (c0, c1, c2, c3, c4, c5, c6, c7, c8); the kernel tries at most 8 for one target\nhelmctl: 1 error\n`,
  );
  const language = helmctl(['policy', 'lint', '--no-kernel', 'net.yaml'], dir);
  t.same(language, { status: 0, stdout: 'ok: 1 policies, 9 rules (language only: not compiled for the kernel)\n', stderr: '' });
  fs.writeFileSync(path.join(dir, 'cond.yaml'), doc('cond', '[r]', '  contextual:\n    - { read: /etc/hostname, when: { uid: 0, exe: /usr/bin/cat, label: { team: a } } }\n    - { connect: ["*:443"], when: { uid: 0 } }\n'));
  t.same(helmctl(['policy', 'lint', 'cond.yaml'], dir), { status: 0, stdout: 'ok: 1 policies, 2 rules, 3 kernel path entries\n', stderr: '' }, 'exe, label and uid conditions load');
  fs.rmSync(path.join(dir, 'cond.yaml'));

  fs.writeFileSync(path.join(dir, 'x.cases.yaml'), '- { role: r, verb: read, target: /etc/hostname, expect: allow }\n');
  fs.rmSync(path.join(dir, 'net.yaml'));
  fs.rmSync(path.join(dir, 'warn.yaml'));
  // In a directory only the JSON Schema is skipped by name: a case table there is recognised by
  // its content and passed over with a note, as it is when named next to a policy.
  const noted = {
    status: 0,
    stdout: 'x.cases.yaml:1:1: note: holds test cases (for helmctl policy test --cases), not a policy; not linted\nok: 1 policies, 1 rules, 3 kernel path entries\n',
    stderr: '',
  };
  t.same(helmctl(['policy', 'lint', '.'], dir), noted, 'a directory: the case table in it is noted');
  t.same(helmctl(['policy', 'lint', 'ok.yaml', 'x.cases.yaml'], dir), noted, 'named with a policy: noted');
  // A cases file alone is no policy; a file named like one that holds a policy is linted as one.
  const alone = helmctl(['policy', 'lint', 'x.cases.yaml'], dir);
  t.equal(alone.status, 1);
  t.equal(alone.stderr, 'x.cases.yaml:1:1: x.cases.yaml holds test cases (for helmctl policy test --cases), not policies\nhelmctl: 1 error\n');
  fs.writeFileSync(path.join(dir, 'y.cases.yaml'), doc('y', '[r]', '  allow:\n    - read: /etc/hostname\n'));
  t.match(helmctl(['policy', 'lint', 'y.cases.yaml'], dir), { status: 0, stdout: 'ok: 1 policies, 1 rules, 3 kernel path entries\n' });
});

// =============================================================================================
// cases: parsing

/** The located errors of a cases source ([] when it parses). */
function caseErrors(text: string, file = 'c.yaml'): string[] {
  try {
    parseCases(text, file, { canonicalize: id });
    return [];
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    return e.diagnostics.map(formatDiagnostic);
  }
}

t.test('cases: the model', async (t) => {
  const cases = parseCases(
    `- name: reads
  role: r
  verb: read
  target: /srv/x
  expect: allow
  rule: p/allow[0]
- { role: r, verb: read, target: /srv/, expect: deny }
- { role: r, verb: write, target: /srv/d, isDir: true, expect: would_deny, rule: default }
- { role: r, verb: connect, target: API.Example.com:443, addr: "2001:db8::1", exe: /usr/bin/curl, uid: 1000, labels: { team: a }, expect: allow }
- { role: r, verb: connect, target: "[::ffff:10.0.0.1]:0", expect: deny }
- { role: r, verb: bind, target: 0.0.0.0:8080, expect: allow }
`,
    'c.yaml',
    { canonicalize: (p) => (p === '/usr/bin/curl' ? '/usr/bin/curl.real' : p) },
  );
  t.same(
    cases.map((c) => [c.name, c.op, c.expect, c.rule ?? null, `${c.loc.line}:${c.loc.col}`]),
    [
      ['reads', { role: 'r', verb: 'read', path: '/srv/x', isDir: false }, 'allow', 'p/allow[0]', '1:3'],
      ['r: read /srv/', { role: 'r', verb: 'read', path: '/srv', isDir: true }, 'deny', null, '7:3'],
      ['r: write /srv/d', { role: 'r', verb: 'write', path: '/srv/d', isDir: true }, 'would_deny', 'default', '8:3'],
      [
        'r: connect API.Example.com:443 (at 2001:db8::1, exe /usr/bin/curl.real, uid 1000, labels team=a)',
        { role: 'r', verb: 'connect', port: 443, addr: '2001:db8::1', host: 'api.example.com', exe: '/usr/bin/curl.real', uid: 1000, labels: { team: 'a' } },
        'allow',
        null,
        '9:3',
      ],
      ['r: connect [::ffff:10.0.0.1]:0', { role: 'r', verb: 'connect', port: 0, addr: '::ffff:10.0.0.1' }, 'deny', null, '10:3'],
      ['r: bind 0.0.0.0:8080', { role: 'r', verb: 'bind', port: 8080, addr: '0.0.0.0' }, 'allow', null, '11:3'],
    ],
  );
});

t.test('cases: every problem located, all at once', async (t) => {
  t.same(
    caseErrors(`- role: r
  verb: raed
  target: /x
  expect: alow
  exe: usr/bin/x
- { role: "*", verb: read, target: relative, expect: deny, isDir: yes }
- { role: r, verb: connect, target: "example.com", expect: deny }
- { role: r, verb: connect, target: "::1:53", expect: deny }
- { role: r, verb: connect, target: "10.0.0.0/8:53", expect: deny }
- { role: r, verb: connect, target: "a.example:1-2", expect: deny }
- { role: r, verb: bind, target: "localhost:80", expect: deny }
- { role: r, verb: connect, target: "1.2.3.4:80", addr: 1.2.3.4, expect: deny }
- { role: r, verb: connect, target: "h.example:80", addr: nope, expect: deny }
- { role: r, verb: read, target: /x, isDir: true, expect: deny, uid: -1 }
- { role: r, verb: connect, target: "1.2.3.4:80", isDir: false, expect: deny }
- { role: r, verb: read, target: /x/, isDir: false, expect: deny }
- { role: r, verb: read, target: /x, expect: deny, labels: { team: 1 } }
- { role: r, verb: read, target: /x, expect: deny, labels: [a] }
- { role: r, verb: read, target: /x, expect: deny, rule: "a b" }
- { role: r, verb: read, target: /x, expcet: deny }
- { role: 7, verb: read, target: /x, expect: deny, name: "" }
- { role: r, verb: read, target: /x, expect: deny, labels: { __proto__: x } }
- just a string
`),
    [
      'c.yaml:2:9: case 1: verb must be one of read, write, exec, connect, bind, got "raed" (did you mean "read"?)',
      'c.yaml:4:11: case 1: expect must be allow, deny or would_deny, got "alow" (did you mean "allow"?)',
      'c.yaml:5:8: case 1: exe "usr/bin/x" is not an absolute path',
      'c.yaml:6:11: case 2: bad role name "*": an agent\'s role is letters, digits, ".", "_" and "-"',
      'c.yaml:6:36: case 2: read target "relative" is not an absolute path',
      'c.yaml:6:67: case 2: isDir must be true or false, got the string "yes"',
      'c.yaml:7:37: case 3: connect target "example.com" needs ":PORT", e.g. "api.example.com:443"',
      'c.yaml:8:37: case 4: connect target "::1:53" has an IPv6 address without brackets; write "[ADDRESS]:PORT", e.g. "[::1]:53"',
      'c.yaml:9:37: case 5: connect target "10.0.0.0/8:53" is not one destination: give an address or a host name (no "*" or CIDR: an operation has one destination)',
      'c.yaml:10:37: case 6: connect target "a.example:1-2" has a bad port "1-2": an operation has one port, 0-65535 (no ranges or "*")',
      'c.yaml:11:34: case 7: bind target "localhost:80" is a host name; bind takes a local address (IPv4 or [IPv6])',
      'c.yaml:12:51: case 8: addr is only for a HOST:PORT target (the address the host name resolved to)',
      'c.yaml:13:59: case 9: addr "nope" is not an IPv4 or IPv6 address',
      'c.yaml:14:70: case 10: uid must be a non-negative integer uid (0-4294967294), got the number -1',
      'c.yaml:15:51: case 11: isDir is only for read, write, exec',
      'c.yaml:16:46: case 12: isDir is false but the target "/x/" ends with "/" (a directory)',
      'c.yaml:17:68: case 13: label team must be a string, got the number 1 (quote it: "1")',
      'c.yaml:18:60: case 14: labels must be a mapping of key: value, got a list',
      'c.yaml:19:58: case 15: rule must be a rule id, POLICY/ID or "default", got "a b"',
      'c.yaml:20:3: case 16 is missing required key "expect"',
      'c.yaml:20:38: unknown key "expcet" in case 16 (did you mean "expect"?)',
      'c.yaml:21:11: case 17: role must be a string, got the number 7 (quote it: "7")',
      'c.yaml:21:58: case 17: name is empty',
      'c.yaml:22:62: case 18: labels cannot have the key "__proto__"',
      'c.yaml:23:3: case 19 must be a mapping with role, verb, target and expect, got the string "just a string"',
    ],
  );
});

t.test('cases: the file as a whole', async (t) => {
  t.same(caseErrors(''), ['c.yaml:1:1: no cases in file: write a list of cases']);
  t.same(caseErrors('# nothing yet\n'), ['c.yaml:1:1: no cases in file: write a list of cases']);
  t.same(caseErrors('[]\n'), ['c.yaml:1:1: no cases in file: the list is empty']);
  t.same(caseErrors('role: r\nverb: read\n'), ['c.yaml:1:1: a cases file must be a list of cases, got a mapping']);
  t.same(caseErrors('- { role: r, verb: read, target: /x, expect: deny }\n---\n- { role: r }\n'), ['c.yaml:2:1: a cases file holds one list of cases (one YAML document)']);
  t.same(caseErrors('- { role: r, verb: read\n'), ['c.yaml:2:1: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }']);
  t.same(caseErrors('- { role: r, verb: connect, target: *:443, expect: deny }\n'), ['c.yaml:1:37: YAML aliases are not supported ("*:443"); if this is a wildcard, quote it']);
  t.same(caseErrors('- &a { role: r, verb: read, target: /x, expect: deny }\n- *a\n'), ['c.yaml:2:3: YAML aliases are not supported ("*a"); if this is a wildcard, quote it']);
  t.same(caseErrors('- null\n'), ['c.yaml:1:3: case 1 must be a mapping with role, verb, target and expect, got an empty value']);
});

// =============================================================================================
// cases: running

const RUN_POLICY = `apiVersion: helm/v1
kind: Policy
metadata: { name: pay }
spec:
  roles: [payer, analyst]
  allow:
    - id: reports
      read: /srv/reports/
  block:
    - id: vault
      read: /srv/reports/vault/
  contextual:
    - id: stripe
      connect: api.stripe.com:443
      when: { role: payer }
---
apiVersion: helm/v1
kind: Policy
metadata: { name: trial }
spec:
  roles: [trial]
  mode: dry-run
  allow:
    - read: /tmp/
`;

t.test('cases: pass, fail, and what a failure says', async (t) => {
  const pf = write(RUN_POLICY, 'run.yaml');
  const policies = parsePolicySource(RUN_POLICY, pf, { canonicalize: id });
  const cases: TestCase[] = parseCases(
    `- { name: reads a report, role: analyst, verb: read, target: /srv/reports/a.csv, expect: allow, rule: reports }
- { name: vault, role: analyst, verb: read, target: /srv/reports/vault/k, expect: deny, rule: pay/vault }
- { name: stripe for the payer, role: payer, verb: connect, target: api.stripe.com:443, expect: allow }
- { name: wrong decision, role: analyst, verb: connect, target: api.stripe.com:443, expect: allow }
- { name: wrong rule, role: analyst, verb: read, target: /srv/reports/vault/k, expect: deny, rule: reports }
- { name: default, role: analyst, verb: read, target: /etc/hostname, expect: deny, rule: default }
- { name: wrong default, role: analyst, verb: read, target: /etc/hostname, expect: allow }
- { name: dry-run default, role: trial, verb: read, target: /etc/hostname, expect: deny }
- { name: nobody, role: nobody, verb: read, target: /tmp/x, expect: allow }
- { name: wrong policy, role: analyst, verb: read, target: /srv/reports/a.csv, expect: allow, rule: trial/reports }
`,
    'cases.yaml',
    { canonicalize: id },
  );
  const results = runCases(policies, cases);
  t.same(results.map(formatResult), [
    'PASS  reads a report',
    'PASS  vault',
    'PASS  stripe for the payer',
    `FAIL  wrong decision (cases.yaml:4:3): expected allow, got deny by pay/stripe (contextual rule at ${pf}:13:7; its when does not hold: role "analyst" is not one of [payer])`,
    `FAIL  wrong rule (cases.yaml:5:3): expected deny by reports, got deny by pay/vault (block rule at ${pf}:10:7)`,
    'PASS  default',
    'FAIL  wrong default (cases.yaml:7:3): expected allow, got deny by the default (no rule matches)',
    'FAIL  dry-run default (cases.yaml:8:3): expected deny, got would_deny by the default (no rule matches; every policy governing the role is in dry-run)',
    'FAIL  nobody (cases.yaml:9:3): expected allow, got deny: no policy governs this role',
    `FAIL  wrong policy (cases.yaml:10:3): expected allow by trial/reports, got allow by pay/reports (allow rule at ${pf}:7:7)`,
  ]);
  t.same(results.map((r) => r.pass), [true, true, true, false, false, true, false, false, false, false]);
  // A rule the policies do not have is an error before anything runs: a typo would only ever fail.
  t.same(checkCaseRules(policies, cases).map(formatDiagnostic), ['cases.yaml:10:101: rule "trial/reports" is not a rule of policy "trial"']);
  const more = parseCases('- { role: a, verb: read, target: /x, expect: deny, rule: reprots }\n- { role: a, verb: read, target: /x, expect: deny, rule: nope/x }\n- { role: a, verb: read, target: /x, expect: deny, rule: "trial/allow[0]" }\n', 'c.yaml', { canonicalize: id });
  t.same(checkCaseRules(policies, more).map(formatDiagnostic), [
    'c.yaml:1:58: rule "reprots" is not a rule of any of the policies given',
    'c.yaml:2:58: rule "nope/x" is not a rule of the policies given (there is no policy "nope")',
  ]);
});

t.test('test CLI: exit codes, output, located errors', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'test-cli-'));
  fs.writeFileSync(path.join(dir, 'p.yaml'), RUN_POLICY);
  fs.writeFileSync(path.join(dir, 'good.cases.yaml'), '- { name: reads, role: analyst, verb: read, target: /srv/reports/a.csv, expect: allow, rule: reports }\n- { role: payer, verb: connect, target: "api.stripe.com:443", expect: allow }\n');
  t.same(helmctl(['policy', 'test', 'p.yaml', '--cases', 'good.cases.yaml'], dir), {
    status: 0,
    stdout: 'PASS  reads\nPASS  payer: connect api.stripe.com:443\n2 passed, 0 failed\n',
    stderr: '',
  });
  fs.writeFileSync(path.join(dir, 'bad.cases.yaml'), '- { role: analyst, verb: write, target: /srv/reports/a.csv, expect: allow }\n');
  t.same(helmctl(['policy', 'test', 'p.yaml', '--cases', 'good.cases.yaml', '--cases', 'bad.cases.yaml'], dir), {
    status: 1,
    stdout:
      'PASS  reads\nPASS  payer: connect api.stripe.com:443\nFAIL  analyst: write /srv/reports/a.csv (bad.cases.yaml:1:3): expected allow, got deny by the default (no rule matches)\n' +
      '2 passed, 1 failed\n',
    stderr: '',
  });
  fs.writeFileSync(path.join(dir, 'broken.cases.yaml'), '- { role: analyst, verb: read, target: /x, expect: maybe }\n- { role: analyst, verb: read, target: /x, expect: deny, rule: nope }\n');
  t.same(helmctl(['policy', 'test', 'p.yaml', '--cases', 'broken.cases.yaml'], dir), {
    status: 1,
    stdout: '',
    stderr: 'broken.cases.yaml:1:52: case 1: expect must be allow, deny or would_deny, got "maybe"\nbroken.cases.yaml:2:64: rule "nope" is not a rule of any of the policies given\n',
  });
  fs.writeFileSync(path.join(dir, 'typo.cases.yaml'), '- { role: analyst, verb: read, target: /x, expect: deny, rule: nope }\n');
  t.same(helmctl(['policy', 'test', 'p.yaml', '--cases', 'typo.cases.yaml', '--cases', 'missing.yaml'], dir), {
    status: 1,
    stdout: '',
    stderr: 'typo.cases.yaml:1:64: rule "nope" is not a rule of any of the policies given\nmissing.yaml:1:1: cannot read missing.yaml: no such file or directory\n',
  });
  // Policy errors are located too, and nothing runs.
  fs.writeFileSync(path.join(dir, 'bad-policy.yaml'), doc('x', '[r]', '  alow: []\n'));
  t.same(helmctl(['policy', 'test', 'bad-policy.yaml', '--cases', 'good.cases.yaml'], dir), {
    status: 1,
    stdout: '',
    stderr: 'bad-policy.yaml:7:3: unknown key "alow" in spec (did you mean "allow"?)\n',
  });
  const none = helmctl(['policy', 'test', 'p.yaml'], dir);
  t.same(none, { status: 1, stdout: '', stderr: 'helmctl: give the cases to run: --cases CASES.yaml\n' });
});

// =============================================================================================
// explain

t.test('explain: the chain, step by step (JSON)', async (t) => {
  const pf = 'run.yaml';
  const policies = parsePolicySource(RUN_POLICY, pf, { canonicalize: id });
  // A block decides; the allow that also matches is shown, not reached.
  t.same(explain(policies, { role: 'analyst', verb: 'read', path: '/srv/reports/vault/k' }), {
    operation: { role: 'analyst', verb: 'read', path: '/srv/reports/vault/k', isDir: false },
    governing: [{ policy: 'pay', mode: 'enforce', roles: ['payer', 'analyst'] }],
    chain: [
      { step: 'block', status: 'decided', matches: [{ policy: 'pay', rule: 'vault', kind: 'block', mode: 'enforce', target: '/srv/reports/vault/', at: 'run.yaml:11:13' }], result: 'deny' },
      { step: 'contextual', status: 'not-reached', matches: [] },
      { step: 'allow', status: 'not-reached', matches: [{ policy: 'pay', rule: 'reports', kind: 'allow', mode: 'enforce', target: '/srv/reports/', at: 'run.yaml:8:13' }], result: 'allow' },
      { step: 'default', status: 'not-reached', matches: [] },
    ],
    decidedBy: 'block',
    decision: 'deny',
    action: 'deny',
    mode: 'enforce',
    policy: 'pay',
    rule: 'vault',
    reason: 'rule',
    notes: [],
  });
  // A contextual rule whose when does not hold denies, and says why.
  const ctx = explain(policies, { role: 'analyst', verb: 'connect', host: 'api.stripe.com', port: 443, addr: '192.0.2.1' });
  t.same(ctx.chain.map((s) => [s.step, s.status, s.result ?? null]), [
    ['block', 'passed', null],
    ['contextual', 'decided', 'deny'],
    ['allow', 'not-reached', null],
    ['default', 'not-reached', null],
  ]);
  t.same(ctx.chain[1].matches[0].when, { holds: false, conditions: [{ key: 'role', holds: false, detail: 'role "analyst" is not one of [payer]' }] });
  t.same([ctx.decision, ctx.policy, ctx.rule, ctx.decidedBy], ['deny', 'pay', 'stripe', 'contextual']);
  t.same(ctx.operation, { role: 'analyst', verb: 'connect', host: 'api.stripe.com', addr: '192.0.2.1', port: 443 });
  t.same(ctx.notes, [], 'an address was given: nothing to add');
  // Nothing matches: the default, in dry-run when every governing policy is.
  const dflt = explain(policies, { role: 'trial', verb: 'write', path: '/srv', isDir: true });
  t.same(dflt.chain.map((s) => [s.step, s.status]), [['block', 'passed'], ['contextual', 'passed'], ['allow', 'passed'], ['default', 'decided']]);
  t.same([dflt.decision, dflt.mode, dflt.reason, dflt.policy, dflt.rule], ['would_deny', 'dry-run', 'default', undefined, undefined]);
  // No policy governs the role.
  const none = explain(policies, { role: 'ghost', verb: 'read', path: '/tmp/x' });
  t.same([none.decidedBy, none.decision, none.governing, none.chain.map((s) => s.status)], ['no-policy', 'deny', [], ['not-reached', 'not-reached', 'not-reached', 'not-reached']]);
  t.same(none.notes, ['no policy governs role "ghost": everything it does is denied']);
});

t.test('explain: the text form', async (t) => {
  const policies = parsePolicySource(RUN_POLICY, 'run.yaml', { canonicalize: id });
  const op: Operation = { role: 'analyst', verb: 'connect', host: 'api.stripe.com', port: 443 };
  t.equal(
    formatExplanation(explain(policies, op), op),
    [
      'operation:  role analyst: connect api.stripe.com:443',
      'governed by: pay (enforce)',
      '1. block       no rule matches',
      '2. contextual  1 rule matches',
      '     pay/stripe: connect api.stripe.com:443 (run.yaml:14:16)  <- decides',
      '       when does not hold:',
      '         no  role: role "analyst" is not one of [payer]',
      "     no matching contextual rule's when holds: deny (contextual rules override allow rules)",
      '3. allow       no rule matches (not reached)',
      '4. default     not reached',
      'decision:   deny by pay/stripe (contextual rule), mode enforce',
      'note: no address given (--addr): address and CIDR rules cannot match; only "*", host names and domains can',
    ].join('\n'),
  );
});

t.test('explain: the operation from the command line', async (t) => {
  const op = (verb: Parameters<typeof operationFromOptions>[0], target: string, o: Partial<ExplainOptions> = {}) =>
    operationFromOptions(verb, target, { role: 'r', ...o }, (p) => (p === '/usr/bin/python3' ? '/usr/bin/python3.11' : p));
  t.same(op('read', '/srv/x', { exe: '/usr/bin/python3', uid: '7', label: ['team=a', 'env=prod=x'] }), {
    role: 'r', verb: 'read', path: '/srv/x', isDir: false, exe: '/usr/bin/python3.11', uid: 7, labels: { team: 'a', env: 'prod=x' },
  });
  t.same(op('write', '/srv/', {}), { role: 'r', verb: 'write', path: '/srv', isDir: true });
  t.same(op('read', '/srv', { dir: true }), { role: 'r', verb: 'read', path: '/srv', isDir: true });
  t.same(op('connect', 'Example.COM:443', { addr: '::ffff:192.0.2.1' }), { role: 'r', verb: 'connect', port: 443, host: 'example.com', addr: '::ffff:192.0.2.1' });
  t.same(op('bind', '[::1]:8080'), { role: 'r', verb: 'bind', port: 8080, addr: '::1' });
  const bad: [Parameters<typeof op>, string][] = [
    [['read', 'srv/x'], 'read target "srv/x" is not an absolute path'],
    [['connect', 'example.com'], 'connect target "example.com" needs ":PORT", e.g. "api.example.com:443"'],
    [['read', '/x', { uid: '-1' }], '--uid must be a uid (0-4294967294), got "-1"'],
    [['read', '/x', { uid: '4294967295' }], '--uid must be a uid (0-4294967294), got "4294967295"'],
    [['read', '/x', { exe: 'python3' }], '--exe "python3" is not an absolute path'],
    [['read', '/x', { label: ['team'] }], '--label must be KEY=VALUE, got "team"'],
    [['read', '/x', { label: ['=a'] }], '--label must be KEY=VALUE, got "=a"'],
    [['read', '/x', { label: ['a=1', 'a=2'] }], '--label a is given twice'],
    [['read', '/x', { label: ['__proto__=a'] }], '--label cannot have the key "__proto__"'],
    [['read', '/x', { addr: '1.2.3.4' }], '--addr is for a HOST:PORT target'],
    [['connect', '1.2.3.4:1', { addr: '1.2.3.4' }], '--addr is for a HOST:PORT target (the target already is an address)'],
    [['connect', 'h.example:1', { addr: 'nope' }], '--addr "nope" is not an IPv4 or IPv6 address'],
    [['connect', 'h.example:1', { dir: true }], '--dir is for read, write and exec'],
    [['read', '/x', { role: '*' }], 'bad role "*": an agent\'s role is letters, digits, ".", "_" and "-"'],
  ];
  for (const [args, message] of bad) t.equal(op(...args), message, message);
});

t.test('explain CLI: --json, text, errors', async (t) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'explain-cli-'));
  fs.writeFileSync(
    path.join(dir, 'p.yaml'),
    doc('p', '[r]', '  contextual:\n    - id: c\n      read: /srv/x\n      when: { exe: /opt/t/, uid: 7, label: { team: a, env: prod } }\n'),
  );
  const r = helmctl(['policy', 'explain', 'p.yaml', '--role', 'r', '--exe', '/opt/t/bin/x', '--uid', '7', '--label', 'team=a', '--label', 'env=prod', '--json', 'read', '/srv/x'], dir);
  t.equal(r.stderr, '');
  t.equal(r.status, 0);
  const held = JSON.parse(r.stdout);
  t.same([held.decision, held.rule, held.operation], ['allow', 'c', { role: 'r', verb: 'read', path: '/srv/x', isDir: false, exe: '/opt/t/bin/x', uid: 7, labels: { team: 'a', env: 'prod' } }]);
  t.same(held.chain[1].matches[0].when.conditions.map((c: { key: string; holds: boolean }) => [c.key, c.holds]), [['exe', true], ['label', true], ['uid', true]]);
  t.same(held.notes, []);

  const text = helmctl(['policy', 'explain', 'p.yaml', '--role', 'r', '--uid', '8', 'read', '/srv/x'], dir);
  t.equal(text.status, 0);
  t.equal(
    text.stdout,
    [
      'operation:  role r: read /srv/x (uid 8)',
      'governed by: p (enforce)',
      '1. block       no rule matches',
      '2. contextual  1 rule matches',
      '     p/c: read /srv/x (p.yaml:9:13)  <- decides',
      '       when does not hold:',
      '         no  exe: the executable is not known (the condition needs one of [/opt/t/])',
      '         no  label: label team is not set (needs "a"); label env is not set (needs "prod")',
      '         no  uid: uid 8 is not one of [7]',
      "     no matching contextual rule's when holds: deny (contextual rules override allow rules)",
      '3. allow       no rule matches (not reached)',
      '4. default     not reached',
      'decision:   deny by p/c (contextual rule), mode enforce',
      '',
    ].join('\n'),
  );
  const fails = (args: string[], message: string) =>
    t.same(helmctl(['policy', 'explain', ...args], dir), { status: 1, stdout: '', stderr: `helmctl: ${message}\n` }, message);
  fails(['p.yaml', '--role', 'r', 'raed', '/srv/x'], '"raed" is not a verb: the last two arguments are the verb (read, write, exec, connect, bind) and its target');
  fails(['p.yaml', '--role', 'r', '--uid', 'x', 'read', '/srv/x'], '--uid must be a uid (0-4294967294), got "x"');
  fails(['--role', 'r', '/x'], 'usage: helmctl policy explain [FILE...] --role ROLE VERB TARGET (e.g. read /etc/hostname)');
  // Without files the running helmd is asked: here there is none.
  fails(['--role', 'r', '--socket', path.join(dir, 'no.sock'), 'read', '/x'], `cannot reach helmd: no socket at ${path.join(dir, 'no.sock')}; is helmd running? (start it with: helmd --policy POLICY..., or give --socket)`);
});

// =============================================================================================
// The shipped examples

const EXAMPLE_NAMES = ['base-runtime', 'coding-agent', 'payment-agent', 'medical-summariser'];

t.test('every example has cases, and they all pass (the real CLI)', async (t) => {
  const shipped = fs.readdirSync(EXAMPLES).filter((f) => f.endsWith('.cases.yaml')).sort();
  t.same(shipped, EXAMPLE_NAMES.map((n) => `${n}.cases.yaml`).sort(), 'one cases file per example policy');
  for (const name of EXAMPLE_NAMES) {
    const policies = name === 'base-runtime' ? ['base-runtime.yaml'] : ['base-runtime.yaml', `${name}.yaml`];
    const r = helmctl(['policy', 'test', ...policies.map((p) => `policies/examples/${p}`), '--cases', `policies/examples/${name}.cases.yaml`]);
    const count = parseCases(fs.readFileSync(path.join(EXAMPLES, `${name}.cases.yaml`), 'utf8'), name).length;
    t.equal(r.status, 0, `${name}: exit status`);
    t.equal(r.stderr, '', `${name}: no errors`);
    const lines = r.stdout.trimEnd().split('\n');
    t.equal(lines.filter((l) => l.startsWith('PASS  ')).length, count, `${name}: ${count} cases pass`);
    t.equal(lines[lines.length - 1], `${count} passed, 0 failed`);
    t.ok(count >= 10, `${name}: at least 10 cases (${count})`);
  }
});

t.test('the examples lint, for the language and for the kernel', async (t) => {
  const language = helmctl(['policy', 'lint', '--no-kernel', 'policies/examples/']);
  t.equal(language.status, 0, language.stderr);
  t.match(language.stdout, /^ok: 4 policies, \d+ rules \(language only: not compiled for the kernel\)/m);
  // Only warnings about deployment paths absent from this host; no shadowing, no repeats.
  const kinds = language.stdout.split('\n').filter((l) => l.includes(': warning: '));
  t.same(kinds.filter((l) => !/ does not exist on this host$/.test(l)), []);
  // All of them load: connect rules and exe conditions included.
  const kernel = helmctl(['policy', 'lint', 'policies/examples/']);
  t.equal(kernel.status, 0, kernel.stderr);
  t.equal(kernel.stderr, '');
  t.match(kernel.stdout, /^ok: 4 policies, \d+ rules, \d+ kernel path entries/m);
  // No example still says that helmd refuses it.
  for (const name of EXAMPLE_NAMES) {
    const text = fs.readFileSync(path.join(EXAMPLES, `${name}.yaml`), 'utf8');
    t.notMatch(text, /refuse|not enforce/, `${name}: no stale note`);
  }
  t.notMatch(fs.readFileSync(path.join(EXAMPLES, 'README.md'), 'utf8'), /refuses to load|does not enforce yet/, 'nor the README');
});

// =============================================================================================
// What fuzzing found in the parser (test/unit/fuzz.test.ts)

t.test('parser: too deep a document is a located error, not a crash', async (t) => {
  for (const [text, file] of [
    [`apiVersion: helm/v1\nspec:\n  roles:\n    ${'- '.repeat(30000)}x\n`, 'deep.yaml'],
    [`a: 1\nb:\n   ${'{'.repeat(30000)}\n`, 'deep.yaml'],
  ]) {
    let err: unknown;
    try {
      parsePolicySource(text, file, { canonicalize: id });
    } catch (e) {
      err = e;
    }
    t.type(err, PolicyError, 'a PolicyError, not a RangeError');
    const d = (err as PolicyError).diagnostics;
    t.ok(d.length >= 1);
    t.ok(d.every((x) => x.loc.file === file && x.loc.line >= 1 && x.loc.col >= 1), 'located');
    t.ok(d.some((x) => /nested too deeply|Maximum call stack size exceeded/.test(x.message)), d[0]?.message);
  }
  // The cases parser likewise.
  t.throws(() => parseCases(`- ${'['.repeat(30000)}\n`, 'c.yaml'), PolicyError);
});

t.test('parser: a document nested past MAX_NESTING is refused before parsing, at the same place every time', async (t) => {
  const messages = (text: string) => {
    try {
      parsePolicySource(text, 'deep.yaml', { canonicalize: id });
      return ['parsed'];
    } catch (e) {
      return (e as PolicyError).diagnostics.map((d) => `${d.loc.line}:${d.loc.col}: ${d.message}`);
    }
  };
  const head = 'apiVersion: helm/v1\nkind: Policy\nmetadata: { name: deep }\nspec:\n';
  const block = (levels: number) => head + Array.from({ length: levels }, (_, i) => `${' '.repeat(i + 1)}- `).join('\n') + 'x\n';
  const flow = (levels: number) => `${head}  roles: ${'['.repeat(levels)}${']'.repeat(levels)}\n`;
  for (const [what, text] of [
    ['block, 1000 levels', block(1000)],
    ['flow, 1000 levels', flow(1000)],
    ['block, 5000 levels', block(5000)],
  ] as const) {
    const first = messages(text);
    t.match(first[0], /nested too deeply to be parsed \(more than 200 levels\)/, what);
    for (let i = 0; i < 4; i++) t.same(messages(text), first, `${what}: the same error, at the same place, every time`);
  }
  t.match(messages(flow(1000))[0], /^5:\d+: /, 'located on the line that goes too deep');
  // Under the limit the parser reads the document and the validator says what is wrong with it.
  t.notMatch(messages(block(150)).join('\n'), /nested too deeply/, '150 levels are parsed');
  t.notMatch(messages(flow(150)).join('\n'), /nested too deeply/);
  // Indentation alone is not nesting: a block scalar indented far is one level.
  const indented = `${head}  roles: [r]\n  allow:\n    - id: a\n      read: [/srv/a]\nmetadata2: |\n${' '.repeat(400)}text\n`;
  t.notMatch(messages(indented).join('\n'), /nested too deeply/, 'a far-indented block scalar is not deep');
  t.equal(nestingTooDeep('a: [[1]]\n', 2), 4, 'the offset where the count first passes the limit (the second "[")');
  t.equal(nestingTooDeep('a:\n  b:\n    c: 1\n', 3), undefined, 'three block levels are three');
  t.equal(nestingTooDeep('a:\n  b:\n    c: 1\n', 2), 8, 'and pass a limit of two at the start of the third line');
});

t.test('parser: a path longer than PATH_MAX is refused before it is canonicalised', async (t) => {
  const long = `/x${'/'.repeat(100000)}`;
  const started = Date.now();
  let err: unknown;
  try {
    parsePolicySource(doc('p', '[r]', `  allow:\n    - read: "${long}"\n`), 'p.yaml');
  } catch (e) {
    err = e;
  }
  t.ok(Date.now() - started < 1000, `quick (${Date.now() - started} ms)`);
  t.same((err as PolicyError).diagnostics.map(formatDiagnostic), [
    `p.yaml:8:13: rule allow[0]: read target "/x//////////////////////////////////////..." is 100002 bytes long; no path is longer than 4095 bytes (PATH_MAX with its NUL)`,
  ]);
  // The longest the kernel would take still goes through canonicalisation (and then fails the rule length limit).
  t.throws(() => parsePolicySource(doc('p', '[r]', `  allow:\n    - read: /${'a'.repeat(4094)}\n`), 'p.yaml', { canonicalize: id }), /is 4095 bytes long; the kernel compares at most 250/);
});
