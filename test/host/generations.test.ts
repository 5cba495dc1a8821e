// Generations on the host kernel (helm's programs loaded network-only, as this kernel
// allows; the tables and the switch are the same with the LSM programs): each slot of
// the outer maps keeps its tables, and a new generation rewrites only the entries that
// differ from what its slot held. Whatever came before, after every apply the active
// slot's tables must hold exactly what the compiled policy says — no entry left over
// from an older generation, none missing — and a write the kernel refuses half-way
// must leave the running generation in force and the next apply exact again.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KernelEnforcer, tableImages } from '../../daemon/kernel/enforcer';
import type { BpfMap } from '../../daemon/kernel/bpf';
import { C, NO_VERDICT } from '../../daemon/kernel/layout';
import { compilePolicy, type CompiledPolicy } from '../../daemon/policy/compile';
import { IncrementalCompiler } from '../../daemon/policy/compile-incremental';
import { parsePolicySource } from '../../daemon/policy/parse';
import { requireRoot } from './host';

/** A buffer as the enforcer keeps it: latin1 text, trailing zero bytes dropped. */
function text(b: Buffer): string {
  let end = b.length;
  while (end > 0 && b[end - 1] === 0) end--;
  return b.toString('latin1', 0, end);
}

/** Everything in a kernel table, as key text → value text. */
function contents(map: BpfMap): Map<string, string> {
  const out = new Map<string, string>();
  for (const k of map.keys()) out.set(text(k), text(map.lookup(k, map.valueBytes)!));
  return out;
}

interface Slots {
  slots: ({ tables: BpfMap[]; generation: number | undefined } | undefined)[];
}
const slotOf = (e: KernelEnforcer, generation: number) => (e as unknown as Slots).slots[generation & (C.HELM_MAX_GENERATIONS - 1)]!;

/** The active generation's tables hold exactly what `compiled` says, table by table. */
function checkActive(t: Test, e: KernelEnforcer, compiled: CompiledPolicy, what: string): void {
  const slot = slotOf(e, e.activeGeneration);
  t.equal(slot.generation, e.activeGeneration, `${what}: the active slot is the active generation's`);
  const want = tableImages(compiled);
  const wrong = slot.tables.map((m, i) => [m.name, contents(m), want[i].content] as const).filter(([, got, exp]) => JSON.stringify([...got].sort()) !== JSON.stringify([...exp].sort()));
  t.same(
    wrong.map(([name, got, exp]) => `${name}: ${got.size} entries, want ${exp.size}`),
    [],
    `${what}: every table holds exactly the compiled entries (${want.map((w) => w.content.size).join(', ')})`,
  );
}

function policy(dir: string, version: { extra?: string[]; block?: boolean; connect?: string[]; writeA?: boolean }): string {
  const list = (xs: string[]) => `[${xs.map((x) => `'${x}'`).join(', ')}]`;
  return `apiVersion: helm/v1
kind: Policy
metadata: { name: gen }
spec:
  roles: [dev, ops]
  allow:
    - { id: tree, read: [${dir}/tree/], write: [${dir}/tree/out/] }
    - { id: files, read: ${list([`${dir}/a`, ...(version.extra ?? [])])}${version.writeA ? `, write: ['${dir}/a']` : ''} }
${version.connect ? `    - { id: net, connect: ${list(version.connect)} }\n` : ''}${version.block ? `  block:\n    - { id: secret, read: [${dir}/tree/secret, ${dir}/tree/locked/] }\n` : ''}`;
}

