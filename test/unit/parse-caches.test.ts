// What makes a large JSON policy's parse cheap must not change what it gives:
//   - RuleCache (daemon/policy/parse.ts): helmd's parses reuse the rules of the parse before;
//     over random edits, a parse through it must give exactly what a parse without it gives,
//     errors included, and a reused rule must not outlive a symlink changed on disk;
//   - LookupCache (daemon/policy/canonical.ts): plain paths are canonicalised from their parent
//     directory's walk, and a directory looked into often is listed; over random paths through
//     symlinks (relative, absolute, chained, dangling, looping), the result must be the full walk's;
//   - policyDigest (daemon/audit/recorder.ts) keeps each rule's text: the digest must stay the
//     hash of the policies' JSON without locations, as audit trails already hold it.
// Seeded: HELM_SEED replays a run (the seed and the failing step are printed).
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Rng } from '../rng';
import { createHash } from 'crypto';
import { policyDigest } from '../../daemon/audit/recorder';
import { LookupCache, PathSplitter, canonicalizePlain, canonicalizeRulePath } from '../../daemon/policy/canonical';
import { RuleCache, loadPolicySources } from '../../daemon/policy/parse';
import { PolicyError, type PathTarget, type Policy } from '../../daemon/policy/types';
import { SPECIAL_TEXT, mutateText } from '../policy-fuzz';
import { POLICY_NAMES, randomConditionalPolicyDoc, randomEdit, randomPolicyDoc, type PolicyDoc } from '../support/random-policies';

/** A parse's whole outcome as text: the policies with every location, or every error. */
function outcome(parse: () => Policy[]): string {
  try {
    return JSON.stringify(parse());
  } catch (e) {
    if (e instanceof PolicyError) return `errors: ${JSON.stringify(e.diagnostics)}`;
    throw e;
  }
}

function jsonText(docs: PolicyDoc[], asList: boolean, indent: string | number): string {
  return `${JSON.stringify(docs.length === 1 && !asList ? docs[0] : docs, null, indent)}\n`;
}

t.test('a parse through the rule cache gives what a parse without it gives, over random edits (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x7c4e);
  const rng = new Rng(seed);
  let parses = 0;
  let rules = 0;
  let reused = 0; // rules of a parse that are the very objects of the parse before
  for (let run = 0; run < 60; run++) {
    const conditional = run % 4 === 3;
    const docs = rng
      .shuffle(POLICY_NAMES)
      .slice(0, 1 + rng.int(3))
      .map((n) => (conditional ? randomConditionalPolicyDoc(rng, n) : randomPolicyDoc(rng, n)));
    const cache = new RuleCache();
    const indent = rng.pick([0, 2, '\t']);
    const asList = rng.chance(0.5);
    let before = new Set<unknown>();
    const history: string[] = ['initial'];
    for (let step = 0; step < 25; step++) {
      if (step > 0) history.push(randomEdit(rng, docs, conditional));
      let text = jsonText(docs, asList, indent);
      // Now and then the text itself is broken or twisted: errors must come out the same too.
      if (rng.chance(0.1)) {
        text = mutateText(rng, text);
        history.push('text mutated');
      }
      const file = rng.chance(0.97) ? 'p.json' : 'q.json';
      const cached = outcome(() => loadPolicySources([{ file, text }], { ruleCache: cache }).policies);
      const fresh = outcome(() => loadPolicySources([{ file, text }]).policies);
      parses++;
      if (cached !== fresh) {
        t.fail(`seed ${seed}, run ${run}, step ${step}: the cached parse differs\n${history.join('\n')}\n${text}`, { cached, fresh });
        return;
      }
      // The same text again: every rule is the very object of the parse before.
      let now: Policy[] = [];
      try {
        now = loadPolicySources([{ file, text }], { ruleCache: cache }).policies;
      } catch {
        continue; // errors: compared above
      }
      const again = loadPolicySources([{ file, text }], { ruleCache: cache }).policies;
      if (!again.every((p, i) => p.rules.every((r, j) => r === now[i].rules[j]))) {
        t.fail(`seed ${seed}, run ${run}, step ${step}: the same text again was not taken from the cache\n${text}`);
        return;
      }
      // Across an edit: the rules it did not touch (nor move) are reused.
      for (const p of now) for (const r of p.rules) if (before.has(r)) reused++;
      rules += now.reduce((n, p) => n + p.rules.length, 0);
      before = new Set(now.flatMap((p) => p.rules));
    }
  }
  t.pass(`${parses} parses through the cache equal parses without it`);
  // About half: a third of the runs write JSON on one line, where an edit moves (and so reads
  // again) every rule after it; added and removed rules renumber those after them.
  t.ok(reused > rules * 0.4, `rules reused across an edit: ${reused} of ${rules}`);
});

