// dnsForwarder: one governed agent's DNS, redirected here by the kernel (cgroup sock_addr
// programs rewrite any UDP or TCP connection to port 53 to this forwarder's port).
//
// A query for a name that no rule of the agent could allow is refused here and audited: the
// name never leaves the host, so DNS names cannot carry data out. An allowed name is resolved
// upstream; the addresses of the answer (following CNAMEs) are learned for this agent — put into
// the kernel's learned-address map with the record's TTL, clamped — and only then is the answer
// returned, so the agent's connect that follows finds its address already allowed.
//
// dns-packet (mafintosh) decodes and encodes the messages; nothing here parses DNS by hand.
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { addressBytes } from '../policy/ip';
import { ip16 } from '../kernel/layout';

export interface Upstream {
  host: string;
  port: number;
}

export interface QueryVerdict {
  /** Host-name pattern ids whose rules could allow something for this agent; empty: refuse. */
  nameIds: number[];
  /** The agent (or helmd) is in dry-run: answer even a refused name, audit would_deny, learn nothing new. */
  dryRun: boolean;
}

export interface DnsQueryAudit {
  name: string;
  qtype: string;
  decision: 'allow' | 'deny' | 'would_deny';
  /** What happened: answered and learned, refused (no rule allows the name), or failed upstream/learning. */
  outcome: 'answered' | 'refused' | 'servfail';
  addresses: string[];
  ttl?: number;
  error?: string;
  pid?: number;
}

export interface DnsForwarderOptions {
  upstreams: Upstream[];
  /** Learned addresses live at least / at most this long, whatever the record's TTL. */
  ttlMinSec: number;
  ttlMaxSec: number;
  /** Per upstream attempt. */
  timeoutMs: number;
  decide(name: string): QueryVerdict;
  /** Puts an address (16 bytes, IPv4 mapped) into the agent's learned map; false when the map is full. */
  learn(addr16: Buffer, name: string, nameIds: number[], ttlSec: number): boolean;
  audit(a: DnsQueryAudit): void;
  onError(err: Error): void;
}

const RCODE_SERVFAIL = 2;
const RCODE_REFUSED = 5;
const MAX_TCP_MESSAGE = 65535;

/** DNS names are case-insensitive, and "name." is "name". */
export function normalName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

/** Resolvers from resolv.conf text (port 53), skipping any that point back at loopback port 53 through us. */
export function upstreamsFromResolvConf(text: string): Upstream[] {
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && net.isIP(m[1].split('%')[0])) out.push({ host: m[1], port: 53 });
  }
  return out;
}

/** "1.2.3.4:53", "[::1]:5353" or a bare address (port 53). */
export function parseUpstream(text: string): Upstream {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const v4 = /^([^:]+)(?::(\d+))?$/.exec(text);
  const m = v6 ?? v4;
  const port = m?.[2] === undefined ? 53 : Number(m[2]);
  if (!m || !net.isIP(m[1]) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`not a resolver address: ${JSON.stringify(text)} (expected ADDRESS[:PORT], IPv6 in brackets)`);
  }
  return { host: m[1], port };
}

/** The addresses the answer gives for `qname`, following CNAMEs, with the smallest TTL on the way. */
export function answerAddresses(qname: string, answers: dnsPacket.Answer[]): { addrs: string[]; ttl: number } {
  const names = new Set([normalName(qname)]);
  let ttl = Infinity;
  // CNAME chains may come in any order: repeat until no new name is added.
  for (let grew = true; grew; ) {
    grew = false;
    for (const a of answers) {
      if (a.type === 'CNAME' && names.has(normalName(a.name)) && !names.has(normalName(a.data as string))) {
        names.add(normalName(a.data as string));
        ttl = Math.min(ttl, a.ttl ?? 0);
        grew = true;
      }
    }
  }
  const addrs: string[] = [];
  for (const a of answers) {
    if ((a.type === 'A' || a.type === 'AAAA') && names.has(normalName(a.name))) {
      addrs.push(a.data as string);
      ttl = Math.min(ttl, a.ttl ?? 0);
    }
  }
  return { addrs, ttl: ttl === Infinity ? 0 : ttl };
}

