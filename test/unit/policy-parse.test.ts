// Policy parser (daemon/policy/parse.ts) and rule-path canonicalisation (daemon/policy/canonical.ts)
// against POLICY.md: the model produced from valid sources, and exact `file:line:col` messages
// for every class of error.

import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MAX_RULE_PATH_BYTES } from '../../daemon/kernel/limits';
import { canonicalizeRulePath } from '../../daemon/policy/canonical';
import { loadPolicies, parsePolicySource } from '../../daemon/policy/parse';
import { NetTarget, PathTarget, Policy, PolicyError, Target, VERBS } from '../../daemon/policy/types';

// Tests run from dist/test/unit; fixtures stay in the source tree.
const ROOT = path.resolve(__dirname, '../../..');
const FIXTURES = path.join(ROOT, 'test/unit/fixtures/policies');

/**
 * A canonicaliser independent of the host: lexical normalisation plus two pretend symlinks,
 * like a merged-/usr host would have.
 */
const FAKE_LINKS: Record<string, string> = { '/lib/': '/usr/lib/', '/usr/bin/python3': '/usr/bin/python3.12' };
const fake = (p: string): string => {
  const n = path.posix.normalize(p);
  return FAKE_LINKS[n] ?? n;
};

/** The formatted diagnostics a source produces ([] when it parses). */
function diagnostics(text: string, file = 'test.yaml', canonicalize = fake): string[] {
  try {
    parsePolicySource(text, file, { canonicalize });
    return [];
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    return e.message.split('\n');
  }
}

function parse(text: string, file = 'test.yaml'): Policy[] {
  return parsePolicySource(text, file, { canonicalize: fake });
}

function fixture(name: string): { file: string; text: string } {
  const file = path.join(FIXTURES, name);
  return { file, text: fs.readFileSync(file, 'utf8') };
}

/** A policy whose spec body (indented by 2) starts at line 7. */
const HEAD = 'apiVersion: helm/v1\nkind: Policy\nmetadata:\n  name: p\nspec:\n  roles: [r]\n';
const policy = (body: string): string => HEAD + body;

/** One rule under `kind`; its first key is at line 8, column 7. */
const rule = (kind: string, ruleBody: string): string => policy(`  ${kind}:\n    - ${ruleBody}\n`);

function paths(targets: Target[] | undefined): [string, string, boolean][] {
  return (targets ?? []).map((x) => {
    const p = x as PathTarget;
    return [p.written, p.canonical, p.subtree];
  });
}

// ---------------------------------------------------------------------------------------------

t.test('valid multi-document YAML with every verb, target form and rule kind', async (t) => {
  const { file, text } = fixture('valid/full.yaml');
  const [payments, everyone, ...more] = parsePolicySource(text, file, { canonicalize: fake });
  t.equal(more.length, 0, 'two policies; the empty document after the final --- holds none');

  t.equal(payments.name, 'payments');
  t.same(payments.roles, ['payment_processor', 'analyst']);
  t.equal(payments.mode, 'dry-run');
  t.same(payments.loc, { file, line: 2, col: 1, pointer: '' });
  t.same(
    payments.rules.map((r) => [r.id, r.idWritten, r.kind]),
    [
      ['runtime', true, 'allow'],
      ['allow[1]', false, 'allow'],
      ['net', true, 'allow'],
      ['secrets', true, 'block'],
      ['stripe-only-for-payments', true, 'contextual'],
      ['contextual[1]', false, 'contextual'],
    ],
  );

  const [runtime, workspace, netRule, secrets, stripe, curl] = payments.rules;
  t.same(Object.keys(runtime.verbs), ['read', 'exec'], 'only the verbs written are present');
  t.same(paths(runtime.verbs.read), [
    ['/usr/', '/usr/', true],
    ['/etc/ld.so.cache', '/etc/ld.so.cache', false],
    ['/lib/', '/usr/lib/', true],
  ]);
  t.same(paths(runtime.verbs.exec), [['/usr/bin/python3', '/usr/bin/python3.12', false]], 'a single target without a list');
  t.same(runtime.loc, { file, line: 10, col: 7, pointer: '/spec/allow/0' });
  t.same(runtime.verbs.read?.[2].loc, { file, line: 11, col: 39, pointer: '/spec/allow/0/read/2' });
  t.same(paths(workspace.verbs.read), [['/srv//agent/./', '/srv/agent/', true]]);
  t.same(paths(workspace.verbs.write), [['/srv/agent/out/', '/srv/agent/out/', true]]);

  const net = (netRule.verbs.connect ?? []) as NetTarget[];
  t.same(
    net.map((n) => [n.written, n.address, n.ports]),
    [
      ['127.0.0.1:8080', { type: 'ip', family: 4, addr: '127.0.0.1', prefix: 32 }, { from: 8080, to: 8080 }],
      ['[2001:DB8:0:0::1]:443', { type: 'ip', family: 6, addr: '2001:db8::1', prefix: 128 }, { from: 443, to: 443 }],
      ['10.0.0.0/8:8000-8999', { type: 'ip', family: 4, addr: '10.0.0.0', prefix: 8 }, { from: 8000, to: 8999 }],
      ['[fd00::/8]:*', { type: 'ip', family: 6, addr: 'fd00::', prefix: 8 }, { from: 0, to: 65535 }],
      ['*:53', { type: 'any' }, { from: 53, to: 53 }],
      ['api.stripe.com:443', { type: 'host', name: 'api.stripe.com' }, { from: 443, to: 443 }],
      ['*.github.com:443', { type: 'domain', suffix: 'github.com' }, { from: 443, to: 443 }],
    ],
  );
  t.same(net[0].loc, { file, line: 17, col: 11, pointer: '/spec/allow/2/connect/0' });
  t.same(net[1].loc, { file, line: 18, col: 11, pointer: '/spec/allow/2/connect/1' }, 'a quoted value starts at its quote');
  t.same(
    (netRule.verbs.bind as NetTarget[]).map((n) => [n.address, n.ports]),
    [
      [{ type: 'ip', family: 4, addr: '0.0.0.0', prefix: 32 }, { from: 8080, to: 8080 }],
      [{ type: 'ip', family: 6, addr: '::', prefix: 128 }, { from: 9000, to: 9001 }],
    ],
  );

  t.same(paths(secrets.verbs.read), [
    ['/etc/shadow', '/etc/shadow', false],
    ['/root/', '/root/', true],
  ]);
  t.equal(secrets.when, undefined);

  t.same((stripe.verbs.connect as NetTarget[])[0].address, { type: 'host', name: 'api.stripe.com' }, 'host names are lower-cased');
  t.same(stripe.when, { role: ['payment_processor'], loc: { file, line: 32, col: 13, pointer: '/spec/contextual/0/when' } });

  const when = curl.when!;
  t.same(when.role, ['payment_processor', 'analyst']);
  t.same(paths(when.exe), [
    ['/usr/bin/python3', '/usr/bin/python3.12', false],
    ['/opt/tools/', '/opt/tools/', true],
  ]);
  t.same(when.label, { team: 'payments', env: 'prod' });
  t.same(when.uid, [0, 1000]);
  t.same(when.loc, { file, line: 35, col: 9, pointer: '/spec/contextual/1/when' });

  t.equal(everyone.mode, 'enforce', 'mode defaults to enforce');
  t.same(everyone.roles, ['*']);
  t.same(everyone.loc, { file, line: 41, col: 1, pointer: '' });
  t.same(
    everyone.rules.map((r) => [r.id, r.loc.line]),
    [
      ['allow[0]', 53],
      ['allow[1]', 54],
      ['block[0]', 51],
      ['contextual[0]', 48],
    ],
    'allow, then block, then contextual, whatever the order in the file',
  );
});

