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
export class LookupCache {
  /** Which cache this is, for the directories of PathSplitter (kept longer): they are walked again once for each. */
  readonly stamp = ++lookupCaches;
  /** Per path: its symlink target, null for another object, undefined where it cannot be looked at. */
  readonly links = new Map<string, string | null | undefined>();
  /** Per directory of a plain rule path (see resolvePlain): where the walk to it ends. */
  readonly dirs = new Map<string, Resolved>([['/', { path: '/', reached: true, asWritten: true }]]);
}

let lookupCaches = 0;

interface Resolved {
  path: string;
  /** Every component was reached (none kept lexically): what is below it must be looked at. */
  reached: boolean;
  /** For resolvePlain: `path` is the plain path itself (no symlink on the way). */
  asWritten?: boolean;
  /** For a directory reached: how often a name in it was looked at this parse, and its listing once made (see LIST_AFTER; false: a file or directory). */
  lookups?: number;
  listing?: Map<string, boolean> | null;
}

/**
 * Canonicalise an absolute rule path. Throws on a relative path or one containing NUL: the parser
 * reports those itself, with a location, before calling this.
 */
export function canonicalizeRulePath(written: string, cache?: LookupCache): CanonicalPath {
  if (!written.startsWith('/')) throw new Error(`not an absolute path: ${JSON.stringify(written)}`);
  if (written.includes('\0')) throw new Error(`path contains a NUL byte: ${JSON.stringify(written)}`);
  const subtree = written.endsWith('/');
  const real = (cache && resolvePlain(written, subtree, cache)) ?? resolvePath(written.split('/'), cache).path;
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
function resolvePath(components: string[], cache?: LookupCache): Resolved {
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
    const target = lookup(next, cache);
    if (target === null) {
      base = next; // exists, not a symlink
    } else if (target === undefined || ++links > MAX_SYMLINKS) {
      rest.push(part); // cannot be resolved on this host
    } else {
      if (target.startsWith('/')) base = '/';
      todo.unshift(...target.split('/'));
    }
  }
  return rest.length > 0 ? { path: joinPath(base, rest.join('/')), reached: false } : { path: base, reached: true };
}

/**
 * resolvePath's result for a plain path (no "//", "." or "..", not under /proc: what nearly every
 * rule is), built from its parent directory's, which the paths of a large policy share: each
 * directory is walked once per parse, and each path costs one step. Undefined where the path is
 * not plain: resolvePath walks it whole.
 */
function resolvePlain(written: string, subtree: boolean, cache: LookupCache): string | undefined {
  const body = subtree ? written.slice(0, -1) : written;
  if (!isPlain(body)) return undefined;
  // The path itself is not kept: rules seldom name each other's directories.
  return resolveStep(body, cache).path;
}

function isPlain(body: string): boolean {
  return !(body.length < 2 || body.includes('//') || body.includes('/./') || body.includes('/../') || body.endsWith('/.') || body.endsWith('/..') || body.startsWith('/proc/'));
}

/**
 * A plain rule path (see resolvePlain) split once into its name and directory, for a process that
 * canonicalises the same paths parse after parse (helmd, through parse.ts's RuleCache). The
 * directories are shared objects (PathSplitter): each is walked again once per LookupCache, as
 * resolvePlainDir walks it, but found without building and hashing its name again.
 */
export interface PlainPath {
  body: string;
  dir: DirNode;
  name: string;
  subtree: boolean;
}

/** A directory of PlainPaths, and its walk for the last LookupCache that asked. */
interface DirNode {
  plain: string;
  parent: DirNode | undefined;
  name: string;
  stamp: number;
  resolved: Resolved | undefined;
}

/** Splits plain paths, each directory into one DirNode for all the paths below it. */
export class PathSplitter {
  private nodes = new Map<string, DirNode>();

  split(written: string): PlainPath | undefined {
    if (!written.startsWith('/') || written.includes('\0')) return undefined;
    const subtree = written.endsWith('/');
    const body = subtree ? written.slice(0, -1) : written;
    if (!isPlain(body)) return undefined;
    const slash = body.lastIndexOf('/');
    // What no path uses any more stays until there is a great deal of it; paths split before
    // keep their own directories, which are then walked without being shared.
    if (this.nodes.size > 1_000_000) this.nodes.clear();
    return { body, dir: this.node(slash === 0 ? '/' : body.slice(0, slash)), name: body.slice(slash + 1), subtree };
  }