/** Where the rules of a JSON policy text are: the spans of the objects in its allow, block and contextual lists. */
function ruleSpans(text: string): [number, number][] {
  const spans: [number, number][] = [];
  for (const m of text.matchAll(/"(allow|block|contextual)":\s*\[/g)) {
    let i = m.index! + m[0].length;
    for (;;) {
      while (/\s|,/.test(text[i])) i++;
      if (text[i] !== '{') break;
      const start = i;
      let depth = 0;
      do {
        if (text[i] === '"') for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
        else if (text[i] === '{' || text[i] === '[') depth++;
        else if (text[i] === '}' || text[i] === ']') depth--;
        i++;
      } while (depth > 0);
      spans.push([start, i]);
    }
  }
  return spans;
}

/** A small change of the text inside or at the edges of a rule: what an editor does to one. */
function editRuleText(rng: Rng, text: string, spans: [number, number][]): string {
  const [start, end] = rng.pick(spans);
  const at = start + rng.int(end - start + 1);
  const other = rng.pick(spans);
  switch (rng.int(7)) {
    case 0: // a character or two out
      return text.slice(0, at) + text.slice(at + 1 + rng.int(2));
    case 1: // one in
      return text.slice(0, at) + rng.pick([...SPECIAL_TEXT, 'x', '/', '0', '"x"', '"', ', ']) + text.slice(at);
    case 2: // one character of a string changed (the common edit: a path)
      return text.slice(0, at) + rng.pick(['a', 'b', '/', '-', 'é', '.', '..', '\\n', '\\"', '\\u0041']) + text.slice(at + 1);
    case 3: // another rule's text over this one: an id written twice, or the same rule again
      return text.slice(0, start) + text.slice(other[0], other[1]) + text.slice(end);
    case 4: // a rule added next to it, on its line or on a line of its own
      return text.slice(0, end) + rng.pick([', {"read": ["/srv/added"]}', ',\n{"id": "added", "write": ["/srv/w/"]}', ', {}']) + text.slice(end);
    case 5: // the rule removed
      return text.slice(0, start) + text.slice(end).replace(/^\s*,/, '');
    default: // a key inside the rule: new, repeated, or misplaced
      return text.slice(0, start + 1) + rng.pick(['"id": "dup", ', '"read": "/srv/r", ', '"role": "dev", ', '"exec": [], ', '"when": {"uid": 0}, ']) + text.slice(start + 1);
  }
}

t.test('an edit parsed from the parse before gives what reading the whole source gives (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x51de);
  const rng = new Rng(seed);
  let steps = 0;
  const cache = new RuleCache();
  let asEdits = 0;
  let valid = 0;
  for (let run = 0; run < 80; run++) {
    const docs = rng
      .shuffle(POLICY_NAMES)
      .slice(0, 1 + rng.int(3))
      .map((n) => (run % 4 === 3 ? randomConditionalPolicyDoc(rng, n) : randomPolicyDoc(rng, n)));
    const base = jsonText(docs, rng.chance(0.5), rng.pick([2, 2, '\t', 0]));
    const file = `run-${run}.json`;
    let last = base;
    for (let step = 0; step < 30; step++) {
      const spans = ruleSpans(last);
      if (spans.length === 0) break;
      // From the last text that parsed: only a valid parse is an edit's base.
      const text = editRuleText(rng, last, spans);
      const editsBefore = cache.editsParsed;
      const cached = outcome(() => loadPolicySources([{ file, text }], { ruleCache: cache }).policies);
      const fresh = outcome(() => loadPolicySources([{ file, text }]).policies);
      steps++;
      if (cached !== fresh) {
        t.fail(`seed ${seed}, run ${run}, step ${step}: the parse through the cache differs\n--- before\n${last}\n--- after\n${text}`, { cached, fresh });
        return;
      }
      if (cache.editsParsed > editsBefore) asEdits++;
      if (cached.startsWith('errors: ')) {
        // The next parse has no valid parse before it: it reads the whole source, and is compared too.
        const again = outcome(() => loadPolicySources([{ file, text: last }], { ruleCache: cache }).policies);
        if (again !== outcome(() => loadPolicySources([{ file, text: last }]).policies)) {
          t.fail(`seed ${seed}, run ${run}, step ${step}: the text before, parsed again, differs`);
          return;
        }
      } else {
        valid++;
        last = text;
      }
    }
  }
  t.pass(`${steps} edits of rules' text, parsed through the cache, equal parses without it`);
  // Only a valid parse can be an edit; most of these are valid edits of indented JSON.
  t.ok(asEdits > valid * 0.5, `${asEdits} of the ${valid} valid (of ${steps}) parsed as an edit of the parse before`);
});

