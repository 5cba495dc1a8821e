// The DNS forwarder without a kernel: a test resolver on loopback upstream, the learned map and
// the audit as fakes. What an agent asks, what leaves the host, what is learned for how long.
import t from 'tap';
import * as dnsPacket from 'dns-packet';
import { DnsForwarder, answerAddresses, parseUpstream, upstreamsFromResolvConf, type DnsQueryAudit, type QueryVerdict } from '../../daemon/net/dns-forwarder';
import { LearnedAddresses } from '../../daemon/net/learned';
import { startDnsServer, type TestDnsServer } from '../support/dns-server';
import { ip16 } from '../../daemon/kernel/layout';
import dgram from 'node:dgram';
import net from 'node:net';

interface Test {
  teardown(fn: () => unknown): void;
  fail(message: string): void;
}

/** dns-packet decodes the response code too; its types leave it out. */
function decode(b: Buffer | undefined): dnsPacket.DecodedPacket & { rcode: string } {
  return dnsPacket.decode(b!) as dnsPacket.DecodedPacket & { rcode: string };
}

const ZONE = {
  'ok.test': [{ type: 'A' as const, data: '192.0.2.1', ttl: 7200 }],
  'cname.test': [{ type: 'CNAME' as const, data: 'edge.cdn.test', ttl: 300 }],
  'edge.cdn.test': [
    { type: 'A' as const, data: '192.0.2.7', ttl: 20 },
    { type: 'AAAA' as const, data: '2001:db8::7', ttl: 20 },
  ],
  'short.test': [{ type: 'A' as const, data: '192.0.2.9', ttl: 0 }],
  'secret.test': [{ type: 'A' as const, data: '192.0.2.66', ttl: 60 }],
};

function query(name: string, type: 'A' | 'AAAA' = 'A', id = 4242): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
}

interface Harness {
  fwd: DnsForwarder;
  learned: { addr: string; name: string; ids: number[]; ttl: number }[];
  audits: DnsQueryAudit[];
  upstream: TestDnsServer;
  learnOk: { value: boolean };
}

async function harness(t: Test, decide: (name: string) => QueryVerdict, opts: { upstreamPort?: number } = {}): Promise<Harness> {
  const upstream = await startDnsServer(ZONE, '127.0.0.1');
  t.teardown(() => upstream.close());
  const learned: Harness['learned'] = [];
  const audits: DnsQueryAudit[] = [];
  const learnOk = { value: true };
  const fwd = new DnsForwarder({
    upstreams: [{ host: '127.0.0.1', port: opts.upstreamPort ?? upstream.port }],
    ttlMinSec: 5,
    ttlMaxSec: 600,
    timeoutMs: 500,
    decide,
    learn: (addr16, name, ids, ttl) => {
      if (!learnOk.value) return false;
      learned.push({ addr: addr16.toString('hex'), name, ids, ttl });
      return true;
    },
    audit: (a) => audits.push(a),
    onError: (e) => t.fail(e.message),
  });
  return { fwd, learned, audits, upstream, learnOk };
}


const allowOnly = (names: Record<string, number[]>) => (name: string): QueryVerdict => ({ nameIds: names[name] ?? [], dryRun: false });

t.test('a name no rule allows is refused here and never sent upstream', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [1] }));
  const res = decode(await h.fwd.answer(query('secret.test'), 'udp'));
  t.equal(res.rcode, 'REFUSED');
  t.equal(res.id, 4242, 'the reply answers the query');
  t.same(h.upstream.asked, [], 'nothing left the host');
  t.same(h.learned, []);
  t.match(h.audits, [{ name: 'secret.test', decision: 'deny', outcome: 'refused' }]);
});

