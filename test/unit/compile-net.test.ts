// The network half of the compiler: address/CIDR/port rules into LPM entries with folded port
// ranges, host-name patterns into name entries. A model of the kernel's lookup (longest prefix
// per family, then the port range, then the join with learned names) is run against the
// reference evaluator on random policies: the compiler must fold exactly POLICY.md's algorithm.
import t from 'tap';
import { compilePolicy, type CompiledPolicy } from '../../daemon/policy/compile';
import { foldPorts, nameMatches } from '../../daemon/policy/compile-net';
import { evaluateOperation, inNetwork, ipBytes } from '../../daemon/policy/evaluate';
import { parsePolicySource } from '../../daemon/policy/parse';
import { C, NO_VERDICT, encodeNetKey, encodeNetValue, type Verdict } from '../../daemon/kernel/layout';
import { PolicyError, type Policy } from '../../daemon/policy/types';
import { Rng } from '../rng';
import { ROLES, randomNetworkOps, randomNetworkPolicy } from '../support/network-differential';
import { randomContext, resolveModel, showContext, type ProcessContext } from '../support/conditions';

const noStat = () => undefined;

function policies(text: string): Policy[] {
  return parsePolicySource(text, 'x.yaml');
}

function compile(text: string, opts: Parameters<typeof compilePolicy>[1] = {}): CompiledPolicy {
  return compilePolicy(policies(text), { stat: noStat, ...opts });
}

const doc = (name: string, roles: string, body: string, mode = 'enforce') =>
  `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: ${name} }\nspec:\n  roles: ${roles}\n  mode: ${mode}\n${body}`;

/**
 * The kernel's decision, modelled: helm.bpf.c decide_net() over the compiled entries, each verdict
 * made concrete for the acting process (its condition list) before the join.
 */
function kernelModel(c: CompiledPolicy, role: string, verb: 'connect' | 'bind', addr: string, port: number, learnedNames: string[] = [], ctx: ProcessContext = {}): { action: 'allow' | 'deny'; v?: Verdict } {
  const roleId = c.roles.get(role);
  const nop = verb === 'connect' ? C.HELM_NET_CONNECT : C.HELM_NET_BIND;
  const bytes = ipBytes(addr)!;
  const mine = c.netEntries.filter((e) => e.roleId === roleId);
  if (roleId === undefined || mine.length === 0) return { action: 'deny' };
  let best: (typeof mine)[number] | undefined;
  for (const e of mine) {
    if (e.bytes !== undefined && (e.bytes.length !== bytes.length || !inNetwork(bytes, e.bytes, e.prefix))) continue;
    const len = e.bytes === undefined ? -1 : e.prefix;
    const bestLen = best?.bytes === undefined ? -1 : best.prefix;
    if (!best || len > bestLen) best = e;
  }
  const inRange = (ranges: typeof mine[number]['ranges']) => {
    const v = ranges.find((r) => port >= r.from && port <= r.to)?.verdicts[nop];
    return v && resolveModel(c, v, ctx);
  };
  let v: Verdict = NO_VERDICT;
  v = combine(v, inRange(best!.ranges));
  for (const name of learnedNames) {
    for (const e of c.nameEntries.filter((n) => n.roleId === roleId && nameMatches(n.pattern, name))) v = combine(v, inRange(e.ranges));
  }
  return { action: v.action === C.HELM_ACTION_ALLOW ? 'allow' : 'deny', v: v.action === C.HELM_ACTION_NONE ? undefined : v };
}

/** helm.bpf.c combine(), in TypeScript. */
function combine(best: Verdict, v: Verdict | undefined): Verdict {
  if (!v || v.action === C.HELM_ACTION_NONE) return best;
  if (best.action === C.HELM_ACTION_NONE || v.rank > best.rank) return v;
  if (v.rank < best.rank) return best;
  if (v.action !== best.action) return v.action === C.HELM_ACTION_ALLOW ? v : best;
  if (v.mode !== best.mode) return v.mode === C.HELM_MODE_ENFORCE ? v : best;
  return v.policyId < best.policyId || (v.policyId === best.policyId && v.ruleId < best.ruleId) ? v : best;
}

