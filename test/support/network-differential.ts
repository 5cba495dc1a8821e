// Random network policies and operations for the kernel/evaluator differential test (host and
// VM suites): address, CIDR, `*` and port-range rules over loopback, allow/block/contextual,
// two policies with random modes. The kernel's outcome of each operation must be the reference
// evaluator's, with the same deciding rule.
import { Rng } from '../rng';
import { randomWhen } from './conditions';

export const ROLES = ['r1', 'r2'] as const;
const BASE_PORT = 20000;

export interface NetOp {
  id: string;
  role: string;
  verb: 'connect' | 'bind';
  addr: string;
  port: number;
  /** The net-probe case. */
  probe: string;
}

function randomAddressTarget(rng: Rng): string {
  const r = rng.int(10);
  if (r === 0) return '*';
  if (r === 1) return '[::1]';
  const octets = [127, rng.int(3), rng.int(3), rng.int(3)];
  const prefix = rng.pick([8, 16, 24, 32, 30]);
  // the network's own address: the parser refuses host bits set below the prefix
  const masked = octets.map((o, i) => o & ((0xff << (8 - Math.max(0, Math.min(8, prefix - 8 * i)))) & 0xff));
  return prefix === 32 ? octets.join('.') : `${masked.join('.')}/${prefix}`;
}

function randomPorts(rng: Rng): string {
  const r = rng.int(4);
  if (r === 0) return '*';
  const a = BASE_PORT + rng.int(8);
  if (r === 1) return `${a}-${a + rng.int(6)}`;
  return String(a);
}

function target(rng: Rng): string {
  const a = randomAddressTarget(rng);
  return JSON.stringify(`${a}:${randomPorts(rng)}`);
}

function rule(rng: Rng, kind: 'allow' | 'block' | 'contextual', i: number, roles: readonly string[], conditions: boolean): string {
  const verbs: string[] = [];
  if (rng.chance(0.8)) verbs.push(`connect: [${Array.from({ length: 1 + rng.int(3) }, () => target(rng)).join(', ')}]`);
  if (rng.chance(0.4) || verbs.length === 0) verbs.push(`bind: [${target(rng)}]`);
  const condition = () => (conditions && rng.chance(0.7) ? JSON.stringify(randomWhen(rng, roles)) : `{ role: ${rng.pick(roles)} }`);
  const when = kind === 'contextual' ? `, when: ${condition()}` : '';
  return `    - { id: ${kind}-${i}, ${verbs.join(', ')}${when} }\n`;
}

/**
 * Two policies (YAML, several documents); `extraAllow` lines are added to the first's allow list.
 * With `conditions`, contextual rules also have exe, label and uid conditions (see conditions.ts).
 */
export function randomNetworkPolicy(rng: Rng, extraAllow = '', opts: { conditions?: boolean } = {}): string {
  const doc = (name: string, roles: readonly string[], mode: string, first: boolean) => {
    let s = `apiVersion: helm/v1\nkind: Policy\nmetadata: { name: ${name} }\nspec:\n  roles: ${JSON.stringify(roles)}\n  mode: ${mode}\n`;
    const whenRoles = roles.includes('*') ? ROLES : roles;
    for (const kind of ['allow', 'block', 'contextual'] as const) {
      const n = kind === 'allow' ? 2 + rng.int(4) : rng.int(3);
      if (n === 0 && !(first && kind === 'allow' && extraAllow)) continue;
      s += `  ${kind}:\n`;
      if (first && kind === 'allow') s += extraAllow;
      for (let i = 0; i < n; i++) s += rule(rng, kind, i, whenRoles, opts.conditions ?? false);
    }
    return s;
  };
  const modeA = rng.chance(0.8) ? 'enforce' : 'dry-run';
  const modeB = rng.chance(0.7) ? 'enforce' : 'dry-run';
  return `${doc('net-a', ['r1', 'r2'], modeA, true)}---\n${doc('net-b', rng.pick([['r2'], ['*'], ['r1']]), modeB, false)}`;
}

/** Distinct operations for one role; nothing listens on these ports, so an allowed connect is ECONNREFUSED. */
export function randomNetworkOps(rng: Rng, role: string, n: number): NetOp[] {
  const seen = new Set<string>();
  const ops: NetOp[] = [];
  while (ops.length < n) {
    const verb = rng.chance(0.75) ? 'connect' : 'bind';
    const addr = rng.chance(0.1) ? '::1' : `127.${rng.int(3)}.${rng.int(3)}.${rng.int(3)}`;
    const port = BASE_PORT + rng.int(10);
    const key = `${verb} ${addr} ${port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const id = `${role}-${ops.length}`;
    ops.push({ id, role, verb, addr, port, probe: `${id}=${verb === 'connect' ? 'tcp' : 'bind-tcp'}:${addr}:${port}` });
  }
  return ops;
}

/** The kernel's outcome as the evaluator names it: EPERM is a denial, anything else got through. */
export function kernelDecision(result: string | undefined): 'deny' | 'passed' | 'missing' {
  if (result === undefined) return 'missing';
  return result === 'EPERM' ? 'deny' : 'passed';
}
