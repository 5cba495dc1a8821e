// `helmctl audit verify`: checks the hash chain through a trail's files in
// order (rotated ones, compressed or not, then the active one) and names the
// first line that breaks it.
import { ChainVerifier, type ChainBreak } from './chain';
import { readLines, trailFiles } from './files';

export interface TrailVerdict {
  /** The trail: directory and stem of its files. */
  trail: string;
  files: string[];
  ok: boolean;
  /** Chained lines checked. */
  lines: number;
  broken?: ChainBreak;
  notes: string[];
}

export async function verifyFiles(files: string[]): Promise<TrailVerdict> {
  const v = new ChainVerifier();
  for (const file of files) {
    v.beginFile(file);
    let r: { lines: number; complete: boolean };
    try {
      r = await readLines(file, (l) => (v.push(l.text, l.line) ? false : undefined));
    } catch (e) {
      return { trail: '', files, ok: false, lines: v.lines, broken: { file, line: 0, reason: `cannot read: ${(e as Error).message}` }, notes: v.notes };
    }
    if (v.broken) break;
    // readLines handed over a last line without its newline like any other: say it was cut short.
    v.endFile(r.lines, r.complete);
    if (v.broken) break;
  }
  const broken = v.broken ?? v.end();
  return { trail: '', files, ok: !broken, lines: v.lines, ...(broken ? { broken } : {}), notes: v.notes };
}

/** Every trail among `args` (files and directories), each checked as one sequence. */
export async function verifyTrails(args: string[]): Promise<TrailVerdict[]> {
  const out: TrailVerdict[] = [];
  for (const g of trailFiles(args)) out.push({ ...(await verifyFiles(g.files)), trail: g.trail });
  return out;
}
