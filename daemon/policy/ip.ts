// Address text to bytes, shared by the parser (validating rule addresses) and the
// reference evaluator (matching operations against them).
import * as net from 'net';

export type IpBytes = number[];

/** 4 bytes for IPv4 text, 16 for IPv6 text (mapped or not); undefined when neither. */
export function addressBytes(s: string): IpBytes | undefined {
  const family = net.isIP(s);
  if (family === 4) return s.split('.').map(Number);
  if (family !== 6 || s.includes('%')) return undefined;
  let text = s;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = text.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 0xff];
  });
}