t.test('valid JSON: one object, and an array of objects', async (t) => {
  const one = fixture('valid/object.json');
  const [p] = parsePolicySource(one.text, one.file, { canonicalize: fake });
  t.equal(p.name, 'json-one');
  t.same(
    p.rules.map((r) => r.id),
    ['workspace', 'contextual[0]'],
  );
  t.same(paths(p.rules[0].verbs.write), [['/srv/agent/out/', '/srv/agent/out/', true]]);
  t.same(p.rules[0].verbs.read?.[0].loc, { file: one.file, line: 8, col: 37, pointer: '/spec/allow/0/read/0' });
  t.same(p.rules[1].when?.uid, [1000]);
  t.same(p.rules[1].when?.label, { team: 'payments' });

  const many = fixture('valid/array.json');
  const ps = parsePolicySource(many.text, many.file, { canonicalize: fake });
  t.same(
    ps.map((x) => [x.name, x.mode, x.loc.pointer, x.loc.line]),
    [
      ['first', 'enforce', '/0', 2],
      ['second', 'dry-run', '/1', 8],
    ],
  );
  t.same(ps[1].rules[0].loc.pointer, '/1/spec/block/0');
});

// ---------------------------------------------------------------------------------------------
// Every problem of a file at once

t.test('all errors of a file are reported at once, in source order', async (t) => {
  const { file, text } = fixture('invalid/many-errors.yaml');
  const f = file;
  t.same(diagnostics(text, f), [
    `${f}:8:3: unknown key "blok" in spec (did you mean "block"?)`,
    `${f}:12:14: rule "runtime": read target "usr/lib/" is a relative path; paths must be absolute (start with "/")`,
    `${f}:13:7: unknown key "conect" in rule "runtime" (did you mean "connect"?)`,
    `${f}:14:11: duplicate rule id "runtime" (first used at ${f}:11:11)`,
    `${f}:16:7: rule "runtime": when is only allowed on contextual rules (this rule is under allow)`,
    `${f}:18:16: rule contextual[0]: connect target "api.stripe.com:70000" has a bad port in "70000": ports are 1-65535, written without leading zeros`,
    `${f}:19:15: unknown key "rol" in when of rule contextual[0] (did you mean "role"?)`,
    `${f}:19:44: rule contextual[0]: when.uid must be a non-negative integer uid (0-4294967294), got the number -1`,
    `${f}:24:9: duplicate policy name "payments" (first defined at ${f}:5:9)`,
    `${f}:27:9: spec.mode must be "enforce" or "dry-run", got "enforcing"`,
  ]);
});

t.test('PolicyError carries structured diagnostics', async (t) => {
  try {
    parsePolicySource(rule('allow', 'blok: [/x]'), 'payments.yaml');
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof PolicyError);
    const d = (e as PolicyError).diagnostics;
    t.same(
      d.map((x) => [x.severity, x.loc]),
      [
        ['error', { file: 'payments.yaml', line: 8, col: 7, pointer: '/spec/allow/0/blok' }],
        ['error', { file: 'payments.yaml', line: 8, col: 7, pointer: '/spec/allow/0' }],
      ],
    );
    t.same(d[0].message, 'unknown key "blok" in rule allow[0] (expected one of: id, read, write, exec, connect, bind, when)');
    t.same(d[1].message, 'rule allow[0] has no verb: give at least one of read, write, exec, connect, bind');
  }
});

// ---------------------------------------------------------------------------------------------
// Syntax

t.test('YAML syntax errors are located; other documents are still checked', async (t) => {
  const { text } = fixture('invalid/syntax.yaml');
  t.same(diagnostics(text, 'syntax.yaml'), [
    'syntax.yaml:8:21: YAML syntax error: Unexpected scalar at node end (quote bracketed IPv6 destinations, e.g. "[::1]:53")',
    'syntax.yaml:17:13: rule allow[0]: read target "relative/path" is a relative path; paths must be absolute (start with "/")',
  ]);
  t.same(diagnostics(policy('  allow:\n    - read: [/a\n  block: []\n')).length > 0, true, 'unclosed flow list');
  t.match(diagnostics(policy('  allow: []\n  allow: []\n')), ['test.yaml:8:3: YAML syntax error: Map keys must be unique']);
  t.ok(diagnostics(policy('  allow:\n\t- read: /a\n')).includes('test.yaml:8:1: YAML syntax error: Tabs are not allowed as indentation'));
});

t.test('unquoted "*" (a YAML alias) is an error with a hint, never a silent alias', async (t) => {
  t.same(diagnostics(policy('  contextual:\n    - connect: [*.github.com:443]\n      when: {role: r}\n')), [
    'test.yaml:8:17: YAML aliases are not supported ("*.github.com:443"); if this is a wildcard, quote it: "*.github.com:443"',
  ]);
  t.same(diagnostics(HEAD.replace('[r]', '[*]')), [
    'test.yaml:6:11: YAML syntax error: Alias cannot be an empty string (a value starting with "*" must be quoted, e.g. "*:443" or "*.github.com:443")',
  ]);
  t.same(diagnostics(policy('  allow:\n    - read: &p [/a]\n      write: *p\n')), [
    'test.yaml:9:14: YAML aliases are not supported ("*p"); if this is a wildcard, quote it: "*p"',
  ]);
});

t.test('YAML 1.1 and unknown tags are refused', async (t) => {
  t.same(diagnostics(`%YAML 1.1\n---\n${HEAD}`), ['test.yaml:2:1: only YAML 1.2 is supported (remove the %YAML 1.1 directive)']);
  t.same(diagnostics(HEAD.replace('name: p', 'name: !custom p')), ['test.yaml:4:9: YAML: Unresolved tag: !custom']);
});

t.test('JSON must be strict JSON; errors are located with a JSON Pointer', async (t) => {
  const { text } = fixture('invalid/syntax.json');
  t.same(diagnostics(text, 'syntax.json'), ['syntax.json:5:29: JSON syntax error: expected a double-quoted property name (at /)']);
  t.same(diagnostics('{\n  "a": 1 // comment\n}', 'c.json'), ['c.json:2:10: JSON syntax error: expected "," or "}" (at /)']);
  t.same(diagnostics("{'a': 1}", 'q.json'), ['q.json:1:2: JSON syntax error: expected a double-quoted property name (at /)']);
  t.same(diagnostics('{"a": "x\ty"}', 't.json'), ['t.json:1:9: JSON syntax error: control character in a string (escape it, e.g. \\n or \\t) (at /)']);
  t.same(diagnostics('', 'e.json'), ['e.json:1:1: JSON syntax error: unexpected end of input (at /)']);
  t.same(diagnostics('[]', 'e.json'), ['e.json:1:1: no policy in file (empty array) (at /)']);
  t.same(diagnostics('{"a": 1, "a": 2}', 'd.json')[0], 'd.json:1:1: the policy is missing required key "apiVersion" (at /)');
  t.ok(diagnostics('{"a": 1, "a": 2}', 'd.json').includes('d.json:1:10: syntax error: Map keys must be unique (at /)'), 'duplicate keys');

  const bad = fixture('invalid/semantic.json');
  t.same(diagnostics(bad.text, 'semantic.json'), [
    'semantic.json:8:36: rule allow[0]: read target "not/absolute" is a relative path; paths must be absolute (start with "/") (at /0/spec/allow/0/read/1)',
    'semantic.json:9:7: unknown key "blok" in spec (did you mean "block"?) (at /0/spec/blok)',
  ]);
  t.same(diagnostics('\ufeff{"apiVersion": "helm/v2"}', 'bom.json')[0], 'bom.json:1:1: the policy is missing required key "kind" (at /)');
  t.ok(diagnostics('\ufeff{"apiVersion": "helm/v2"}', 'bom.json').includes('bom.json:1:16: apiVersion must be "helm/v1", got "helm/v2" (at /apiVersion)'), 'columns do not count a byte-order mark');
});

