// The policies the benchmark governs its workers with: the same five working
// rules, alone or with thousands more. The extra rules are made to weigh on the
// lookup the measured operations do: many name siblings of the measured files
// (they share the key prefix the kernel's trie walks), the rest are spread over
// another tree; a fifth of them are blocks.
import { stringify } from 'yaml';

/**
 * The large policy's rule count and the sizes apply-to-live is measured at. A
 * smoke run uses smaller ones: parsing 10,000 rules takes minutes in the VM.
 */
export function sizes(smoke: boolean): { large: number; apply: number[] } {
  return smoke ? { large: 50, apply: [1, 10, 50] } : { large: 10_000, apply: [1, 100, 10_000] };
}

export interface BenchLayout {
  /** Files the workers read, write and execute: allowed. */
  data: string;
  /** Files no rule names: opening one is denied (the audit load). */
  denied: string;
  /** The worker binary (bench-driver). */
  driver: string;
  /** Loopback ports of the servers: accept-and-close, HTTP GET, HTTP POST. */
  ports: { tcp: number; get: number; post: number };
}

/**
 * One policy for `role` with exactly `rules` rules (at least 5). `network`:
 * whether this helmd compiles connect rules; when it does not, the fifth
 * working rule is a file rule instead and connects stay unhooked.
 */
export function benchPolicy(name: string, role: string, rules: number, layout: BenchLayout, network: boolean): string {
  if (rules < 5) throw new Error('the working set is 5 rules');
  const { data, driver, ports } = layout;
  const allow: Record<string, unknown>[] = [
    // The worker's own binary, the dynamic loader and libc (mapped executable).
    { id: 'runtime', exec: [driver, '/usr/lib/', '/usr/lib64/'], read: ['/usr/lib/', '/etc/ld.so.cache'] },
    { id: 'data', read: [`${data}/`], write: [`${data}/`] },
    { id: 'tools', exec: [`${data}/noop`] },
    network
      ? { id: 'loopback', connect: [`127.0.0.1:${Math.min(ports.tcp, ports.get, ports.post)}-${Math.max(ports.tcp, ports.get, ports.post)}`] }
      : { id: 'devnull', write: ['/dev/null'] },
  ];
  const block: Record<string, unknown>[] = [{ id: 'secrets', read: ['/etc/shadow', `${data}/secret`] }];
  const extra = syntheticRules(rules - 5, data);
  return policyText(name, role, [...allow, ...extra.allow], [...block, ...extra.block]);
}

/**
 * A policy of exactly `rules` synthetic rules, for apply-to-live, as YAML or (the
 * same policy) JSON. Versions of it: `edit` n names another file in its first rule
 * (an edit of one rule), `tree` n puts every rule's path in another tree (every
 * table entry differs).
 */
export function applyPolicy(rules: number, data: string, version: { edit?: number; tree?: number } = {}, format: 'yaml' | 'json' = 'yaml'): string {
  const r = syntheticRules(rules, version.tree === undefined ? data : `${data}/v${version.tree}`, version.tree === undefined ? '' : `-v${version.tree}`);
  if (version.edit !== undefined && r.allow.length) r.allow[0] = { ...r.allow[0], read: [`${data}/edited-${version.edit}`] };
  return policyText(`apply-${rules}`, 'apply', r.allow, r.block, format);
}

function syntheticRules(count: number, data: string, far = ''): { allow: Record<string, unknown>[]; block: Record<string, unknown>[] } {
  const verbs = ['read', 'write', 'exec'] as const;
  const allow: Record<string, unknown>[] = [];
  const block: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const verb = verbs[i % 3];
    const subtree = i % 2 === 1;
    const near = i % 5 < 2; // 40 % next to the measured files
    const p = near ? `${data}/sibling-${i}${subtree ? '/' : ''}` : `/srv/synthetic${far}/team-${i % 37}/project-${i % 211}/item-${i}${subtree ? '/' : ''}`;
    (i % 5 === 4 ? block : allow).push({ id: `synthetic-${i}`, [verb]: [p] });
  }
  return { allow, block };
}

function policyText(name: string, role: string, allow: Record<string, unknown>[], block: Record<string, unknown>[], format: 'yaml' | 'json' = 'yaml'): string {
  const spec: Record<string, unknown> = { roles: [role], mode: 'enforce' };
  if (allow.length) spec.allow = allow;
  if (block.length) spec.block = block;
  const policy = { apiVersion: 'helm/v1', kind: 'Policy', metadata: { name }, spec };
  return format === 'json' ? `${JSON.stringify(policy, null, 2)}\n` : stringify(policy, { lineWidth: 0 });
}
