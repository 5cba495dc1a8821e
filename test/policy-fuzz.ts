// Random and mutated policy documents, for the tests that fuzz the policy parser
// (unit/fuzz.test.ts: nothing crashes, nothing is mislocated; unit/json-tree.test.ts: JSON read
// directly and through the YAML parser gives the same). Seeded through test/rng.ts.

import * as fs from 'fs';
import * as path from 'path';
import { parseAllDocuments } from 'yaml';
import type { Rng } from './rng';

const ROOT = path.resolve(__dirname, '../..');

/** Valid policy files to mutate: the valid fixtures and the shipped policies. */
export function policySeeds(): { file: string; text: string }[] {
  return [
    ...['full.yaml', 'object.json', 'array.json', 'over-kernel-limits.yaml'].map((f) => path.join(ROOT, 'test/unit/fixtures/policies/valid', f)),
    path.join(ROOT, 'policies/default.yaml'),
    ...fs
      .readdirSync(path.join(ROOT, 'policies/examples'))
      .filter((f) => f.endsWith('.yaml') && !f.endsWith('.cases.yaml'))
      .sort()
      .map((f) => path.join(ROOT, 'policies/examples', f)),
  ].map((file) => ({ file: path.basename(file), text: fs.readFileSync(file, 'utf8') }));
}

/** A seed's (first) policy as a JSON value, to mutate as a tree. */
export function seedValue(seed: { file: string; text: string }): unknown {
  if (seed.file.endsWith('.json')) return JSON.parse(seed.text);
  return parseAllDocuments(seed.text, { version: '1.2' })[0].toJS({ maxAliasCount: -1 });
}
// ---------------------------------------------------------------------------------------------
// Material

export const KEYS = [
  'apiVersion', 'kind', 'metadata', 'name', 'spec', 'roles', 'mode', 'allow', 'block', 'contextual',
  'id', 'read', 'write', 'exec', 'connect', 'bind', 'when', 'role', 'exe', 'label', 'uid',
  'blok', 'Allow', 'rol', 'roles ', '', '<<', 'team', 'env', '0', 'é', 'a\u0000b',
];

export const STRINGS = [
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
export const VALID: Record<string, string[]> = {
  path: ['/', '/etc/shadow', '/usr/', '/srv//agent/./out/', '/a/../b', '/é/ü/', '/日本/', '/proc/self/', '/' + 'a'.repeat(249), '/x y', '/a\u0085b', '/\u2028'],
  connect: [
    '127.0.0.1:8080', '[::1]:53', '[2001:DB8:0:0::1]:443', '10.0.0.0/8:8000-8999', '0.0.0.0/0:*', '[fd00::/8]:*', '[::ffff:1.2.3.0/120]:1',
    '*:53', '*:*', '*:1-65535', 'api.stripe.com:443', 'API.Stripe.COM:443', '*.github.com:443', 'xn--bcher-kva.example:443', 'a-b.c9:1',
  ],
  bind: ['0.0.0.0:8080', '[::]:9000-9001', '*:*', '127.0.0.1/32:1', '[::1]:65535'],
};

export function validTarget(rng: Rng, verb: string): string {
  return rng.pick(VALID[verb === 'connect' || verb === 'bind' ? verb : 'path']);
}

export function randomScalar(rng: Rng): unknown {
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

export function randomValue(rng: Rng, depth: number): unknown {
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
export function randomPolicy(rng: Rng, index: number): unknown {
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
export function places(v: unknown, out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = []): typeof out {
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
export function mutateValue(rng: Rng, value: unknown): unknown {
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

export const SPECIAL_TEXT = [':', '-', ' ', '  ', '\n', '"', "'", '[', ']', '{', '}', ',', '*', '&', '!', '%', '#', '|', '>', '?', '@', '`', '\t', '\r', '\0', '\ufeff', '\u2028', '\u0085', '---\n', '...\n', '%YAML 1.1\n', '!!binary ', '<<: ', '\\', 'é', '\ud83d\ude00', '\ud800'];

/** One textual change: truncation, a character or string in or out, indentation, lines moved. */
export function mutateText(rng: Rng, text: string): string {
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