t.test('CIDRs nest: the longest prefix carries every rule of the shorter ones', async (t) => {
  const c = compile(doc('n', '[r]', '  allow:\n    - id: wide\n      connect: ["10.0.0.0/8:443"]\n  block:\n    - id: narrow\n      connect: ["10.1.0.0/16:*"]\n'));
  const r = c.roles.get('r');
  const entries = c.netEntries.filter((e) => e.roleId === r);
  t.same(entries.map((e) => [e.bytes, e.prefix]), [[undefined, 0], [[10, 0, 0, 0], 8], [[10, 1, 0, 0], 16]], 'root, /8, /16');
  const narrow = entries[2];
  t.same(narrow.ranges.map((x) => [x.from, x.to, x.verdicts[C.HELM_NET_CONNECT].action]), [[0, 65535, C.HELM_ACTION_DENY]], 'the block covers every port of the /16, 443 included');
  t.same(entries[1].ranges.map((x) => [x.from, x.to, x.verdicts[C.HELM_NET_CONNECT].action]), [[443, 443, C.HELM_ACTION_ALLOW]]);
  t.equal(kernelModel(c, 'r', 'connect', '10.1.2.3', 443).action, 'deny');
  t.equal(kernelModel(c, 'r', 'connect', '10.2.2.3', 443).action, 'allow');
  t.equal(kernelModel(c, 'r', 'connect', '::ffff:10.2.2.3', 443).action, 'allow', 'a mapped address is its IPv4 address');
  t.equal(kernelModel(c, 'r', 'connect', '::ffff:10.1.2.3', 443).action, 'deny', 'and cannot slip past the IPv4 block');
});

t.test('IPv6 networks never cover IPv4; a mapped network is the IPv4 network', async (t) => {
  const c = compile(doc('n', '[r]', '  allow:\n    - connect: ["[::/0]:*", "[::ffff:192.168.0.0/112]:80"]\n'));
  const e = c.netEntries.filter((x) => x.bytes);
  t.same(e.map((x) => [x.bytes!.length, x.prefix]), [[4, 16], [16, 0]], 'the mapped /112 is stored as IPv4 /16');
  t.equal(kernelModel(c, 'r', 'connect', '2001:db8::1', 1).action, 'allow');
  t.equal(kernelModel(c, 'r', 'connect', '8.8.8.8', 1).action, 'deny', '[::/0] is not IPv4');
  t.equal(kernelModel(c, 'r', 'connect', '192.168.3.4', 80).action, 'allow');
  const key = encodeNetKey(c.roles.get('r')!, [192, 168, 0, 0], 16);
  t.equal(key.readUInt32LE(0), 32 + 8 + 16, 'prefixlen counts role id, family byte and the prefix');
  t.equal(key[8], 4, 'family byte');
});

t.test('ports are cut where rules start and end, equal neighbours merged', async (t) => {
  const c = compile(doc('n', '[r]', '  allow:\n    - id: a\n      connect: ["*:8000-8099", "*:8100-8199"]\n  block:\n    - id: b\n      connect: ["*:8050-8150"]\n'));
  const root = c.netEntries.find((e) => e.bytes === undefined)!;
  t.same(
    root.ranges.map((r) => [r.from, r.to, r.verdicts[C.HELM_NET_CONNECT].action, r.verdicts[C.HELM_NET_BIND].action]),
    [
      [8000, 8049, C.HELM_ACTION_ALLOW, C.HELM_ACTION_NONE],
      [8050, 8150, C.HELM_ACTION_DENY, C.HELM_ACTION_NONE],
      [8151, 8199, C.HELM_ACTION_ALLOW, C.HELM_ACTION_NONE],
    ],
  );
  t.equal(foldPorts([], 'r', () => NO_VERDICT).length, 0, 'no rule, no range');
});