export class DnsForwarder {
  private udp4?: dgram.Socket;
  private udp6?: dgram.Socket;
  private tcp4?: net.Server;
  private tcp6?: net.Server;
  private closed = false;
  port = 0;

  constructor(private readonly opts: DnsForwarderOptions) {}

  /** Binds UDP and TCP on 127.0.0.1 and [::1] (when the host has it), one port for all. */
  async listen(): Promise<number> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const udp4 = dgram.createSocket('udp4');
      try {
        await bindUdp(udp4, '127.0.0.1', 0);
        const port = udp4.address().port;
        const tcp4 = await listenTcp('127.0.0.1', port, (s) => this.onTcp(s));
        let udp6: dgram.Socket | undefined;
        let tcp6: net.Server | undefined;
        if (await loopback6Available()) {
          udp6 = dgram.createSocket({ type: 'udp6', ipv6Only: true });
          await bindUdp(udp6, '::1', port);
          tcp6 = await listenTcp('::1', port, (s) => this.onTcp(s), true);
        }
        this.udp4 = udp4;
        this.udp6 = udp6;
        this.tcp4 = tcp4;
        this.tcp6 = tcp6;
        for (const sock of [udp4, udp6]) sock?.on('message', (msg, rinfo) => this.onUdp(sock, msg, rinfo));
        for (const sock of [udp4, udp6]) sock?.on('error', (e) => this.opts.onError(e));
        this.port = port;
        return port;
      } catch (e) {
        // The port was free on one family and taken on another: try another port.
        udp4.close();
        this.tcp4?.close();
        if (attempt === 19) throw e;
      }
    }
    throw new Error('unreachable');
  }

  close(): void {
    this.closed = true;
    this.udp4?.close();
    this.udp6?.close();
    this.tcp4?.close();
    this.tcp6?.close();
  }

  private onUdp(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.answer(msg, 'udp').then(
      (reply) => {
        if (reply && !this.closed) sock.send(reply, rinfo.port, rinfo.address);
      },
      (e) => this.opts.onError(e as Error),
    );
  }

  private onTcp(s: net.Socket): void {
    let buf = Buffer.alloc(0);
    s.setTimeout(10_000, () => s.destroy());
    s.on('error', () => s.destroy());
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        this.answer(msg, 'tcp').then(
          (reply) => {
            if (!reply || s.destroyed) return;
            const framed = Buffer.alloc(2 + reply.length);
            framed.writeUInt16BE(reply.length, 0);
            reply.copy(framed, 2);
            s.write(framed);
          },
          (e) => this.opts.onError(e as Error),
        );
      }
    });
  }

  /** The reply to one query message, or undefined to drop it (not a query at all). */
  async answer(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    if (query.type !== 'query' || !query.questions || query.questions.length !== 1) {
      return reply(query, RCODE_REFUSED);
    }
    const q = query.questions[0];
    const name = normalName(q.name);
    const verdict = this.opts.decide(name);
    if (verdict.nameIds.length === 0 && !verdict.dryRun) {
      this.opts.audit({ name, qtype: q.type, decision: 'deny', outcome: 'refused', addresses: [] });
      return reply(query, RCODE_REFUSED);
    }
    let response: Buffer;
    try {
      response = await this.resolve(msg, transport);
    } catch (e) {
      this.opts.audit({ name, qtype: q.type, decision: verdict.nameIds.length ? 'allow' : 'would_deny', outcome: 'servfail', addresses: [], error: (e as Error).message });
      return reply(query, RCODE_SERVFAIL);
    }
    let decoded: dnsPacket.Packet;
    try {
      decoded = dnsPacket.decode(response);
    } catch (e) {
      this.opts.audit({ name, qtype: q.type, decision: 'allow', outcome: 'servfail', addresses: [], error: `upstream sent an undecodable answer: ${(e as Error).message}` });
      return reply(query, RCODE_SERVFAIL);
    }
    const { addrs, ttl } = answerAddresses(name, decoded.answers ?? []);
    if (verdict.nameIds.length === 0) {
      // dry-run: the name would have been refused; the agent gets the answer, nothing is learned
      this.opts.audit({ name, qtype: q.type, decision: 'would_deny', outcome: 'refused', addresses: addrs });
      return response;
    }
    const learnedTtl = Math.min(this.opts.ttlMaxSec, Math.max(this.opts.ttlMinSec, ttl));
    for (const a of addrs) {
      const bytes = addressBytes(a);
      if (!bytes || !this.opts.learn(ip16(bytes), name, verdict.nameIds, learnedTtl)) {
        this.opts.audit({ name, qtype: q.type, decision: 'allow', outcome: 'servfail', addresses: addrs, error: `cannot learn ${a}: the learned-address map is full` });
        return reply(query, RCODE_SERVFAIL);
      }
    }
    this.opts.audit({ name, qtype: q.type, decision: 'allow', outcome: 'answered', addresses: addrs, ttl: learnedTtl });
    return capTtls(decoded, response, this.opts.ttlMaxSec);
  }

  /** Asks each upstream in turn, over the transport the agent used. */
  private async resolve(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer> {
    if (this.opts.upstreams.length === 0) throw new Error('no upstream resolver is configured');
    let last: Error | undefined;
    for (const u of this.opts.upstreams) {
      try {
        return transport === 'udp' ? await askUdp(u, msg, this.opts.timeoutMs) : await askTcp(u, msg, this.opts.timeoutMs);
      } catch (e) {
        last = e as Error;
      }
    }
    throw last ?? new Error('no upstream answered');
  }
}

