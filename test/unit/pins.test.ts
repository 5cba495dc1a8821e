// The layout id that decides what a starting helmd does with pinned state: reuse
// the maps (same layout), swap the programs (new object, same layout) or rebuild
// (new layout). Computed from the object alone, without privileges: the helm.h
// hash the object embeds and every map's and program's definition. Also the pin
// meta record and the reading of a pin directory's structure.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { identifyFile, readPins } from '../../daemon/kernel/pins';
import { C, LAYOUT, decodePinMeta, encodePinMeta, type PinMeta } from '../../daemon/kernel/layout';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BUILD = path.join(ROOT, 'build');
const obj = (p: string) => path.join(BUILD, p);

t.test('the helm object: helm.h embedded, every map and program described', async (t) => {
  const id = identifyFile(obj('helm.bpf.o'));
  const header = crypto.createHash('sha256').update(fs.readFileSync(path.join(ROOT, 'bpf', 'helm.h'))).digest('hex');
  t.equal(id.header, header, 'the object carries the SHA-256 of the helm.h it was built from');
  t.match(id.layout, /^[0-9a-f]{64}$/);
  t.match(id.object, /^[0-9a-f]{64}$/, 'object id: a SHA-256 (of the file and the programs loaded from it)');
  for (const m of ['governed_cgroups', 'settings', 'path_tables', 'inode_tables', 'protected_inodes', 'deny_events', 'allow_events', 'lost_events', 'agent_counters']) t.ok(id.maps.includes(m), `map ${m}`);
  t.notOk(id.maps.some((m) => m.startsWith('.')), 'internal data maps (.rodata...) are neither described nor pinned');
  t.ok(id.programs.includes('helm_file_open') && id.programs.length >= 20, `${id.programs.length} programs`);
  t.same(identifyFile(obj('helm.bpf.o')), id, 'the same answer every time');
});

t.test('network-only: the same maps, fewer programs: another object on the same layout', async (t) => {
  const all = identifyFile(obj('helm.bpf.o'));
  const net = identifyFile(obj('helm.bpf.o'), { networkOnly: true });
  t.equal(net.layout, all.layout, 'the same layout: the maps are reused');
  t.not(net.object, all.object, 'another object id: links are replaced or released');
  t.ok(net.programs.length > 0 && net.programs.length < all.programs.length, `${net.programs.length} of ${all.programs.length} programs`);
  t.notOk(net.programs.includes('helm_file_open'), 'no LSM program');
});

t.test('a new object with the same layout: reuse the maps, swap the programs', async (t) => {
  const a = identifyFile(obj('helm.bpf.o'));
  const b = identifyFile(obj('test/helm-next-object.bpf.o'));
  t.equal(b.layout, a.layout, 'same layout');
  t.not(b.object, a.object, 'another object');
});

t.test('a changed helm.h is a new layout, even with identical maps', async (t) => {
  const a = identifyFile(obj('helm.bpf.o'));
  const b = identifyFile(obj('test/helm-next-layout.bpf.o'));
  t.same(b.maps, a.maps, 'the same maps by name');
  t.not(b.layout, a.layout, 'a different layout');
});

t.test('a changed map definition is a new layout; new program code is not', async (t) => {
  const v1 = identifyFile(obj('test/pinning-v1.bpf.o'));
  const v2 = identifyFile(obj('test/pinning-v2.bpf.o'));
  const v3 = identifyFile(obj('test/pinning-v3.bpf.o'));
  t.equal(v1.header, undefined, 'an object without the helm.h section still has a layout');
  t.equal(v2.layout, v1.layout, 'v2 changes only program code');
  t.not(v2.object, v1.object);
  t.not(v3.layout, v1.layout, "v3 changes a map's value size");
  t.same(v1.programs, ['pin_connect4', 'pin_getppid']);
  t.same([...v1.maps].sort(), ['blocked_ports', 'hits', 'target']);
});

t.test('the pin meta record: every field round-trips, in the layout of helm.h', async (t) => {
  const m: PinMeta = {
    format: C.HELM_PIN_FORMAT,
    state: C.HELM_PIN_CHANGING,
    layout: 'ab'.repeat(32),
    object: 'cd'.repeat(32),
    instance: 'ef'.repeat(16),
    createdNs: 1_790_000_000_123_456_789n,
    version: '0.1.0',
  };
  const buf = encodePinMeta(m);
  t.equal(buf.length, LAYOUT.helm_pin_meta.size);
  t.same(decodePinMeta(buf), m);
  t.equal(buf.readUInt32LE(0), C.HELM_PIN_FORMAT, 'format first, so any version can read it');
  const long = decodePinMeta(encodePinMeta({ ...m, version: 'x'.repeat(100) }));
  t.equal(long.version, 'x'.repeat(31), 'the version is cut to fit, NUL-terminated');
  t.throws(() => encodePinMeta({ ...m, layout: 'abc' }), RangeError, 'a hash of the wrong size is refused');
});

t.test('reading a pin directory: nothing, an unfinished install, a broken pointer', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-pins-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const pins = path.join(dir, 'helm');
  t.same(readPins(pins), { dir: pins, present: false, maps: [], links: [], leftovers: [] }, 'no directory: nothing pinned');

  fs.mkdirSync(path.join(pins, 'set-1'), { recursive: true });
  fs.mkdirSync(path.join(pins, 'set-2'));
  const unfinished = readPins(pins);
  t.equal(unfinished.present, true);
  t.equal(unfinished.current, undefined, 'no current set: an install that never finished');
  t.same(unfinished.leftovers, ['set-1', 'set-2'], 'its sets are leftovers, removed once a set is current');
  t.equal(unfinished.problem, undefined, 'not a problem: helmd starts afresh');

  fs.symlinkSync('set-9', path.join(pins, 'current'));
  const broken = readPins(pins);
  t.match(broken.problem, /current points at "set-9", which is not a pinned set here/, 'a pointer to nothing is reported');
  fs.rmSync(path.join(pins, 'current'));
  fs.symlinkSync('/etc', path.join(pins, 'current'));
  t.match(readPins(pins).problem, /current points at "\/etc"/, 'and so is one out of the directory');
});