t.test('a file without any policy is an error', async (t) => {
  t.same(diagnostics('# nothing here\n'), ['test.yaml:1:1: no policy in file']);
  t.same(diagnostics('---\n---\n'), ['test.yaml:1:1: no policy in file']);
  t.same(diagnostics('- apiVersion: helm/v1\n'), [
    'test.yaml:1:1: a policy must be a mapping with apiVersion, kind, metadata and spec (separate policies with "---"), got a list',
  ]);
  t.same(diagnostics('~\n'), ['test.yaml:1:1: a policy must be a mapping with apiVersion, kind, metadata and spec, got an empty value']);
});

// ---------------------------------------------------------------------------------------------
// Structure: keys, header, names

t.test('unknown keys at every level, with "did you mean" when close', async (t) => {
  t.same(diagnostics(HEAD.replace('apiVersion', 'apiversion')), [
    'test.yaml:1:1: unknown key "apiversion" in the policy (did you mean "apiVersion"?)',
    'test.yaml:1:1: the policy is missing required key "apiVersion"',
  ]);
  t.same(diagnostics(HEAD + 'labels: {}\n'), [
    'test.yaml:7:1: unknown key "labels" in the policy (expected one of: apiVersion, kind, metadata, spec)',
  ]);
  t.same(diagnostics(HEAD.replace('  name: p', '  name: p\n  nmae: q')), ['test.yaml:5:3: unknown key "nmae" in metadata (did you mean "name"?)']);
  t.same(diagnostics(policy('  blok:\n    - read: /etc/\n')), ['test.yaml:7:3: unknown key "blok" in spec (did you mean "block"?)']);
  t.same(diagnostics(policy('  Allow: []\n')), ['test.yaml:7:3: unknown key "Allow" in spec (did you mean "allow"?)']);
  t.same(diagnostics(rule('allow', 'id: rt\n      raed: /usr/\n      read: /x')), [
    'test.yaml:9:7: unknown key "raed" in rule "rt" (did you mean "read"?)',
  ]);
  t.same(diagnostics(rule('contextual', 'read: /x\n      when: { rol: r }')), [
    'test.yaml:9:15: unknown key "rol" in when of rule contextual[0] (did you mean "role"?)',
  ]);
  t.same(diagnostics(rule('contextual', 'read: /x\n      when: { user: r, uid: 0 }')), [
    'test.yaml:9:15: unknown key "user" in when of rule contextual[0] (expected one of: role, exe, label, uid)',
  ]);
});

t.test('misplaced keys say where they belong', async (t) => {
  t.same(diagnostics(policy('  read: [/etc/]\n')), ['test.yaml:7:3: unknown key "read" in spec (read belongs in a rule under allow, block or contextual)']);
  t.same(diagnostics(HEAD + 'name: q\n'), ['test.yaml:7:1: unknown key "name" in the policy (name goes under metadata)']);
  t.same(diagnostics(rule('allow', 'read: /x\n      roles: [r]')), [
    'test.yaml:9:7: unknown key "roles" in rule allow[0] (the roles a policy governs are set for the whole policy in spec.roles)',
  ]);
  t.same(diagnostics(rule('allow', 'read: /x\n      uid: 0')), [
    'test.yaml:9:7: unknown key "uid" in rule allow[0] (uid is a condition: it goes under when, on a contextual rule)',
  ]);
});

t.test('apiVersion, kind, metadata.name and spec are required and exact', async (t) => {
  t.same(diagnostics('kind: Policy\nmetadata: {name: p}\nspec: {roles: [r]}\n'), ['test.yaml:1:1: the policy is missing required key "apiVersion"']);
  t.same(diagnostics('apiVersion: helm/v1\nmetadata: {name: p}\nspec: {roles: [r]}\n'), ['test.yaml:1:1: the policy is missing required key "kind"']);
  t.same(diagnostics('apiVersion: helm/v1\nkind: Policy\nspec: {roles: [r]}\n'), ['test.yaml:1:1: the policy is missing required key "metadata"']);
  t.same(diagnostics('apiVersion: helm/v1\nkind: Policy\nmetadata: {}\nspec: {roles: [r]}\n'), ['test.yaml:3:1: metadata is missing required key "name"']);
  t.same(diagnostics('apiVersion: helm/v1\nkind: Policy\nmetadata: {name: p}\n'), ['test.yaml:1:1: the policy is missing required key "spec"']);
  t.same(diagnostics(HEAD.replace('helm/v1', 'helm/v2')), ['test.yaml:1:13: apiVersion must be "helm/v1", got "helm/v2"']);
  t.same(diagnostics(HEAD.replace('helm/v1', '1')), ['test.yaml:1:13: apiVersion must be a string, got the number 1']);
  t.same(diagnostics(HEAD.replace('Policy', 'policy')), ['test.yaml:2:7: kind must be "Policy", got "policy"']);
  t.same(diagnostics(HEAD.replace('spec:\n  roles: [r]', 'spec: [r]')), ['test.yaml:5:7: spec must be a mapping, got a list']);
  t.same(diagnostics(HEAD.replace('spec:\n  roles: [r]', 'spec: {}')), ['test.yaml:5:1: spec is missing required key "roles"']);
});

t.test('policy names', async (t) => {
  for (const bad of ['Payments', '-p', '.p', 'p q', 'p/q', '"p:q"', '""']) {
    t.match(diagnostics(HEAD.replace('name: p', `name: ${bad}`)), [/^test\.yaml:4:9: bad policy name .*: use lower-case letters/], bad);
  }
  for (const good of ['p', '"0"', 'pay.ments_2-x']) t.same(diagnostics(HEAD.replace('name: p', `name: ${good}`)), [], good);
  t.same(diagnostics(HEAD.replace('name: p', 'name: [p]')), ['test.yaml:4:9: metadata.name must be a string, got a list']);
  t.same(diagnostics(HEAD.replace('name: p', 'name: 2024')), ['test.yaml:4:9: metadata.name must be a string, got the number 2024 (quote it: "2024")']);
});

t.test('duplicate policy names across the documents of one file', async (t) => {
  t.same(diagnostics(`${HEAD}---\n${HEAD}---\n${HEAD}`), [
    'test.yaml:11:9: duplicate policy name "p" (first defined at test.yaml:4:9)',
    'test.yaml:18:9: duplicate policy name "p" (first defined at test.yaml:4:9)',
  ]);
});

// ---------------------------------------------------------------------------------------------
// Spec: roles, mode, rule lists, ids

