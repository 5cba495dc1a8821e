// JSON policies are read directly (daemon/policy/json-tree.ts), not through the YAML parser: a
// 10,000-rule policy then parses in milliseconds rather than most of a second. That must make
// no difference but the time. For random and mutated JSON documents (test/policy-fuzz.ts, then
// re-indented, re-escaped, with keys repeated, `__proto__`, a BOM, numbers rewritten, nesting
// deepened, or the text broken):
//   - wherever the direct reading gives a tree, the YAML parser reads the same text without a
//     complaint into the same tree, every node at the same line and column;
//   - parsePolicySource gives the same policies, or the same located errors, either way.
// Seeded: HELM_JSON_SEED and HELM_JSON_N change the run; the seed is printed, and a failure
// names its input (HELM_JSON_SEED=<seed> replays it; HELM_JSON_DUMP=<dir> writes the failing inputs there).

import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import { isDeepStrictEqual } from 'util';
import { LineCounter, parseAllDocuments } from 'yaml';
import { readJsonTree } from '../../daemon/policy/json-tree';
import { parsePolicySource } from '../../daemon/policy/parse';
import { treeFromYaml, type TreeNode } from '../../daemon/policy/tree';
import { PolicyError, type Policy, type PolicyDiagnostic } from '../../daemon/policy/types';
import { mutateText, mutateValue, policySeeds, randomPolicy, randomValue, seedValue } from '../policy-fuzz';
import { Rng } from '../rng';

const SEED = Number(process.env.HELM_JSON_SEED ?? 0x150f00d);
const N = Number(process.env.HELM_JSON_N ?? 1500);

const seeds = policySeeds();

/** The tokens of a JSON text: strings, punctuation, other literals, whitespace. */
const TOKEN = /"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^{}[\]:,"\s]+|\s+/g;

/** JSON whitespace, as people and tools write it (and a lone CR, which YAML reads otherwise). */
const SPACE = [' ', '  ', '\t', '\n', '\r\n', '\n\t\t', '\n    ', '\r', ' \r\n '];

/** One change to a JSON text that leaves it JSON (or, once in a while, breaks it). */
function editJson(rng: Rng, text: string): string {
  const tokens = text.match(TOKEN) ?? [];
  const pickIndex = (ok: (tok: string, i: number) => boolean): number | undefined => {
    const candidates = tokens.map((tok, i) => (ok(tok, i) ? i : -1)).filter((i) => i >= 0);
    return candidates.length ? rng.pick(candidates) : undefined;
  };
  switch (rng.int(9)) {
    case 0: // whitespace between tokens
    case 1: {
      for (let n = 1 + rng.int(4); n > 0; n--) {
        const i = rng.int(tokens.length + 1);
        tokens.splice(i, 0, rng.pick(SPACE));
      }
      return tokens.join('');
    }
    case 2: {
      // a character of a string escaped: "\/", "\u002f", "\u00e9"
      const i = pickIndex((tok) => tok.startsWith('"') && tok.length > 2);
      if (i === undefined) return text;
      const body = tokens[i].slice(1, -1);
      const at = rng.int(body.length);
      if (body[at] === '\\' || (at > 0 && body[at - 1] === '\\')) return text;
      const c = body[at];
      const escaped = c === '/' && rng.chance(0.5) ? '\\/' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
      tokens[i] = `"${body.slice(0, at)}${escaped}${body.slice(at + 1)}"`;
      return tokens.join('');
    }
    case 3: {
      // a key repeated in its object
      const i = pickIndex((tok, i) => tok.startsWith('"') && tokens.slice(i + 1).find((x) => !/^\s+$/.test(x)) === ':');
      if (i === undefined) return text;
      tokens.splice(i, 0, `${tokens[i]}: ${rng.pick(['null', '"x"', '[]', tokens[i]])}, `);
      return tokens.join('');
    }
    case 4: {
      // __proto__ as a key
      const i = pickIndex((tok) => tok === '{');
      if (i === undefined) return text;
      tokens.splice(i + 1, 0, `"__proto__": ${rng.pick(['{"x": 1}', 'null', '"/etc/"', '[]'])}${tokens[i + 1] === '}' ? '' : ', '}`);
      return tokens.join('');
    }
    case 5: // a byte-order mark
      return `\ufeff${text}`;
    case 6: {
      // a number written otherwise
      const i = pickIndex((tok) => /^-?[0-9]/.test(tok));
      if (i === undefined) return text;
      const n = Number(tokens[i]);
      tokens[i] = rng.pick([`${n}.0`, `${n}e0`, `${n}E+0`, `${n * 10}e-1`, '12345678901234567890', '1e400', '-0', '4294967294', '0.5']);
      return tokens.join('');
    }
    case 7: {
      // nested deeper than a policy ever is (not as deep as the YAML parser's stack goes: see below)
      const i = pickIndex((tok) => tok === '[' || tok === '{');
      if (i === undefined) return text;
      const depth = 1 + rng.int(100);
      const open = rng.chance(0.5) ? '[' : '{"a":';
      tokens.splice(i, 0, open.repeat(depth));
      const close = open === '[' ? ']' : '}';
      // after the value that starts at i: find its end by counting brackets
      let level = 0;
      let j = i + 1;
      for (; j < tokens.length; j++) {
        if (tokens[j] === '[' || tokens[j] === '{') level++;
        else if (tokens[j] === ']' || tokens[j] === '}') {
          if (level === 0) break;
          level--;
        }
      }
      tokens.splice(j + 1, 0, close.repeat(depth));
      return tokens.join('');
    }
    default: // anything (mostly no longer JSON)
      return mutateText(rng, text);
  }
}

