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
// Randomness


// ---------------------------------------------------------------------------------------------
// Material

const KEYS = [
  'apiVersion', 'kind', 'metadata', 'name', 'spec', 'roles', 'mode', 'allow', 'block', 'contextual',
  'id', 'read', 'write', 'exec', 'connect', 'bind', 'when', 'role', 'exe', 'label', 'uid',
  'blok', 'Allow', 'rol', 'roles ', '', '<<', 'team', 'env', '0', 'é', 'a\u0000b',
];

const STRINGS = [
  '', ' ', '*', '**', '"*"', '/', '//', '/./', '/..', '/a/../b', '/a/./b/', 'rel/path', '~/x', './x',
  '/a\u0000b', '/a\nb', '/a\tb', '/a\u007fb', '/a\u0085b', '/é/ü/', '/日本/語', '/\u202e/rtl', '/x\u2028y', '/\ud800',
  '/\ufeff', '/' + 'a'.repeat(249), '/' + 'a'.repeat(250), '/' + 'a'.repeat(251), '/' + 'é'.repeat(130), '/' + 'a/'.repeat(140),
  'x'.repeat(70000), '/etc/shadow', '/usr/', '/lib/', '/proc/self/', '/home/*/', '/srv/agent/out/',
  '127.0.0.1:8080', '[::1]:53', '[::1]', '::1:53', '[::1]:', '10.0.0.1/8:80', '10.0.0.0/8:80', '10.0.0.0/33:1', '0.0.0.0/0:*',
  '*:*', '*:0', '*:1', '*:65535', '*:65536', '*:1-0', '*:08', '*:1-65535', '*:-1', '*.example.com:1', '*.*.x:1', '*.:1',
  'a_b.example:1', 'xn--bcher-kva.example:443', 'éxample.com:1', 'a..b:1', '1.2.3:4', '1.2.3.4.5:6', '01.2.3.4:5',
  '[fe80::1%eth0]:1', '[::ffff:1.2.3.4]:1', '[::ffff:1.2.3.0/120]:1', '[2001:db8::/32]:443', '[1.2.3.4]:5', 'API.Stripe.COM:443',
  'api.stripe.com.:443', '-a.example:1', 'a-.example:1', '1.example.123:1', 'a'.repeat(64) + '.com:1', `${'a.'.repeat(130)}com:1`,
  'enforce', 'dry-run', 'Enforce', 'dryrun', 'helm/v1', 'helm/v2', 'Policy', 'policy', 'payment_processor', 'analyst', 'a b',
  '-', '.', 'a', 'A', 'id-1', '9x', '_x', 'ünïcode', 'true', 'null', '~', '0x10', '1e3', '0o17', '.inf', 'yes', '%x', '&a', '!!str',
  '#', ': x', '- x', '{', '[', '"', "'", '\\', '|', '>', '\t',
];

/** Targets the parser accepts, in every form, to keep many inputs valid. */
const VALID: Record<string, string[]> = {
  path: ['/', '/etc/shadow', '/usr/', '/srv//agent/./out/', '/a/../b', '/é/ü/', '/日本/', '/proc/self/', '/' + 'a'.repeat(249), '/x y', '/a\u0085b', '/\u2028'],
  connect: [
    '127.0.0.1:8080', '[::1]:53', '[2001:DB8:0:0::1]:443', '10.0.0.0/8:8000-8999', '0.0.0.0/0:*', '[fd00::/8]:*', '[::ffff:1.2.3.0/120]:1',
    '*:53', '*:*', '*:1-65535', 'api.stripe.com:443', 'API.Stripe.COM:443', '*.github.com:443', 'xn--bcher-kva.example:443', 'a-b.c9:1',
  ],
  bind: ['0.0.0.0:8080', '[::]:9000-9001', '*:*', '127.0.0.1/32:1', '[::1]:65535'],
};

function validTarget(rng: Rng, verb: string): string {
  return rng.pick(VALID[verb === 'connect' || verb === 'bind' ? verb : 'path']);
}

function randomScalar(rng: Rng): unknown {
  switch (rng.int(8)) {
    case 0:
      return rng.pick([0, 1, -1, 1000, 1.5, 4294967294, 4294967295, 2 ** 53, -0, 1e21]);
    case 1:
      return rng.chance(0.5);
    case 2:
      return null;
    default:
      return rng.pick(STRINGS);
  }
}