t.test('more distinct port ranges than the kernel holds is a located error', async (t) => {
  const ports = Array.from({ length: 20 }, (_, i) => `"10.0.0.1:${1000 + 2 * i}"`).join(', ');
  let caught: unknown;
  try {
    compile(doc('n', '[r]', `  allow:\n    - id: many\n      connect: [${ports}]\n`));
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof PolicyError, 'refused');
  const d = (caught as PolicyError).diagnostics;
  t.equal(d.length, 1);
  t.equal(d[0].loc.line, 9, 'located at the first target');
  t.match(d[0].message, /20 ranges with different decisions; the kernel holds 16 per address/);
  t.doesNotThrow(() => compile(doc('n', '[r]', `  allow:\n    - id: few\n      connect: [${Array.from({ length: 16 }, (_, i) => `"10.0.0.1:${1000 + 2 * i}"`).join(', ')}]\n`)), '16 fit');
});

t.test('host-name patterns: stable ids, folded per pattern, refused when nothing could be allowed', async (t) => {
  const text = doc('n', '[pay, ana]', '  allow:\n    - connect: ["*.github.com:443", "api.example.com:443"]\n  contextual:\n    - id: stripe\n      connect: [api.stripe.com:443]\n      when: { role: pay }\n');
  const c1 = compile(text);
  const ids = new Map(c1.nameIds);
  t.same([...ids.keys()].sort(), ['*.github.com', 'api.example.com', 'api.stripe.com']);
  const stripe = (c: CompiledPolicy, role: string) => c.nameEntries.find((e) => e.pattern === 'api.stripe.com' && e.roleId === c.roles.get(role))!;
  t.equal(stripe(c1, 'pay').allowsSomething, true);
  t.equal(stripe(c1, 'ana').allowsSomething, false, 'for the other role the contextual rule only denies: its queries are refused');
  // A later generation with another pattern first keeps the old ids.
  const c2 = compile(doc('n', '[pay, ana]', '  allow:\n    - connect: ["aaa.first.com:1", "*.github.com:443", "api.example.com:443"]\n'), { nameIds: ids });
  for (const [p, id] of ids) if (c2.nameIds.has(p)) t.equal(c2.nameIds.get(p), id, `${p} keeps id ${id}`);
  t.ok(c2.nameIds.get('aaa.first.com')! > Math.max(...ids.values()), 'a new pattern gets a new id');
  t.ok(nameMatches('*.github.com', 'api.github.com'));
  t.notOk(nameMatches('*.github.com', 'github.com'), 'subdomains only');
  t.notOk(nameMatches('*.github.com', 'evilgithub.com'));
  t.ok(nameMatches('api.example.com', 'api.example.com'));
  t.equal(kernelModel(c1, 'pay', 'connect', '1.2.3.4', 443, ['api.stripe.com']).action, 'allow');
  t.equal(kernelModel(c1, 'ana', 'connect', '1.2.3.4', 443, ['api.stripe.com']).action, 'deny');
});

t.test('the compiled network entries are byte-identical across runs', async (t) => {
  const rng = new Rng(7);
  for (let i = 0; i < 20; i++) {
    const text = randomNetworkPolicy(rng);
    const enc = (c: CompiledPolicy) => c.netEntries.map((e) => Buffer.concat([encodeNetKey(e.roleId, e.bytes, e.prefix), encodeNetValue(e.ranges, e.defaultMode)]).toString('hex')).join('\n');
    t.equal(enc(compile(text)), enc(compile(text)));
  }
});

