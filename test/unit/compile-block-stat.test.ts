// Block targets are looked up on the host's filesystem once per compile (compile.ts, statOnce):
// a directory looked into often is listed once, and only the names it holds are stat'ed. That
// must find exactly the objects a stat of every target finds: files, directories, symlinks to
// either (inside the directory or not), dangling symlinks, hard links, names made or replaced
// between two compiles.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Rng } from '../rng';
import { compilePolicy, type CompiledPolicy, type StatInfo } from '../../daemon/policy/compile';
import { IncrementalCompiler } from '../../daemon/policy/compile-incremental';
import { loadPolicySources } from '../../daemon/policy/parse';

/** The same stat as the compiler's own; passing it turns the listing off. */
function statEach(p: string): StatInfo | undefined {
  const s = fs.statSync(p, { bigint: true, throwIfNoEntry: false });
  return s && { dev: s.dev, ino: s.ino, nlink: s.nlink, isDirectory: s.isDirectory(), isFile: s.isFile() };
}

function inodes(c: CompiledPolicy): string[] {
  return c.inodeEntries.map((e) => `${e.path} ${e.dev}:${e.ino} ${JSON.stringify([e.self, e.below])}`).sort();
}

t.test('block targets of a directory listed once find what a stat of each finds (seeded)', async (t) => {
  const seed = Number(process.env.HELM_SEED ?? 0xb10c);
  const rng = new Rng(seed);
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'helm-block-stat-')));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'many');
  fs.mkdirSync(dir);
  fs.mkdirSync(path.join(root, 'outside'));
  fs.writeFileSync(path.join(root, 'outside', 'target'), '');
  const names = Array.from({ length: 120 }, (_, i) => `n${i}`);
  // Something at a name, or nothing: what a user or an attacker puts there between applies.
  const put = (name: string) => {
    const p = path.join(dir, name);
    fs.rmSync(p, { recursive: true, force: true });
    switch (rng.int(6)) {
      case 0:
        return; // nothing
      case 1:
        return fs.writeFileSync(p, '');
      case 2:
        return fs.mkdirSync(p);
      case 3:
        return fs.symlinkSync(rng.pick(['../outside/target', '../outside', 'n1', 'nowhere']), p);
      case 4:
        return fs.linkSync(path.join(root, 'outside', 'target'), p);
      default:
        return fs.writeFileSync(p, 'x');
    }
  };
  for (const n of names) put(n);
  const incremental = new IncrementalCompiler();
  let compared = 0;
  for (let round = 0; round < 12; round++) {
    if (round > 0) for (let k = 0; k < 15; k++) put(rng.pick(names));
    // Block rules over the names (present or not, some as subtrees), and a few allow rules.
    const block = names.filter(() => rng.chance(0.7)).map((n, i) => ({ id: `b${i}`, [rng.pick(['read', 'write', 'exec'])]: [`${dir}/${n}${rng.chance(0.2) ? '/' : ''}`] }));
    const text = JSON.stringify({ apiVersion: 'helm/v1', kind: 'Policy', metadata: { name: 'p' }, spec: { roles: ['dev'], allow: [{ id: 'a', read: [`${root}/`] }], block } });
    const policies = loadPolicySources([{ file: 'p.json', text }]).policies;
    // And between the parse and the compile: a name canonicalised as a file may be a symlink now.
    for (let k = 0; k < 10; k++) put(rng.pick(names));
    const listed = inodes(compilePolicy(policies));
    const each = inodes(compilePolicy(policies, { stat: statEach }));
    t.same(listed, each, `round ${round}: ${block.length} block targets, ${listed.length} inode entries`);
    t.same(inodes(incremental.compile(policies)), each, `round ${round}: the same through the incremental compiler`);
    compared += each.length;
  }
  t.ok(compared > 300, `not vacuous: ${compared} inode entries compared`);
});
