// C/TypeScript drift guard: build/layout_dump (native/layout_dump.c, compiled against bpf/helm.h)
// prints every struct's size and field offsets and every constant; they must equal LAYOUT and C in
// daemon/kernel/layout.ts (and the limits in daemon/kernel/limits.ts), in both directions.

import t from 'tap';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { C, LAYOUT } from '../../daemon/kernel/layout';
import * as limits from '../../daemon/kernel/limits';

// Tests run from dist/test/unit; the binary is built into <repo>/build.
const ROOT = path.resolve(__dirname, '../../..');
const LAYOUT_DUMP = path.join(ROOT, 'build/layout_dump');

type FieldDump = [offset: number, size: number];
interface StructDump {
  size: number;
  fields: Record<string, FieldDump>;
}
interface Dump {
  structs: Record<string, StructDump>;
  constants: Record<string, number>;
}

function readDump(): Dump {
  const json = JSON.parse(execFileSync(LAYOUT_DUMP, { encoding: 'utf8' })) as Record<string, unknown>;
  const { constants, ...structs } = json;
  const c = { ...(constants as Record<string, number>) };
  delete c._; // the printer's placeholder that lets every constant start with ","
  return { structs: structs as Record<string, StructDump>, constants: c };
}

/** Names in `a` but not in `b`. */
const missingFrom = (a: object, b: object): string[] => Object.keys(a).filter((k) => !Object.prototype.hasOwnProperty.call(b, k));

t.test('layout_dump is built', async (t) => {
  // Deliberately a failure, not a skip: without the binary drift would go unnoticed.
  if (fs.existsSync(LAYOUT_DUMP)) t.pass(`${LAYOUT_DUMP} exists`);
  else t.fail(`${LAYOUT_DUMP} is missing: run \`make native\` (or \`make\`) before the unit tests`);
});

t.test('C structs and LAYOUT agree', { skip: !fs.existsSync(LAYOUT_DUMP) && 'layout_dump is missing (reported as a failure above)' }, async (t) => {
  const { structs } = readDump();
  const ts: Record<string, { size: number; fields: Record<string, readonly [number, number]> }> = LAYOUT;

  t.same(missingFrom(structs, ts), [], 'every struct in helm.h (as dumped) is in LAYOUT');
  t.same(missingFrom(ts, structs), [], 'every struct in LAYOUT is in helm.h (as dumped)');
  t.ok(Object.keys(structs).length >= 8, 'the dump lists the structs (sanity check of the parsing)');

  for (const name of Object.keys(structs).filter((s) => s in ts)) {
    const c = structs[name];
    const mine = ts[name];
    t.equal(mine.size, c.size, `sizeof(struct ${name})`);
    t.same(missingFrom(c.fields, mine.fields), [], `every field of struct ${name} is in LAYOUT.${name}.fields`);
    t.same(missingFrom(mine.fields, c.fields), [], `every field of LAYOUT.${name}.fields is in struct ${name}`);
    for (const field of Object.keys(c.fields).filter((f) => f in mine.fields)) {
      t.same([...mine.fields[field]], c.fields[field], `${name}.${field}: [offset, size]`);
    }
  }
});

t.test('C constants and C/limits agree', { skip: !fs.existsSync(LAYOUT_DUMP) && 'layout_dump is missing (reported as a failure above)' }, async (t) => {
  const { constants } = readDump();
  const ts: Record<string, number> = C;

  t.same(missingFrom(constants, ts), [], 'every constant dumped from helm.h is in C');
  t.same(missingFrom(ts, constants), [], 'every constant in C is dumped from helm.h');
  t.ok(Object.keys(constants).length >= 30, 'the dump lists the constants (sanity check of the parsing)');
  for (const name of Object.keys(constants).filter((k) => k in ts)) {
    t.equal(ts[name], constants[name], name);
  }

  // limits.ts mirrors some of them for code that must not import the layout.
  t.equal(limits.HELM_PATH_BUF, constants.HELM_PATH_BUF, 'limits.HELM_PATH_BUF');
  t.equal(limits.HELM_MAX_CGROUP_DEPTH, constants.HELM_MAX_CGROUP_DEPTH, 'limits.HELM_MAX_CGROUP_DEPTH');
  t.equal(limits.HELM_MAX_PATH_ENTRIES, constants.HELM_MAX_PATH_ENTRIES, 'limits.HELM_MAX_PATH_ENTRIES');
  // The longest rule path leaves room for "/" and NUL in the kernel's path buffer.
  t.equal(limits.MAX_RULE_PATH_BYTES, constants.HELM_PATH_BUF - 2, 'limits.MAX_RULE_PATH_BYTES');
});

t.test('buffers sized from the layout', { skip: !fs.existsSync(LAYOUT_DUMP) && 'layout_dump is missing (reported as a failure above)' }, async (t) => {
  // Fields that are HELM_PATH_BUF-sized in C must be so in TypeScript too (checked through the dump).
  const { structs, constants } = readDump();
  t.equal(structs.helm_path_key.fields.path[1], constants.HELM_PATH_BUF, 'helm_path_key.path is HELM_PATH_BUF bytes');
  t.equal(structs.helm_event.fields.path[1], constants.HELM_PATH_BUF, 'helm_event.path is HELM_PATH_BUF bytes');
  // LPM trie keys: 4 bytes of prefixlen, at most 256 bytes of data (role id + path).
  t.equal(structs.helm_path_key.size - 4, 4 + constants.HELM_PATH_BUF, 'LPM data = role id + path');
  t.ok(structs.helm_path_key.size - 4 <= 256, 'LPM trie data fits the kernel limit of 256 bytes');
  t.equal(structs.helm_path_value.fields.verdict[1], constants.HELM_FILE_OPS * structs.helm_verdict.size, 'one verdict per file op');
  t.equal(structs.helm_inode_value.fields.self[1], constants.HELM_FILE_OPS * structs.helm_verdict.size, 'one verdict per file op for the object itself');
  t.equal(structs.helm_inode_value.fields.below[1], constants.HELM_FILE_OPS * structs.helm_verdict.size, 'and one per file op for what is below it');
});