  private node(plain: string): DirNode {
    let node = this.nodes.get(plain);
    if (node === undefined) {
      const slash = plain.lastIndexOf('/');
      const parent = plain === '/' ? undefined : this.node(slash === 0 ? '/' : plain.slice(0, slash));
      node = { plain, parent, name: plain.slice(slash + 1), stamp: 0, resolved: undefined };
      this.nodes.set(plain, node);
    }
    return node;
  }
}

/** canonicalizeRulePath(written, cache).canonical, for the path PathSplitter.split(written) gave. */
export function canonicalizePlain(p: PlainPath, cache: LookupCache): string {
  const real = stepBelow(p.body, resolveNode(p.dir, cache), p.name, cache).path;
  return p.subtree && real !== '/' ? `${real}/` : real;
}

/** resolvePlainDir(node.plain, cache), for a DirNode. */
function resolveNode(node: DirNode, cache: LookupCache): Resolved {
  if (node.stamp !== cache.stamp) {
    node.resolved = node.parent === undefined ? { path: '/', reached: true, asWritten: true } : stepBelow(node.plain, resolveNode(node.parent, cache), node.name, cache);
    node.stamp = cache.stamp;
  }
  return node.resolved!;
}

/** resolvePath(plain.split('/')) of a directory (see resolvePlain), kept for the paths below it. */
function resolvePlainDir(plain: string, cache: LookupCache): Resolved {
  let resolved = cache.dirs.get(plain);
  if (resolved === undefined) {
    resolved = resolveStep(plain, cache);
    cache.dirs.set(plain, resolved);
  }
  return resolved;
}

/** resolvePath(plain.split('/')), one component past its parent's. */
function resolveStep(plain: string, cache: LookupCache): Resolved {
  const slash = plain.lastIndexOf('/');
  return stepBelow(plain, resolvePlainDir(slash === 0 ? '/' : plain.slice(0, slash), cache), plain.slice(slash + 1), cache);
}

/** resolveStep of `plain`, which is `name` in the directory whose walk is `parent`. */
function stepBelow(plain: string, parent: Resolved, name: string, cache: LookupCache): Resolved {
  // Nothing above was rewritten: the path is as written (no new string for it).
  const next = parent.asWritten ? plain : joinPath(parent.path, name);
  if (!parent.reached || next.startsWith('/proc/')) return { path: next, reached: false, asWritten: parent.asWritten };
  const target = childTarget(parent, name, next, cache);
  if (target === null) return { path: next, reached: true, asWritten: parent.asWritten };
  if (target === undefined) return { path: next, reached: false, asWritten: parent.asWritten };
  // A symlink: resolvePath follows it, and counts it against MAX_SYMLINKS with those before.
  return { ...resolvePath(plain.split('/'), cache), asWritten: false };
}

/**
 * Looked at this many times in one parse, a directory is listed instead (one getdents for what
 * would be an lstat per rule: a policy naming thousands of files in one directory); one with
 * more entries than LISTED_AT_MOST is not, and its names are looked at one by one.
 */
export const LIST_AFTER = 32;
const LISTED_AT_MOST = 16_384;

/** symlinkTarget(next) for `name` in the directory `parent` reached, from its listing once it has one. */
function childTarget(parent: Resolved, name: string, next: string, cache: LookupCache): string | null | undefined {
  if (parent.listing === undefined && (parent.lookups = (parent.lookups ?? 0) + 1) >= LIST_AFTER) parent.listing = listing(parent.path);
  const entry = parent.listing?.get(name);
  if (parent.listing && entry === undefined) return undefined; // not there (when it was listed)
  if (entry === false) return null; // a file or directory
  return lookup(next, cache);
}

/** A directory's names, false for a file or directory, true for what must be looked at (a symlink); null when it cannot be read or is too large (see LIST_AFTER). */
export function listing(dir: string): Map<string, boolean> | null {
  let d: fs.Dir | undefined;
  try {
    d = fs.opendirSync(dir, { bufferSize: 1024 });
    const names = new Map<string, boolean>();
    for (let e = d.readSync(); e !== null; e = d.readSync()) {
      if (names.size >= LISTED_AT_MOST) return null;
      // A type the filesystem does not tell (DT_UNKNOWN) is looked at as a symlink would be.
      names.set(e.name, !(e.isFile() || e.isDirectory()));
    }
    return names;
  } catch {
    return null;
  } finally {
    d?.closeSync();
  }
}

/** symlinkTarget, looked at once per parse. */
function lookup(p: string, cache: LookupCache | undefined): string | null | undefined {
  if (cache === undefined) return symlinkTarget(p);
  let target = cache.links.get(p);
  if (target === undefined && !cache.links.has(p)) {
    target = symlinkTarget(p);
    cache.links.set(p, target);
  }
  return target;
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