t.test('an edit of one rule reads that rule alone; any other change reads the whole source', async (t) => {
  const rules = Array.from({ length: 6 }, (_, i) => ({ id: `r${i}`, read: [`/srv/r${i}`] }));
  const text = (allow: object[], roles = ['dev'], indent = 2) =>
    JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { roles, allow } }, null, indent);
  const parse = (cache: RuleCache, s: string) => loadPolicySources([{ file: 'p.json', text: s }], { ruleCache: cache }).policies[0].rules;
  const changed = (allow: object[], i: number, rule: object) => allow.map((r, k) => (k === i ? rule : r));
  for (const [what, next, asEdit] of [
    ['a path changed', text(changed(rules, 2, { id: 'r2', read: ['/srv/other'] })), true],
    ['an id changed', text(changed(rules, 2, { id: 'renamed', read: ['/srv/r2'] })), true],
    ['the same text', text(rules), true],
    ['a line added inside the rule', text(changed(rules, 2, { id: 'r2', read: ['/srv/r2', '/srv/more'] })), false],
    ['a rule added', text([...rules.slice(0, 3), { read: ['/srv/new'] }, ...rules.slice(3)]), false],
    ['the roles changed', text(rules, ['dev', 'ops']), false],
    ['one line of JSON', text(changed(rules, 2, { id: 'r2', read: ['/srv/other'] }), ['dev'], 0), false],
  ] as const) {
    const cache = new RuleCache();
    // The parse before is of the same layout (one line, or indented).
    const first = parse(cache, what === 'one line of JSON' ? text(rules, ['dev'], 0) : text(rules));
    const edits = cache.editsParsed;
    const now = parse(cache, next);
    t.equal(cache.editsParsed - edits, asEdit ? 1 : 0, `${what}: ${asEdit ? 'parsed as an edit' : 'read whole'}`);
    t.equal(JSON.stringify(now), JSON.stringify(loadPolicySources([{ file: 'p.json', text: next }]).policies[0].rules), `${what}: as read without the cache`);
    if (asEdit) t.ok(now.every((r, k) => k === 2 || r === first[k]), `${what}: the other rules are the ones parsed before`);
  }
});

t.test('an edit that breaks the document, repeats an id or a key is reported as reading the whole source reports it', async (t) => {
  const doc = (second: string) => `{\n  "apiVersion": "helm/v1", "kind": "Policy", "metadata": {"name": "p"},\n  "spec": {"roles": ["dev"], "allow": [\n    {"id": "a", "read": ["/srv/a"]},\n    ${second},\n    {"id": "c", "read": ["/srv/c"]}\n  ]}\n}\n`;
  for (const [what, second] of [
    ['an id written twice', '{"id": "a", "read": ["/srv/b"]}'],
    ['a key twice', '{"id": "b", "read": ["/srv/b"], "read": ["/srv/x"]}'],
    ['the list closed early', '{"id": "b", "read": ["/srv/b"]}], "block": [{"read": ["/x"]}'],
    ['a string left open', '{"id": "b", "read": ["/srv/b]}'],
    ['two rules for one', '{"id": "b", "read": ["/srv/b"]}, {"id": "b2", "read": ["/srv/b2"]}'],
    ['not a rule', '["/srv/b"]'],
    ['a lone carriage return', '{"id": "b",\r "read": ["/srv/b"]}'],
    ['nested too deeply', `{"id": "b", "read": ${'['.repeat(5000)}${']'.repeat(5000)}}`],
  ]) {
    const cache = new RuleCache();
    loadPolicySources([{ file: 'p.json', text: doc('{"id": "b", "read": ["/srv/b"]}') }], { ruleCache: cache });
    const text = doc(second);
    const cached = outcome(() => loadPolicySources([{ file: 'p.json', text }], { ruleCache: cache }).policies);
    t.equal(cached, outcome(() => loadPolicySources([{ file: 'p.json', text }]).policies), what);
    t.equal(cache.editsParsed, 0, `${what}: not taken as an edit`);
  }
});