t.test('roles', async (t) => {
  const roles = (r: string) => diagnostics(HEAD.replace('roles: [r]', `roles: ${r}`));
  t.same(roles('r'), ['test.yaml:6:10: spec.roles must be a list, e.g. [r] (or ["*"] for every role)']);
  t.same(roles('[]'), ['test.yaml:6:10: spec.roles is empty: the policy would govern no role (use ["*"] for every role)']);
  t.same(roles('["*", r]'), ['test.yaml:6:11: "*" (every role) must be the only entry of spec.roles']);
  t.same(roles('[a, "b c"]'), ['test.yaml:6:14: bad role name "b c": use letters, digits, ".", "_" and "-" (or "*" for every role)']);
  t.same(roles('[a, ""]'), ['test.yaml:6:14: bad role name "": use letters, digits, ".", "_" and "-" (or "*" for every role)']);
  t.same(roles('[a, 7]'), ['test.yaml:6:14: a role must be a string, got the number 7 (quote it: "7")']);
  t.same(roles('{a: 1}'), ['test.yaml:6:10: spec.roles must be a list of role names (or ["*"] for every role), got a mapping']);
  t.same(roles('["*"]'), []);
  t.same(parse(HEAD.replace('roles: [r]', 'roles: "*"'))[0].roles, ['*'], 'exactly "*" may be written without a list');
  t.same(roles('[Pay.ment_s-1]'), []);
});

t.test('mode', async (t) => {
  t.same(diagnostics(policy('  mode: dryrun\n')), ['test.yaml:7:9: spec.mode must be "enforce" or "dry-run", got "dryrun" (did you mean "dry-run"?)']);
  t.same(diagnostics(policy('  mode: true\n')), ['test.yaml:7:9: spec.mode must be a string, got the boolean true']);
  t.same(parse(policy('  mode: dry-run\n'))[0].mode, 'dry-run');
  t.same(parse(policy('  mode: enforce\n'))[0].mode, 'enforce');
});

t.test('rule lists and rules have the right shape', async (t) => {
  t.same(diagnostics(policy('  allow:\n')), ['test.yaml:7:9: spec.allow is empty: write a list of rules, or [] for none']);
  t.same(diagnostics(policy('  block: {read: /x}\n')), ['test.yaml:7:10: spec.block must be a list of rules, got a mapping']);
  t.same(diagnostics(policy('  allow: [/usr/]\n')), ['test.yaml:7:11: rule allow[0] must be a mapping, got the string "/usr/"']);
  t.same(parse(policy('  allow: []\n  block: []\n'))[0].rules, [], 'empty lists are fine');
});

t.test('a rule needs a verb', async (t) => {
  t.same(diagnostics(rule('block', 'id: nothing')), ['test.yaml:8:7: rule "nothing" has no verb: give at least one of read, write, exec, connect, bind']);
  t.same(diagnostics(policy('  allow:\n    - {}\n')), ['test.yaml:8:7: rule allow[0] has no verb: give at least one of read, write, exec, connect, bind']);
});

t.test('rule ids: format, uniqueness across all lists, generated ids', async (t) => {
  t.same(diagnostics(rule('allow', 'id: -x\n      read: /a')), [
    'test.yaml:8:11: bad rule id "-x": use letters, digits, ".", "_" and "-", starting with a letter or digit',
  ]);
  t.same(diagnostics(rule('allow', 'id: 12\n      read: /a')), ['test.yaml:8:11: a rule id must be a string, got the number 12 (quote it: "12")']);
  t.same(diagnostics(rule('allow', 'id: "allow[0]"\n      read: /a')), [
    'test.yaml:8:11: bad rule id "allow[0]": use letters, digits, ".", "_" and "-", starting with a letter or digit',
  ]);
  const dup = policy('  block:\n    - id: x\n      read: /a\n  allow:\n    - id: x\n      read: /b\n    - id: y\n      read: /c\n');
  t.same(diagnostics(dup), ['test.yaml:11:11: duplicate rule id "x" (first used at test.yaml:8:11)']);
  const rules = parse(policy('  allow:\n    - read: /a\n    - id: b\n      read: /b\n    - read: /c\n  block:\n    - read: /d\n'))[0].rules;
  t.same(
    rules.map((r) => [r.id, r.idWritten]),
    [
      ['allow[0]', false],
      ['b', true],
      ['allow[2]', false],
      ['block[0]', false],
    ],
  );
});

// ---------------------------------------------------------------------------------------------
// Targets

t.test('verb targets: one or a non-empty list of strings', async (t) => {
  t.same(diagnostics(rule('allow', 'read: []')), ['test.yaml:8:13: rule allow[0]: read is an empty list; give at least one (an empty list matches nothing)']);
  t.same(diagnostics(rule('allow', 'read:')), ['test.yaml:8:12: rule allow[0]: read has no targets; give one or a list']);
  t.same(diagnostics(rule('allow', 'read: [/a, 5]')), ['test.yaml:8:18: rule allow[0]: read target must be a string, got the number 5']);
  t.same(diagnostics(rule('allow', 'read: {a: 1}')), ['test.yaml:8:13: rule allow[0]: read must be one value or a list of targets, got a mapping']);
  t.same(diagnostics(rule('allow', 'connect: [[::1]:53]')), [
    'test.yaml:8:17: rule allow[0]: connect target must be a string, got a mapping',
  ]);
  t.same(paths(parse(rule('allow', 'write: /tmp/'))[0].rules[0].verbs.write), [['/tmp/', '/tmp/', true]]);
});

t.test('path targets: absolute, no NUL, no control characters, literal', async (t) => {
  t.same(diagnostics(rule('allow', 'read: [/ok, etc/passwd]')), [
    'test.yaml:8:19: rule allow[0]: read target "etc/passwd" is a relative path; paths must be absolute (start with "/")',
  ]);
  t.same(diagnostics(rule('allow', 'read: ~/.ssh/')), [
    'test.yaml:8:13: rule allow[0]: read target "~/.ssh/" is a relative path ("~" is not expanded); paths must be absolute (start with "/")',
  ]);
  t.same(diagnostics(rule('allow', 'read: "/a\\0b"')), ['test.yaml:8:13: rule allow[0]: read target "/a\\u0000b" contains a NUL byte']);
  t.same(diagnostics(rule('allow', 'read: "/etc/\\n"')), ['test.yaml:8:13: rule allow[0]: read target "/etc/\\n" contains a control character (U+000A)']);
  t.same(diagnostics(rule('block', 'read: /home/*/.ssh/')), [
    'test.yaml:8:13: rule block[0]: read target "/home/*/.ssh/" contains "*": paths are matched literally, there are no wildcards (a trailing "/" covers a directory and everything below it)',
  ]);
  t.same(diagnostics(rule('allow', 'read: ""')), ['test.yaml:8:13: rule allow[0]: read target "" is empty']);
});

