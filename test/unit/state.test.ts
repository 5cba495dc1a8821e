// helmd's state file (daemon/state.ts): the names of recent generations live in names files,
// written once and shared by generations with the same names; the state file itself stays small
// (it is written on every apply and attach). What is saved is what is loaded; a state written
// by the format before (names inline) is still read; a state naming a file it must not read, or
// a names file that is missing or broken, is refused, not half-used.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { emptyState, loadState, saveState, statePath, StateError, type HelmdState } from '../../daemon/state';

function names(rules: number, tag = '') {
  return { policies: [{ name: 'p', mode: 'enforce' }], rules: Array.from({ length: rules }, (_, i) => ({ policy: 'p', rule: `r${i}${tag}` })) };
}

function stateDir(t: { teardown(f: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-state-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const namesFiles = (dir: string) => fs.readdirSync(dir).filter((n) => n.startsWith('names-')).sort();

t.test('generations with the same names share one names file; the state file stays small', async (t) => {
  const dir = stateDir(t);
  const st: HelmdState = emptyState();
  // Eight generations of a 10,000-rule policy, edited in place: the same names each time.
  for (let g = 1; g <= 8; g++) {
    st.generation = g;
    st.generations[String(g)] = names(10_000);
    saveState(dir, st);
  }
  t.same(namesFiles(dir), ['names-1.json'], 'one names file for eight generations');
  t.ok(fs.statSync(statePath(dir)).size < 4096, `the state file: ${fs.statSync(statePath(dir)).size} bytes`);
  // A rule renamed: new names, a file of their own; the old ones go when no generation has them.
  st.generations['9'] = names(10_000, 'x');
  saveState(dir, st);
  t.same(namesFiles(dir), ['names-1.json', 'names-9.json']);
  for (let g = 1; g <= 8; g++) delete st.generations[String(g)];
  saveState(dir, st);
  t.same(namesFiles(dir), ['names-9.json'], 'names no generation has are removed');
  const back = loadState(dir);
  t.same(back.generations, { 9: names(10_000, 'x') }, 'loaded as saved');
  t.equal(back.format, 2);
});

t.test('a state loaded and saved again by another process keeps sharing its names files', async (t) => {
  const dir = stateDir(t);
  const st = emptyState();
  st.generations = { 1: names(3), 2: names(3), 3: names(4) };
  saveState(dir, st);
  t.same(namesFiles(dir), ['names-1.json', 'names-3.json']);
  const back = loadState(dir);
  t.equal(back.generations['1'], back.generations['2'], 'one object for a shared file');
  back.generations['4'] = names(4);
  saveState(dir, back);
  t.same(namesFiles(dir), ['names-1.json', 'names-3.json'], 'the same names again: no new file');
  t.same(loadState(dir).generations, { 1: names(3), 2: names(3), 3: names(4), 4: names(4) });
});

t.test('a state of the format before, names inline, is read', async (t) => {
  const dir = stateDir(t);
  const old = { ...emptyState(), format: 1, generation: 2, generations: { 1: names(2), 2: names(3) } };
  fs.writeFileSync(statePath(dir), JSON.stringify(old));
  const back = loadState(dir);
  t.same(back.generations, old.generations);
  saveState(dir, back);
  t.same(namesFiles(dir), ['names-1.json', 'names-2.json'], 'written again in the new format');
  t.same(loadState(dir).generations, old.generations);
});

t.test('a state naming a path, or a names file missing or broken, is refused', async (t) => {
  for (const [what, ref, content] of [
    ['a path outside the state directory', '../../etc/passwd', undefined],
    ['an absolute path', '/etc/passwd', undefined],
    ['a name that is no names file', 'state.json', undefined],
    ['a missing names file', 'names-5.json', undefined],
    ['a names file that is not JSON', 'names-5.json', '{"policies": ['],
    ['a names file without rules', 'names-5.json', '{"policies": []}'],
  ] as const) {
    const dir = stateDir(t);
    if (content !== undefined) fs.writeFileSync(path.join(dir, ref), content);
    fs.writeFileSync(statePath(dir), JSON.stringify({ ...emptyState(), format: 2, generation: 5, generations: { 5: ref } }));
    t.throws(() => loadState(dir), StateError, what);
  }
  const dir = stateDir(t);
  fs.writeFileSync(statePath(dir), JSON.stringify({ ...emptyState(), format: 3 }));
  t.throws(() => loadState(dir), /newer helmd/, 'a newer format');
});
