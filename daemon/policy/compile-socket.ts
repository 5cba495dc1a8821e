// compileSockets: one role's `connect` rules for sockets that are not IP destinations.
//
// Unix sockets go into an LPM trie keyed like the path table: "<path>\0" for a socket path,
// "<dir>/" for every socket below a directory, "@<name>\0" for an abstract name, "@" for every
// abstract name, and "" for the role's default. Raw and packet sockets go into a hash keyed by
// (role, kind, protocol), with an any-protocol entry per kind. As everywhere, each stored key
// carries the fold of every rule that covers it.
import { C, NO_VERDICT, type Verdict } from '../kernel/layout';
import { HELM_PATH_BUF } from '../kernel/limits';
import type { Candidate } from './compile';
import type { PolicyDiagnostic, SocketTarget } from './types';

export interface UnixEntry {
  roleId: number;
  data: Buffer;
  verdict: Verdict;
  defaultMode: number;
}

export interface SocketEntry {
  roleId: number;
  kind: number; // HELM_SOCKET_*
  protocol: number; // or HELM_ANY_PROTOCOL
  verdict: Verdict;
  defaultMode: number;
}

type Decide = (cands: Candidate[], role: string) => Verdict;

/** The bytes a unix target is stored as. */
export function unixForm(t: SocketTarget): Buffer | undefined {
  const k = t.socket;
  if ('path' in k) return Buffer.from(k.path.subtree ? k.path.canonical : `${k.path.canonical}\0`, 'utf8');
  if ('abstract' in k) return Buffer.from(k.abstract === '*' ? '@' : `@${k.abstract}\0`, 'utf8');
  return undefined;
}

export function compileSockets(
  governing: Candidate[],
  role: string,
  roleId: number,
  defaultMode: number,
  decide: Decide,
  errors: PolicyDiagnostic[],
): { unixEntries: UnixEntry[]; socketEntries: SocketEntry[] } {
  const unix: { c: Candidate; form: Buffer }[] = [];
  const byKind = new Map<number, { c: Candidate; protocol: number | '*' }[]>([
    [C.HELM_SOCKET_RAW, []],
    [C.HELM_SOCKET_PACKET, []],
  ]);
  for (const c of governing) {
    const connect = c.rule.verbs.connect;
    if (!connect) continue; // most rules (no new list for each)
    for (const t of connect) {
      if (t.kind !== 'socket') continue;
      const k = t.socket;
      if (k.family === 'unix') {
        const form = unixForm(t) as Buffer;
        if (form.length > HELM_PATH_BUF) errors.push({ severity: 'error', loc: t.loc, message: `unix socket name is ${form.length} bytes once stored; the kernel buffer holds ${HELM_PATH_BUF}` });
        unix.push({ c, form });
      } else if ('protocol' in k) {
        byKind.get(k.family === 'raw' ? C.HELM_SOCKET_RAW : C.HELM_SOCKET_PACKET)!.push({ c, protocol: k.protocol });
      }
    }
  }
  const fold = (cands: Candidate[]): Verdict => (cands.length ? decide([...new Set(cands)], role) : NO_VERDICT);

  const keys = new Map<string, Buffer>([['', Buffer.alloc(0)]]);
  for (const u of unix) keys.set(u.form.toString('latin1'), u.form);
  const unixEntries = [...keys.values()].sort(Buffer.compare).map((data) => ({
    roleId,
    data,
    verdict: fold(unix.filter((u) => u.form.length <= data.length && data.compare(u.form, 0, u.form.length, 0, u.form.length) === 0).map((u) => u.c)),
    defaultMode,
  }));

  const socketEntries: SocketEntry[] = [];
  for (const [kind, list] of byKind) {
    const any = list.filter((x) => x.protocol === '*').map((x) => x.c);
    socketEntries.push({ roleId, kind, protocol: C.HELM_ANY_PROTOCOL, verdict: fold(any), defaultMode });
    const protocols = [...new Set(list.flatMap((x) => (x.protocol === '*' ? [] : [x.protocol])))].sort((a, b) => a - b);
    for (const p of protocols) {
      socketEntries.push({ roleId, kind, protocol: p, verdict: fold([...any, ...list.filter((x) => x.protocol === p).map((x) => x.c)]), defaultMode });
    }
  }
  return { unixEntries, socketEntries };
}
