// Fuzzing the policy parser and compiler (issue 3, "Bad input"): random and mutated documents —
// starting from the valid fixtures and the shipped examples, with keys, types, values and
// indentation changed, documents truncated, unicode, NUL and huge strings injected — go through
// parsePolicySource and compilePolicy. For every one:
//   - nothing but a PolicyError is ever thrown (by the parser, the compiler, or the evaluator
//     asked about a few operations), and every diagnostic is located inside the document;
//   - nothing takes long (each input is timed);
//   - nothing the JSON Schema (policies/policy.schema.json, checked with ajv) rejects is accepted.
// Seeded and bounded: HELM_FUZZ_SEED and HELM_FUZZ_N change the run (the seed is printed).

import t from 'tap';
import { Rng } from '../rng';
import { mutateText, mutateValue, policySeeds, randomPolicy, randomValue, seedValue } from '../policy-fuzz';
import * as fs from 'fs';
import * as path from 'path';
import { performance } from 'perf_hooks';
import Ajv2020 from 'ajv/dist/2020';
import { isScalar, parseAllDocuments, stringify } from 'yaml';
import { compilePolicy } from '../../daemon/policy/compile';
import { evaluateOperation, type Operation } from '../../daemon/policy/evaluate';
import { parsePolicySource } from '../../daemon/policy/parse';
import { PolicyError, type Policy } from '../../daemon/policy/types';

const ROOT = path.resolve(__dirname, '../../..');
const SEED = Number(process.env.HELM_FUZZ_SEED ?? 0x6a1f00d);
const N = Number(process.env.HELM_FUZZ_N ?? 2500);
/**
 * Longest any one input may take, parse + compile + evaluate (ms): a hang detector, not a
 * benchmark. The slowest input takes ~1 s alone; on a loaded 2-core machine (CI beside the VM
 * suite) over 2 s was seen, so the bound is far above both.
 */
const SLOW_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// The properties

const ajv = new Ajv2020({ allErrors: false });
const schema = ajv.compile(JSON.parse(fs.readFileSync(path.join(ROOT, 'policies/policy.schema.json'), 'utf8')));

/**
 * The documents of a source as JSON values, as the schema sees them: a .json file is one value;
 * each YAML document one (documents with nothing in them hold no policy, as for the parser).
 */
function schemaValues(text: string, file: string): unknown[] {
  if (text.startsWith('\ufeff')) text = text.slice(1);
  if (file.endsWith('.json')) return [JSON.parse(text)];
  return parseAllDocuments(text, { version: '1.2' })
    .filter((d) => !(d.contents === null || (isScalar(d.contents) && d.contents.value === null && d.contents.source === '')))
    .map((d) => d.toJS({ maxAliasCount: -1 }));
}

const OPS: Operation[] = [
  { role: 'r', verb: 'read', path: '/etc/shadow' },
  { role: 's', verb: 'write', path: '/srv/agent/out', isDir: true },
  { role: 'r', verb: 'exec', path: '/usr/bin/python3', exe: '/usr/bin/python3', uid: 0, labels: { team: 'a' } },
  { role: 'r', verb: 'connect', addr: '::ffff:10.0.0.1', port: 80, host: 'api.stripe.com' },
  { role: 'x', verb: 'bind', addr: '::1', port: 53 },
];

interface Stats {
  inputs: number;
  accepted: number;
  rejected: number;
  compiled: number;
  refusedByCompiler: number;
  schemaChecked: number;
  slowest: { ms: number; what: string };
}


const seeds = policySeeds();

t.test(`the seeds are valid for the parser and the schema alike`, async (t) => {
  t.ok(seeds.length >= 8, `${seeds.length} seeds`);
  for (const s of seeds) {
    t.doesNotThrow(() => parsePolicySource(s.text, s.file), s.file);
    for (const v of schemaValues(s.text, s.file)) t.ok(schema(v), `${s.file}: schema accepts it`);
  }
  // The schema check can fail: a misspelt key is rejected by both.
  const bad = 'apiVersion: helm/v1\nkind: Policy\nmetadata: { name: p }\nspec:\n  roles: [r]\n  blok: []\n';
  t.notOk(schema(schemaValues(bad, 'x.yaml')[0]));
  t.throws(() => parsePolicySource(bad, 'x.yaml'), PolicyError);
});