t.test('an allowed name is resolved, its addresses learned (TTL clamped) before the answer, which is capped', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [3, 9] }));
  const res = decode(await h.fwd.answer(query('OK.test.'), 'udp'));
  t.equal(res.rcode, 'NOERROR');
  t.same(h.upstream.asked, ['ok.test']);
  t.same(h.learned, [{ addr: ip16([192, 0, 2, 1]).toString('hex'), name: 'ok.test', ids: [3, 9], ttl: 600 }], 'TTL 7200 clamped to the 600 s maximum');
  const a = res.answers!.find((x) => x.type === 'A') as { ttl: number; data: string };
  t.equal(a.data, '192.0.2.1');
  t.equal(a.ttl, 600, "the agent's cache is capped to what helm keeps learned");
  t.match(h.audits, [{ name: 'ok.test', decision: 'allow', outcome: 'answered', addresses: ['192.0.2.1'], ttl: 600 }]);
});

t.test('CNAME chains are followed; a zero TTL is raised to the minimum', async (t) => {
  const h = await harness(t, allowOnly({ 'cname.test': [5], 'short.test': [6] }));
  await h.fwd.answer(query('cname.test', 'A'), 'udp');
  await h.fwd.answer(query('cname.test', 'AAAA'), 'tcp');
  await h.fwd.answer(query('short.test', 'A'), 'udp');
  t.same(
    h.learned.map((l) => [l.addr, l.ttl]),
    [
      [ip16([192, 0, 2, 7]).toString('hex'), 20],
      [Buffer.from('20010db8000000000000000000000007', 'hex').toString('hex'), 20],
      [ip16([192, 0, 2, 9]).toString('hex'), 5],
    ],
  );
  const { addrs, ttl } = answerAddresses('a.test', [
    { type: 'A', name: 'b.test', data: '192.0.2.99', ttl: 1 },
    { type: 'CNAME', name: 'c.test', data: 'b.test', ttl: 10 },
    { type: 'CNAME', name: 'a.test', data: 'c.test', ttl: 30 },
    { type: 'A', name: 'unrelated.test', data: '192.0.2.100', ttl: 1 },
  ] as dnsPacket.Answer[]);
  t.same(addrs, ['192.0.2.99'], 'chains in any order; records for other names are not learned');
  t.equal(ttl, 1, 'the shortest TTL on the way');
});

t.test('when the address cannot be learned (map full) the lookup fails: no answer without enforcement', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [1] }));
  h.learnOk.value = false;
  const res = decode(await h.fwd.answer(query('ok.test'), 'udp'));
  t.equal(res.rcode, 'SERVFAIL');
  t.same(res.answers, [], 'the addresses are not given out');
  t.match(h.audits, [{ outcome: 'servfail', error: /learned-address map is full/ }]);
});

t.test('an unreachable upstream is SERVFAIL, audited', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [1] }), { upstreamPort: 9 });
  const res = decode(await h.fwd.answer(query('ok.test'), 'udp'));
  t.equal(res.rcode, 'SERVFAIL');
  t.match(h.audits, [{ outcome: 'servfail', decision: 'allow' }]);
});

t.test('dry-run: an unlisted name is answered and audited would_deny; nothing is learned', async (t) => {
  const h = await harness(t, () => ({ nameIds: [], dryRun: true }));
  const res = decode(await h.fwd.answer(query('secret.test'), 'udp'));
  t.equal(res.rcode, 'NOERROR');
  t.same(h.learned, []);
  t.match(h.audits, [{ name: 'secret.test', decision: 'would_deny', outcome: 'refused', addresses: ['192.0.2.66'] }]);
});

t.test('malformed input: garbage is dropped, several questions refused', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [1] }));
  t.equal(await h.fwd.answer(Buffer.from('not dns'), 'udp'), undefined);
  const two = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'ok.test' }, { type: 'A', name: 'secret.test' }] });
  t.equal(decode(await h.fwd.answer(two, 'udp')).rcode, 'REFUSED');
  t.same(h.upstream.asked, []);
});

