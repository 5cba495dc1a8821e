// Does this helmd enforce connect rules? The compiler refuses rules it cannot
// enforce, so compiling a policy with one says.
import { parsePolicySource } from '../daemon/policy/parse';
import { compilePolicy } from '../daemon/policy/compile';
import { benchPolicy, type BenchLayout } from './policies';
import { type Layout, once } from './ops';

export function networkRulesCompile(layout: BenchLayout): { ok: true } | { ok: false; why: string } {
  try {
    compilePolicy(parsePolicySource(benchPolicy('probe', 'probe', 5, layout, true), 'probe.yaml'));
    return { ok: true };
  } catch (e) {
    const first = (e as Error).message.split('\n')[0].replace(/^probe\.yaml:\d+:\d+: /, '');
    return { ok: false, why: `this helmd does not compile connect rules ("${first}")` };
  }
}

/**
 * Is a governed connect decided by helm? A connect from `governed` to a
 * loopback port no rule allows (and nothing listens on) is refused with EPERM
 * when it is; it fails with ECONNREFUSED when nothing decides.
 */
export function probeNetwork(layout: Layout, governed: string, compiled: ReturnType<typeof networkRulesCompile>): { ok: boolean; text: string } {
  const unlisted = { ...layout, ports: { ...layout.ports, tcp: Math.max(layout.ports.tcp, layout.ports.get, layout.ports.post) + 1 } };
  const answer = once('connect', unlisted, { kind: 'cgroup', dir: governed });
  if (/^err 1 /.test(answer)) return { ok: true, text: 'governed connects are decided by helm (a connect to a port no rule allows was refused)' };
  const why = compiled.ok ? 'connect rules compile, yet' : `${compiled.why};`;
  return { ok: false, text: `governed connects are NOT decided by helm: ${why} a connect to a port no rule allows gave "${answer}"` };
}