if (requireRoot()) {
  // As helmd compiles (each edit from the compile before: unchanged path entries are the
  // same objects, which the enforcer does not write again), and each compile from nothing.
  for (const how of ['compiled from the one before', 'compiled from nothing'] as const) {
  t.test(`each apply leaves the active slot exactly as compiled, rewriting reused tables in place (${how})`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-gen-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.mkdirSync(`${dir}/tree/locked`, { recursive: true });
    fs.writeFileSync(`${dir}/tree/secret`, 's');
    fs.writeFileSync(`${dir}/tree/locked/x`, 'x');
    const compiler = new IncrementalCompiler();
    const compile = (v: Parameters<typeof policy>[1]) => {
      const policies = parsePolicySource(policy(dir, v), 'gen.yaml');
      return how === 'compiled from nothing' ? compilePolicy(policies) : compiler.compile(policies);
    };

    const e = KernelEnforcer.load(undefined, { networkOnly: true });
    t.teardown(() => e.close());
    // Edits, removals and additions in every table helm fills from these rules
    // (paths, block inodes, networks; new keys, keys gone, keys whose verdicts change), more versions than slots: each slot is reused
    // with contents that differ from what it held.
    const versions: Parameters<typeof policy>[1][] = [
      { block: true },
      { block: true, extra: [`${dir}/b`], writeA: true },
      { extra: [`${dir}/b`, `${dir}/c`], connect: ['127.0.0.1:80'] },
      { block: true, connect: ['127.0.0.0/8:443', '[::1]:22'] },
      { writeA: true },
      { block: true, extra: Array.from({ length: 300 }, (_, i) => `${dir}/many/f${i}`) },
      { extra: [`${dir}/b`], connect: ['127.0.0.1:80'], writeA: true },
      { block: true, extra: Array.from({ length: 150 }, (_, i) => `${dir}/many/f${2 * i}`), connect: ['10.0.0.0/8:1-1024'] },
      { block: true },
      { block: true },
      // Edits of one path each, the rules otherwise the same: compiled from the one before,
      // most entries are kept objects, and a slot's tables hold entries of four generations back.
      ...Array.from({ length: 10 }, (_, i) => ({ block: true, extra: Array.from({ length: 40 }, (_, f) => (f === i % 5 ? `${dir}/edit${i}` : `${dir}/many/f${f}`)) })),
    ];
    const firstTables = new Map<number, BpfMap[]>();
    for (const [i, v] of versions.entries()) {
      const compiled = compile(v);
      const gen = e.applyGeneration(compiled);
      t.equal(gen, i + 1, `generation ${gen}`);
      checkActive(t, e, compiled, `generation ${gen}`);
      const slot = gen & (C.HELM_MAX_GENERATIONS - 1);
      const tables = slotOf(e, gen).tables;
      if (firstTables.has(slot)) t.equal(tables, firstTables.get(slot), `generation ${gen} reuses its slot's tables (no maps created)`);
      else firstTables.set(slot, tables);
      await e.retire();
      t.same(e.liveGenerations, [gen], 'after retire only the active generation may decide');
    }

    // Without retire() in between, an apply waits for the programs itself.
    const a = compile({ extra: [`${dir}/z`] });
    const b = compile({ block: true, extra: [`${dir}/y`] });
    for (let i = 0; i < C.HELM_MAX_GENERATIONS + 1; i++) {
      const c = i % 2 ? a : b;
      e.applyGeneration(c);
      checkActive(t, e, c, `generation ${e.activeGeneration}, not retired before`);
    }
    await e.retire();
  });
  }

  t.test('a write the kernel refuses half-way changes nothing in force, and the slot is made whole again', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'helm-gen-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const good = compilePolicy(parsePolicySource(policy(dir, { extra: [`${dir}/b`] }), 'gen.yaml'));
    const e = KernelEnforcer.load(undefined, { networkOnly: true });
    t.teardown(() => e.close());
    for (let i = 0; i < C.HELM_MAX_GENERATIONS; i++) {
      e.applyGeneration(good);
      await e.retire();
    }
    const before = e.activeGeneration;

    // The raw/packet socket table is the sixth of nine: paths, inodes and networks are
    // written before the kernel refuses its 4097th entry (the table holds 4096).
    const edited = compilePolicy(parsePolicySource(policy(dir, { extra: [`${dir}/c`], connect: ['127.0.0.1:80'] }), 'gen.yaml'));
    const tooMany: CompiledPolicy = {
      ...edited,
      socketEntries: Array.from({ length: C.HELM_MAX_SOCKET_ENTRIES + 1 }, (_, i) => ({ roleId: 1, kind: C.HELM_SOCKET_RAW, protocol: i, verdict: NO_VERDICT, defaultMode: C.HELM_MODE_ENFORCE })),
    };
    const slot = slotOf(e, before + 1);
    const oldTables = slot.tables;
    t.throws(() => e.applyGeneration(tooMany), { name: 'KernelError', message: /helm_sockets.*E2BIG/ }, 'the kernel refuses the write');
    t.equal(e.activeGeneration, before, 'the generation in force is unchanged');
    t.same(e.liveGenerations, [before], 'no generation was added');
    checkActive(t, e, good, 'the running generation');

    const next = e.applyGeneration(edited);
    t.equal(next, before + 1, 'the next apply takes the slot');
    t.not(slotOf(e, next).tables, oldTables, 'the half-written tables were replaced');
    checkActive(t, e, edited, 'after the refused write');
    await e.retire();
  });
}
