// The network scenario shared by the host suite (helmd --network-only on this kernel) and the
// VM suite (helmd with the LSM hooks too): local servers on several 127.0.0.0/8 addresses and
// [::1], a test DNS zone under helm.test, a policy with address, port, name, wildcard, block
// and contextual rules, and the outcome each governed operation must have.
//
// Everything stays on loopback.
import net from 'node:net';
import http from 'node:http';
import { startDnsServer, type TestDnsServer, type ZoneRecord } from './dns-server';

export const PORT = 18080;

/** Addresses with a TCP listener on PORT (and [::1] on PORT and PORT+2). */
export const LISTEN = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7', '127.0.0.9', '127.0.0.12'];

export const ZONE: Record<string, ZoneRecord[]> = {
  'allowed.helm.test': [{ type: 'A', data: '127.0.0.12', ttl: 60 }],
  'other.helm.test': [{ type: 'A', data: '127.0.0.3', ttl: 60 }],
  'alias.helm.test': [{ type: 'CNAME', data: 'edge.cdn.test', ttl: 60 }],
  'edge.cdn.test': [{ type: 'A', data: '127.0.0.4', ttl: 60 }],
  'short.helm.test': [{ type: 'A', data: '127.0.0.5', ttl: 1 }],
  'api.stripe.helm.test': [{ type: 'A', data: '127.0.0.6', ttl: 60 }],
  'x.wild.helm.test': [{ type: 'A', data: '127.0.0.7', ttl: 60 }],
  'wild.helm.test': [{ type: 'A', data: '127.0.0.7', ttl: 60 }],
  'v6.helm.test': [{ type: 'AAAA', data: '::1', ttl: 60 }],
};

/** The policy (YAML); `extraAllow` adds allow rules (the VM suite needs the runtime's files). */
export function scenarioPolicy(extraAllow = ''): string {
  return `apiVersion: helm/v1
kind: Policy
metadata: { name: egress }
spec:
  roles: [agent, payment_processor, analyst]
  allow:
${extraAllow}    - id: api-by-address
      connect: [127.0.0.2:${PORT}, "[::1]:${PORT}"]
    - id: by-name
      connect: ["allowed.helm.test:${PORT}", "alias.helm.test:${PORT}", "short.helm.test:${PORT}", "*.wild.helm.test:${PORT}", "v6.helm.test:${PORT + 2}"]
    - id: udp-sink
      connect: ["127.0.0.2:19000-19010"]
    - id: local-bind
      bind: ["127.0.0.1:18500", "[::1]:18500"]
  block:
    - id: never-9
      connect: ["127.0.0.9:*"]
  contextual:
    - id: stripe-only-for-payments
      connect: ["api.stripe.helm.test:${PORT}"]
      when: { role: payment_processor }
---
apiVersion: helm/v1
kind: Policy
metadata: { name: any-web }
spec:
  roles: [payment_processor, analyst]
  allow:
    - id: any-web
      connect: ["*:${PORT}"]
`;
}

/** What role `agent` must see, case by case (ids are net-probe case ids). */
export const AGENT_CASES: [id: string, probe: string, expect: RegExp][] = [
  ['addr-allowed', `tcp:127.0.0.2:${PORT}`, /^ok$/],
  ['addr-default', `tcp:127.0.0.3:${PORT}`, /^EPERM$/],
  ['addr-block', `tcp:127.0.0.9:${PORT}`, /^EPERM$/],
  ['mapped-default', `tcp:::ffff:127.0.0.3:${PORT}`, /^EPERM$/],
  ['mapped-allowed', `tcp:::ffff:127.0.0.2:${PORT}`, /^ok$/],
  ['mapped-block', `tcp:::ffff:127.0.0.9:${PORT}`, /^EPERM$/],
  ['v6-allowed', `tcp:::1:${PORT}`, /^ok$/],
  ['v6-other-port', `tcp:::1:${PORT + 1}`, /^EPERM$/],
  ['udp-allowed', 'udp:127.0.0.2:19005', /^ok$/],
  ['udp-other-port', 'udp:127.0.0.2:19011', /^EPERM$/],
  ['udp-connect-default', 'udpc:127.0.0.3:19005', /^EPERM$/],
  ['bind-allowed', 'bind-tcp:127.0.0.1:18500', /^ok$/],
  ['bind-other-port', 'bind-tcp:127.0.0.1:18501', /^EPERM$/],
  ['bind-udp-v6', 'bind-udp:::1:18500', /^ok$/],
  ['learned-before-lookup', `tcp:127.0.0.12:${PORT}`, /^EPERM$/],
  ['name-allowed', `name:allowed.helm.test:${PORT}`, /^ok 127\.0\.0\.12$/],
  ['learned-direct', `tcp:127.0.0.12:${PORT}`, /^ok$/],
  ['learned-other-port', `tcp:127.0.0.12:${PORT + 1}`, /^EPERM$/],
  ['name-cname', `name:alias.helm.test:${PORT}`, /^ok 127\.0\.0\.4$/],
  ['name-wildcard', `name:x.wild.helm.test:${PORT}`, /^ok 127\.0\.0\.7$/],
  ['name-wildcard-apex', `name:wild.helm.test:${PORT}`, /^dns /],
  ['name-unlisted', `name:other.helm.test:${PORT}`, /^dns /],
  ['name-v6', `name:v6.helm.test:${PORT + 2}`, /^ok ::1$/],
  ['name-contextual-other-role', `name:api.stripe.helm.test:${PORT}`, /^dns /],
  ['name-short-ttl', `name:short.helm.test:${PORT}`, /^ok 127\.0\.0\.5$/],
  ['wait-ttl', 'sleep:4:0', /^ok$/],
  ['expired', `tcp:127.0.0.5:${PORT}`, /^EPERM$/],
];

export interface Servers {
  dns: TestDnsServer;
  close(): Promise<void>;
}

/** HTTP on every LISTEN address and [::1] (PORT and PORT+2), and the test zone's DNS server. */
export async function startServers(): Promise<Servers> {
  const servers: net.Server[] = [];
  const listen = (host: string, port: number) =>
    new Promise<void>((resolve, reject) => {
      const s = http.createServer((req, res) => res.end(`hello from ${host}\n`));
      s.once('error', reject);
      s.listen(port, host, () => resolve());
      servers.push(s);
    });
  for (const a of LISTEN) await listen(a, PORT);
  await listen('::1', PORT);
  await listen('::1', PORT + 2);
  const dns = await startDnsServer(ZONE, '127.0.0.1');
  return {
    dns,
    close: async () => {
      await dns.close();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(() => r(undefined)))));
    },
  };
}

export function parseCases(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^CASE (\S+) ?(.*)$/.exec(line);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}