t.test('path length is checked after canonicalisation', async (t) => {
  const long = (n: number) => '/' + 'a'.repeat(n - 1);
  t.same(diagnostics(rule('allow', `read: ${long(MAX_RULE_PATH_BYTES)}`)), [], 'exactly the limit');
  t.same(diagnostics(rule('allow', `read: ${long(MAX_RULE_PATH_BYTES)}/`)), [], 'the trailing "/" of a subtree is not counted');
  t.same(diagnostics(rule('allow', `read: ${long(MAX_RULE_PATH_BYTES + 1)}`)), [
    `test.yaml:8:13: rule allow[0]: read target "${long(MAX_RULE_PATH_BYTES + 1)}" is ${MAX_RULE_PATH_BYTES + 1} bytes long; the kernel compares at most ${MAX_RULE_PATH_BYTES}`,
  ]);
  const multibyte = '/' + 'é'.repeat(MAX_RULE_PATH_BYTES / 2); // 1 + 250 bytes in UTF-8
  t.match(diagnostics(rule('allow', `read: ${multibyte}`)), [/is 251 bytes long; the kernel compares at most 250$/], 'bytes, not characters');
  // Short as written, long once a (pretend) symlink is resolved.
  const expand = (p: string) => (p === '/s' ? long(MAX_RULE_PATH_BYTES + 10) : p);
  t.same(diagnostics(rule('allow', 'exec: /s'), 'test.yaml', expand), [
    `test.yaml:8:13: rule allow[0]: exec target "/s" is ${MAX_RULE_PATH_BYTES + 10} bytes long (canonical form "${long(MAX_RULE_PATH_BYTES + 10)}"); the kernel compares at most ${MAX_RULE_PATH_BYTES}`,
  ]);
});

t.test('a canonicaliser failure is reported, not thrown', async (t) => {
  const boom = () => {
    throw new Error('boom');
  };
  t.same(diagnostics(rule('allow', 'read: /x'), 'test.yaml', boom), ['test.yaml:8:13: rule allow[0]: read target "/x" cannot be canonicalised: boom']);
});

t.test('network targets where paths belong, and paths where network targets belong', async (t) => {
  t.same(diagnostics(rule('allow', 'read: [127.0.0.1:80]')), [
    'test.yaml:8:14: rule allow[0]: read target "127.0.0.1:80" is a network destination; network destinations go under connect or bind, paths under read, write and exec',
  ]);
  t.same(diagnostics(rule('allow', 'exec: api.stripe.com:443')), [
    'test.yaml:8:13: rule allow[0]: exec target "api.stripe.com:443" is a network destination; network destinations go under connect or bind, paths under read, write and exec',
  ]);
  t.same(diagnostics(rule('allow', 'connect: /run/docker.sock')), [
    'test.yaml:8:16: rule allow[0]: connect target "/run/docker.sock" is a path; connect takes network destinations (ADDRESS:PORTS), paths go under read, write or exec',
  ]);
  t.same(diagnostics(rule('allow', 'bind: [/tmp/s]')), [
    'test.yaml:8:14: rule allow[0]: bind target "/tmp/s" is a path; bind takes network destinations (ADDRESS:PORTS), paths go under read, write or exec',
  ]);
  t.same(diagnostics(rule('allow', 'bind: api.stripe.com:443')), [
    'test.yaml:8:13: rule allow[0]: bind target "api.stripe.com:443": bind takes a local address (an IP address, a CIDR or *), not a host name',
  ]);
});

t.test('network destinations: valid forms', async (t) => {
  const cases: [string, NetTarget['address'], NetTarget['ports']][] = [
    ['1.2.3.4:1', { type: 'ip', family: 4, addr: '1.2.3.4', prefix: 32 }, { from: 1, to: 1 }],
    ['0.0.0.0/0:*', { type: 'ip', family: 4, addr: '0.0.0.0', prefix: 0 }, { from: 0, to: 65535 }],
    ['192.168.0.0/16:1-65535', { type: 'ip', family: 4, addr: '192.168.0.0', prefix: 16 }, { from: 1, to: 65535 }],
    ['10.1.2.3/32:80', { type: 'ip', family: 4, addr: '10.1.2.3', prefix: 32 }, { from: 80, to: 80 }],
    ['[::1]:53', { type: 'ip', family: 6, addr: '::1', prefix: 128 }, { from: 53, to: 53 }],
    ['[::ffff:192.0.2.1]:80', { type: 'ip', family: 6, addr: '::ffff:c000:201', prefix: 128 }, { from: 80, to: 80 }],
    ['[1:0:0:2:0:0:0:3]:1', { type: 'ip', family: 6, addr: '1:0:0:2::3', prefix: 128 }, { from: 1, to: 1 }],
    ['[1:0:0:2:0:0:3:4]:1', { type: 'ip', family: 6, addr: '1::2:0:0:3:4', prefix: 128 }, { from: 1, to: 1 }],
    ['[2001:db8::/32]:443', { type: 'ip', family: 6, addr: '2001:db8::', prefix: 32 }, { from: 443, to: 443 }],
    ['[::/0]:*', { type: 'ip', family: 6, addr: '::', prefix: 0 }, { from: 0, to: 65535 }],
    ['*:*', { type: 'any' }, { from: 0, to: 65535 }],
    ['localhost:8000-8000', { type: 'host', name: 'localhost' }, { from: 8000, to: 8000 }],
    ['x-1.Example.COM:443', { type: 'host', name: 'x-1.example.com' }, { from: 443, to: 443 }],
    ['*.com:443', { type: 'domain', suffix: 'com' }, { from: 443, to: 443 }],
    ['*.S3.amazonaws.com:443', { type: 'domain', suffix: 's3.amazonaws.com' }, { from: 443, to: 443 }],
  ];
  for (const [written, address, ports] of cases) {
    const target = parse(rule('allow', `connect: ${JSON.stringify(written)}`))[0].rules[0].verbs.connect?.[0] as NetTarget;
    t.same([target.kind, target.written, target.address, target.ports], ['net', written, address, ports], written);
  }
});

