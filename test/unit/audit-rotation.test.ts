// Rotation: every line exactly once under concurrent appends, one chain through
// every file (compressed or not), verification that fails where a file or a line
// across a boundary was edited, removed, moved or cut short, and recovery from
// crashes in the middle of a rotation or a compression.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { AuditTrail, compressFile } from '../../daemon/audit/writer';
import { readLines, rotatedFiles, trailFiles } from '../../daemon/audit/files';
import { verifyFiles, verifyTrails } from '../../daemon/audit/verify';
import { Rng } from '../rng';
import { decisionLine, trailOptions } from '../audit-fixtures';

const HELMCTL = path.resolve(__dirname, '..', '..', '..', 'bin', 'helmctl');

function tmpdir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-rotation-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every line of the trail in `dir`, parsed, in trail order. */
async function allLines(dir: string): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const g of trailFiles([dir])) for (const f of g.files) await readLines(f, (l) => void out.push(JSON.parse(l.text)));
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A trail of `n` decision lines in `dir`, rotated every `bytes`. */
async function writeTrail(dir: string, n: number, bytes: number, compress: boolean): Promise<string> {
  const file = path.join(dir, 'audit.jsonl');
  const w = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: bytes, maxAgeMs: 0, compress } }));
  // Rotation is checked between writes: flush in small batches, as a steady drain would.
  for (let i = 0; i < n; i++) {
    w.append([decisionLine({ id: i })]);
    if (i % 10 === 9) await w.flush();
  }
  await w.close();
  return file;
}

const gunzip = (f: string) => zlib.gunzipSync(fs.readFileSync(f)).toString('utf8');
const regzip = (f: string, edit: (lines: string[]) => string[]) => fs.writeFileSync(f, zlib.gzipSync(edit(gunzip(f).split('\n')).join('\n')));

t.test('rotation keeps every line exactly once, in order, under concurrent appends', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'audit.jsonl');
  const w = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: 8 * 1024, maxAgeMs: 0, compress: true }, maxBatch: 37 }));
  const rng = new Rng(7);
  const PRODUCERS = 5;
  const EACH = 800;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async (_, p) => {
      for (let n = 0; n < EACH; ) {
        const k = Math.min(EACH - n, 1 + rng.int(20));
        w.append(Array.from({ length: k }, (_, i) => decisionLine({ producer: p, n: n + i })));
        n += k;
        if (rng.chance(0.3)) await sleep(rng.int(3));
        else await new Promise((r) => setImmediate(r));
      }
    }),
  );
  await w.close();
  const rotated = rotatedFiles(file);
  t.ok(rotated.length >= 10, `rotated ${rotated.length} times`);
  t.ok(rotated.every((f) => f.compressed), 'every rotated file is compressed');
  t.same(fs.readdirSync(dir).filter((n) => !n.endsWith('.gz') && n !== 'audit.jsonl'), [], 'no uncompressed copy or temporary file is left');
  const lines = await allLines(dir);
  const decisions = lines.filter((l) => l.type === 'decision');
  t.equal(decisions.length, PRODUCERS * EACH, 'as many decision lines as were appended');
  const seen = new Set(decisions.map((l) => `${l.producer}:${l.n}`));
  t.equal(seen.size, PRODUCERS * EACH, 'each exactly once');
  for (let p = 0; p < PRODUCERS; p++) {
    const ns = decisions.filter((l) => l.producer === p).map((l) => l.n as number);
    t.same(ns, Array.from({ length: EACH }, (_, i) => i), `producer ${p}: in the order appended`);
  }
  t.same(lines.map((l) => l.seq), Array.from({ length: lines.length }, (_, i) => i + 1), 'seq runs through every file without a gap');
  t.equal(lines.filter((l) => l.type === 'file').length, rotated.length + 1, 'every file starts with a file line');
  const [v] = await verifyTrails([dir]);
  t.hasStrict(v, { ok: true, lines: lines.length }, 'the chain runs through every file');
});

t.test('each file starts with a line chained to the last of the one before', async (t) => {
  const dir = tmpdir(t);
  const file = await writeTrail(dir, 200, 4096, false);
  const files = [...rotatedFiles(file).map((f) => f.path), file];
  for (let i = 1; i < files.length; i++) {
    const first = JSON.parse(fs.readFileSync(files[i], 'utf8').split('\n')[0]);
    const prevLines = fs.readFileSync(files[i - 1], 'utf8').trim().split('\n');
    const last = JSON.parse(prevLines[prevLines.length - 1]);
    t.hasStrict(first, { type: 'file', prev_file: path.basename(files[i - 1]), prev_chain: last.chain, prev_seq: last.seq, seq: last.seq + 1 }, `${path.basename(files[i])}`);
  }
});

