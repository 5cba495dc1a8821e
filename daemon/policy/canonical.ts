// Canonical form of a rule path (POLICY.md, "Targets").
//
// The kernel matches an operation on the path it resolved, i.e. on the object itself with every
// symlink followed. A rule written as `/lib/x` on a merged-/usr host would therefore never match
// anything: the kernel only ever sees `/usr/lib/x`. So rule paths are put in the same form before
// they are compiled: `.`, `..` and `//` removed and, as far as the path exists on this host,
// symlinks resolved. The part that does not exist (yet) is kept as written, normalised.

import * as fs from 'fs';

export interface CanonicalPath {
  /** Absolute, normalised, symlink-resolved path; ends with exactly one '/' when `subtree`. */
  canonical: string;
  /** Written with a trailing '/': the directory and everything below it. */
  subtree: boolean;
  /** true when `canonical` differs from what was written (anything was rewritten). */
  resolved: boolean;
}

/**
 * What lstat found at each path looked at, for one parse: a policy's thousands of rules
 * share their directories, and each lookup is a system call. (A rename during the
 * parse is seen or not, as with any lookup; the cache lives no longer than the parse.)
 */
export type LookupCache = Map<string, string | null | undefined>;

/**
 * Canonicalise an absolute rule path. Throws on a relative path or one containing NUL: the parser
 * reports those itself, with a location, before calling this.
 */
export function canonicalizeRulePath(written: string, cache?: LookupCache): CanonicalPath {
  if (!written.startsWith('/')) throw new Error(`not an absolute path: ${JSON.stringify(written)}`);
  if (written.includes('\0')) throw new Error(`path contains a NUL byte: ${JSON.stringify(written)}`);
  const subtree = written.endsWith('/');
  const real = resolvePath(written.split('/'), cache);
  const canonical = subtree && real !== '/' ? `${real}/` : real;
  return { canonical, subtree, resolved: canonical !== written };
}

/** Linux gives up after this many symlinks in one lookup (MAXSYMLINKS); so do we. */
const MAX_SYMLINKS = 40;

/**
 * Walks the components from `/` the way the kernel's lookup does: a symlink (the final component
 * included: the kernel matches the object it points to) is replaced by its target, and `..` goes
 * to the parent of what was actually reached. From the first component that does not exist (or
 * cannot be looked at: EACCES, ELOOP, ...) the rest is kept lexically, `..` included.
 *
 * Symlinks under /proc are not followed: they depend on who looks (/proc/self, /proc/<pid>/exe,
 * /proc/self/fd/0 behind /dev/stdin) and would be pinned to the process that compiled the policy.
 */
function resolvePath(components: string[], cache?: LookupCache): string {
  let base = '/'; // reached and free of symlinks
  const rest: string[] = []; // below `base`, kept as written
  const todo = [...components];
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift() as string;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (rest.length > 0) rest.pop();
      else base = parentOf(base);
      continue;
    }
    const next = joinPath(base, part);
    if (rest.length > 0 || next.startsWith('/proc/')) {
      rest.push(part);
      continue;
    }
    let target = cache?.get(next);
    if (target === undefined && !cache?.has(next)) {
      target = symlinkTarget(next);
      cache?.set(next, target);
    }
    if (target === null) {
      base = next; // exists, not a symlink
    } else if (target === undefined || ++links > MAX_SYMLINKS) {
      rest.push(part); // cannot be resolved on this host
    } else {
      if (target.startsWith('/')) base = '/';
      todo.unshift(...target.split('/'));
    }
  }
  return rest.length > 0 ? joinPath(base, rest.join('/')) : base;
}

/** A symlink's target; null when `p` exists and is not a symlink; undefined when it cannot be looked at. */
function symlinkTarget(p: string): string | null | undefined {
  try {
    // A missing path is common (rules name files that do not exist yet): no exception for it.
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (!st) return undefined;
    if (!st.isSymbolicLink()) return null;
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

function joinPath(base: string, rest: string): string {
  return base === '/' ? `/${rest}` : `${base}/${rest}`;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}
