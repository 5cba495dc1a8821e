// The audit trail's hash chain: any deleted, moved or edited line is found, and
// the writer keeps one chain across restarts and crashes.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CHAIN_GENESIS, chainLine, verifyChain } from '../../daemon/audit/chain';
import { AuditTrail, WrittenLines } from '../../daemon/audit/writer';
import { FormattedLine, LineArena } from '../../daemon/audit/record';
import { AuditFeed } from '../../daemon/audit/feed';
import { decisionLine, trailOptions } from '../audit-fixtures';

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

t.test('seq must rise by one: a line dropped and the chain recomputed over the rest is still found', async (t) => {
  let prev = CHAIN_GENESIS;
  const lines: string[] = [];
  for (const seq of [1, 2, 4]) {
    const c = chainLine(prev, { v: 1, ts: 'x', seq, type: 'decision' });
    lines.push(c.line);
    prev = c.chain;
  }
  t.match(verifyChain(text(lines)), { ok: false, line: 3, reason: /seq 4 follows seq 2/ });
});

t.test('the writer continues one chain and one seq across restarts and records a crash', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.jsonl');
  let w = await AuditTrail.open(trailOptions(file));
  w.append([{ v: 1, ts: 't', seq: 0, type: 'decision' }, { v: 1, ts: 't', seq: 0, type: 'decision' }]);
  await w.close();
  w = await AuditTrail.open(trailOptions(file));
  w.append([{ v: 1, ts: 't', seq: 0, type: 'decision' }]);
  await w.close();
  const first = fs.readFileSync(file, 'utf8');
  t.hasStrict(verifyChain(first), { ok: true, lines: 4 }, 'a restart continues the chain (a file line, then three)');
  t.same(first.trim().split('\n').map((l) => JSON.parse(l).seq), [1, 2, 3, 4], 'and seq');
  t.hasStrict(JSON.parse(first.split('\n')[0]), { type: 'file', file: 'audit.jsonl', prev_file: null, prev_chain: null, seq: 1 }, 'the file starts with its file line');

  fs.appendFileSync(file, '{"v":1,"seq":5,"type":"deci'); // a crash in the middle of a write
  let torn = 0;
  w = await AuditTrail.open(trailOptions(file, { onTorn: () => torn++ }));
  w.append([{ v: 1, ts: 't', seq: 0, type: 'decision' }]);
  await w.close();
  t.equal(torn, 1, 'the writer reports the line cut short');
  const v = verifyChain(fs.readFileSync(file, 'utf8'));
  t.hasStrict(v, { ok: true, lines: 6 }, 'the trail verifies with the recovery recorded');
  t.match(v.notes.join('\n'), /:5: cut short by a crash; helmd recorded the recovery on the next line/);
  const recovered = JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[5]);
  t.hasStrict(recovered, { type: 'recovered', seq: 5 }, 'the recovery line takes the seq the cut line could not keep');

  const r = spawnSync(HELMCTL, ['audit', 'verify', file], { encoding: 'utf8' });
  t.equal(r.status, 0, `helmctl audit verify accepts it: ${r.stderr}`);
  t.match(r.stdout, /ok, 6 lines chained/);
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"seq":2', '"seq":3'));
  const bad = spawnSync(HELMCTL, ['audit', 'verify', file], { encoding: 'utf8' });
  t.equal(bad.status, 1, 'and rejects an edited one');
  t.match(bad.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: the chain is broken here`), 'naming the first broken line');
});

t.test('a write that fails leaves nothing half-written and is counted, then recorded', async (t) => {
  // /dev/full refuses every write with ENOSPC, like a full disk.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.jsonl');
  fs.symlinkSync('/dev/full', file);
  const errors: string[] = [];
  const w = await AuditTrail.open(trailOptions(file, { onError: (e, what) => errors.push(`${what}: ${e.message}`) }));
  w.append([{ v: 1, ts: 't', seq: 0, type: 'decision' }, { v: 1, ts: 't', seq: 0, type: 'decision' }]);
  await w.flush();
  const s = w.status();
  t.hasStrict(s, { state: 'failing', linesLost: 2, linesWritten: 0 }, 'the lines are counted as lost and the state says so');
  t.match(s.error, /ENOSPC/, 'with the error');
  t.match(errors[0], /^write: .*ENOSPC/, 'reported at once');
  w.append([{ v: 1, ts: 't', seq: 0, type: 'decision' }]);
  await w.flush();
  t.equal(w.status().linesLost, 3, 'every later batch is counted too');
  t.equal(errors.length, 1, 'and not reported again before the reminder interval');
  await w.close().catch(() => undefined);
});

t.test('lines formatted ahead (all but their seq) and records written together: one chain, seq in order', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.jsonl');
  const written: string[] = [];
  const w = await AuditTrail.open(trailOptions(file, { maxBatch: 3, onWritten: (lines) => void written.push(...lines) }));
  const text = (i: number) => `{"v":1,"ts":"2026-11-30T12:00:00.000000000Z","seq":,"type":"decision","path":"/srv/f${i}"}`;
  const formatted = (i: number) => FormattedLine.fromText(text(i), text(i).indexOf('"seq":') + 6);
  w.append([formatted(1), decisionLine({ path: '/srv/o2' }), formatted(3)]);
  w.append([formatted(4), formatted(5), decisionLine({ path: '/srv/o6' }), formatted(7)]);
  await w.close();
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  t.hasStrict(verifyChain(`${lines.join('\n')}\n`), { ok: true, lines: 8 }, 'the file verifies');
  const records = lines.map((l) => JSON.parse(l));
  t.same(records.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8], 'seq rises by one through both kinds');
  t.same(records.slice(1).map((r) => r.path), ['/srv/f1', '/srv/o2', '/srv/f3', '/srv/f4', '/srv/f5', '/srv/o6', '/srv/f7'], 'in the order appended');
  t.same(written, lines, 'onWritten sees the lines as in the file');
  t.equal(FormattedLine.fromText(text(1), text(1).indexOf('"seq":') + 6).ts, '2026-11-30T12:00:00.000000000Z', 'a formatted line knows its ts');
});

t.test('the chain computed natively (helm_chain_lines) and in JS: the same bytes, batch after batch', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const at = new Date('2026-11-30T12:00:00Z');
  const odd = ['é', '"', '\\', '\n', '\u0001', '𝄞', '/', ' '];
  const write = async (chain: 'native' | 'js'): Promise<string> => {
    const file = path.join(dir, chain, 'audit.jsonl');
    const w = await AuditTrail.open(trailOptions(file, { chain, maxBatch: 7, now: () => at }));
    for (let b = 0; b < 20; b++) {
      const batch: (object | FormattedLine)[] = [];
      for (let i = 0; i <= (b * 5) % 13; i++) {
        const p = `/srv/${odd[(b + i) % odd.length].repeat(1 + ((b * i) % 40))}${i}`;
        const text = `{"v":1,"ts":"2026-11-30T12:00:00.000000000Z","seq":,"type":"decision","path":${JSON.stringify(p)}}`;
        batch.push(i % 3 ? FormattedLine.fromText(text, text.indexOf('"seq":') + 6) : decisionLine({ path: p }));
      }
      w.append(batch);
      if (b % 4 === 0) await w.written();
    }
    await w.close();
    return fs.readFileSync(file, 'utf8');
  };
  const js = await write('js');
  const nat = await write('native');
  t.ok(js.split('\n').length > 100, 'a trail of many batches');
  t.equal(nat, js, 'byte for byte');
  t.hasStrict(verifyChain(nat), { ok: true }, 'and it verifies');
  // The library's function itself: it is there, and refuses a body that is not an object.
  const { native } = await import('../../daemon/kernel/native');
  const buf = Buffer.alloc(200, 0x20);
  const n = buf.write('{"a":1}', 76);
  t.equal(native().helm_chain_lines(buf, 0, Int32Array.of(76 + n), 1, Buffer.from(CHAIN_GENESIS)), 0, 'the native chain is loaded');
  t.equal(native().helm_chain_lines(buf, 0, Int32Array.of(76 + 2), 1, Buffer.from(CHAIN_GENESIS)), -22, 'not an object: EINVAL');
});

t.test('an arena that reuses its chunks: every line reaches the file intact, while lines wait in the queue across chunks', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-audit-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'audit.jsonl');
  const arena = new LineArena(4096, 3);
  const w = await AuditTrail.open(trailOptions(file, { maxBatch: 50 }));
  const want: string[] = [];
  let n = 0;
  for (let b = 0; b < 60; b++) {
    const batch: (object | FormattedLine)[] = [];
    // 1 to 120 lines of 40 to 400 bytes: a batch spans several 4 KiB chunks, and the queue more.
    for (let i = 0; i <= (b * 37) % 120; i++) {
      n++;
      const text = `{"v":1,"seq":,"type":"decision","path":"/srv/${'é'.repeat(n % 7)}${String(n).repeat(1 + (n % 50))}"}`;
      want.push(text.replace('"seq":,', `"seq":${n + 1},`));
      batch.push(i % 17 === 5 ? decisionLine({ path: `/srv/o${n}` }) : arena.line(text, text.indexOf('"seq":') + 6));
      if (i % 17 === 5) want[want.length - 1] = JSON.stringify(decisionLine({ path: `/srv/o${n}`, seq: n + 1 }));
    }
    w.append(batch);
    // The writer takes 50 lines at a time while more are formatted: the queue holds lines of many chunks,
    // some of them made after a chunk came back. Sometimes it runs dry.
    if (b % 9 === 8) await w.written();
    else for (let k = b % 4; k >= 0; k--) await new Promise((r) => setImmediate(r));
  }
  await w.close();
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  t.hasStrict(verifyChain(`${lines.join('\n')}\n`), { ok: true, lines: n + 1 }, 'the file verifies');
  const bodies = lines.slice(1).map((l) => l.replace(/,"chain":"[0-9a-f]{64}"\}$/, '}'));
  let bad = 0;
  for (let i = 0; i < n; i++) if (bodies[i] !== want[i] && bad++ < 3) t.equal(bodies[i], want[i], `line ${i + 2}`);
  t.equal(bad, 0, `${n} lines as formatted`);
  t.ok(arena.pooled > 0, 'chunks came back to the pool');
});

t.test('the live feed keeps the last lines of the writer\'s batches as bytes until asked: the same lines as one by one', async (t) => {
  const all = trail(400);
  // WrittenLines as the writer makes them: the batch's bytes, each line followed by a newline.
  const batch = (lines: string[]): WrittenLines => {
    const starts: number[] = [0];
    const text = lines.map((l) => `${l}\n`).join('');
    for (const l of lines) starts.push(starts[starts.length - 1] + Buffer.byteLength(l) + 1);
    return new WrittenLines(Buffer.from(text), starts);
  };
  const lazy = new AuditFeed(50);
  const plain = new AuditFeed(50);
  let at = 0;
  let i = 0;
  const seen: string[] = [];
  while (at < all.length) {
    const n = [1, 3, 80, 49, 50, 51, 7, 200][i++ % 8];
    const part = all.slice(at, at + n);
    at += n;
    lazy.publish(batch(part));
    plain.publish(part);
    if (i % 5 === 0) t.same(lazy.last(1000, () => true).map((r) => r.line), plain.last(1000, () => true).map((r) => r.line), `after batch ${i}`);
    if (i === 6) {
      // A subscriber for one batch: it sees every line, and what is kept stays the same.
      const stop = lazy.subscribe(() => true, (r) => void seen.push(r.line));
      const more = all.slice(at, at + 60);
      at += 60;
      lazy.publish(batch(more));
      plain.publish(more);
      stop();
      t.same(seen, more, 'the subscriber saw the batch');
    }
  }
  t.same(lazy.last(1000, () => true).map((r) => r.line), all.slice(-50), 'the last 50 lines at the end');
  t.same(lazy.last(5, (r) => (r.seq as number) % 2 === 0).map((r) => r.record.seq), [392, 394, 396, 398, 400], 'filtered');
});

t.test('the live feed under batches of random sizes, each smaller or larger than what it keeps: the same lines as one by one after every batch', async (t) => {
  const all = trail(3000);
  const batch = (lines: string[]): WrittenLines => {
    // Lines after some other bytes, as in the writer's buffer (a prefix), and an Int32Array of starts.
    const starts = new Int32Array(lines.length + 1);
    starts[0] = 3;
    lines.forEach((l, i) => (starts[i + 1] = starts[i] + Buffer.byteLength(l) + 1));
    return new WrittenLines(Buffer.from(`\n\n\n${lines.map((l) => `${l}\n`).join('')}`), starts, lines.length);
  };
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const lazy = new AuditFeed(64);
  const plain = new AuditFeed(64);
  let bad = 0;
  for (let at = 0, i = 0; at < all.length; i++) {
    const n = 1 + (rnd(4) ? rnd(40) : rnd(150));
    const part = all.slice(at, at + n);
    at += n;
    lazy.publish(batch(part));
    plain.publish(part);
    // Sometimes asked in between (the kept bytes become records), usually not.
    if (rnd(7) === 0 || at >= all.length) {
      const got = lazy.last(1000, () => true).map((r) => r.line);
      const want = plain.last(1000, () => true).map((r) => r.line);
      if (JSON.stringify(got) !== JSON.stringify(want) && bad++ < 3) t.same(got, want, `after batch ${i}`);
    }
  }
  t.equal(bad, 0, 'the same last lines every time asked');
  t.same(lazy.last(1000, () => true).map((r) => r.line), all.slice(-64), 'the last 64 at the end');
});

t.test('the live feed keeps the last lines and parses a record only when asked', async (t) => {
  const feed = new AuditFeed(3);
  const lines = trail(5);
  feed.publish(lines.slice(0, 2));
  feed.publish(lines.slice(2));
  const last = feed.last(10, () => true);
  t.same(last.map((r) => r.line), lines.slice(2), 'the last three, oldest first');
  t.same(last[0].record, { v: 1, seq: 3, type: 'decision', decision: 'deny', path: '/srv/f3' }, 'the record without its chain');
  const seen: number[] = [];
  const stop = feed.subscribe((r) => r.seq !== 7, (r) => void seen.push(r.record.seq as number));
  let prev = lines[4].match(/"chain":"([0-9a-f]{64})"/)![1];
  const more: string[] = [];
  for (let i = 6; i <= 9; i++) {
    const c = chainLine(prev, { v: 1, seq: i, type: 'decision' });
    more.push(c.line);
    prev = c.chain;
  }
  feed.publish(more);
  stop();
  t.same(seen, [6, 8, 9], 'a subscriber gets every line its filter passes, even more than are kept');
});
