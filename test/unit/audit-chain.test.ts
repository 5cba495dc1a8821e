// The audit trail's hash chain: any deleted, moved or edited line is found, and
// the writer keeps one chain across restarts and crashes.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CHAIN_GENESIS, chainLine, verifyChain } from '../../daemon/audit/chain';
import { openAuditWriter } from '../../daemon/audit/writer';

const HELMCTL = path.resolve(__dirname, '..', '..', '..', 'bin', 'helmctl');

function trail(n: number): string[] {
  let prev = CHAIN_GENESIS;
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const c = chainLine(prev, { v: 1, seq: i, type: 'decision', decision: 'deny', path: `/srv/f${i}` });
    lines.push(c.line);
    prev = c.chain;
  }
  return lines;
}
const text = (lines: string[]) => lines.join('\n') + '\n';

t.test('an intact trail verifies, line by line', async (t) => {
  const v = verifyChain(text(trail(5)));
  t.hasStrict(v, { ok: true, lines: 5 });
  t.hasStrict(verifyChain(''), { ok: true, lines: 0 }, 'an empty trail is intact');
  t.match(trail(1)[0], /^\{"v":1,"seq":1,.*,"chain":"[0-9a-f]{64}"\}$/, 'the chain is the last field of each line');
});

t.test('every tampering is found at the first line it breaks', async (t) => {
  const lines = trail(6);
  const edited = [...lines];
  edited[2] = edited[2].replace('"deny"', '"allow"');
  t.hasStrict(verifyChain(text(edited)), { ok: false, line: 3 }, 'an edited line');

  const deleted = lines.filter((_, i) => i !== 3);
  t.hasStrict(verifyChain(text(deleted)), { ok: false, line: 4 }, 'a deleted line: the next one no longer follows');

  const swapped = [...lines];
  [swapped[1], swapped[2]] = [swapped[2], swapped[1]];
  t.hasStrict(verifyChain(text(swapped)), { ok: false, line: 2 }, 'two lines swapped');

  t.hasStrict(verifyChain(text(lines.slice(1))), { ok: false, line: 1 }, 'the first line removed');
  t.hasStrict(verifyChain(text([...lines.slice(0, 3), '{"v":1,"type":"decision"}', ...lines.slice(3)])), { ok: false, line: 4 }, 'an inserted unchained line');
  t.hasStrict(verifyChain(text(lines).slice(0, -10)), { ok: false, line: 6 }, 'a last line cut short');
  // Recomputing one line's chain does not help: the next line is chained to the old value.
  const forged = [...lines];
  forged[2] = chainLine(forged[1].match(/"chain":"([0-9a-f]{64})"/)![1], { v: 1, seq: 3, type: 'decision', decision: 'allow', path: '/srv/f3' }).line;
  t.hasStrict(verifyChain(text(forged)), { ok: false, line: 4 }, 'a forged line with a fresh chain breaks the next one');
});

t.test('the writer continues one chain across restarts and records a crash', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.jsonl');
  const errors: Error[] = [];
  let w = openAuditWriter(file, (e) => errors.push(e));
  w.append([{ v: 1, seq: 1, type: 'decision' }, { v: 1, seq: 2, type: 'decision' }]);
  w.close();
  w = openAuditWriter(file, (e) => errors.push(e));
  w.append([{ v: 1, seq: 1, type: 'decision' }]);
  w.close();
  t.hasStrict(verifyChain(fs.readFileSync(file, 'utf8')), { ok: true, lines: 3 }, 'a restart continues the chain');

  fs.appendFileSync(file, '{"v":1,"seq":2,"type":"deci'); // a crash in the middle of a write
  let torn = 0;
  w = openAuditWriter(file, (e) => errors.push(e), () => torn++);
  w.append([{ v: 1, seq: 1, type: 'decision' }]);
  w.close();
  t.equal(torn, 1, 'the writer reports the line cut short');
  const v = verifyChain(fs.readFileSync(file, 'utf8'));
  t.hasStrict(v, { ok: true, lines: 6 }, 'the trail verifies with the recovery recorded');
  t.match(v.notes.join('\n'), /line 4: cut short by a crash; helmd recorded the recovery on line 5/);
  t.same(errors, []);

  const r = spawnSync(HELMCTL, ['audit', 'verify', file], { encoding: 'utf8' });
  t.equal(r.status, 0, 'helmctl audit verify accepts it');
  t.match(r.stdout, /ok, 6 lines chained/);
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"seq":2', '"seq":3'));
  const bad = spawnSync(HELMCTL, ['audit', 'verify', file], { encoding: 'utf8' });
  t.equal(bad.status, 1, 'and rejects an edited one');
  t.match(bad.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: the chain is broken here`), 'naming the first broken line');
});