/** The agent must not cache an answer longer than helm keeps its addresses learned. */
function capTtls(decoded: dnsPacket.Packet, raw: Buffer, maxTtl: number): Buffer {
  const records = (decoded.answers ?? []).filter((a): a is Exclude<dnsPacket.Answer, dnsPacket.OptAnswer> => a.type !== 'OPT');
  if (!records.some((a) => (a.ttl ?? 0) > maxTtl)) return raw;
  for (const a of records) if ((a.ttl ?? 0) > maxTtl) a.ttl = maxTtl;
  return dnsPacket.encode(decoded);
}

function reply(query: dnsPacket.Packet, rcode: number): Buffer {
  const flags = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  return dnsPacket.encode({
    type: 'response',
    id: query.id,
    // QR and RA set, RD echoed, RCODE in the low bits
    flags: flags | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: query.questions ?? [],
  } as dnsPacket.Packet);
}

function bindUdp(sock: dgram.Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address, port, exclusive: true }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
}

function listenTcp(host: string, port: number, onConn: (s: net.Socket) => void, ipv6Only = false): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer(onConn);
    server.once('error', reject);
    server.listen({ host, port, ipv6Only, exclusive: true }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

let v6: Promise<boolean> | undefined;
function loopback6Available(): Promise<boolean> {
  v6 ??= new Promise((resolve) => {
    const s = dgram.createSocket({ type: 'udp6', ipv6Only: true });
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind({ address: '::1', port: 0 }, () => {
      s.close();
      resolve(true);
    });
  });
  return v6;
}

function askUdp(u: Upstream, msg: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(u.host) ? 'udp6' : 'udp4');
    const id = msg.readUInt16BE(0);
    const timer = setTimeout(() => done(new Error(`${u.host}:${u.port} did not answer within ${timeoutMs} ms`)), timeoutMs);
    const done = (err?: Error, res?: Buffer) => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(res as Buffer);
    };
    sock.on('error', (e) => done(e));
    sock.on('message', (res, rinfo) => {
      // only the resolver asked, with the query's id, is an answer
      if (rinfo.port === u.port && res.length >= 2 && res.readUInt16BE(0) === id) done(undefined, res);
    });
    sock.send(msg, u.port, u.host, (e) => e && done(e));
  });
}

function askTcp(u: Upstream, msg: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: u.host, port: u.port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`${u.host}:${u.port} did not answer within ${timeoutMs} ms`)), timeoutMs);
    const done = (err?: Error, res?: Buffer) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(res as Buffer);
    };
    s.on('error', (e) => done(e));
    s.on('connect', () => {
      const framed = Buffer.alloc(2 + msg.length);
      framed.writeUInt16BE(msg.length, 0);
      msg.copy(framed, 2);
      s.write(framed);
    });
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > 2 + MAX_TCP_MESSAGE) done(new Error('oversized answer'));
      else if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) done(undefined, buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
  });
}