t.test('verify across rotated files finds what was edited, removed, moved or cut short', async (t) => {
  const base = tmpdir(t);
  const orig = path.join(base, 'orig');
  fs.mkdirSync(orig);
  await writeTrail(orig, 300, 6 * 1024, true);
  const gz = rotatedFiles(path.join(orig, 'audit.jsonl')).map((f) => path.basename(f.path));
  t.ok(gz.length >= 4, `${gz.length} rotated files`);
  t.hasStrict((await verifyTrails([orig]))[0], { ok: true }, 'the original verifies');

  const copy = (name: string) => {
    const to = path.join(base, name);
    fs.cpSync(orig, to, { recursive: true });
    return to;
  };
  const cases: [string, (d: string) => void, string, number | RegExp, RegExp][] = [
    ['a line edited in a compressed file', (d) => regzip(path.join(d, gz[1]), (ls) => ls.map((l, i) => (i === 4 ? l.replace('"/srv/x"', '"/srv/y"') : l))), gz[1], 5, /chain is broken/],
    ['a line removed', (d) => regzip(path.join(d, gz[2]), (ls) => ls.filter((_, i) => i !== 3)), gz[2], 4, /chain is broken|seq/],
    ['the last line of one file moved to the start of the next', (d) => {
      const a = gunzip(path.join(d, gz[1])).trimEnd().split('\n');
      const last = a.pop()!;
      fs.writeFileSync(path.join(d, gz[1]), zlib.gzipSync(a.join('\n') + '\n'));
      regzip(path.join(d, gz[2]), (ls) => [last, ...ls]);
    }, gz[2], 1, /./],
    ['a whole rotated file removed', (d) => fs.rmSync(path.join(d, gz[2])), gz[3], 1, /continues a different chain/],
    ['a compressed file cut short', (d) => {
      const text = gunzip(path.join(d, gz[1]));
      fs.writeFileSync(path.join(d, gz[1]), zlib.gzipSync(text.slice(0, -30)));
    }, gz[1], /\d+/, /cut short/],
    ['the first line of the first file removed', (d) => regzip(path.join(d, gz[0]), (ls) => ls.slice(1)), gz[0], 1, /chain is broken/],
    ['a rotated file replaced by one of another trail', (d) => fs.copyFileSync(path.join(d, gz[0]), path.join(d, gz[1])), gz[1], 1, /continues a different chain/],
  ];
  for (const [what, tamper, file, line, reason] of cases) {
    const d = copy(what.replace(/\W+/g, '-'));
    tamper(d);
    const [v] = await verifyTrails([d]);
    t.equal(v.ok, false, `${what}: refused`);
    t.equal(path.basename(v.broken?.file ?? ''), file, `${what}: in ${file}`);
    if (typeof line === 'number') t.equal(v.broken?.line, line, `${what}: at line ${line}`);
    else t.match(String(v.broken?.line), line);
    t.match(v.broken?.reason ?? '', reason, `${what}: ${v.broken?.reason}`);
  }

  // Files out of order, given explicitly: the chain is checked in the order of the trail's own numbering.
  const shuffled = new Rng(3).shuffle([...gz.map((g) => path.join(orig, g)), path.join(orig, 'audit.jsonl')]);
  const cli = spawnSync(HELMCTL, ['audit', 'verify', ...shuffled], { encoding: 'utf8' });
  t.equal(cli.status, 0, `files given in any order verify in trail order: ${cli.stderr}`);
  t.match(cli.stdout, /ok, \d+ lines chained/);
  // But a sequence forced out of order is refused.
  const forced = await verifyFiles([path.join(orig, gz[1]), path.join(orig, gz[0])]);
  t.equal(forced.ok, false, 'two files in the wrong order are refused');

  // A trail whose oldest files were archived elsewhere: checked from what the first file given says it follows.
  const tail = await verifyFiles([...gz.slice(2).map((g) => path.join(orig, g)), path.join(orig, 'audit.jsonl')]);
  t.equal(tail.ok, true, 'the newer part of a trail verifies on its own');
  // (the file line names it as it was at rotation, before it was compressed)
  t.match(tail.notes.join('\n'), new RegExp(`starts earlier, in ${gz[1].replace(/\.gz$/, '').replace(/\./g, '\\.')}, which was not given`), 'and says where it starts');
  const cliBad = spawnSync(HELMCTL, ['audit', 'verify', path.join(copy('cli-bad'), gz[0])], { encoding: 'utf8' });
  t.equal(cliBad.status, 0, 'a single rotated file verifies on its own');
  fs.writeFileSync(path.join(base, 'cli-bad', gz[0]), zlib.gzipSync(gunzip(path.join(orig, gz[0])).replace('"seq":3', '"seq":4')));
  const cliBad2 = spawnSync(HELMCTL, ['audit', 'verify', path.join(base, 'cli-bad')], { encoding: 'utf8' });
  t.equal(cliBad2.status, 1, 'helmctl audit verify exits 1 on a broken trail');
  t.match(cliBad2.stderr, new RegExp(`${gz[0].replace(/\./g, '\\.')}:3: `), 'and names file and line');
});

