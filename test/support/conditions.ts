// Contextual conditions on exe, label and uid for the compiler/evaluator differential tests: a
// model of the kernel's check of a verdict's condition list (resolve() and cond_step() in
// bpf/helm.bpf.c), and random `when`s and acting processes drawn from small sets, so that
// conditions hold and fail often. Executables include names that are string prefixes of others
// (/usr/bin/cat, /usr/bin/catx) and a directory named like an executable (/opt/t, /opt/t/).
import { C, type Verdict } from '../../daemon/kernel/layout';
import { HELM_PATH_BUF } from '../../daemon/kernel/limits';
import type { CompiledPolicy } from '../../daemon/policy/compile';
import { labelBitsOf } from '../../daemon/policy/compile-cond';
import type { OperationContext } from '../../daemon/policy/evaluate';
import type { Rng } from '../rng';

/** The acting process: what the kernel knows of it when it checks a condition. */
export type ProcessContext = OperationContext;

/**
 * A verdict made concrete for the acting process, as the kernel does: the first entry of its
 * list whose condition holds gives its allow; none does, the verdict itself. `exe` undefined is a
 * task whose executable cannot be named (it matches no exe condition).
 */
export function resolveModel(c: CompiledPolicy, v: Verdict, ctx: ProcessContext): Verdict {
  if (v.condList === 0) return v;
  const list = c.condLists.find((l) => l.listId === v.condList);
  if (!list) throw new Error(`verdict names list ${v.condList}, which the compiled tables lack`);
  if (list.entries.length > C.HELM_COND_LIST_LEN) throw new Error(`list ${list.listId} has ${list.entries.length} entries`);
  const agentBits = labelBitsOf(ctx.labels ?? {}, c.labelIds);
  for (const e of list.entries) {
    if ((agentBits & e.labelBits) !== e.labelBits) continue;
    const cond = c.conds.find((x) => x.condId === e.condId);
    if (e.flags & C.HELM_COND_UID) {
      if (ctx.uid === undefined || !cond?.uids.includes(ctx.uid)) continue;
    }
    if (e.flags & C.HELM_COND_EXE) {
      if (ctx.exe === undefined) continue;
      // The LPM lookup of "<exe>\0" under the condition's id: any stored form that is a prefix of it.
      const key = Buffer.from(`${ctx.exe}\0`, 'utf8');
      if (key.length > HELM_PATH_BUF) continue;
      if (!cond?.exes.some((form) => form.length <= key.length && key.subarray(0, form.length).equals(form))) continue;
    }
    return e.verdict;
  }
  return { ...v, condList: 0 };
}

export const EXES = ['/usr/bin/cat', '/usr/bin/catx', '/opt/t/bin/x', '/opt/t', '/opt/tx/y', '/srv/c/bin/cat'];
export const EXE_TARGETS = ['/usr/bin/cat', '/usr/bin/', '/opt/t/', '/opt/t/bin/x', '/opt/t', '/srv/c/bin/', '/'];
export const UIDS = [0, 1000, 1001];
export const LABEL_PAIRS: [string, string][] = [
  ['team', 'a'],
  ['team', 'b'],
  ['env', 'prod'],
  ['tier', 'x y'],
];

/**
 * A random `when` (as YAML data): each key present with some probability, at least one key.
 * `roles` are the roles it may name (roleChance 0: never a role, so that every condition is left
 * to the kernel); `exeTargets` the executables and directories (with "/") it may name.
 */
export function randomWhen(rng: Rng, roles: readonly string[], roleChance = 0.5, exeTargets: readonly string[] = EXE_TARGETS): Record<string, unknown> {
  for (;;) {
    const when: Record<string, unknown> = {};
    if (roles.length && rng.chance(roleChance)) when.role = rng.subset(roles);
    if (rng.chance(0.5)) when.exe = rng.subset(exeTargets);
    if (rng.chance(0.4)) when.uid = rng.subset(UIDS);
    if (rng.chance(0.4)) {
      const label: Record<string, string> = {};
      for (const [k, v] of rng.subset(LABEL_PAIRS)) label[k] = v;
      when.label = label;
    }
    if (Object.keys(when).length) return when;
  }
}

/** A random acting process: sometimes with an executable or uid that cannot be known. */
export function randomContext(rng: Rng): ProcessContext {
  const labels: Record<string, string> = {};
  for (const [k, v] of LABEL_PAIRS) if (rng.chance(0.4)) labels[k] = v;
  return {
    exe: rng.chance(0.9) ? rng.pick(EXES) : undefined,
    uid: rng.pick(UIDS),
    labels,
  };
}

export function showContext(ctx: ProcessContext): string {
  const labels = Object.entries(ctx.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
  return `exe ${ctx.exe ?? '?'} uid ${ctx.uid ?? '?'} labels {${labels}}`;
}
