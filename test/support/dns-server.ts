// A small authoritative DNS server for tests: answers A/AAAA/CNAME from a zone table, over UDP
// and TCP, on a loopback address. Records every question it receives, so a test can prove that
// a refused name never left the host.
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';

export interface ZoneRecord {
  type: 'A' | 'AAAA' | 'CNAME';
  data: string;
  ttl: number;
}

export interface TestDnsServer {
  port: number;
  host: string;
  /** Names asked, lower-case, in order. */
  asked: string[];
  close(): Promise<void>;
}

export async function startDnsServer(zone: Record<string, ZoneRecord[]>, host = '127.0.0.1', port = 0): Promise<TestDnsServer> {
  const asked: string[] = [];
  const respond = (msg: Buffer): Buffer | undefined => {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    asked.push(name);
    const answers: dnsPacket.Answer[] = [];
    let cur = name;
    for (let hops = 0; hops < 8; hops++) {
      const records = zone[cur] ?? [];
      const cname = records.find((r) => r.type === 'CNAME');
      if (cname) {
        answers.push({ type: 'CNAME', name: cur, ttl: cname.ttl, data: cname.data } as dnsPacket.Answer);
        cur = cname.data;
        continue;
      }
      for (const r of records) if (r.type === question.type) answers.push({ type: r.type, name: cur, ttl: r.ttl, data: r.data } as dnsPacket.Answer);
      break;
    }
    const known = zone[name] !== undefined;
    return dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (known ? 0 : 3), // NXDOMAIN for unknown names
      questions: q.questions,
      answers,
    } as dnsPacket.Packet);
  };

  const udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(port, host, () => resolve());
  });
  const boundPort = udp.address().port;
  udp.on('message', (msg, rinfo) => {
    const r = respond(msg);
    if (r) udp.send(r, rinfo.port, rinfo.address);
  });
  const tcp = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => s.destroy());
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const r = respond(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        if (r) {
          const framed = Buffer.alloc(2 + r.length);
          framed.writeUInt16BE(r.length, 0);
          r.copy(framed, 2);
          s.write(framed);
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(boundPort, host, () => resolve());
  });
  return {
    port: boundPort,
    host,
    asked,
    close: () =>
      new Promise<void>((resolve) => {
        udp.close();
        tcp.close(() => resolve());
      }),
  };
}

// Run directly: `node dns-server.js PORT` serves a fixed test zone until killed (for manual checks).
if (require.main === module) {
  const zone: Record<string, ZoneRecord[]> = {
    'allowed.helm.test': [{ type: 'A', data: '127.0.0.2', ttl: 60 }],
    'other.helm.test': [{ type: 'A', data: '127.0.0.3', ttl: 60 }],
  };
  void startDnsServer(zone, '127.0.0.1', Number(process.argv[2] ?? 5399)).then((s) => console.log(`dns on ${s.host}:${s.port}`));
}
