// The incremental compiler (daemon/policy/compile-incremental.ts) against a full compile:
// over random policies and random edits of them (rules changed, added and removed, modes,
// roles, policies), each incremental compile must give exactly the bytes of the full one.
// Seeded: HELM_SEED replays a run (the seed and the failing step are printed).
import t from 'tap';
import { stringify } from 'yaml';
import { Rng } from '../rng';
import { encodePathKey, encodePathValue } from '../../daemon/kernel/layout';
import { compilePolicy, type CompiledPolicy, type CompileOptions } from '../../daemon/policy/compile';
import { IncrementalCompiler } from '../../daemon/policy/compile-incremental';
import { parsePolicySource } from '../../daemon/policy/parse';
import { FILE_VERBS } from '../../daemon/policy/types';
import { EVAL_ROLES, RANDOM_ROLES, randomConditionalPolicyDoc, randomPolicyDoc, randomTarget, type PolicyDoc } from '../support/random-policies';

const NAMES = ['p0', 'p1', 'p2', 'p3', 'p4'];
const KINDS = ['allow', 'block', 'contextual'] as const;

/** Every byte a compile gives the kernel, and every name it gives helmd, as one text. */
function image(c: CompiledPolicy): string {
  const paths = c.pathEntries.map((e) => `${encodePathKey(e.roleId, e.data).toString('hex')}=${encodePathValue(e.verdicts, e.defaultMode).toString('hex')}`);
  const rest = { ...c, pathEntries: undefined, roles: [...c.roles], nameIds: [...c.nameIds], labelIds: [...c.labelIds] };
  return `${paths.join('\n')}\n${JSON.stringify(rest, (_, v) => (typeof v === 'bigint' ? `${v}n` : Buffer.isBuffer(v) ? v.toString('hex') : v))}`;
}

type RuleDoc = Record<string, unknown>;

function rulesOf(doc: PolicyDoc, kind: (typeof KINDS)[number]): RuleDoc[] {
  return (doc.spec[kind] as RuleDoc[] | undefined) ?? [];
}

/** One random edit of the documents (in place); returns what it did. */
function edit(rng: Rng, docs: PolicyDoc[], conditional: boolean): string {
  const doc = rng.pick(docs);
  const name = doc.metadata.name;
  const withRules = KINDS.filter((k) => rulesOf(doc, k).length > 0);
  const roles = doc.spec.roles as string[];
  const roleChoices = roles[0] === '*' ? EVAL_ROLES : roles;
  const what = rng.int(100);
  if (what < 45 && withRules.length) {
    // The common edit: one rule's targets.
    const kind = rng.pick(withRules);
    const rule = rng.pick(rulesOf(doc, kind));
    const verb = rng.pick(FILE_VERBS);
    if (rng.chance(0.3) && rule[verb]) (rule[verb] as string[]).push(randomTarget(rng));
    else rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
    return `${name}: ${kind} rule ${String(rule.id)} ${verb} → ${JSON.stringify(rule[verb])}`;
  }
  if (what < 55) {
    const kind = rng.pick(KINDS);
    const list = rulesOf(doc, kind);
    const rule: RuleDoc = { id: `new-${rng.int(1000)}` };
    for (const verb of rng.subset(FILE_VERBS)) rule[verb] = Array.from({ length: 1 + rng.int(3) }, () => randomTarget(rng));
    if (kind === 'contextual') rule.when = { role: rng.subset(roleChoices) };
    list.splice(rng.int(list.length + 1), 0, rule);
    doc.spec[kind] = list;
    return `${name}: a ${kind} rule added`;
  }
  if (what < 63 && withRules.length) {
    const kind = rng.pick(withRules);
    const list = rulesOf(doc, kind);
    list.splice(rng.int(list.length), 1);
    if (list.length === 0) delete doc.spec[kind];
    return `${name}: a ${kind} rule removed`;
  }
  if (what < 68 && withRules.length) {
    const kind = rng.pick(withRules);
    const rule = rng.pick(rulesOf(doc, kind));
    rule.id = `renamed-${rng.int(1000)}`;
    return `${name}: a ${kind} rule renamed`;
  }
  if (what < 73 && rulesOf(doc, 'contextual').length) {
    const rule = rng.pick(rulesOf(doc, 'contextual'));
    rule.when = { role: rng.subset(roleChoices) };
    return `${name}: a contextual rule's roles → ${JSON.stringify(rule.when)}`;
  }
  if (what < 78) {
    doc.spec.mode = doc.spec.mode === 'enforce' ? 'dry-run' : 'enforce';
    return `${name}: mode → ${String(doc.spec.mode)}`;
  }
  if (what < 83) {
    doc.spec.roles = rng.chance(0.25) ? ['*'] : rng.subset(RANDOM_ROLES);
    // Role conditions name roles the policy has.
    for (const rule of rulesOf(doc, 'contextual')) {
      const when = rule.when as Record<string, unknown> | undefined;
      if (when?.role) when.role = rng.subset((doc.spec.roles as string[])[0] === '*' ? EVAL_ROLES : (doc.spec.roles as string[]));
    }
    return `${name}: roles → ${JSON.stringify(doc.spec.roles)}`;
  }
  if (what < 88) {
    const free = NAMES.filter((n) => !docs.some((d) => d.metadata.name === n));
    if (free.length) {
      const added = rng.pick(free);
      docs.push(conditional && rng.chance(0.5) ? randomConditionalPolicyDoc(rng, added) : randomPolicyDoc(rng, added));
      return `policy ${added} added`;
    }
  }
  if (what < 93 && docs.length > 1) {
    docs.splice(docs.indexOf(doc), 1);
    return `policy ${name} removed`;
  }
  return 'nothing changed';
}