function randomValue(rng: Rng, depth: number): unknown {
  if (depth <= 0 || rng.chance(0.45)) return randomScalar(rng);
  if (rng.chance(0.5)) return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth - 1));
  const o: Record<string, unknown> = {};
  for (let i = rng.int(5); i > 0; i--) o[rng.pick(KEYS)] = randomValue(rng, depth - 1);
  return o;
}

/**
 * A policy-shaped object: every part is chosen valid most of the time and something odd
 * otherwise, so that many are valid (in every form the language has) and many almost valid.
 */
function randomPolicy(rng: Rng, index: number): unknown {
  const odd = () => rng.chance(0.04);
  const pickOr = <T>(valid: readonly T[], bad: readonly unknown[]): T | unknown => (odd() ? rng.pick(bad) : rng.pick(valid));
  let ids = 0;
  const rule = (kind: string): Record<string, unknown> => {
    const r: Record<string, unknown> = {};
    if (rng.chance(0.5)) r.id = odd() ? rng.pick(STRINGS) : `${rng.pick(['r', 'rule-', 'R.', 'x_'])}${ids++}`;
    const verbs = ['read', 'write', 'exec', 'connect', 'bind'].filter(() => rng.chance(0.35));
    if (verbs.length === 0 && !odd()) verbs.push(rng.pick(['read', 'write', 'exec', 'connect', 'bind']));
    for (const verb of verbs) {
      const one = () => (odd() ? rng.pick(STRINGS) : validTarget(rng, verb));
      const n = rng.int(3);
      r[verb] = n === 0 ? one() : Array.from({ length: odd() ? 0 : n }, one);
    }
    if (kind === 'contextual' || odd()) {
      const w: Record<string, unknown> = {};
      if (rng.chance(0.6)) w.role = rng.chance(0.5) ? pickOr(['r'], ['*', 'x y', 7]) : ['r', pickOr(['s', 'r'], ['*', 'x y', null])];
      if (rng.chance(0.3)) w.exe = odd() ? rng.pick(STRINGS) : validTarget(rng, 'exec');
      if (rng.chance(0.3)) w.label = odd() ? rng.pick([{}, { team: 1 }, { '': 'a' }, { team: null }]) : { team: rng.pick(['a', '', 'é', 'x y']) };
      if (rng.chance(0.3)) w.uid = pickOr([0, 1000, 4294967294, [0, 1]], [-1, 4294967295, [], '0', 1.5]);
      if (Object.keys(w).length === 0 && !odd()) w.role = 'r';
      r.when = w;
    }
    return r;
  };
  const spec: Record<string, unknown> = { roles: pickOr([['r'], ['r', 's'], ['*'], '*', ['s', 'r', 'r.x-y_z']], ['r', [], ['*', 'r'], ['x y'], null]) };
  if (rng.chance(0.5)) spec.mode = pickOr(['enforce', 'dry-run'], ['Enforce', null, 1]);
  for (const kind of ['allow', 'block', 'contextual']) {
    if (rng.chance(0.6)) spec[kind] = Array.from({ length: rng.int(3) }, () => rule(kind));
  }
  const name = odd() ? rng.pick(['P', '', '-a', 'a b', 7, 'p0']) : `${rng.pick(['p', 'q', 'a.b-c_d', '0'])}${index}`;
  return { apiVersion: pickOr(['helm/v1'], ['helm/v2', 1]), kind: pickOr(['Policy'], ['policy']), metadata: { name }, spec };
}

/** Every place in a JSON value: the container and the key or index there. */
function places(v: unknown, out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = []): typeof out {
  if (Array.isArray(v)) {
    v.forEach((x, i) => {
      out.push({ parent: v, key: i });
      places(x, out);
    });
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      out.push({ parent: v as Record<string, unknown>, key: k });
      places(x, out);
    }
  }
  return out;
}