t.test('network destinations: every bad form is an error saying why', async (t) => {
  const cases: [string, string][] = [
    ['example.com', 'needs ":PORTS", e.g. "api.example.com:443" (":*" for any port)'],
    ['example.com:', 'has bad PORTS "": expected a port (1-65535), a range such as 8000-8999, or *'],
    ['example.com:http', 'has bad PORTS "http": expected a port (1-65535), a range such as 8000-8999, or *'],
    ['example.com:0', 'has a bad port in "0": ports are 1-65535, written without leading zeros'],
    ['example.com:65536', 'has a bad port in "65536": ports are 1-65535, written without leading zeros'],
    ['example.com:080', 'has a bad port in "080": ports are 1-65535, written without leading zeros'],
    ['example.com:1-70000', 'has a bad port in "1-70000": ports are 1-65535, written without leading zeros'],
    ['example.com:9000-8000', 'has an empty port range "9000-8000": the first port must not exceed the second'],
    ['example.com:1-2-3', 'has bad PORTS "1-2-3": expected a port (1-65535), a range such as 8000-8999, or *'],
    [':80', 'has no address before ":PORTS" ("*" for any address)'],
    ['256.1.1.1:80', 'has an invalid IPv4 address "256.1.1.1"'],
    ['1.2.3:80', 'has an invalid IPv4 address "1.2.3"'],
    ['01.2.3.4:80', 'has an invalid IPv4 address "01.2.3.4"'],
    ['10.0.0.1/8:80', 'has host bits set in "10.0.0.1/8": did you mean "10.0.0.0/8"?'],
    ['10.0.0.0/33:80', 'has a bad prefix length "/33" (0-32 for IPv4)'],
    ['10.0.0.0/08:80', 'has a bad prefix length "/08" (0-32 for IPv4)'],
    ['10.0.0.0/:80', 'has a bad prefix length "/" (0-32 for IPv4)'],
    ['host/8:80', 'has an invalid IPv4 address "host"'],
    ['[fd00::1/8]:80', 'has host bits set in "[fd00::1/8]": did you mean "[fd00::/8]"?'],
    ['[fd00::/129]:80', 'has a bad prefix length "/129" (0-128 for IPv6)'],
    ['[1.2.3.4]:80', 'has an IPv4 address in brackets; brackets are only for IPv6 (write "1.2.3.4:PORTS")'],
    ['[gg::1]:80', 'has an invalid IPv6 address "gg::1"'],
    ['[*]:80', 'has an invalid IPv6 address "*"'],
    ['::1:53', 'has an IPv6 address without brackets; write "[ADDRESS]:PORTS", e.g. "[::1]:53"'],
    ['2001:db8::1:443', 'has an IPv6 address without brackets; write "[ADDRESS]:PORTS", e.g. "[::1]:53"'],
    ['[::1]53', 'needs ":PORTS" after "]", e.g. "[::1]:53"'],
    ['[::1:53', 'has "[" without a closing "]"'],
    ['[fe80::1%eth0]:53', 'has an IPv6 zone index ("%..."), which is not supported'],
    ['a..b:80', 'has an invalid host name "a..b": it has an empty label ("..")'],
    ['-a.com:80', 'has an invalid host name "-a.com": label "-a" must be letters, digits and inner hyphens (RFC 1123)'],
    ['a-.com:80', 'has an invalid host name "a-.com": label "a-" must be letters, digits and inner hyphens (RFC 1123)'],
    ['x_y.com:80', 'has an invalid host name "x_y.com": label "x_y" must be letters, digits and inner hyphens (RFC 1123)'],
    ['example.com.:80', 'has an invalid host name "example.com.": write it without the trailing "."'],
    [`${'a'.repeat(64)}.com:80`, `has an invalid host name "${'a'.repeat(64)}.com": label "${'a'.repeat(64)}" is longer than 63 characters`],
    [`${'a.'.repeat(127)}com:80`, `has an invalid host name "${'a.'.repeat(127)}com": longer than 253 characters`],
    ['example.123:80', 'has an invalid host name "example.123": the last label is all digits (a mistyped IP address?)'],
    ['api.*.com:80', 'has "*" inside "api.*.com": only "*" (any address) or a leading "*." (subdomains) is allowed'],
    ['**.com:80', 'has "*" inside "**.com": only "*" (any address) or a leading "*." (subdomains) is allowed'],
    ['*.:80', 'has a bad wildcard domain "*.": the name is empty'],
    ['*.a..b:80', 'has a bad wildcard domain "*.a..b": it has an empty label ("..")'],
  ];
  for (const [written, why] of cases) {
    t.same(
      diagnostics(rule('allow', `connect: ${JSON.stringify(written)}`)),
      [`test.yaml:8:16: rule allow[0]: connect target ${JSON.stringify(written)} ${why}`],
      written,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// Conditions

t.test('when belongs to contextual rules only, and they need one', async (t) => {
  t.same(diagnostics(rule('allow', 'read: /a\n      when: {role: r}')), [
    'test.yaml:9:7: rule allow[0]: when is only allowed on contextual rules (this rule is under allow)',
  ]);
  t.same(diagnostics(rule('block', 'id: b\n      read: /a\n      when: {uid: 0}')), [
    'test.yaml:10:7: rule "b": when is only allowed on contextual rules (this rule is under block)',
  ]);
  t.same(diagnostics(rule('contextual', 'connect: "*:443"')), [
    'test.yaml:8:7: contextual rule contextual[0] has no when: a contextual rule needs the condition under which it allows',
  ]);
});

t.test('when must not be empty', async (t) => {
  const ctx = (when: string) => diagnostics(rule('contextual', `read: /a\n      when: ${when}`));
  t.same(ctx('{}'), ['test.yaml:9:13: rule contextual[0]: when is empty; give at least one of role, exe, label, uid']);
  t.same(ctx(''), ['test.yaml:9:13: rule contextual[0]: when is empty; give at least one of role, exe, label, uid']);
  t.same(ctx('[role]'), ['test.yaml:9:13: when of rule contextual[0] must be a mapping, got a list']);
  t.same(ctx('{role: []}'), [
    'test.yaml:9:20: rule contextual[0]: when.role is an empty list; give at least one (an empty list matches nothing)',
  ]);
  t.same(ctx('{label: {}}'), ['test.yaml:9:21: rule contextual[0]: when.label is empty; give key: value pairs or leave label out']);
});

t.test('when.role', async (t) => {
  const ctx = (when: string, roles = '[a, b]') =>
    diagnostics(rule('contextual', `read: /a\n      when: ${when}`).replace('roles: [r]', `roles: ${roles}`));
  t.same(ctx('{role: a}'), []);
  t.same(ctx('{role: [a, b]}'), []);
  t.same(ctx('{role: c}'), ['test.yaml:9:20: rule contextual[0]: when.role "c" is not among the roles this policy governs (spec.roles)']);
  t.same(ctx('{role: c}', '["*"]'), [], 'any role is governed by a "*" policy');
  t.same(ctx('{role: "*"}'), ['test.yaml:9:20: rule contextual[0]: when.role cannot be "*"; name the roles (or leave role out)']);
  t.same(ctx('{role: "a b"}'), ['test.yaml:9:20: bad role name "a b": use letters, digits, ".", "_" and "-"']);
  t.same(ctx('{role: 3}'), ['test.yaml:9:20: rule contextual[0]: when.role must be a string, got the number 3 (quote it: "3")']);
});

t.test('when.uid', async (t) => {
  const ctx = (when: string) => diagnostics(rule('contextual', `read: /a\n      when: ${when}`));
  const parsed = parse(rule('contextual', 'read: /a\n      when: {uid: [0, 1000, 4294967294]}'))[0].rules[0].when;
  t.same(parsed?.uid, [0, 1000, 4294967294]);
  t.same(parse(rule('contextual', 'read: /a\n      when: {uid: 7}'))[0].rules[0].when?.uid, [7], 'one uid without a list');
  const bad = (v: string, got: string) =>
    t.same(ctx(`{uid: ${v}}`), [`test.yaml:9:19: rule contextual[0]: when.uid must be a non-negative integer uid (0-4294967294), got ${got}`], v);
  bad('-1', 'the number -1');
  bad('1.5', 'the number 1.5');
  bad('1000.0', 'the number 1000.0');
  bad('0x10', 'the number 0x10');
  bad('4294967295', 'the number 4294967295');
  bad('"1000"', 'the string "1000"');
  bad('root', 'the string "root"');
  bad('true', 'the boolean true');
});

t.test('when.label', async (t) => {
  const ctx = (when: string) => diagnostics(rule('contextual', `read: /a\n      when: ${when}`));
  t.same(parse(rule('contextual', 'read: /a\n      when: {label: {team: pay, "x/y": "1"}}'))[0].rules[0].when?.label, { team: 'pay', 'x/y': '1' });
  t.same(ctx('{label: [team]}'), ['test.yaml:9:21: rule contextual[0]: when.label must be a mapping, got a list']);
  t.same(ctx('{label: team}'), ['test.yaml:9:21: rule contextual[0]: when.label must be a mapping, got the string "team"']);
  t.same(ctx('{label: {version: 2}}'), ['test.yaml:9:31: rule contextual[0]: when.label.version must be a string; quote it: "2"']);
  t.same(ctx('{label: {a: [x]}}'), ['test.yaml:9:25: rule contextual[0]: when.label.a must be a string, got a list']);
  t.same(ctx('{label: {a: }}'), ['test.yaml:9:25: rule contextual[0]: when.label.a must be a string, got an empty value']);
  t.same(ctx('{label: {"": x}}'), ['test.yaml:9:22: rule contextual[0]: when.label has an empty key']);
  // Once silently dropped (an object's __proto__ is its prototype), leaving a condition that always held.
  t.same(ctx('{label: {__proto__: x}}'), ['test.yaml:9:22: rule contextual[0]: when.label cannot have the key "__proto__"']);
  t.same(ctx('{label: {1: x}}'), ['test.yaml:9:22: keys in rule contextual[0]: when.label must be strings, got the number 1']);
});

t.test('when.exe', async (t) => {
  const ctx = (when: string) => diagnostics(rule('contextual', `read: /a\n      when: ${when}`));
  const when = parse(rule('contextual', 'read: /a\n      when: {exe: [/usr/bin/python3, /opt//tools/]}'))[0].rules[0].when;
  t.same(paths(when?.exe), [
    ['/usr/bin/python3', '/usr/bin/python3.12', false],
    ['/opt//tools/', '/opt/tools/', true],
  ]);
  t.same(ctx('{exe: bin/python}'), ['test.yaml:9:19: rule contextual[0]: when.exe "bin/python" is a relative path; paths must be absolute (start with "/")']);
  t.same(ctx('{exe: [/ok, "/a\\0"]}'), ['test.yaml:9:25: rule contextual[0]: when.exe "/a\\u0000" contains a NUL byte']);
  t.same(ctx('{exe: []}'), ['test.yaml:9:19: rule contextual[0]: when.exe is an empty list; give at least one (an empty list matches nothing)']);
});

// ---------------------------------------------------------------------------------------------
// Canonicalisation on a real filesystem

t.test('canonicalizeRulePath', async (t) => {
  // realpath: os.tmpdir() may itself sit behind a symlink.
  const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-canon-')));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  fs.mkdirSync(path.join(tmp, 'real/sub'), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'real/file'), '');
  fs.symlinkSync(path.join(tmp, 'real'), path.join(tmp, 'link')); // absolute target
  fs.symlinkSync('real/sub', path.join(tmp, 'rel')); // relative target
  fs.symlinkSync('link/file', path.join(tmp, 'chain')); // chain → link → real
  fs.symlinkSync('../file', path.join(tmp, 'real/sub/up')); // `..` inside a target
  fs.symlinkSync('real/not-yet', path.join(tmp, 'dangling'));
  fs.symlinkSync('loop2', path.join(tmp, 'loop1'));
  fs.symlinkSync('loop1', path.join(tmp, 'loop2'));

  const c = (p: string) => canonicalizeRulePath(p);
  const cases: [string, string, boolean, boolean][] = [
    // written, canonical, subtree, resolved
    [`${tmp}/real/file`, `${tmp}/real/file`, false, false],
    [`${tmp}/real/`, `${tmp}/real/`, true, false],
    [`${tmp}/link/file`, `${tmp}/real/file`, false, true],
    [`${tmp}/link/`, `${tmp}/real/`, true, true],
    [`${tmp}/link`, `${tmp}/real`, false, true],
    [`${tmp}//real/./sub/../file`, `${tmp}/real/file`, false, true],
    [`${tmp}/real/sub//`, `${tmp}/real/sub/`, true, true],
    [`${tmp}/real/sub///`, `${tmp}/real/sub/`, true, true],
    [`${tmp}/chain`, `${tmp}/real/file`, false, true],
    [`${tmp}/real/sub/up`, `${tmp}/real/file`, false, true],
    // `..` after a symlink goes to the parent of its target, as in the kernel's lookup.
    [`${tmp}/rel/../file`, `${tmp}/real/file`, false, true],
    // Non-existent tails are kept (normalised) below the resolved prefix.
    [`${tmp}/link/missing/deeper/`, `${tmp}/real/missing/deeper/`, true, true],
    [`${tmp}/link/missing/./x/../y`, `${tmp}/real/missing/y`, false, true],
    [`${tmp}/link/missing/../file`, `${tmp}/real/file`, false, true],
    [`${tmp}/dangling`, `${tmp}/real/not-yet`, false, true],
    [`${tmp}/real/file/below`, `${tmp}/real/file/below`, false, false],
    [`${tmp}/loop1/x`, `${tmp}/loop1/x`, false, false],
    ['/', '/', true, false],
    ['//', '/', true, true],
    ['/..', '/', false, true],
    ['/../', '/', true, true],
    ['/nonexistent-helm-test/a/../../', '/', true, true],
  ];
  for (const [written, canonical, subtree, resolved] of cases) {
    t.same(c(written), { canonical, subtree, resolved }, written);
  }

  t.throws(() => c('relative/path'), /not an absolute path/);
  t.throws(() => c('/a\0b'), /NUL/);

  if (fs.existsSync('/proc/self/exe')) {
    t.same(c('/proc/self/exe'), { canonical: '/proc/self/exe', subtree: false, resolved: false }, 'magic /proc links are not pinned to the linter');
  }
});

t.test('the parser canonicalises with canonicalizeRulePath by default', async (t) => {
  const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-parse-')));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  fs.mkdirSync(path.join(tmp, 'real'));
  fs.symlinkSync(path.join(tmp, 'real'), path.join(tmp, 'link'));
  // A short link to a directory whose real path is longer than the kernel compares.
  const deep = path.join(tmp, 'd'.repeat(200), 'e'.repeat(60));
  fs.mkdirSync(deep, { recursive: true });
  fs.symlinkSync(deep, path.join(tmp, 's'));

  const text = rule('allow', `read: [${tmp}/link/, ${tmp}/link/x/../y]`);
  const [p] = parsePolicySource(text, 'test.yaml');
  t.same(paths(p.rules[0].verbs.read), [
    [`${tmp}/link/`, `${tmp}/real/`, true],
    [`${tmp}/link/x/../y`, `${tmp}/real/y`, false],
  ]);
  t.throws(() => parsePolicySource(rule('allow', `read: ${tmp}/s/`), 'test.yaml'), {
    name: 'PolicyError',
    message: new RegExp(`^test\\.yaml:8:13: rule allow\\[0\\]: read target "${tmp}/s/" is \\d+ bytes long \\(canonical form "${deep}/"\\); the kernel compares at most ${MAX_RULE_PATH_BYTES}$`),
  });
});

// ---------------------------------------------------------------------------------------------
// loadPolicies

function policyText(name: string, extra = ''): string {
  return `apiVersion: helm/v1\nkind: Policy\nmetadata:\n  name: ${name}\nspec:\n  roles: [r]\n${extra}`;
}

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-load-')));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function loadErrors(paths: string[]): string[] {
  try {
    loadPolicies(paths, { canonicalize: fake });
    return [];
  } catch (e) {
    if (!(e instanceof PolicyError)) throw e;
    return e.message.split('\n');
  }
}

t.test('loadPolicies: directories (sorted, not recursive) and files', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'b.yaml'), policyText('b'));
  fs.writeFileSync(path.join(dir, 'a.json'), JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'a' }, spec: { roles: ['r'] } }));
  fs.writeFileSync(path.join(dir, 'c.yml'), `${policyText('c1')}---\n${policyText('c2')}`);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a policy');
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub/d.yaml'), policyText('d'));

  const { policies, files } = loadPolicies([dir], { canonicalize: fake });
  t.same(files, ['a.json', 'b.yaml', 'c.yml'].map((f) => path.join(dir, f)));
  t.same(
    policies.map((p) => p.name),
    ['a', 'b', 'c1', 'c2'],
  );

  const both = loadPolicies([dir, path.join(dir, 'sub/d.yaml')], { canonicalize: fake });
  t.same(
    both.policies.map((p) => p.name),
    ['a', 'b', 'c1', 'c2', 'd'],
  );
  t.equal(both.files[3], path.join(dir, 'sub/d.yaml'));

  // The default canonicaliser works here too.
  t.same(
    loadPolicies([path.join(dir, 'b.yaml')]).policies.map((p) => p.name),
    ['b'],
  );
});