function jsonInput(rng: Rng, i: number): string {
  let value: unknown;
  switch (rng.int(3)) {
    case 0: {
      const docs = Array.from({ length: 1 + rng.int(2) }, (_, d) => randomPolicy(rng, d));
      value = docs.length === 1 ? docs[0] : docs;
      break;
    }
    case 1:
      value = seedValue(rng.pick(seeds));
      for (let m = rng.int(3); m > 0; m--) value = mutateValue(rng, value);
      break;
    default:
      value = rng.chance(0.5) ? randomPolicy(rng, i) : randomValue(rng, 4);
  }
  let text = JSON.stringify(value, null, rng.pick([0, 1, 2, '\t'])) ?? 'null';
  for (let m = rng.chance(0.4) ? 0 : 1 + rng.int(3); m > 0; m--) text = editJson(rng, text);
  return text;
}

/** Every node of a tree with its offset. */
function offsets(node: TreeNode | null, out: number[] = []): number[] {
  if (node === null) return out;
  if (node.offset !== undefined) out.push(node.offset);
  if (node.kind === 'map') for (const p of node.pairs) offsets(p.key, offsets(p.value, out));
  if (node.kind === 'list') for (const item of node.items) offsets(item, out);
  return out;
}

/** What the direct reading says differently from the YAML parser, if anything. */
function treeDifference(text: string): { direct: boolean; problem?: string } {
  if (text.startsWith('\ufeff')) text = text.slice(1); // as parseSource does
  let tree: ReturnType<typeof readJsonTree>;
  try {
    JSON.parse(text);
    tree = readJsonTree(text);
  } catch (e) {
    if (e instanceof SyntaxError || e instanceof RangeError) return { direct: false };
    throw e;
  }
  if (tree === undefined) return { direct: false };
  const lines = new LineCounter();
  let docs;
  try {
    docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, version: '1.2' });
  } catch (e) {
    if (e instanceof RangeError) return { direct: true }; // too deep for the YAML parser: the policy comparison covers it
    throw e;
  }
  if (docs.length !== 1) return { direct: true, problem: `the YAML parser read ${docs.length} documents` };
  const [doc] = docs;
  const complaints = [...doc.errors, ...doc.warnings].map((e) => e.message);
  // Too deep for the YAML parser, which reports that as an error: no policy is (see the policy comparison).
  if (complaints.length && complaints.every((m) => m.includes('Maximum call stack size exceeded'))) return { direct: true };
  if (complaints.length) return { direct: true, problem: `the YAML parser complained: ${complaints.join('; ')}` };
  let viaYaml: TreeNode | null;
  try {
    viaYaml = treeFromYaml(doc.contents);
  } catch (e) {
    if (e instanceof RangeError) return { direct: true };
    throw e;
  }
  if (!isDeepStrictEqual(viaYaml, tree.root)) return { direct: true, problem: 'the trees differ' };
  for (const offset of offsets(tree.root)) {
    if (!isDeepStrictEqual(lines.linePos(offset), tree.lines.linePos(offset))) {
      return { direct: true, problem: `offset ${offset} is at ${JSON.stringify(tree.lines.linePos(offset))}, the YAML parser says ${JSON.stringify(lines.linePos(offset))}` };
    }
  }
  return { direct: true };
}

type Outcome = { policies: Policy[] } | { errors: PolicyDiagnostic[] };

function parseBoth(text: string, file: string): [Outcome, Outcome] {
  const parse = (jsonViaYaml: boolean): Outcome => {
    try {
      return { policies: parsePolicySource(text, file, { jsonViaYaml }) };
    } catch (e) {
      if (e instanceof PolicyError) return { errors: e.diagnostics };
      throw e;
    }
  };
  return [parse(false), parse(true)];
}