t.test('incremental compiles equal full compiles, byte for byte, over random edits (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x1ac3);
  const rng = new Rng(seed);
  let compiles = 0;
  let kept = 0; // entries an incremental compile kept from the one before (the patch path ran)
  let total = 0;
  for (let run = 0; run < 100; run++) {
    // A fifth of the runs have exe, label and uid conditions (their compiles are full ones).
    const conditional = run % 5 === 4;
    const docs = rng
      .shuffle(NAMES)
      .slice(0, 1 + rng.int(4))
      .map((n) => (conditional ? randomConditionalPolicyDoc(rng, n) : randomPolicyDoc(rng, n)));
    const compiler = new IncrementalCompiler();
    const extraRoles = [...EVAL_ROLES];
    let ids: Pick<CompileOptions, 'roleIds' | 'nameIds' | 'labelIds'> = {};
    let previous: CompiledPolicy | undefined;
    const history: string[] = ['initial'];
    for (let step = 0; step < 20; step++) {
      if (step > 0) history.push(rng.chance(0.05) ? (extraRoles.push(`x${step}`), `role x${step} attached`) : edit(rng, docs, conditional));
      const text = docs.map((d) => stringify(d)).join('---\n');
      const opts: CompileOptions = { stat: () => undefined, readdir: () => [], extraRoles, ...ids };
      const parse = () => parsePolicySource(text, 'x.yaml', { canonicalize: (p) => p });
      const full = compilePolicy(parse(), opts);
      const incremental = compiler.compile(rng.chance(0.5) ? parse() : rng.shuffle(parse()), opts);
      compiles++;
      if (image(incremental) !== image(full)) {
        t.fail(`seed ${seed} (HELM_SEED=${seed}), run ${run}, step ${step}: the incremental compile differs from the full one\nedits: ${history.join('; ')}\n${text}`);
        t.equal(image(incremental), image(full));
        return;
      }
      if (previous) {
        const before = new Set(previous.pathEntries);
        kept += incremental.pathEntries.filter((e) => before.has(e)).length;
        total += incremental.pathEntries.length;
      }
      previous = incremental;
      ids = { roleIds: full.roles, nameIds: full.nameIds, labelIds: full.labelIds };
    }
  }
  t.equal(compiles, 100 * 20, `${compiles} compiles agree (seed ${seed})`);
  t.ok(kept > total / 4, `the patch path ran: ${kept} of ${total} entries kept from the compile before`);
});

t.test('after a compile that throws half way, the next one is still the full one', async (t) => {
  const compiler = new IncrementalCompiler();
  // The block rules' objects are looked up after the role's path entries are patched.
  const opts: CompileOptions = {
    stat: (p) => {
      if (p === '/boom') throw new Error('stat failed');
      return undefined;
    },
    readdir: () => [],
  };
  const parse = (text: string) => parsePolicySource(text, 'x.yaml', { canonicalize: (p) => p });
  const policy = (edited: string, blocked: string) => {
    const allow = Array.from({ length: 10 }, (_, i) => ({ id: `a${i}`, read: [i === 0 ? edited : `/d/${i}/`] }));
    return stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { roles: ['dev'], allow, block: [{ id: 'b', read: [blocked] }] } });
  };
  const first = parse(policy('/d/0/x', '/secret'));
  t.equal(image(compiler.compile(first, opts)), image(compilePolicy(first, opts)));
  t.throws(() => compiler.compile(parse(policy('/d/0/y', '/boom')), opts), { message: 'stat failed' });
  const next = parse(policy('/d/0/z', '/secret'));
  t.equal(image(compiler.compile(next, opts)), image(compilePolicy(next, opts)));
  const again = parse(policy('/d/0/', '/secret'));
  t.equal(image(compiler.compile(again, opts)), image(compilePolicy(again, opts)));
});