t.test('loadPolicies: duplicate names across files, located at the second', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'a.yaml'), policyText('same'));
  fs.writeFileSync(path.join(dir, 'b.yaml'), `${policyText('other')}---\n${policyText('same')}`);
  t.same(loadErrors([dir]), [`${dir}/b.yaml:11:9: duplicate policy name "same" (first defined at ${dir}/a.yaml:4:9)`]);
  t.same(loadErrors([path.join(dir, 'a.yaml'), path.join(dir, 'a.yaml')]), [`${dir}/a.yaml:1:1: ${dir}/a.yaml is given more than once`]);
  fs.symlinkSync('a.yaml', path.join(dir, 'c.yaml'));
  fs.unlinkSync(path.join(dir, 'b.yaml'));
  t.same(loadErrors([dir]), [`${dir}/c.yaml:1:1: ${dir}/c.yaml is the same file as ${dir}/a.yaml, given before`]);
});

t.test('loadPolicies: errors of all files are collected', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'a.yaml'), policyText('a', '  blok: []\n'));
  fs.writeFileSync(path.join(dir, 'b.json'), '{"apiVersion": "helm/v1",}');
  fs.writeFileSync(path.join(dir, 'c.yaml'), policyText('c', '  allow:\n    - read: rel\n'));
  t.same(loadErrors([dir]), [
    `${dir}/a.yaml:7:3: unknown key "blok" in spec (did you mean "block"?)`,
    `${dir}/b.json:1:26: JSON syntax error: expected a double-quoted property name (at /)`,
    `${dir}/c.yaml:8:13: rule allow[0]: read target "rel" is a relative path; paths must be absolute (start with "/")`,
  ]);
});