t.test('deferred rules with escapes, read out of order, are read as the YAML reading reads them', async (t) => {
  // block is written before allow, so the rules are read back and forth over the text; escapes
  // lie before, between and after them.
  const text = `{"apiVersion": "helm\\/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"roles": ["dev"],
 "block": [{"id": "b\\u0031", "read": ["/srv/q\\"uote"]}, {"read": ["/srv/plain"]}],
 "allow": [{"id": "a1", "write": ["/srv/tab\\\\x", "/srv/\\u00e9t\\u00e9/"]}, {"exec": ["/usr/bin/x"]}]}}`;
  const cache = new RuleCache();
  const direct = outcome(() => loadPolicySources([{ file: 'p.json', text }], { ruleCache: cache }).policies);
  const viaYaml = outcome(() => loadPolicySources([{ file: 'p.json', text }], { jsonViaYaml: true }).policies);
  t.equal(direct, viaYaml);
  t.match(direct, /srv\/q\\"uote/);
  // Read directly (only then are rules cached), not handed to the YAML reading.
  const again = loadPolicySources([{ file: 'p.json', text }], { ruleCache: cache }).policies;
  t.equal(again[0].rules[0], loadPolicySources([{ file: 'p.json', text }], { ruleCache: cache }).policies[0].rules[0]);
});

t.test('a deferred rule nested too deeply, or holding a key twice, is refused as the YAML reading refuses it', async (t) => {
  const policy = (rule: string) => `{"apiVersion": "helm/v1", "kind": "Policy", "metadata": {"name": "p"}, "spec": {"roles": ["dev"],\n "allow": [{"read": ["/a"]},\n ${rule}]}}`;
  for (const [what, rule] of [
    ['nested 20,000 deep', `{"read": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`],
    ['a key twice', '{"read": ["/b"], "read": ["/c"]}'],
  ]) {
    const text = policy(rule);
    const direct = outcome(() => loadPolicySources([{ file: 'p.json', text }], { ruleCache: new RuleCache() }).policies);
    t.match(direct, /^errors: .*"line":3/, `${what}: refused, located`);
    t.equal(direct, outcome(() => loadPolicySources([{ file: 'p.json', text }], { jsonViaYaml: true }).policies), `${what}: as the YAML reading says`);
  }
});

t.test('a reused rule follows a symlink changed on disk', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-rule-cache-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.mkdirSync(path.join(root, 'a'));
  fs.mkdirSync(path.join(root, 'b'));
  fs.symlinkSync('a', path.join(root, 'link'));
  const policy = (extra: string[]) => ({
    file: 'p.json',
    text: JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { roles: ['dev'], allow: [{ id: 'through', read: [`${root}/link/file`] }, { id: 'other', read: [`${root}/a/x`, ...extra] }] } }, null, 2),
  });
  const cache = new RuleCache();
  const first = loadPolicySources([policy([])], { ruleCache: cache }).policies[0].rules;
  t.equal((first[0].verbs.read![0] as PathTarget).canonical, `${root}/a/file`);
  fs.unlinkSync(path.join(root, 'link'));
  fs.symlinkSync(path.join(root, 'b'), path.join(root, 'link'));
  const second = loadPolicySources([policy([])], { ruleCache: cache }).policies[0].rules;
  t.equal((second[0].verbs.read![0] as PathTarget).canonical, `${root}/b/file`, 'the symlink is followed where it points now');
  t.not(second[0], first[0], 'the rule is read again');
  t.equal(second[1], first[1], 'the rule whose paths did not change is reused');
  const third = loadPolicySources([policy([`${root}/b/y`])], { ruleCache: cache }).policies[0].rules;
  t.equal(third[0], second[0], 'an edit of one rule leaves the other reused');
  t.not(third[1], second[1]);
  t.same(third[1].verbs.read!.map((p) => (p as PathTarget).canonical), [`${root}/a/x`, `${root}/b/y`]);
});

