// The Markdown report of one run: the facts, then every table, then the targets.
import type { Env, Results, Row } from './model';
import { formatChange, formatNs, formatSignedNs } from './stats';
import { OP_LABEL, type Op, FILE_OPS, NET_OPS } from './ops';

/** The published Helm AI Kernel overheads this benchmark compares against. */
export const PUBLISHED: Partial<Record<Op, { overhead: number; text: string }>> = {
  read: { overhead: 2.08e6, text: '+2.08 ms (0.02 → 2.1 ms)' },
  write: { overhead: 2.27e6, text: '+2.27 ms (0.03 → 2.3 ms)' },
  get: { overhead: 3.3e6, text: '+3.3 ms (1.2 → 4.5 ms)' },
  post: { overhead: 3e6, text: '+3 ms' },
};
export const PUBLISHED_EVAL_5 = { time: 12e6, text: '12 ms' };

const VARIANT_TITLE: Record<string, string> = {
  baseline: 'baseline (ungoverned)',
  'baseline-2': 'noise (A/A: a 2nd ungoverned process)',
  'helm-5': 'helm, 5 rules',
  'helm-large': 'helm, large policy',
  strace: 'strace -f (ptrace)',
  seccomp: 'seccomp user-notify supervisor',
};
const OP_VARIANTS = ['baseline', 'baseline-2', 'helm-5', 'helm-large', 'strace', 'seccomp'];

const ENV_TITLE: Record<Env, string> = {
  vm: 'in the VM (QEMU TCG, software emulation; Debian kernel with BPF LSM)',
  native: 'natively (this machine’s kernel)',
};

class Footnotes {
  private readonly notes: string[] = [];
  ref(text: string): string {
    let i = this.notes.indexOf(text);
    if (i < 0) i = this.notes.push(text) - 1;
    return `[${i + 1}]`;
  }
  render(): string[] {
    return this.notes.map((n, i) => `${i + 1}. ${n.replace(/\|/g, '\\|').replace(/\n/g, ' ')}`);
  }
}

function find(rows: Row[], section: Row['section'], env: Env, op: string, variant: string): Row | undefined {
  return rows.find((r) => r.section === section && r.env === env && r.op === op && r.variant === variant);
}

/** "42.0 µs (+2.1 %, +0.87 µs) · p99 61.0 µs (+1.5 %)" */
function timeCell(r: Row | undefined, notes: Footnotes): string {
  if (!r) return '—';
  if (r.couldNotRun) return `could not run ${notes.ref(r.couldNotRun)}`;
  const t = r.time!;
  const b = r.baseline;
  const med = b ? `**${formatNs(t.median)}** (${formatChange(t.median, b.median)}, ${formatSignedNs(t.median - b.median)})` : `**${formatNs(t.median)}**`;
  const p99 = b ? `p99 ${formatNs(t.p99)} (${formatChange(t.p99, b.p99)})` : `p99 ${formatNs(t.p99)}`;
  const note = r.note ? ` ${notes.ref(r.note)}` : '';
  return `${med} · ${p99}${note}`;
}

function quantityCell(r: Row | undefined, notes: Footnotes): string {
  if (!r) return '—';
  if (r.couldNotRun) return `could not run ${notes.ref(r.couldNotRun)}`;
  if (r.time) return timeCell(r, notes);
  const q = r.quantity!;
  const v = Number.isInteger(q.value) || Math.abs(q.value) >= 100 ? Math.round(q.value).toLocaleString('en-US') : q.value.toFixed(1);
  return `${v} ${q.unit}`;
}