t.test('model of the kernel over the compiled entries = the reference evaluator (random policies)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 4242);
  const rng = new Rng(seed);
  let checked = 0;
  for (let round = 0; round < 150; round++) {
    const text = randomNetworkPolicy(rng);
    const ps = policies(text);
    const c = compilePolicy(ps, { stat: noStat });
    for (const role of ROLES) {
      for (const op of randomNetworkOps(rng, role, 40)) {
        const want = evaluateOperation(ps, { role, verb: op.verb, addr: op.addr, port: op.port });
        const got = kernelModel(c, role, op.verb, op.addr, op.port);
        const wantAction = want.action;
        const rule = got.v ? c.rules[got.v.ruleId - 1] : undefined;
        if (got.action !== wantAction || (rule?.rule ?? 'default') !== (want.rule ?? 'default')) {
          t.fail(`seed ${seed} round ${round}: ${op.verb} ${op.addr}:${op.port} by ${role}: evaluator ${want.action} ${want.rule}, model ${got.action} ${rule?.rule}\n${text}`);
          return;
        }
        checked++;
      }
    }
  }
  t.pass(`${checked} operations agree`);
});

t.test('unix, raw and packet targets: parsed, refused when malformed, matched and compiled', async (t) => {
  const text = doc(
    's',
    '[r]',
    '  allow:\n    - id: sockets\n      connect: ["unix:/run/app/", "unix:@bus", "raw:icmp", "packet:*"]\n  block:\n    - id: secret\n      connect: ["unix:/run/app/admin.sock", "raw:*"]\n',
  );
  const ps = policies(text);
  const ev = (socket: Parameters<typeof evaluateOperation>[1] extends infer O ? (O extends { socket?: infer S } ? S : never) : never) =>
    evaluateOperation(ps, { role: 'r', verb: 'connect', port: 0, socket });
  t.match(ev({ family: 'unix', path: '/run/app/api.sock' }), { decision: 'allow', rule: 'sockets' });
  t.match(ev({ family: 'unix', path: '/run/app/admin.sock' }), { decision: 'deny', rule: 'secret' });
  t.match(ev({ family: 'unix', path: '/run/other.sock' }), { decision: 'deny', reason: 'default' });
  t.match(ev({ family: 'unix', abstract: 'bus' }), { decision: 'allow' });
  t.match(ev({ family: 'unix', abstract: 'bus2' }), { decision: 'deny' });
  t.match(ev({ family: 'raw', protocol: 1 }), { decision: 'deny', rule: 'secret' }, 'raw:* blocked beats raw:icmp allowed');
  t.match(ev({ family: 'packet', protocol: 0x806 }), { decision: 'allow' });
  t.match(evaluateOperation(ps, { role: 'r', verb: 'connect', addr: '10.0.0.1', port: 80 }), { decision: 'deny', reason: 'default' }, 'socket targets never match IP destinations');

  const c = compile(text);
  const unix = c.unixEntries.map((e) => [e.data.toString('latin1'), e.verdict.action]);
  t.same(unix, [
    ['', C.HELM_ACTION_NONE],
    ['/run/app/', C.HELM_ACTION_ALLOW],
    ['/run/app/admin.sock\0', C.HELM_ACTION_DENY],
    ['@bus\0', C.HELM_ACTION_ALLOW],
  ]);
  const sockets = c.socketEntries.map((e) => [e.kind, e.protocol, e.verdict.action]);
  t.same(sockets, [
    [C.HELM_SOCKET_RAW, C.HELM_ANY_PROTOCOL, C.HELM_ACTION_DENY],
    [C.HELM_SOCKET_RAW, 1, C.HELM_ACTION_DENY],
    [C.HELM_SOCKET_PACKET, C.HELM_ANY_PROTOCOL, C.HELM_ACTION_ALLOW],
  ]);

  for (const [bad, why] of [
    ['unix:run/x.sock', /needs an absolute path/],
    ['unix:@', /empty abstract name/],
    ['unix:@a*b', /"\*" inside an abstract name/],
    ['raw:bogus', /unknown protocol "bogus"/],
    ['raw:300', /out of range/],
    ['packet:icmp', /bad EtherType/],
  ] as const) {
    let caught: unknown;
    try {
      policies(doc('b', '[r]', `  allow:\n    - connect: ["${bad}"]\n`));
    } catch (e) {
      caught = e;
    }
    t.match((caught as Error)?.message, why, bad);
  }
  let bindErr: unknown;
  try {
    policies(doc('b', '[r]', '  allow:\n    - bind: ["unix:/run/x.sock"]\n'));
  } catch (e) {
    bindErr = e;
  }
  t.match((bindErr as Error)?.message, /unix sockets go under connect/);
});