t.test('the forwarder answers over UDP and TCP on its own loopback port', async (t) => {
  const h = await harness(t, allowOnly({ 'ok.test': [1] }));
  const port = await h.fwd.listen();
  t.teardown(() => h.fwd.close());
  const viaUdp = await startDnsClientQuery('udp', port, query('ok.test'));
  t.equal(decode(viaUdp).rcode, 'NOERROR');
  const viaTcp = await startDnsClientQuery('tcp', port, query('secret.test'));
  t.equal(decode(viaTcp).rcode, 'REFUSED');
});

t.test('upstream configuration is parsed or refused with the reason', async (t) => {
  t.same(parseUpstream('10.0.0.53'), { host: '10.0.0.53', port: 53 });
  t.same(parseUpstream('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
  t.same(parseUpstream('[::1]:5353'), { host: '::1', port: 5353 });
  for (const bad of ['dns.example', '1.2.3.4:0', '1.2.3.4:70000', '::1:53', '']) t.throws(() => parseUpstream(bad), /not a resolver address/, bad);
  t.same(upstreamsFromResolvConf('# c\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n'), [
    { host: '10.0.0.2', port: 53 },
    { host: 'fe80::1%eth0', port: 53 },
  ]);
});

t.test('learned addresses: per-name expiry, at most 4 names an address, swept when due', async (t) => {
  let now = 1_000_000_000n;
  const kernel = new Map<string, { ids: number[]; expires: bigint }>();
  const writer = {
    learn: (agent: bigint, addr: Buffer, ids: readonly number[], expires: bigint) => void kernel.set(`${agent}/${addr.toString('hex')}`, { ids: [...ids], expires }),
    forget: (agent: bigint, addr: Buffer) => kernel.delete(`${agent}/${addr.toString('hex')}`),
  };
  const l = new LearnedAddresses(writer, () => now);
  const a = ip16([192, 0, 2, 1]);
  const key = `1/${a.toString('hex')}`;
  t.ok(l.learn(1n, a, 'one.test', [1], 10));
  t.ok(l.learn(1n, a, 'two.test', [2], 100));
  t.same(kernel.get(key), { ids: [2, 1], expires: now + 100_000_000_000n }, 'latest-expiring first; the entry lives as long as its longest name');
  t.equal(l.hostOf(1n, a), 'two.test');
  t.equal(l.hostOf(2n, a), undefined, 'another agent learned nothing');
  now += 11_000_000_000n;
  l.sweep();
  t.same(kernel.get(key)?.ids, [2], 'the expired name is dropped from the kernel entry');
  for (let id = 3; id <= 7; id++) l.learn(1n, a, `n${id}.test`, [id], 100 + id);
  t.equal(kernel.get(key)?.ids.length, 4, 'the kernel holds 4 names an address');
  now += 1_000_000_000_000n;
  l.sweep();
  t.notOk(kernel.has(key), 'all expired: the address is forgotten');
  t.equal(l.hostOf(1n, a), undefined);
  l.learn(1n, a, 'again.test', [9], 5);
  l.forgetAgent(1n);
  t.equal(kernel.size, 0, "a detached agent's addresses are removed");
  const failing = new LearnedAddresses({ learn: () => { throw new Error('E2BIG'); }, forget: () => true }, () => now);
  t.equal(failing.learn(1n, a, 'x.test', [1], 5), false, 'a full map is reported, not ignored');
});

function startDnsClientQuery(kind: 'udp' | 'tcp', port: number, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (kind === 'udp') {
      const s = dgram.createSocket('udp4');
      s.on('message', (m) => {
        s.close();
        resolve(m);
      });
      s.send(msg, port, '127.0.0.1', (e) => e && reject(e));
      return;
    }
    const c = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    c.on('connect', () => {
      const f = Buffer.alloc(2 + msg.length);
      f.writeUInt16BE(msg.length);
      msg.copy(f, 2);
      c.write(f);
    });
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        c.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    c.on('error', reject);
  });
}