export function renderMarkdown(res: Results): string {
  const { meta, rows } = res;
  const large = meta.sizes.large.toLocaleString('en-US');
  const title = (v: string) => (v === 'helm-large' ? `helm, ${large} rules` : VARIANT_TITLE[v]);
  const notes = new Footnotes();
  const out: string[] = [];
  out.push(`# helm benchmark, ${meta.date}`);
  out.push('');
  if (meta.smoke) out.push('**Smoke run** (`make bench-smoke`): a few iterations of everything, to prove the benchmark runs. The figures mean nothing.', '');
  out.push('| | |', '|---|---|');
  out.push(`| command | \`make bench${meta.scale ? ` BENCH_ARGS='--scale ${meta.scale}'` : ''}\` at commit ${meta.commit}${meta.scale ? ` (${meta.scale}× the default rounds)` : ''} |`);
  out.push(`| CPU | ${meta.cpu}, ${meta.cores} cores |`);
  out.push(`| host kernel | Linux ${meta.host.kernel}; scratch files in ${meta.host.tmpfs} |`);
  out.push(`| VM kernel | ${meta.vm ? `Linux ${meta.vm.kernel} (${meta.vm.accel}, CPU “${meta.vm.cpu}”); scratch files in /tmp (tmpfs)` : 'not run'} |`);
  out.push(`| Node.js | ${meta.node} |`);
  out.push(`| helm network hooks | natively: ${meta.network.native}; in the VM: ${meta.network.vm} |`);
  out.push('');
  out.push(
    '> **VM figures come from software emulation (QEMU TCG).** Every instruction is translated, so absolute times there are many times a native kernel’s;',
    '> the **ratios** to the baseline measured in the same VM carry over, the absolute times do not. Native figures are this machine’s own kernel,',
    '> which refuses BPF LSM programs: helm’s file hooks run only in the VM here.',
    '',
    'Each cell: **median** per operation (change against the ungoverned baseline of the same run, and the difference) · p99 (change).',
    'Every variant runs as its own worker process (bench/driver.c, timing each operation with clock_gettime); the variants take turns batch by batch, after a warm-up.',
    '',
  );

  for (const env of ['vm', 'native'] as Env[]) {
    if (!rows.some((r) => r.section === 'ops' && r.env === env)) continue;
    out.push(`## Per operation, ${ENV_TITLE[env]}`, '');
    out.push(`| operation | ${OP_VARIANTS.map(title).join(' | ')} | published Helm AI Kernel overhead |`);
    out.push(`|---|${OP_VARIANTS.map(() => '---').join('|')}|---|`);
    for (const op of [...FILE_OPS, ...NET_OPS]) {
      if (!rows.some((r) => r.section === 'ops' && r.env === env && r.op === op)) continue;
      const cells = OP_VARIANTS.map((v) => timeCell(find(rows, 'ops', env, op, v), notes));
      out.push(`| ${OP_LABEL[op]} | ${cells.join(' | ')} | ${PUBLISHED[op]?.text ?? '—'} |`);
    }
    out.push('');
  }

  const ung = rows.filter((r) => r.section === 'ungoverned');
  if (ung.length) {
    out.push('## Processes helm does not govern, on a host where helm is loaded', '');
    out.push(
      'The same ungoverned workers, batch after batch, with helm loaded and not loaded in turn: in the VM its programs are loaded and attached and a policy applied by the benchmark',
      'process itself, as helmd does (loading is what takes time there); natively helmd (network-only) is started and stopped.',
      '',
    );
    out.push('| operation | where | helm loaded, process not governed (against helm not loaded) |', '|---|---|---|');
    for (const r of ung) out.push(`| ${OP_LABEL[r.op as Op] ?? r.op} | ${r.env === 'vm' ? 'VM' : 'native'} | ${timeCell(r, notes)} |`);
    out.push('');
  }

  const ev = rows.filter((r) => r.section === 'evaluator');
  if (ev.length) {
    out.push('## Policy evaluation', '');
    out.push('| policy | reference evaluator (TypeScript, natively), per decision | the kernel’s decision: governed file read against ungoverned, VM | published Helm AI Kernel |', '|---|---|---|---|');
    for (const [rules, variant] of [
      [5, 'helm-5'],
      [meta.sizes.large, 'helm-large'],
    ] as const) {
      const kernel = find(rows, 'ops', 'vm', 'read', variant);
      const kernelCell = kernel?.time && kernel.baseline ? `${formatSignedNs(kernel.time.median - kernel.baseline.median)} per open (the whole hook, not only the lookup)` : timeCell(kernel, notes);
      out.push(`| ${rules.toLocaleString('en-US')} rules | ${timeCell(find(rows, 'evaluator', 'native', variant === 'helm-5' ? 'evaluate-5' : 'evaluate-large', 'reference evaluator'), notes)} | ${kernelCell} | ${rules === 5 ? PUBLISHED_EVAL_5.text : '—'} |`);
    }
    out.push('');
  }

  const ap = rows.filter((r) => r.section === 'apply');
  if (ap.length) {
    out.push('## Policy apply-to-live', '');
    out.push(
      'Natively, in helm’s own code: from a policy file (JSON) to the kernel deciding by it (**total**): parsed (validation and canonical paths included),',
      'compiled, then the next generation’s tables written and switched in (`KernelEnforcer.applyGeneration`), with helm’s programs loaded network-only as',
      'this kernel allows (the tables and the switch are the same with the LSM programs); the same policy written as YAML is parsed on its own (the YAML',
      'parser is what takes the time: JSON sources are read without it). As a user gets it: from a `PolicyService.Apply` call to helmd to the',
      'first operation the kernel decides by the new generation (`bench/apply-latency.ts`), against a `Status` round trip of the same run, and the',
      '`Apply` call alone: natively through helmd `--network-only` (the operation is a governed connect), and in the VM (a governed open).',
      'Each size is warmed up first (every generation slot holds tables of it), so these are applies to a running helmd.',
      '',
    );
    out.push(
      'Each native apply edits one rule of the policy before it and is compiled from the compile before, as helmd does; **compile, from nothing** is the',
      'same compile without one (helmd’s first), and **tables, every entry new** the same write when the whole policy changes.',
      '',
    );
    out.push('| rules | where | total | parse, JSON | compile | tables | compile, from nothing | tables, every entry new | parse, YAML | Apply call → first decision by it | Apply call |', '|---|---|---|---|---|---|---|---|---|---|---|');
    for (const n of meta.sizes.apply) {
      for (const env of ['native', 'vm'] as Env[]) {
        const cell = (v: string) => (find(rows, 'apply', env, `apply-${n}`, v) ? timeCell(find(rows, 'apply', env, `apply-${n}`, v), notes) : '—');
        if (!ap.some((r) => r.env === env && r.op === `apply-${n}`)) continue;
        out.push(
          `| ${n.toLocaleString('en-US')} | ${env === 'vm' ? 'VM' : 'native'} | ${cell('total')} | ${cell('parse-json')} | ${cell('compile')} | ${cell('tables')} | ${cell('compile-full')} | ${cell('tables-new')} | ${cell('parse-yaml')} | ${cell('rpc-to-live')} | ${cell('rpc')} |`,
        );
      }
    }
    out.push('');
  }

  const au = rows.filter((r) => r.section === 'audit' || r.section === 'helmd');
  if (au.length) {
    out.push('## Audit trail and helmd', '');
    out.push(
      'In the VM, two governed workers open a file no rule allows as fast as they can; each denial is an event helmd writes to the hash-chained trail (on tmpfs there).',
      'Natively, `bench/audit-throughput.ts` floods helmd `--network-only` with denied connects from a governed worker (helm’s connect hook is a cgroup program, which this',
      'kernel runs): kernel → ring → helmd → trail on this machine’s disk, fsync every batch, without emulation. Its baseline, measured in the same run: plain `write(2)` +',
      '`fdatasync` appends of the same lines in batches of helmd’s largest. helmd’s resident memory includes the audit rings, which the kernel maps into it (their data pages',
      'twice): shown apart.',
      '',
    );
    out.push('| figure | native | VM |', '|---|---|---|');
    const line = (title: string, section: Row['section'], op: string) => {
      const cell = (env: Env) => quantityCell(rows.find((x) => x.section === section && x.env === env && x.op === op), notes);
      if (rows.some((x) => x.section === section && x.op === op)) out.push(`| ${title} | ${cell('native')} | ${cell('vm')} |`);
    };
    line('audit throughput, kernel → trail (flood of denials)', 'audit', 'events-per-second');
    line('denials made', 'audit', 'denials-made');
    line('audit lines written', 'audit', 'events-written');
    line('events lost (ring buffer full, counted)', 'audit', 'events-lost');
    line('audit throughput to disk, one agent, fsync every batch (`bench/audit-throughput.ts`)', 'audit', 'trail-throughput');
    line('… the rate that agent made denials at (the kernel side)', 'audit', 'trail-produced');
    line('… plain appends of the same lines with fdatasync per batch (the disk side)', 'audit', 'trail-raw-append');
    line('… helmd against those plain appends', 'audit', 'trail-ratio-raw');
    line('… events lost (counted)', 'audit', 'trail-lost');
    line('… helmd CPU', 'audit', 'trail-cpu');
    line('… helmd CPU time per event written (all its threads)', 'audit', 'trail-cpu-per-event');
    line('… helmd resident memory, idle', 'audit', 'trail-rss-idle');
    line('… helmd resident memory, peak', 'audit', 'trail-rss-peak');
    line('… of which the audit rings mapped by the kernel', 'audit', 'trail-rss-rings');
    line('helmd CPU, idle', 'helmd', 'cpu-idle');
    line(`helmd resident memory, idle (${(meta.sizes.large + 5).toLocaleString('en-US')} rules loaded)`, 'helmd', 'rss-idle');
    line('helmd CPU during the operations benchmark (allowed operations: nothing to audit)', 'helmd', 'cpu-operations');
    line('helmd resident memory after it', 'helmd', 'rss-operations');
    line('helmd CPU during the audit flood', 'helmd', 'cpu-audit');
    line('helmd resident memory, peak during the audit flood', 'helmd', 'rss-audit');
    out.push('');
  }

  out.push('## Targets', '');
  out.push('Shown, not asserted: the benchmark never fails on a timing.', '');
  out.push('| target | measured | |', '|---|---|---|');
  for (const t of targets(rows, meta.sizes)) out.push(`| ${t.target} | ${t.measured} | ${t.verdict} |`);
  out.push('');

  const fn = notes.render();
  if (fn.length) out.push('## Notes', '', ...fn, '');
  return out.join('\n');
}