/** One structural change of a (copied) JSON value. */
function mutateValue(rng: Rng, value: unknown): unknown {
  const v = JSON.parse(JSON.stringify(value)) as unknown;
  const all = places(v);
  if (all.length === 0) return randomValue(rng, 3);
  const { parent, key } = rng.pick(all);
  const get = () => (parent as Record<string | number, unknown>)[key];
  const set = (x: unknown) => ((parent as Record<string | number, unknown>)[key] = x);
  switch (rng.int(9)) {
    case 0: // delete
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
      break;
    case 1: {
      // rename a key (or an element's neighbour)
      if (Array.isArray(parent)) parent.push(get());
      else {
        const x = get();
        delete parent[key as string];
        const k = String(key);
        const typo = rng.chance(0.5) ? rng.pick(KEYS) : k.slice(0, rng.int(k.length + 1)) + rng.pick(['', 'x', 's', ' ']) + k.slice(rng.int(k.length + 1));
        parent[typo] = x;
      }
      break;
    }
    case 2: // another type
      set(randomScalar(rng));
      break;
    case 3: // a random structure
      set(randomValue(rng, 3));
      break;
    case 4: // one item <-> a list
      set(Array.isArray(get()) ? ((get() as unknown[])[0] ?? null) : rng.chance(0.8) ? [get()] : []);
      break;
    case 5: // duplicate somewhere else
      {
        const other = rng.pick(all);
        (other.parent as Record<string | number, unknown>)[other.key] = JSON.parse(JSON.stringify(get() ?? null));
      }
      break;
    case 6: // wrap in a mapping (a misplaced level)
      set({ [rng.pick(KEYS)]: get() });
      break;
    case 7: // an interesting string, or a valid target in place of a string
      set(typeof get() === 'string' && rng.chance(0.5) ? validTarget(rng, rng.pick(['read', 'connect', 'bind'])) : rng.pick(STRINGS));
      break;
    default: // a new key
      if (!Array.isArray(parent) && get() !== null && typeof get() === 'object' && !Array.isArray(get())) {
        (get() as Record<string, unknown>)[rng.pick(KEYS)] = randomValue(rng, 2);
      } else set(randomValue(rng, 2));
  }
  return v;
}

const SPECIAL_TEXT = [':', '-', ' ', '  ', '\n', '"', "'", '[', ']', '{', '}', ',', '*', '&', '!', '%', '#', '|', '>', '?', '@', '`', '\t', '\r', '\0', '\ufeff', '\u2028', '\u0085', '---\n', '...\n', '%YAML 1.1\n', '!!binary ', '<<: ', '\\', 'é', '\ud83d\ude00', '\ud800'];

/** One textual change: truncation, a character or string in or out, indentation, lines moved. */
function mutateText(rng: Rng, text: string): string {
  const at = rng.int(text.length + 1);
  const lines = text.split('\n');
  const line = rng.int(lines.length);
  switch (rng.int(8)) {
    case 0:
      return text.slice(0, at);
    case 1:
      return text.slice(0, at) + text.slice(at + 1 + rng.int(3));
    case 2:
      return text.slice(0, at) + rng.pick(SPECIAL_TEXT) + text.slice(at);
    case 3: // indentation
      lines[line] = rng.chance(0.5) ? ' '.repeat(1 + rng.int(3)) + lines[line] : lines[line].replace(/^ {1,2}/, '');
      return lines.join('\n');
    case 4: // a line twice
      lines.splice(line, 0, lines[line]);
      return lines.join('\n');
    case 5: {
      const other = rng.int(lines.length);
      [lines[line], lines[other]] = [lines[other], lines[line]];
      return lines.join('\n');
    }
    case 6: // a huge string
      return text.slice(0, at) + rng.pick(['a', '/', '[', '{', '- ', 'é']).repeat(1000 + rng.int(30000)) + text.slice(at);
    default: // replace a word with an interesting string
      return text.replace(/[A-Za-z0-9_./-]+/g, (w) => (rng.chance(0.05) ? rng.pick(STRINGS).replace(/\n/g, ' ') : w));
  }
}

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

const seeds: { file: string; text: string }[] = [
  ...['full.yaml', 'object.json', 'array.json', 'over-kernel-limits.yaml'].map((f) => path.join(ROOT, 'test/unit/fixtures/policies/valid', f)),
  path.join(ROOT, 'policies/default.yaml'),
  ...fs
    .readdirSync(path.join(ROOT, 'policies/examples'))
    .filter((f) => f.endsWith('.yaml') && !f.endsWith('.cases.yaml'))
    .sort()
    .map((f) => path.join(ROOT, 'policies/examples', f)),
].map((file) => ({ file: path.basename(file), text: fs.readFileSync(file, 'utf8') }));

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
      let value: unknown = seed.file.endsWith('.json') ? JSON.parse(seed.text) : schemaValues(seed.text, seed.file)[0];
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