t.test('restarts: the chain continues from the active file, or from the last rotated one when it is gone', async (t) => {
  const dir = tmpdir(t);
  const file = await writeTrail(dir, 100, 4096, true);
  // A crash between renaming the active file and creating the next one: no active file.
  fs.rmSync(file);
  const before = rotatedFiles(file);
  const w = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: 4096, maxAgeMs: 0, compress: true } }));
  w.append([decisionLine({ id: 'after' })]);
  await w.close();
  const first = JSON.parse(fs.readFileSync(file, 'utf8').split('\n')[0]);
  t.hasStrict(first, { type: 'file', prev_file: path.basename(before[before.length - 1].path) }, 'the new file follows the last rotated one (compressed)');
  const [v] = await verifyTrails([dir]);
  t.hasStrict(v, { ok: true }, 'and the chain verifies through it');

  // A torn line in a file that was just started after a rotation.
  fs.appendFileSync(file, '{"v":1,"ts":"2026-');
  let torn = 0;
  const w2 = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: 4096, maxAgeMs: 0, compress: true }, onTorn: () => torn++ }));
  w2.append([decisionLine({ id: 'after-crash' })]);
  await w2.close();
  t.equal(torn, 1, 'the cut line is reported');
  const [v2] = await verifyTrails([dir]);
  t.hasStrict(v2, { ok: true }, 'and recorded: the trail verifies');
  t.match(v2.notes.join('\n'), /cut short by a crash/);
});

t.test('a crash in the middle of a compression: finished on the next start, nothing lost or doubled', async (t) => {
  const dir = tmpdir(t);
  const file = await writeTrail(dir, 120, 4096, false);
  const plain = rotatedFiles(file).map((f) => f.path);
  t.ok(plain.length >= 3 && plain.every((p) => !p.endsWith('.gz')), 'rotated, uncompressed');
  const linesBefore = (await allLines(dir)).length;
  // 1: a complete .gz next to its plain file (the crash came before the unlink)
  fs.writeFileSync(`${plain[0]}.gz`, zlib.gzipSync(fs.readFileSync(plain[0])));
  // 2: a half-written temporary
  fs.writeFileSync(`${plain[1]}.gz.tmp`, 'partial');
  const w = await AuditTrail.open(trailOptions(file, { rotation: { maxBytes: 4096, maxAgeMs: 0, compress: true } }));
  await w.close();
  const names = fs.readdirSync(dir).sort();
  t.same(names.filter((n) => n.endsWith('.tmp')), [], 'the temporary is gone');
  t.same(names.filter((n) => /\.jsonl$/.test(n) && n !== 'audit.jsonl'), [], 'every rotated file is compressed now');
  const after = await allLines(dir);
  t.equal(after.length, linesBefore, 'not a line lost or doubled');
  t.hasStrict((await verifyTrails([dir]))[0], { ok: true });
  // compressFile is all or nothing: a failure leaves the plain file and no .gz
  await t.rejects(compressFile(path.join(dir, 'missing.jsonl')));
  t.notOk(fs.existsSync(path.join(dir, 'missing.jsonl.gz')) || fs.existsSync(path.join(dir, 'missing.jsonl.gz.tmp')));
});

t.test('rotation by age', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'audit.jsonl');
  let now = Date.parse('2026-11-30T00:00:00Z');
  const opts = trailOptions(file, { rotation: { maxBytes: 0, maxAgeMs: 3_600_000, compress: false }, now: () => new Date(now) });
  const w = await AuditTrail.open(opts);
  w.append([decisionLine()]);
  await w.flush();
  now += 1_800_000;
  w.append([decisionLine()]);
  await w.flush();
  t.equal(rotatedFiles(file).length, 0, 'not before the age');
  now += 1_900_000;
  w.append([decisionLine()]);
  await w.flush();
  const r = rotatedFiles(file);
  t.equal(r.length, 1, 'at the first write after the age');
  t.match(path.basename(r[0].path), /^audit\.000001\.20261130T010140Z\.jsonl$/, 'named with its index and the rotation time (UTC)');
  await w.close();
  // A restart keeps the file's age (from its first line), not the restart time.
  now += 1_000;
  const w2 = await AuditTrail.open(opts);
  now += 3_600_000;
  w2.append([decisionLine()]);
  await w2.flush();
  t.equal(rotatedFiles(file).length, 2, 'an old file is rotated after a restart too');
  await w2.close();
});