t.test('loadPolicies: nothing to load is an error naming the path', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'README.md'), '# no policies here');
  t.same(loadErrors([dir]), [`${dir}:1:1: no policies found in ${dir}`]);
  t.same(loadErrors([]), ['<none>:1:1: no policy files or directories given']);
  fs.writeFileSync(path.join(dir, 'empty.yaml'), '');
  t.same(loadErrors([dir]), [`${dir}/empty.yaml:1:1: no policy in file`]);
});

t.test('loadPolicies: a directory skips the JSON Schema and case tables shipped next to policies', async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'a.yaml'), policyText('a', '  allow:\n    - read: [/etc/hostname]\n'));
  fs.writeFileSync(path.join(dir, 'policy.schema.json'), '{"$schema": "https://json-schema.org/draft/2020-12/schema"}');
  fs.writeFileSync(path.join(dir, 'a.cases.yaml'), '- { name: x, role: r, verb: read, target: /etc/hostname, expect: allow }\n');
  t.same(loadErrors([dir]), []);
  // The shipped directories load as they are.
  t.same(loadErrors([path.join(ROOT, 'policies')]), [], 'policies/');
  t.same(loadErrors([path.join(ROOT, 'policies/examples')]), [], 'policies/examples/');
});

t.test('loadPolicies: unreadable and odd entries are errors, not skipped', async (t) => {
  const dir = tempDir(t);
  t.same(loadErrors([path.join(dir, 'missing.yaml')]), [`${dir}/missing.yaml:1:1: cannot read ${dir}/missing.yaml: no such file or directory`]);
  fs.mkdirSync(path.join(dir, 'x.yaml'));
  fs.symlinkSync(path.join(dir, 'gone'), path.join(dir, 'y.yaml'));
  fs.writeFileSync(path.join(dir, 'z.yaml'), Buffer.concat([Buffer.from(policyText('z', '  allow:\n    - read: /caf')), Buffer.from([0xe9]), Buffer.from('/\n')]));
  t.same(loadErrors([dir]), [
    `${dir}/x.yaml:1:1: ${dir}/x.yaml is not a regular file`,
    `${dir}/y.yaml:1:1: cannot read ${dir}/y.yaml: no such file or directory`,
    `${dir}/z.yaml:8:17: file is not valid UTF-8`,
  ]);
});

// ---------------------------------------------------------------------------------------------
// The JSON Schema for editors stays in step with the parser

t.test('policies/policy.schema.json matches the language', async (t) => {
  const schema = JSON.parse(fs.readFileSync(path.join(ROOT, 'policies/policy.schema.json'), 'utf8'));
  const defs = schema.$defs;
  t.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  t.same(Object.keys(defs.policy.properties), ['apiVersion', 'kind', 'metadata', 'spec']);
  t.same(Object.keys(defs.spec.properties), ['roles', 'mode', 'allow', 'block', 'contextual']);
  t.same(Object.keys(defs.plainRule.properties), ['id', ...VERBS]);
  t.same(Object.keys(defs.contextualRule.properties), ['id', ...VERBS, 'when']);
  t.same(Object.keys(defs.when.properties), ['role', 'exe', 'label', 'uid']);
  t.same(defs.spec.properties.mode.enum, ['enforce', 'dry-run']);

  // Every target in the valid fixture matches the schema's patterns; some bad ones do not.
  // connect: an IP destination, or a unix/raw/packet socket (one pattern each, any may match)
  const connectPatterns = (defs.connectTarget.anyOf as { pattern: string }[]).map((a) => new RegExp(a.pattern, 'u'));
  const connect = { test: (s: string) => connectPatterns.some((re) => re.test(s)) };
  const bind = new RegExp(defs.bindTarget.pattern, 'u');
  const pathRe = new RegExp(defs.path.pattern, 'u');
  const { file, text } = fixture('valid/full.yaml');
  for (const p of parsePolicySource(text, file, { canonicalize: fake })) {
    for (const r of p.rules) {
      for (const [verb, targets] of Object.entries(r.verbs)) {
        const re = verb === 'connect' ? connect : verb === 'bind' ? bind : pathRe;
        for (const target of targets) t.ok(re.test(target.written), `${verb} ${target.written} matches the schema`);
      }
    }
  }
  for (const bad of ['example.com', '::1:53', 'a..b:80', 'x:http', 'unix:rel.sock', 'unix:@', 'raw:', 'packet:icmp']) t.notOk(connect.test(bad), `${bad} does not match`);
  for (const good of ['unix:/run/app.sock', 'unix:/run/app/', 'unix:@bus', 'unix:@*', 'raw:icmp', 'raw:*', 'packet:0x0806']) t.ok(connect.test(good), `${good} matches`);
  t.notMatch('api.example.com:80', bind);
  for (const bad of ['rel/x', '/home/*/', '/a\nb']) t.notMatch(bad, pathRe, JSON.stringify(bad));
});