t.test(`JSON read directly and through the YAML parser agree (seed ${SEED}, ${N} inputs)`, async (t) => {
  const rng = new Rng(SEED);
  const problems: string[] = [];
  const stats = { direct: 0, accepted: 0, acceptedDirectly: 0, rejected: 0 };
  for (let i = 0; i < N && problems.length < 10; i++) {
    const text = jsonInput(rng, i);
    const file = `input-${i}.json`;
    const what = `seed ${SEED}, input ${i}`;
    const show = `\n--- input ---\n${JSON.stringify(text.slice(0, 1500))}`;
    const failed = problems.length;
    try {
      const tree = treeDifference(text);
      if (tree.direct) stats.direct++;
      if (tree.problem) problems.push(`${what}: read directly, ${tree.problem}${show}`);
      const [direct, viaYaml] = parseBoth(text, file);
      if ('policies' in viaYaml) {
        stats.accepted++;
        if (tree.direct) stats.acceptedDirectly++;
      } else stats.rejected++;
      if (!isDeepStrictEqual(direct, viaYaml)) {
        problems.push(`${what}: parsePolicySource differs:\n  direct:    ${JSON.stringify(direct).slice(0, 1500)}\n  via YAML:  ${JSON.stringify(viaYaml).slice(0, 1500)}${show}`);
      }
    } catch (e) {
      problems.push(`${what}: threw ${(e as Error).stack}${show}`);
    }
    if (process.env.HELM_JSON_DUMP && problems.length > failed) fs.writeFileSync(path.join(process.env.HELM_JSON_DUMP, file), text);
  }
  t.comment(`seed ${SEED}: ${stats.direct} of ${N} read directly; ${stats.accepted} accepted (${stats.acceptedDirectly} of them read directly), ${stats.rejected} rejected`);
  t.same(problems, [], 'the two readings agree on every input');
  // Both sides must be exercised, or the comparison proves little.
  t.ok(stats.acceptedDirectly >= N / 10, `at least a tenth accepted through the direct reading (${stats.acceptedDirectly})`);
  t.ok(stats.rejected >= N / 5, `at least a fifth rejected (${stats.rejected})`);
});

t.test('what the direct reading leaves to the YAML parser', async (t) => {
  const policy = (rules: string) => `{"apiVersion": "helm/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"roles": ["r"], "allow": [${rules}]}}`;
  // JSON.parse keeps the last of repeated keys silently; the parser refuses them.
  const repeated = policy('{"id": "a", "read": ["/etc/"], "read": ["/"]}');
  t.equal(readJsonTree(repeated), undefined, 'a repeated key: given up');
  t.throws(() => parsePolicySource(repeated, 'p.json'), /Map keys must be unique/);
  // JSON whitespace, but YAML reads a lone CR into the next plain scalar.
  t.equal(readJsonTree(policy('{"read":\r["/etc/"]}')), undefined, 'a lone CR: given up');
  t.ok(readJsonTree(policy('{"read":\r\n["/etc/"]}')), 'CR LF is read directly');
  // A bare scalar is never a policy; YAML refuses tabs before one.
  t.equal(readJsonTree('\t"/etc/"'), undefined, 'a bare scalar: given up');
  // Deeper than any stack: left to the YAML reading, which says so. (Once only: the YAML parser
  // overflowing the stack a second time in one process has been seen to abort node, out of
  // memory in its regular-expression compiler; a problem of the YAML reading, not of this one.)
  const deep = policy(`{"read": ["/"], "when": ${'{"a":'.repeat(30000)}1${'}'.repeat(30000)}}`);
  t.throws(() => parsePolicySource(deep, 'p.json'), /nested too deeply|Maximum call stack size exceeded/);
  // Every rule and target is located, line and column, as through the YAML parser.
  const text = `{\n\t"apiVersion": "helm/v1", "kind": "Policy", "metadata": {"name": "p"},\r\n "spec": {"roles": ["r"],\n  "allow": [\n    {"read": ["/etc/", "\\u002fusr/"]}]}}`;
  const [direct, viaYaml] = parseBoth(text, 'p.json');
  t.same(direct, viaYaml);
  const rule = (direct as { policies: Policy[] }).policies[0].rules[0];
  t.same([rule.loc.line, rule.loc.col, rule.loc.pointer], [5, 5, '/spec/allow/0']);
  t.same(rule.verbs.read?.map((x) => [x.written, x.loc.line, x.loc.col, x.loc.pointer]), [
    ['/etc/', 5, 15, '/spec/allow/0/read/0'],
    ['/usr/', 5, 24, '/spec/allow/0/read/1'],
  ]);
});