t.test('with exe, label and uid conditions: model of the kernel = the reference evaluator (random policies)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0xc0de);
  const rng = new Rng(seed);
  let checked = 0;
  let conditional = 0;
  for (let round = 0; round < 150; round++) {
    const text = randomNetworkPolicy(rng, '', { conditions: true });
    const ps = policies(text);
    const c = compilePolicy(ps, { stat: noStat });
    conditional += c.condLists.length;
    for (const role of ROLES) {
      for (const op of randomNetworkOps(rng, role, 40)) {
        const ctx = randomContext(rng);
        const want = evaluateOperation(ps, { role, verb: op.verb, addr: op.addr, port: op.port, ...ctx });
        const got = kernelModel(c, role, op.verb, op.addr, op.port, [], ctx);
        const rule = got.v ? c.rules[got.v.ruleId - 1] : undefined;
        if (got.action !== want.action || (rule?.rule ?? 'default') !== (want.rule ?? 'default')) {
          t.fail(`seed ${seed} round ${round}: ${op.verb} ${op.addr}:${op.port} by ${role} [${showContext(ctx)}]: evaluator ${want.action} ${want.rule}, model ${got.action} ${rule?.rule}\n${text}`);
          return;
        }
        checked++;
      }
    }
  }
  t.ok(conditional > 100, `${conditional} condition lists`);
  t.pass(`${checked} operations agree`);
});

t.test('a host-name rule with conditions: the name and the address join after each is made concrete', async (t) => {
  const text = doc(
    'n',
    '[r]',
    '  allow:\n    - id: any-443\n      connect: ["*:443"]\n  contextual:\n' +
      '    - id: git-only\n      connect: ["*.github.com:443"]\n      when: { exe: /usr/lib/git-core/ }\n' +
      '    - id: ops-team\n      connect: ["10.0.0.0/8:443"]\n      when: { label: { team: ops }, uid: [1000] }\n',
  );
  const ps = policies(text);
  const c = compilePolicy(ps, { stat: noStat });
  const gh = c.nameEntries.find((e) => e.pattern === '*.github.com')!;
  t.equal(gh.allowsSomething, true, "the name's DNS queries are answered: some process may connect");
  const cases: [string, string[], ProcessContext, 'allow' | 'deny', string][] = [
    ['1.2.3.4', ['api.github.com'], { exe: '/usr/lib/git-core/git-remote-https', uid: 0 }, 'allow', 'git-only'],
    ['1.2.3.4', ['api.github.com'], { exe: '/usr/bin/curl', uid: 0 }, 'deny', 'git-only'],
    ['1.2.3.4', [], { exe: '/usr/bin/curl', uid: 0 }, 'allow', 'any-443'],
    ['10.1.1.1', ['api.github.com'], { exe: '/usr/bin/curl', uid: 1000, labels: { team: 'ops' } }, 'allow', 'ops-team'],
    ['10.1.1.1', ['api.github.com'], { exe: '/usr/lib/git-core/git', uid: 0, labels: { team: 'ops' } }, 'allow', 'git-only'],
    ['10.1.1.1', [], { exe: '/usr/bin/curl', uid: 0, labels: { team: 'ops' } }, 'deny', 'ops-team'],
  ];
  for (const [addr, learned, ctx, action, rule] of cases) {
    const host = learned[0];
    const want = evaluateOperation(ps, { role: 'r', verb: 'connect', addr, port: 443, ...(host ? { host } : {}), ...ctx });
    const got = kernelModel(c, 'r', 'connect', addr, 443, learned, ctx);
    const what = `${addr}${host ? ` (${host})` : ''} [${showContext(ctx)}]`;
    t.same([want.action, want.rule], [action, rule], `evaluator: ${what}`);
    t.same([got.action, got.v && c.rules[got.v.ruleId - 1].rule], [action, rule], `model: ${what}`);
  }
});

