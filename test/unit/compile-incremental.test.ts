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
import { EVAL_ROLES, POLICY_NAMES, randomConditionalPolicyDoc, randomEdit, randomPolicyDoc } from '../support/random-policies';

/** Every byte a compile gives the kernel, and every name it gives helmd, as one text. */
function image(c: CompiledPolicy): string {
  const paths = c.pathEntries.map((e) => `${encodePathKey(e.roleId, e.data).toString('hex')}=${encodePathValue(e.verdicts, e.defaultMode).toString('hex')}`);
  const rest = { ...c, pathEntries: undefined, roles: [...c.roles], nameIds: [...c.nameIds], labelIds: [...c.labelIds] };
  return `${paths.join('\n')}\n${JSON.stringify(rest, (_, v) => (typeof v === 'bigint' ? `${v}n` : Buffer.isBuffer(v) ? v.toString('hex') : v))}`;
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
      .shuffle(POLICY_NAMES)
      .slice(0, 1 + rng.int(4))
      .map((n) => (conditional ? randomConditionalPolicyDoc(rng, n) : randomPolicyDoc(rng, n)));
    const compiler = new IncrementalCompiler();
    const extraRoles = [...EVAL_ROLES];
    let ids: Pick<CompileOptions, 'roleIds' | 'nameIds' | 'labelIds'> = {};
    let previous: CompiledPolicy | undefined;
    const history: string[] = ['initial'];
    for (let step = 0; step < 20; step++) {
      if (step > 0) history.push(rng.chance(0.05) ? (extraRoles.push(`x${step}`), `role x${step} attached`) : randomEdit(rng, docs, conditional));
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