t.test("a contextual rule is checked again against the policy's new roles", async (t) => {
  const policy = (roles: string[]) => ({
    file: 'p.json',
    text: JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { roles, contextual: [{ id: 'c', read: ['/srv/x'], when: { role: ['ops'] } }] } }, null, 2),
  });
  const cache = new RuleCache();
  t.equal(loadPolicySources([policy(['dev', 'ops'])], { ruleCache: cache }).policies[0].rules.length, 1);
  // The rule's text and place are the same; its when.role now names a role the policy lacks.
  t.throws(() => loadPolicySources([policy(['dev', 'qa'])], { ruleCache: cache }), /role "ops"|"ops"/);
});

t.test('plain paths canonicalised from their directory equal the full walk (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x5d1f);
  const rng = new Rng(seed);
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-canonical-')));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  // A tree with every kind of symlink, and a directory with many names (it gets listed).
  fs.mkdirSync(path.join(root, 'd/e/f'), { recursive: true });
  fs.mkdirSync(path.join(root, 'many'));
  for (let i = 0; i < 80; i++) fs.writeFileSync(path.join(root, 'many', `f${i}`), '');
  for (let i = 0; i < 10; i++) fs.symlinkSync(i % 2 ? '../d' : `${root}/d/e`, path.join(root, 'many', `l${i}`));
  fs.writeFileSync(path.join(root, 'd/file'), '');
  fs.symlinkSync('d/e', path.join(root, 'rel'));
  fs.symlinkSync(path.join(root, 'd'), path.join(root, 'abs'));
  fs.symlinkSync('rel', path.join(root, 'chain'));
  fs.symlinkSync('nowhere', path.join(root, 'dangling'));
  fs.symlinkSync('loop2', path.join(root, 'loop1'));
  fs.symlinkSync('loop1', path.join(root, 'loop2'));
  fs.symlinkSync('/', path.join(root, 'top'));
  fs.symlinkSync('file', path.join(root, 'd/tofile'));
  const parts = ['d', 'e', 'f', 'file', 'tofile', 'rel', 'abs', 'chain', 'dangling', 'loop1', 'top', 'many', 'missing', 'x'];
  const manyNames = [...Array.from({ length: 90 }, (_, i) => `f${i}`), ...Array.from({ length: 12 }, (_, i) => `l${i}`)];
  let compared = 0;
  for (let run = 0; run < 40; run++) {
    const cache = new LookupCache(); // one parse's
    for (let i = 0; i < 200; i++) {
      let p: string;
      if (rng.chance(0.4)) {
        p = `${root}/many/${rng.pick(manyNames)}${rng.chance(0.3) ? `/${rng.pick(parts)}` : ''}`;
      } else {
        const depth = 1 + rng.int(4);
        p = `${root}/${Array.from({ length: depth }, () => rng.pick(parts)).join('/')}`;
      }
      if (rng.chance(0.1)) p = p.replace(/\/([^/]+)$/, '/../$1'); // not plain: walked whole
      if (rng.chance(0.05)) p = '/' + p;
      if (rng.chance(0.05)) p = rng.pick(['/', '/proc/self/x', '/etc', '/usr/lib']);
      if (rng.chance(0.4)) p += '/';
      const viaCache = canonicalizeRulePath(p, cache);
      const walked = canonicalizeRulePath(p);
      compared++;
      if (viaCache.canonical !== walked.canonical || viaCache.resolved !== walked.resolved) {
        t.fail(`seed ${seed}, run ${run}: ${p}`, { viaCache, walked });
        return;
      }
    }
  }
  t.pass(`${compared} paths: the cached canonical form is the walked one`);
  // A symlink made after a directory was listed (in another parse) is seen by the next parse.
  const cache = new LookupCache();
  for (let i = 0; i < 40; i++) canonicalizeRulePath(`${root}/many/f${i}`, cache);
  fs.symlinkSync(`${root}/d`, path.join(root, 'many', 'late'));
  t.equal(canonicalizeRulePath(`${root}/many/late/file`, new LookupCache()).canonical, `${root}/d/file`);
});