interface Target {
  target: string;
  measured: string;
  verdict: string;
}

function change(r: Row | undefined): number | undefined {
  return r?.time && r.baseline ? r.time.median / r.baseline.median - 1 : undefined;
}

const pct = (x: number) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const verdict = (ok: boolean | undefined) => (ok === undefined ? 'not measured' : ok ? 'met' : '**not met**');

/**
 * A change against a limit, with the A/A noise of the same operation: met,
 * not met, or not decided when the noise is as large as what separates them.
 */
function judge(c: number | undefined, limit: number, noise: number | undefined): string {
  if (c === undefined) return 'not measured';
  if (c < limit) return noise !== undefined && Math.abs(noise) >= limit ? `met, within a noise (A/A ${pct(noise)}) above the limit` : 'met';
  if (noise !== undefined && c - Math.abs(noise) < limit) return `not decided: the noise (A/A ${pct(noise)}) is as large as the margin`;
  return '**not met**';
}

export function targets(rows: Row[], sizes: Results['meta']['sizes']): Target[] {
  const large = sizes.large.toLocaleString('en-US');
  const biggest = Math.max(...sizes.apply);
  const out: Target[] = [];
  const ops = (op: string, v: string, env: Env = 'vm') => find(rows, 'ops', env, op, v);

  const a = (op: string, env: Env = 'vm') => change(ops(op, 'baseline-2', env));
  const withNoise = (c: number, op: string, env: Env = 'vm') => `${pct(c)}${a(op, env) === undefined ? '' : ` (noise, A/A: ${pct(a(op, env)!)})`}`;
  const read5 = ops('read', 'helm-5');
  const readChange = change(read5);
  out.push({
    target: 'governed file read 1 KB: under +10 % against the ungoverned baseline',
    measured: readChange === undefined ? 'no figure' : `VM, 5 rules: ${withNoise(readChange, 'read')}`,
    verdict: judge(readChange, 0.1, a('read')),
  });
  out.push({ target: '… and under +1 µs absolute on a host that runs it natively', measured: 'this host refuses BPF LSM programs: no native file figure', verdict: 'not measured' });
  if (read5?.time && read5.baseline) {
    // Emulated absolute times do not carry over; the ratio, applied to this host's own read, does.
    const overhead = read5.time.median - read5.baseline.median;
    const nativeRead = ops('read', 'baseline', 'native')?.time?.median;
    const estimate = nativeRead !== undefined ? nativeRead * (read5.time.median / read5.baseline.median - 1) : undefined;
    out.push({
      target: '… over 2,000× less than the published +2.08 ms',
      measured:
        `${formatSignedNs(overhead)} in the emulated VM` +
        (estimate === undefined
          ? ''
          : estimate > 0
            ? `; its ratio applied to this host's native read (${formatNs(nativeRead!)}) gives ≈ ${formatSignedNs(estimate)}, ≈ ${Math.round(PUBLISHED.read!.overhead / estimate).toLocaleString('en-US')}× less (an estimate)`
            : '; no overhead above the noise'),
      verdict: 'not measured natively',
    });
  }

  for (const op of ['read', 'write', 'exec'] as const) {
    const r5 = ops(op, 'helm-5');
    const r10 = ops(op, 'helm-large');
    if (!r5?.time || !r10?.time) continue;
    const diff = r10.time.median / r5.time.median - 1;
    const noise = Math.abs(a(op) ?? 0);
    const bound = Math.max(0.02, 2 * noise);
    out.push({
      target: `${op}: the same cost with ${large} rules as with 5 (within noise)`,
      measured: `${large} rules against 5: ${pct(diff)}; noise (A/A) ${pct(a(op) ?? 0)}`,
      verdict: `${verdict(Math.abs(diff) <= bound)} (within ±${(bound * 100).toFixed(1)} %: 2 % or twice the A/A noise)`,
    });
  }

  for (const [op, env] of [
    ['exec', 'vm'],
    ['connect', 'vm'],
    ['connect', 'native'],
  ] as const) {
    const r = ops(op, 'helm-5', env);
    const c = change(r);
    const unhooked = r?.note?.startsWith('not hooked');
    out.push({
      target: `${op === 'exec' ? 'execve' : 'TCP connect on loopback'}: under +2 % (${env === 'vm' ? 'VM' : 'native'})`,
      measured: r?.couldNotRun ? 'could not run' : c === undefined ? 'no figure' : `${withNoise(c, op, env)}${unhooked ? ' — not hooked: helm makes no decision on this path yet' : ''}`,
      verdict: unhooked ? 'not measured' : judge(c, 0.02, a(op, env)),
    });
  }

  for (const r of rows.filter((x) => x.section === 'ungoverned')) {
    const c = change(r);
    out.push({
      target: `processes outside governed cgroups, ${r.op} (${r.env === 'vm' ? 'VM' : 'native'}): under 1 %`,
      measured: c === undefined ? 'could not run' : withNoise(c, r.op, r.env),
      verdict: judge(c, 0.01, a(r.op, r.env)),
    });
  }

  const applyWhere: Record<string, string> = {
    'native total': 'native: JSON file parsed, compiled, tables, switch',
    'native rpc-to-live': 'native, helmd --network-only: Apply call to the first connect decided by it',
    'vm rpc-to-live': 'VM, emulated: Apply call to the first decision',
  };
  for (const [env, variant] of [
    ['native', 'total'],
    ['native', 'rpc-to-live'],
    ['vm', 'rpc-to-live'],
  ] as const) {
    const total = find(rows, 'apply', env, `apply-${biggest}`, variant);
    if (!total) continue;
    out.push({
      target: `policy apply-to-live, ${biggest.toLocaleString('en-US')} rules: p99 under 20 ms (${applyWhere[`${env} ${variant}`]})`,
      measured: total.time ? `p99 ${formatNs(total.time.p99)} (median ${formatNs(total.time.median)})` : 'could not run',
      verdict: verdict(total.time ? total.time.p99 < 20e6 : undefined),
    });
  }

  const rate = rows.find((r) => r.section === 'audit' && r.op === 'events-per-second');
  const rss = rows.find((r) => r.section === 'helmd' && r.op === 'rss-audit');
  if (rate) {
    const ok = rate.quantity && rss?.quantity ? rate.quantity.value >= 200_000 && rss.quantity.value < 150 : undefined;
    out.push({
      target: 'audit: at least 200,000 events/s sustained to disk, helmd under 150 MB resident',
      measured: rate.quantity ? `${Math.round(rate.quantity.value).toLocaleString('en-US')} events/s, helmd peak ${rss?.quantity ? `${rss.quantity.value.toFixed(0)} MB` : '?'} (VM, emulated; trail on tmpfs)` : 'could not run',
      verdict: verdict(ok),
    });
  }
  for (const env of ['native', 'vm'] as Env[]) {
    const trail = rows.find((r) => r.section === 'audit' && r.env === env && r.op === 'trail-throughput' && r.quantity);
    const trailRss = rows.find((r) => r.section === 'audit' && r.env === env && r.op === 'trail-rss-peak');
    const rings = rows.find((r) => r.section === 'audit' && r.env === env && r.op === 'trail-rss-rings')?.quantity;
    if (!trail) continue;
    const ok = trailRss?.quantity ? trail.quantity!.value >= 200_000 && trailRss.quantity.value < 150 : undefined;
    out.push({
      target: `audit (\`bench/audit-throughput.ts\`, fsync every batch, ${env === 'vm' ? 'VM' : 'native'}): at least 200,000 events/s to disk, helmd under 150 MB resident`,
      measured: `${Math.round(trail.quantity!.value).toLocaleString('en-US')} events/s, helmd peak ${trailRss?.quantity ? `${trailRss.quantity.value.toFixed(0)} MB` : '?'}${rings && Number.isFinite(rings.value) ? `, of which ${rings.value.toFixed(0)} MB the audit rings the kernel maps into it` : ''} (${env === 'vm' ? 'VM, emulated' : `native: ${trail.quantity!.unit.replace(/^events\/s \((.*)\)$/, '$1')}`})`,
      verdict: verdict(ok),
    });
  }
  return out;
}