t.test('unix and raw socket rules with conditions: the entries name condition lists the kernel resolves', async (t) => {
  const text = doc(
    's',
    '[r]',
    '  allow:\n    - id: app\n      connect: ["unix:/run/app/", "raw:*"]\n  contextual:\n' +
      '    - id: admin-by-exe\n      connect: ["unix:/run/app/admin.sock"]\n      when: { exe: /usr/sbin/appctl }\n' +
      '    - id: ping-as-root\n      connect: ["raw:icmp"]\n      when: { uid: 0, label: { net: diag } }\n',
  );
  const ps = policies(text);
  const c = compile(text);
  const roleId = c.roles.get('r');
  // The kernel's lookups (decide_unix, decide_socket), then the verdict made concrete for the process.
  const unixModel = (path: string, ctx: ProcessContext) => {
    const key = Buffer.from(`${path}\0`, 'latin1');
    const e = c.unixEntries
      .filter((x) => x.roleId === roleId && x.data.length <= key.length && key.subarray(0, x.data.length).equals(x.data))
      .sort((a, b) => b.data.length - a.data.length)[0];
    return resolveModel(c, e.verdict, ctx);
  };
  const rawModel = (protocol: number, ctx: ProcessContext) => {
    const find = (p: number) => c.socketEntries.find((x) => x.roleId === roleId && x.kind === C.HELM_SOCKET_RAW && x.protocol === p);
    const e = find(protocol)?.verdict.action ? find(protocol)! : find(C.HELM_ANY_PROTOCOL)!;
    return resolveModel(c, e.verdict, ctx);
  };
  const name = (v: Verdict) => (v.action === C.HELM_ACTION_ALLOW ? 'allow' : 'deny') + (v.ruleId ? ` ${c.rules[v.ruleId - 1].rule}` : '');
  const cases: [string, Parameters<typeof evaluateOperation>[1], () => Verdict][] = [];
  for (const ctx of [{ exe: '/usr/sbin/appctl', uid: 0 }, { exe: '/usr/bin/python3', uid: 0 }, { exe: '/usr/sbin/appctl', uid: 1000, labels: { net: 'diag' } }] as ProcessContext[]) {
    for (const p of ['/run/app/admin.sock', '/run/app/api.sock']) {
      cases.push([`unix ${p} [${showContext(ctx)}]`, { role: 'r', verb: 'connect', port: 0, socket: { family: 'unix', path: p }, ...ctx }, () => unixModel(p, ctx)]);
    }
    for (const labels of [{}, { net: 'diag' }] as Record<string, string>[]) {
      const withLabels = { ...ctx, labels };
      cases.push([`raw icmp [${showContext(withLabels)}]`, { role: 'r', verb: 'connect', port: 0, socket: { family: 'raw', protocol: 1 }, ...withLabels }, () => rawModel(1, withLabels)]);
    }
  }
  const seen = new Set<string>();
  for (const [what, op, model] of cases) {
    const want = evaluateOperation(ps, op);
    const got = name(model());
    t.equal(got, `${want.action}${want.rule ? ` ${want.rule}` : ''}`, what);
    seen.add(got);
  }
  t.same([...seen].sort(), ['allow admin-by-exe', 'allow app', 'allow ping-as-root', 'deny admin-by-exe', 'deny ping-as-root'], 'each rule allowed and denied');
});