t.test('paths split once and canonicalised again parse after parse follow the filesystem as it is each time (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x5e11);
  const rng = new Rng(seed);
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-split-')));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const at = (p: string) => path.join(root, p);
  fs.mkdirSync(at('d/e/f'), { recursive: true });
  fs.mkdirSync(at('x/y'), { recursive: true });
  fs.mkdirSync(at('many'));
  for (let i = 0; i < 60; i++) fs.writeFileSync(at(`many/f${i}`), '');
  fs.symlinkSync('d/e', at('rel'));
  const parts = ['d', 'e', 'f', 'x', 'y', 'rel', 'many', 'missing', 'z'];
  const randomPath = () =>
    rng.chance(0.4)
      ? `${root}/many/${rng.pick(['f1', 'f2', 'f30', 'f59', 'l1', 'l2', 'new'])}${rng.chance(0.3) ? `/${rng.pick(parts)}` : ''}${rng.chance(0.3) ? '/' : ''}`
      : `${root}/${Array.from({ length: 1 + rng.int(4) }, () => rng.pick(parts)).join('/')}${rng.chance(0.3) ? '/' : ''}`;
  // What a user or an attacker does between two applies.
  const changes: [string, () => void][] = [
    ['rel retargeted', () => (fs.rmSync(at('rel')), fs.symlinkSync(rng.pick(['d/e', 'd', 'many', 'x/y', '/', 'nowhere']), at('rel')))],
    ['a directory swapped for a symlink, or back', () => (fs.lstatSync(at('x')).isSymbolicLink() ? (fs.rmSync(at('x')), fs.mkdirSync(at('x/y'), { recursive: true })) : (fs.rmSync(at('x'), { recursive: true }), fs.symlinkSync(rng.pick(['d', 'd/e', 'rel']), at('x'))))],
    ['a missing directory made, or removed', () => (fs.existsSync(at('missing')) ? fs.rmSync(at('missing'), { recursive: true }) : fs.mkdirSync(at('missing/e'), { recursive: true }))],
    ['a symlink added to a listed directory, or removed', () => { const l = at(`many/l${rng.int(3)}`); if (fs.existsSync(l) || isLink(l)) fs.rmSync(l); else fs.symlinkSync(rng.pick(['../d', `${root}/x`, 'f1']), l); }],
    ['a file of a listed directory turned into a symlink', () => { const f = at(`many/f${rng.pick([1, 2, 30])}`); fs.rmSync(f); fs.symlinkSync(rng.pick(['../d', 'f59']), f); }],
  ];
  const splitter = new PathSplitter();
  const paths = Array.from({ length: 300 }, randomPath);
  let split = paths.map((p) => ({ p, split: splitter.split(p)! }));
  t.ok(split.every((s) => s.split !== undefined), 'every path of the test is plain');
  let compared = 0;
  const happened: string[] = [];
  for (let parse = 0; parse < 60; parse++) {
    if (parse > 0) {
      const [what, change] = rng.pick(changes);
      change();
      happened.push(what);
      // New rules come with new paths, split against the same directories.
      split = [...split.slice(20), ...Array.from({ length: 20 }, () => { const p = randomPath(); return { p, split: splitter.split(p)! }; })];
    }
    const cache = new LookupCache(); // this parse's
    for (const { p, split: s } of rng.shuffle(split)) {
      const again = canonicalizePlain(s, cache);
      const walked = canonicalizeRulePath(p).canonical;
      compared++;
      if (again !== walked) {
        t.fail(`seed ${seed}, parse ${parse}: ${p}\n${happened.join('\n')}`, { again, walked });
        return;
      }
    }
  }
  t.pass(`${compared} paths canonicalised again over 60 parses with the filesystem changing: each is the full walk's`);
});

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

t.test('the policy digest is the hash of the policies without locations, rules reused or not (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0x2b9d);
  const rng = new Rng(seed);
  const plain = (policies: Policy[]) => createHash('sha256').update(JSON.stringify(policies, (k, v) => (k === 'loc' ? undefined : v))).digest('hex');
  const cache = new RuleCache();
  const docs = POLICY_NAMES.slice(0, 3).map((n) => randomConditionalPolicyDoc(rng, n));
  const digests = new Set<string>();
  for (let step = 0; step < 40; step++) {
    if (step > 0) randomEdit(rng, docs, true);
    const policies = loadPolicySources([{ file: 'p.json', text: jsonText(docs, true, 2) }], { ruleCache: cache }).policies;
    const digest = policyDigest(policies);
    t.equal(digest, plain(policies), `step ${step}`);
    t.equal(policyDigest(policies), digest, 'the same again');
    digests.add(digest);
  }
  t.ok(digests.size > 20, `edits change the digest (${digests.size} different in 40 steps)`);
  const empty = loadPolicySources([{ file: 'e.json', text: JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'e' }, spec: { roles: ['x'], allow: [] } }) }]).policies;
  t.equal(policyDigest(empty), plain(empty), 'a policy without rules');
});