t.test(`random and mutated documents (seed ${SEED}, ${N} inputs)`, async (t) => {
  const rng = new Rng(SEED);
  const stats: Stats = { inputs: 0, accepted: 0, rejected: 0, compiled: 0, refusedByCompiler: 0, schemaChecked: 0, slowest: { ms: 0, what: '' } };
  const problems: string[] = [];
  const started = performance.now();
  const byKind: number[] = [];
  const acceptedByKind: number[] = [];

  for (let i = 0; i < N; i++) {
    // An input: a seed mutated a few times (as a tree, re-serialised, or as text), or a random document.
    const seed = rng.pick(seeds);
    const asJson = rng.chance(0.3);
    const file = `fuzz-${i}.${asJson ? 'json' : 'yaml'}`;
    let text: string;
    const kind = rng.int(10);
    if (kind < 3) {
      let value: unknown = seedValue(seed);
      for (let m = 1 + rng.int(3); m > 0; m--) value = mutateValue(rng, value);
      text = asJson ? JSON.stringify(value, null, rng.pick([0, 1, 2, '\t'])) : stringify(value, { version: '1.2' });
    } else if (kind < 6) {
      text = seed.text;
      for (let m = 1 + rng.int(3); m > 0; m--) text = mutateText(rng, text);
    } else if (kind < 9) {
      const docs = Array.from({ length: 1 + rng.int(2) }, (_, d) => randomPolicy(rng, d));
      text = asJson ? JSON.stringify(docs.length === 1 ? docs[0] : docs) : docs.map((d) => stringify(d, { version: '1.2' })).join('---\n');
    } else {
      const v = randomValue(rng, 4);
      text = asJson ? JSON.stringify(v) ?? 'null' : stringify(v, { version: '1.2' });
    }
    const what = `input ${i} (${file}, from ${seed.file}, kind ${kind})`;
    stats.inputs++;
    if (process.env.HELM_FUZZ_DUMP) fs.writeFileSync(path.join(process.env.HELM_FUZZ_DUMP, file), text);

    const t0 = performance.now();
    let policies: Policy[] | undefined;
    try {
      policies = parsePolicySource(text, file);
      stats.accepted++;
      acceptedByKind[kind] = (acceptedByKind[kind] ?? 0) + 1;
    } catch (e) {
      if (!(e instanceof PolicyError)) {
        problems.push(`${what}: the parser threw ${(e as Error).stack}\n--- input ---\n${text.slice(0, 2000)}`);
        continue;
      }
      stats.rejected++;
      const lineCount = text.split(/\r\n|\r|\n/).length;
      for (const d of e.diagnostics) {
        if (d.loc.file !== file || !(d.loc.line >= 1 && d.loc.line <= lineCount) || !(d.loc.col >= 1) || d.message === '') {
          problems.push(`${what}: badly located diagnostic ${JSON.stringify(d)}`);
        }
      }
    }
    if (policies) {
      try {
        compilePolicy(policies, { stat: () => undefined, readdir: () => [] });
        stats.compiled++;
      } catch (e) {
        if (e instanceof PolicyError) stats.refusedByCompiler++;
        else problems.push(`${what}: the compiler threw ${(e as Error).stack}\n--- input ---\n${text.slice(0, 2000)}`);
      }
      for (const op of OPS) {
        try {
          evaluateOperation(policies, op);
        } catch (e) {
          problems.push(`${what}: the evaluator threw on ${JSON.stringify(op)}: ${(e as Error).stack}\n--- input ---\n${text.slice(0, 2000)}`);
        }
      }
    }
    const ms = performance.now() - t0;
    byKind[kind] = (byKind[kind] ?? 0) + ms;
    if (ms > stats.slowest.ms) stats.slowest = { ms, what };
    if (ms > SLOW_MS) problems.push(`${what}: took ${ms.toFixed(0)} ms`);

    if (policies) {
      stats.schemaChecked++;
      for (const v of schemaValues(text, file)) {
        if (!schema(v)) {
          problems.push(`${what}: accepted by the parser, rejected by the schema: ${ajv.errorsText(schema.errors)}\n--- input ---\n${text.slice(0, 2000)}`);
        }
      }
    }
    if (problems.length >= 10) break; // enough to act on
  }

  const elapsed = performance.now() - started;
  t.comment(
    `seed ${SEED}: ${stats.inputs} inputs in ${(elapsed / 1000).toFixed(1)} s; ${stats.accepted} accepted (${stats.compiled} compiled, ${stats.refusedByCompiler} refused by the compiler), ` +
      `${stats.rejected} rejected; slowest ${stats.slowest.ms.toFixed(1)} ms (${stats.slowest.what}); ms by kind ${byKind.map((x) => x.toFixed(0)).join(' ')}; accepted by kind ${[...acceptedByKind].map((x) => x ?? 0).join(' ')}`,
  );
  t.same(problems, [], 'no crash, no badly located diagnostic, no hang, nothing accepted that the schema rejects');
  t.equal(stats.inputs, N, 'every input ran');
  // The run must exercise both sides, or it proves nothing.
  t.ok(stats.accepted >= N / 10, `at least a tenth accepted (${stats.accepted})`);
  t.ok(stats.rejected >= N / 3, `at least a third rejected (${stats.rejected})`);
  t.ok(stats.compiled >= N / 50, `some compiled (${stats.compiled})`);
  t.ok(stats.refusedByCompiler >= 1, `some refused by the compiler (${stats.refusedByCompiler})`);
});
