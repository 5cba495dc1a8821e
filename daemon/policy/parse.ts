// Policy parser: YAML or JSON source → the validated policy model of ./types.ts.
//
// The language is fixed by POLICY.md. Policies are written by hand and reviewed in pull requests,
// so this parser is deliberately strict: every unknown key, wrong type or dubious value is an
// error, located `file:line:col` (+ JSON Pointer), and every problem of a file is reported at
// once. Nothing is skipped or guessed; a file with any error yields no policies at all.

import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { Document, LineCounter, isScalar, isSeq, parseAllDocuments, visit } from 'yaml';
import { MAX_RULE_PATH_BYTES } from '../kernel/limits';
import { LookupCache, PathSplitter, canonicalizePlain, canonicalizeRulePath, type PlainPath } from './canonical';
import { addressBytes } from './ip';
import { readJsonItems, readJsonTree, type JsonTree } from './json-tree';
import { describeNode, treeFromYaml, type TreeList, type TreeMap, type TreeNode } from './tree';
import {
  Conditions,
  FILE_VERBS,
  Mode,
  NetTarget,
  SocketTarget,
  PathTarget,
  Policy,
  PolicyDiagnostic,
  PolicyError,
  Rule,
  RuleKind,
  SourceLocation,
  Target,
  VERBS,
  Verb,
} from './types';

export interface ParseOptions {
  /**
   * Canonicalises an absolute rule path (see ./canonical.ts, the default). Tests pass their own
   * to be independent of the host's filesystem. A trailing '/' is re-added when it drops it.
   */
  canonicalize?: (p: string) => string;
  /**
   * Read JSON sources with the YAML parser, as YAML sources are, instead of directly (see
   * parseJsonDirectly). Both give the same result; tests compare them.
   */
  jsonViaYaml?: boolean;
  /** Rules of the parse before, reused where their text comes again (see RuleCache). */
  ruleCache?: RuleCache;
}

/**
 * The rules of the JSON sources a parse met, for the next parse to reuse (helmd keeps one: it
 * parses edit after edit of the same policies, and on a 10,000-rule policy reading and checking
 * every rule again was most of an apply). A rule read directly from JSON is taken from here when
 * its text is the same, at the same place (file, JSON Pointer, line and column: everything its
 * locations are made of), under the same policy roles, and its paths canonicalise to the same
 * forms as before (a symlink may have changed since): then parsing it again would give the same
 * rule, field for field. Only rules parsed without any error are kept, and only from the last
 * set of sources parsed. test/unit/parse-caches.test.ts compares parses through a cache with
 * parses without one over random edits.
 */
export class RuleCache {
  /** Per rules list (file and JSON Pointer of the list): its rules by index. */
  private previous = new Map<string, (CachedRule | undefined)[]>();
  private current = new Map<string, (CachedRule | undefined)[]>();
  /** Per file: its last parse, when it was read directly and without any error (see parseEdit). */
  private previousSources = new Map<string, SourceSnapshot>();
  private currentSources = new Map<string, SourceSnapshot>();
  /** Splits the paths of the rules kept (CachedRule.plain). */
  readonly splitter = new PathSplitter();
  /** Sources parsed as an edit of their parse before (parseEdit), for tests and benchmarks to see that they were. */
  editsParsed = 0;

  /**
   * The cache of one rules list: its rules as the parse before left them, and those of this
   * parse. By index, because the index is part of a rule's place (its pointer) anyway: only the
   * texts are compared, never hashed.
   */
  list(file: string, pointer: string): RuleListCache {
    const key = `${file}\0${pointer}`;
    const kept: (CachedRule | undefined)[] = [];
    this.current.set(key, kept);
    return { before: this.previous.get(key) ?? [], kept, splitter: this.splitter };
  }

  /** The parse before of a file, if it was valid and read directly. */
  source(file: string): SourceSnapshot | undefined {
    return this.previousSources.get(file);
  }

  /** This parse of a file, valid: its snapshot, and its lists for list(). */
  keepSource(snapshot: SourceSnapshot): void {
    this.currentSources.set(snapshot.file, snapshot);
    for (const l of snapshot.lists) this.current.set(`${snapshot.file}\0${l.pointer}`, l.kept);
  }

  /** A set of sources has been parsed: what it did not meet is forgotten. */
  rotate(): void {
    this.previous = this.current;
    this.current = new Map();
    this.previousSources = this.currentSources;
    this.currentSources = new Map();
  }
}

/** A JSON source as its last valid parse left it: enough to parse an edit of it (see parseEdit). */
interface SourceSnapshot {
  file: string;
  text: string;
  /** Where its lines start (LineCounter.lineStarts). */
  lineStarts: number[];
  parsed: Parsed[];
  /** Its rules lists, in no particular order. */
  lists: ListSnapshot[];
}

/** A rules list of a SourceSnapshot. */
interface ListSnapshot {
  pointer: string;
  kind: RuleKind;
  /** The policy it belongs to (index in SourceSnapshot.parsed), and where its rules start in the policy's. */
  policy: number;
  first: number;
  /** The policy's roles, as parseRule is given them. */
  roles: string[] | undefined;
  rolesKey: string;
  /** Per rule: where its text starts and ends in the source, and its cache entry. */
  starts: number[];
  ends: number[];
  kept: CachedRule[];
}

interface RuleListCache {
  before: readonly (CachedRule | undefined)[];
  kept: (CachedRule | undefined)[];
  splitter: PathSplitter;
}

interface CachedRule {
  /** The rule's JSON text. */
  text: string;
  line: number;
  col: number;
  /** The policy's roles (a contextual rule's when.role is checked against them), joined. */
  roles: string;
  rule: Rule;
  /** Its path targets, canonicalised again on every reuse, and each split once where it is plain (canonical.ts, PlainPath). */
  paths: PathTarget[];
  plain: (PlainPath | undefined)[];
}

/** The rule parsed before, if it still stands (see RuleCache). */
function cachedRule(ctx: Ctx, hit: CachedRule | undefined, text: string, line: number, col: number, roles: string): Rule | undefined {
  if (hit === undefined || hit.line !== line || hit.col !== col || hit.roles !== roles || hit.text !== text) return undefined;
  return canonicalAsBefore(ctx, hit) ? hit.rule : undefined;
}

/** Whether every path of a rule parsed before canonicalises as it did then (the filesystem may have changed since). */
function canonicalAsBefore(ctx: Ctx, hit: CachedRule): boolean {
  const { paths, plain } = hit;
  for (let k = 0; k < paths.length; k++) {
    const split = plain[k];
    if ((split && ctx.lookups ? canonicalizePlain(split, ctx.lookups) : canonicalTarget(ctx, paths[k].written)) !== paths[k].canonical) return false;
  }
  return true;
}

function cacheEntry(text: string, line: number, col: number, roles: string, rule: Rule, splitter: PathSplitter): CachedRule {
  const paths: PathTarget[] = [];
  for (const targets of Object.values(rule.verbs)) for (const t of targets) if (t.kind === 'path') paths.push(t);
  if (rule.when?.exe) paths.push(...rule.when.exe);
  return { text, line, col, roles, rule, paths, plain: paths.map((t) => splitter.split(t.written)) };
}

// ---------------------------------------------------------------------------------------------
// The language

const API_VERSION = 'helm/v1';
const KIND = 'Policy';
const POLICY_KEYS = ['apiVersion', 'kind', 'metadata', 'spec'];
const METADATA_KEYS = ['name'];
const SPEC_KEYS = ['roles', 'mode', 'allow', 'block', 'contextual'];
const RULE_KINDS: readonly RuleKind[] = ['allow', 'block', 'contextual'];
const RULE_KEYS = ['id', ...VERBS, 'when'];
const WHEN_KEYS = ['role', 'exe', 'label', 'uid'];
const MODES: readonly Mode[] = ['enforce', 'dry-run'];

const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
const ROLE_RE = /^[A-Za-z0-9_.-]+$/;
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Linux's PATH_MAX (4096) counts the NUL: no path a system call takes is longer than this. */
const MAX_SYSCALL_PATH_BYTES = 4095;
/** (uid_t)-1 means "no uid" to the kernel, so the largest real uid is one less. */
const MAX_UID = 0xfffffffe;

/** Policy files in a directory; no recursion. */
const POLICY_FILE_EXTENSIONS = ['.yaml', '.yml', '.json'];
/**
 * The JSON Schema ships next to the policies (editors find it there) but is not one: a
 * directory given as a policy source skips it. Case tables are recognised by their content.
 */
const NOT_POLICY_FILES = /\.schema\.json$/;

/** Whether a directory entry's name is a policy file. */
export function isPolicyFileName(name: string): boolean {
  return POLICY_FILE_EXTENSIONS.some((ext) => name.endsWith(ext)) && !NOT_POLICY_FILES.test(name);
}

/**
 * Keys users plausibly put at the wrong level, with where they belong. Shown instead of an
 * edit-distance suggestion, which would be misleading for them.
 */
const MISPLACED_KEY_HINTS: Record<string, Record<string, string>> = {
  policy: {
    name: 'name goes under metadata',
    roles: 'roles goes under spec',
    mode: 'mode goes under spec',
    allow: 'rules go under spec',
    block: 'rules go under spec',
    contextual: 'rules go under spec',
  },
  spec: {
    ...Object.fromEntries(VERBS.map((v) => [v, `${v} belongs in a rule under allow, block or contextual`])),
    id: 'id belongs in a rule under allow, block or contextual',
    when: 'when belongs on a rule under contextual',
    name: 'name goes under metadata',
  },
  rule: {
    role: 'role is a condition: it goes under when, on a contextual rule',
    roles: 'the roles a policy governs are set for the whole policy in spec.roles',
    exe: 'exe is a condition: it goes under when, on a contextual rule',
    label: 'label is a condition: it goes under when, on a contextual rule',
    uid: 'uid is a condition: it goes under when, on a contextual rule',
    ...Object.fromEntries(RULE_KINDS.map((k) => [k, 'rules cannot be nested'])),
  },
  when: {
    ...Object.fromEntries(VERBS.map((v) => [v, `${v} targets belong on the rule itself, not under when`])),
    roles: 'the condition key is role (singular)',
  },
};

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Parses one policy file. YAML may hold several `---` documents, one policy each; a file whose
 * name ends in `.json` holds one policy object or an array of them. Throws PolicyError listing
 * every problem found.
 */
export function parsePolicySource(text: string, file: string, opts: ParseOptions = {}): Policy[] {
  const diags: PolicyDiagnostic[] = [];
  const parsed = parseSource(text, file, opts, diags);
  if (diags.length > 0) throw new PolicyError(diags);
  return parsed.map((p) => p.policy);
}

/** A policy source: its text and the name its errors are located by. */
export interface PolicySourceText {
  file: string;
  text: string;
}

/**
 * Loads policies from files and directories (a directory contributes every *.yaml, *.yml and
 * *.json directly in it, in name order). Errors of all files are collected into one PolicyError;
 * policy names must be unique across all of them. Test-case files (NAME.cases.yaml holding a list)
 * are passed over and returned as `skipped`.
 */
export function loadPolicies(paths: string[], opts: ParseOptions = {}): { policies: Policy[]; files: string[]; skipped: string[]; sources: PolicySourceText[] } {
  const { sources, diags } = readPolicySources(paths);
  const loaded = parseSources(sources, opts, diags);
  if (paths.length === 0) {
    error(diags, fileLoc('<none>'), 'no policy files or directories given');
  } else if (loaded.policies.length === 0 && diags.length === 0) {
    for (const p of paths) {
      const why = loaded.skipped.includes(p) ? `${p} holds test cases (for helmctl policy test --cases), not policies` : `no policies found in ${p}`;
      error(diags, fileLoc(p), why);
    }
  }
  if (diags.length > 0) throw new PolicyError(diags);
  return { ...loaded, sources: sources.filter((s) => !loaded.skipped.includes(s.file)) };
}

/**
 * The same checks as loadPolicies over sources given as text (e.g. over the control API): each
 * is named by its `file` in errors; a `.json` name means JSON.
 */
export function loadPolicySources(sources: PolicySourceText[], opts: ParseOptions = {}): { policies: Policy[]; files: string[]; skipped: string[] } {
  const diags: PolicyDiagnostic[] = [];
  const seen = new Set<string>();
  for (const s of sources) {
    if (seen.has(s.file)) error(diags, fileLoc(s.file), `${s.file} is given more than once`);
    seen.add(s.file);
  }
  const loaded = parseSources(sources, opts, diags);
  if (sources.length === 0) error(diags, fileLoc('<none>'), 'no policy sources given');
  else if (loaded.policies.length === 0 && diags.length === 0) {
    for (const s of sources) error(diags, fileLoc(s.file), loaded.skipped.includes(s.file) ? `${s.file} holds test cases, not policies` : `no policies found in ${s.file}`);
  }
  if (diags.length > 0) throw new PolicyError(diags);
  return loaded;
}

/** The texts of the policy files that paths stand for (directories expanded), and why any could not be read. */
export function readPolicySources(paths: string[]): { sources: PolicySourceText[]; diags: PolicyDiagnostic[] } {
  const diags: PolicyDiagnostic[] = [];
  const files = withoutRepeats(paths.flatMap((p) => policyFilesAt(p, diags)), diags);
  const sources: PolicySourceText[] = [];
  for (const file of files) {
    const text = readPolicyFile(file, diags);
    if (text !== undefined) sources.push({ file, text });
  }
  return { sources, diags };
}

function parseSources(sources: PolicySourceText[], opts: ParseOptions, diags: PolicyDiagnostic[]): { policies: Policy[]; files: string[]; skipped: string[] } {
  const policies: Policy[] = [];
  const skipped: string[] = [];
  const firstByName = new Map<string, SourceLocation>();
  for (const { file, text } of sources) {
    if (isTestCases(file, text)) {
      skipped.push(file);
      continue;
    }
    const parsed = parseSource(text, file, opts, diags);
    // Duplicates inside one file were reported by parseSource; here only those across files.
    const inThisFile = new Map<string, SourceLocation>();
    for (const { policy, nameLoc } of parsed) {
      policies.push(policy);
      if (nameLoc === undefined) continue;
      const first = firstByName.get(policy.name);
      if (first !== undefined) {
        error(diags, nameLoc, `duplicate policy name "${policy.name}" (first defined at ${where(first)})`);
      } else if (!inThisFile.has(policy.name)) {
        inThisFile.set(policy.name, nameLoc);
      }
    }
    for (const [name, loc] of inThisFile) firstByName.set(name, loc);
  }
  opts.ruleCache?.rotate();
  return { policies, files: sources.map((s) => s.file).filter((f) => !skipped.includes(f)), skipped };
}

/**
 * `helmctl policy test` cases kept next to their policies (NAME.cases.yaml, a YAML list of
 * operations) are not policies. Only a file named so whose one document is a list is passed
 * over: a policy document is a mapping, so nothing that could be a policy is ever skipped.
 */
function isTestCases(file: string, text: string): boolean {
  if (!/\.cases\.ya?ml$/.test(file)) return false;
  try {
    const docs = parseAllDocuments(text.startsWith('\ufeff') ? text.slice(1) : text, { prettyErrors: false, version: '1.2' });
    return docs.length === 1 && docs[0].errors.length === 0 && isSeq(docs[0].contents);
  } catch (e) {
    if (e instanceof RangeError) return false; // parsed as a policy, and reported as too deep
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Files

/** The policy files a command-line path stands for. */
function policyFilesAt(p: string, diags: PolicyDiagnostic[]): string[] {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    error(diags, fileLoc(p), `cannot read ${p}: ${errnoText(e)}`);
    return [];
  }
  if (!st.isDirectory()) return [p];
  let names: string[];
  try {
    names = fs.readdirSync(p);
  } catch (e) {
    error(diags, fileLoc(p), `cannot list directory ${p}: ${errnoText(e)}`);
    return [];
  }
  // Plain code-unit order: the same on every host, whatever the locale.
  const matching = names.filter(isPolicyFileName).sort();
  const files: string[] = [];
  for (const name of matching) {
    const file = path.join(p, name);
    try {
      // A name that matches but is not a file (a directory "x.yaml", a dangling symlink) is an
      // error rather than something to skip: it looks like a policy to whoever reads the listing.
      if (!fs.statSync(file).isFile()) error(diags, fileLoc(file), `${file} is not a regular file`);
      else files.push(file);
    } catch (e) {
      error(diags, fileLoc(file), `cannot read ${file}: ${errnoText(e)}`);
    }
  }
  return files;
}

/**
 * The same file reached twice (a directory and a file in it, or through a symlink) is reported
 * once, as such, rather than as a clash of every policy name in it with itself.
 */
function withoutRepeats(files: string[], diags: PolicyDiagnostic[]): string[] {
  const firstAs = new Map<string, string>();
  return files.filter((file) => {
    let real: string;
    try {
      real = fs.realpathSync(file);
    } catch {
      return true; // reported when it is read
    }
    const first = firstAs.get(real);
    if (first !== undefined) {
      error(diags, fileLoc(file), first === file ? `${file} is given more than once` : `${file} is the same file as ${first}, given before`);
      return false;
    }
    firstAs.set(real, file);
    return true;
  });
}

/** Reads a file as UTF-8, refusing (not replacing) invalid bytes: a path must be exactly as written. */
function readPolicyFile(file: string, diags: PolicyDiagnostic[]): string | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    error(diags, fileLoc(file), `cannot read ${file}: ${errnoText(e)}`);
    return undefined;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    // Point at the first undecodable byte (approximately, should the file also hold a real U+FFFD).
    const lossy = bytes.toString('utf8');
    const { line, col } = linePosIn(lossy, Math.max(lossy.indexOf('\ufffd'), 0));
    error(diags, { file, line, col, pointer: '' }, 'file is not valid UTF-8');
    return undefined;
  }
}

function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const texts: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    ENOTDIR: 'a path component is not a directory',
    ELOOP: 'too many levels of symbolic links',
  };
  return (err.code && texts[err.code]) || err.message || String(e);
}

// ---------------------------------------------------------------------------------------------
// Source → documents

interface Ctx {
  file: string;
  lines: LineCounter;
  diags: PolicyDiagnostic[];
  canonicalize: (p: string) => string;
  /** The lookups `canonicalize` makes, when it is the default one (canonicalizeRulePath). */
  lookups?: LookupCache;
  /** JSON read directly: its tree, for reading deferred rules (TreeMap.deferred), and the rules of the parse before. */
  json?: { tree: JsonTree; cache?: RuleCache; lists: (ListSnapshot & { rules: Rule[] })[] };
}

/**
 * A node with where it sits: JSON Pointer and source position. Both are worked out when first
 * asked for: most nodes never need them (only rules, targets and conditions keep a location,
 * and the rest only for messages), and on a 10,000-rule policy computing them all up front
 * was a good part of the validation's time and garbage.
 */
class At {
  private cachedPointer?: string;
  private cachedLoc?: SourceLocation;
  constructor(
    private readonly ctx: Ctx,
    readonly node: TreeNode | null,
    /** The node holding this one, undefined at a document root (whose pointer is `token`). */
    private readonly parent: At | undefined,
    /** Key or index in `parent`. */
    private readonly token: string | number,
    /** Where the node is; where its key is when it has no position of its own. */
    private readonly offset: number,
  ) {}

  get pointer(): string {
    this.cachedPointer ??= this.parent === undefined ? String(this.token) : `${this.parent.pointer}/${typeof this.token === 'number' ? this.token : escapePointer(this.token)}`;
    return this.cachedPointer;
  }

  get loc(): SourceLocation {
    this.cachedLoc ??= offsetLoc(this.ctx, this.offset, this.pointer);
    return this.cachedLoc;
  }

  /** The same place holding `node` (a deferred rule, once read). */
  holding(node: TreeNode): At {
    return new At(this.ctx, node, this.parent, this.token, this.offset);
  }
}

interface Parsed {
  policy: Policy;
  /** Location of metadata.name, when the name is valid (for duplicate-name errors). */
  nameLoc?: SourceLocation;
}

/** Rule paths in canonical form, each path looked at once per parse (see LookupCache). */
function canonicalizerFor(cache: LookupCache): (p: string) => string {
  return (p) => canonicalizeRulePath(p, cache).canonical;
}

/** Parses one file, appending its diagnostics (sorted by position) to `diags`. */
function parseSource(text: string, file: string, opts: ParseOptions, diags: PolicyDiagnostic[]): Parsed[] {
  const lookups = opts.canonicalize ? undefined : new LookupCache();
  const canonicalize = opts.canonicalize ?? canonicalizerFor(lookups!);
  // A byte-order mark is invisible in editors: columns are counted without it.
  if (text.startsWith('\ufeff')) text = text.slice(1);
  if (file.endsWith('.json') && !opts.jsonViaYaml) {
    const direct = parseJsonDirectly(text, file, canonicalize, lookups, opts.ruleCache);
    if (direct !== undefined) return direct;
  }
  const ctx: Ctx = { file, lines: new LineCounter(), diags: [], canonicalize };
  let parsed: Parsed[];
  // The YAML library recurses once per level of nesting: hundreds of levels ("- - - ...",
  // "[[[[...") exhaust the stack. That is a property of the input, reported as such.
  const tooDeepAt = nestingTooDeep(text);
  if (tooDeepAt !== undefined) {
    const { line, col } = linePosIn(text, tooDeepAt);
    ctx.diags = [{ severity: 'error', loc: { file, line, col, pointer: '' }, message: tooDeepMessage() }];
    parsed = [];
  } else {
    try {
      parsed = parseDocuments(ctx, text);
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      ctx.diags = [{ severity: 'error', loc: { file, line: 1, col: 1, pointer: '' }, message: tooDeepMessage(e) }];
      parsed = [];
    }
  }
  diags.push(...ctx.diags.sort((a, b) => a.loc.line - b.loc.line || a.loc.col - b.loc.col));
  return parsed;
}

/**
 * A .json source read without the YAML parser (./json-tree.ts): what the YAML reading gives,
 * without its time (most of a second at 10,000 rules, against ~10 ms for reading the JSON;
 * validation is the same for both). Undefined, for the caller to read the text with the YAML parser,
 * when the text is not JSON, when the direct reading cannot vouch for giving the same tree
 * (see readJsonTree), and when the source has any error at all: so errors are always found
 * and located by the one reading, and this path only ever returns valid policies.
 */
function parseJsonDirectly(text: string, file: string, canonicalize: (p: string) => string, lookups: LookupCache | undefined, cache: RuleCache | undefined): Parsed[] | undefined {
  const before = cache?.source(file);
  const edited = before && parseEdit(before, text, canonicalize, lookups, cache!);
  if (edited) return edited;
  let tree: ReturnType<typeof readJsonTree>;
  try {
    JSON.parse(text);
    tree = readJsonTree(text, true);
  } catch (e) {
    // Not JSON, or nested too deeply for the stack: the YAML reading reports which, and where.
    if (e instanceof SyntaxError || e instanceof RangeError) return undefined;
    throw e;
  }
  if (tree === undefined) return undefined;
  const ctx: Ctx = { file, lines: tree.lines, diags: [], canonicalize, lookups, json: { tree, cache, lists: [] } };
  let parsed: Parsed[];
  try {
    parsed = parsePolicies(ctx, policyRoots(ctx, tree.root, 0, true));
  } catch (e) {
    // A deferred rule holding a key twice, or nested too deeply for the stack: the YAML reading
    // reports which, and where.
    if (e instanceof RepeatedKey || e instanceof RangeError) return undefined;
    throw e;
  }
  if (parsed.length === 0 || ctx.diags.length > 0) return undefined;
  if (cache) keepSnapshot(cache, file, text, tree.lines.lineStarts, parsed, ctx.json!.lists);
  return parsed;
}

/**
 * A JSON source that differs from its last valid parse (`before`) inside a run of rules of one
 * list, parsed from that parse: the rules in the run read again, every other rule taken as it
 * was. Undefined, for the whole source to be read as usual, in every other case; so this only
 * ever returns what reading the whole source would (test/unit/parse-caches.test.ts compares the
 * two over random edits):
 *   - the text changed outside the rules of one list (roles, mode, name, two lists...);
 *   - the run does not hold as many rules as before (an index, hence a pointer or a generated id,
 *     would move), or the edit adds or removes a line break, or anything located follows it on
 *     its line (a line or column would move);
 *   - the new rules are not JSON values the rest of the document can hold, hold a key twice, or
 *     have any error at all, or a rule id is then written twice: the usual reading reports it;
 *   - a path of any rule canonicalises differently now (a symlink moved).
 * The document is valid JSON as a whole because it was before, and the run of values replacing
 * the old run is valid on its own (JSON.parse says so, as a list): a value is replaced by a value.
 * Why: reading a 10,000-rule source whole, only to find which rules an edit changed, was most of
 * an apply's time.
 */
function parseEdit(before: SourceSnapshot, text: string, canonicalize: (p: string) => string, lookups: LookupCache | undefined, cache: RuleCache): Parsed[] | undefined {
  const old = before.text;
  const { file } = before;
  const ctx: Ctx = { file, lines: new LineCounter(), diags: [], canonicalize, lookups };
  let { parsed, lists, lineStarts } = before;
  const fresh = new Set<CachedRule>();
  if (text !== old) {
    const [p, s] = commonEnds(old, text);
    const delta = text.length - old.length;
    const e0 = old.length - s;
    const e1 = text.length - s;
    const list = lists.find((l) => l.starts.length > 0 && l.starts[0] <= p && e0 <= l.ends[l.ends.length - 1]);
    if (list === undefined) return undefined;
    const i = lastAtOrBefore(list.starts, p);
    const j = firstAtOrAfter(list.ends, e0);
    const oldBreaks = breaksIn(old, p, e0);
    if (oldBreaks !== breaksIn(text, p, e1) || !onlyClosersAfter(old, list.ends[j])) return undefined;
    const runStart = list.starts[i];
    const runEnd = list.ends[j] + delta;
    const run = text.slice(runStart, runEnd);
    if (run.includes('\r') || run.charCodeAt(0) !== 0x7b || run.charCodeAt(run.length - 1) !== 0x7d) return undefined;
    const count = j - i + 1;
    try {
      const values: unknown = JSON.parse(`[${run}]`);
      if (!Array.isArray(values) || values.length !== count || values.some((v) => v === null || typeof v !== 'object' || Array.isArray(v))) return undefined;
    } catch (e) {
      if (e instanceof SyntaxError || e instanceof RangeError) return undefined;
      throw e;
    }
    let items: ReturnType<typeof readJsonItems>;
    try {
      items = readJsonItems(text, runStart, count);
    } catch (e) {
      if (e instanceof RangeError) return undefined;
      throw e;
    }
    if (items === undefined || items[count - 1].end !== runEnd) return undefined;
    lineStarts = editedLineStarts(lineStarts, text, p, e0, e1, delta, oldBreaks);
    ctx.lines.lineStarts = lineStarts;

    const policy = parsed[list.policy].policy;
    const rules = policy.rules.slice();
    const kept = list.kept.slice();
    const starts = list.starts.slice();
    const ends = list.ends.slice();
    for (let k = 0; k < count; k++) {
      const index = i + k;
      const { node, end } = items[k];
      const offset = node.offset!;
      const r = readRule(ctx, new At(ctx, node, undefined, `${list.pointer}/${index}`, offset), list.kind, index, list.roles);
      if (r === undefined || ctx.diags.length > 0) return undefined;
      const { line, col } = ctx.lines.linePos(offset);
      kept[index] = cacheEntry(text.slice(offset, end), line, col, list.rolesKey, r.rule, cache.splitter);
      fresh.add(kept[index]);
      rules[list.first + index] = r.rule;
      starts[index] = offset;
      ends[index] = end;
    }
    for (let index = j + 1; index < starts.length; index++) {
      starts[index] += delta;
      ends[index] += delta;
    }
    if (repeatsAnId(rules, list.first + i, list.first + j)) return undefined;
    parsed = parsed.slice();
    parsed[list.policy] = { ...parsed[list.policy], policy: { ...policy, rules } };
    lists = lists.map((l) =>
      l === list
        ? { ...l, starts, ends, kept }
        : l.starts.length > 0 && l.starts[0] >= e0
          ? { ...l, starts: l.starts.map((o) => o + delta), ends: l.ends.map((o) => o + delta) }
          : l,
    );
  }
  // Every path of every rule taken as it was is looked at again: the filesystem may have changed.
  for (const l of lists) for (const entry of l.kept) if (!fresh.has(entry) && !canonicalAsBefore(ctx, entry)) return undefined;
  cache.keepSource({ file, text, lineStarts, parsed, lists });
  cache.editsParsed++;
  return parsed;
}

/** The lengths of the longest common prefix of two different strings, and of their longest common suffix not overlapping it. */
function commonEnds(a: string, b: string): [number, number] {
  const most = Math.min(a.length, b.length);
  // Halving: comparing slices is a memory comparison, where a loop would compare a character at a time.
  let lo = 0;
  let hi = most;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a.slice(lo, mid) === b.slice(lo, mid)) lo = mid;
    else hi = mid - 1;
  }
  const prefix = lo;
  lo = 0;
  hi = most - prefix;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (a.slice(a.length - mid, a.length - lo) === b.slice(b.length - mid, b.length - lo)) lo = mid;
    else hi = mid - 1;
  }
  return [prefix, lo];
}

/** The last index whose offset is at or before `at` (offsets ascending; the first is). */
function lastAtOrBefore(offsets: number[], at: number): number {
  let lo = 0;
  let hi = offsets.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (offsets[mid] <= at) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The first index whose offset is at or after `at` (offsets ascending; the last is). */
function firstAtOrAfter(offsets: number[], at: number): number {
  let lo = 0;
  let hi = offsets.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (offsets[mid] >= at) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function breaksIn(text: string, from: number, to: number): number {
  let n = 0;
  for (let nl = text.indexOf('\n', from); nl >= 0 && nl < to; nl = text.indexOf('\n', nl + 1)) n++;
  return n;
}

/** Nothing but white space, commas and closing brackets from `at` to the end of its line: nothing there has a location. */
function onlyClosersAfter(text: string, at: number): boolean {
  for (let c = text.charCodeAt(at); at < text.length && c !== 0x0a; c = text.charCodeAt(++at)) {
    if (c !== 0x20 && c !== 0x09 && c !== 0x2c && c !== 0x5d && c !== 0x7d) return false;
  }
  return true;
}

/** The line starts of a text edited from [p, e0) to [p, e1), with as many line breaks as before. */
function editedLineStarts(starts: number[], text: string, p: number, e0: number, e1: number, delta: number, breaks: number): number[] {
  if (breaks === 0 && delta === 0) return starts;
  // A line starts after a break: those before p are the same, those after e0 moved by delta.
  const kept = firstAtOrAfter(starts, p + 1);
  const out = starts.slice(0, starts[kept] <= p ? kept + 1 : kept);
  for (let nl = text.indexOf('\n', p); nl >= 0 && nl < e1; nl = text.indexOf('\n', nl + 1)) out.push(nl + 1);
  for (let k = out.length; k < starts.length; k++) out.push(starts[k] + delta);
  return out;
}

/** Whether a rule of rules[from..to] has a written id another rule of the policy has too. */
function repeatsAnId(rules: Rule[], from: number, to: number): boolean {
  for (let a = from; a <= to; a++) {
    if (!rules[a].idWritten) continue;
    for (let b = 0; b < rules.length; b++) if (b !== a && rules[b].idWritten && rules[b].id === rules[a].id) return true;
  }
  return false;
}

/** A valid direct parse, kept for parsing the next edit of its source (parseEdit). */
function keepSnapshot(cache: RuleCache, file: string, text: string, lineStarts: number[], parsed: Parsed[], found: (ListSnapshot & { rules: Rule[] })[]): void {
  const lists: ListSnapshot[] = [];
  for (const { rules, ...list } of found) {
    const policy = parsed.findIndex((p) => p.policy.rules === rules);
    // Every rule of a valid parse was read directly and kept; anything else is not an edit's base.
    if (policy < 0 || list.ends.includes(-1) || list.kept.length !== list.starts.length || list.kept.includes(undefined as unknown as CachedRule)) return;
    lists.push({ ...list, policy });
  }
  cache.keepSource({ file, text, lineStarts, parsed, lists });
}

/**
 * Nesting a document may have, counted as nestingTooDeep counts it. A policy needs about ten
 * levels; the YAML parser recurses once per level and exhausts the stack somewhere past 800,
 * at a depth that moves as V8 optimises it, so the same document could fail at different places
 * or, near the edge, parse. Refused before parsing, a deep document is refused the same way
 * every time.
 */
export const MAX_NESTING = 200;

/** For a document past MAX_NESTING, or a RangeError out of a parser (see parseSource). */
export function tooDeepMessage(e?: RangeError): string {
  return `the document is nested too deeply to be parsed (${e ? e.message : `more than ${MAX_NESTING} levels`}); a policy is a few levels deep`;
}

/**
 * Where a document's nesting first goes past `max`, or undefined if it never does. Block
 * nesting is counted in levels of indentation (a line indented further than the one before
 * opens one level; each "- " or "? " at a line's start opens another), flow nesting by "[" and
 * "{" less "]" and "}". Quotes and comments are not told apart: a bracket inside a string
 * counts too, which can only make the count larger, and a policy would need a hundred and more
 * unmatched brackets in its strings to be refused for them.
 */
export function nestingTooDeep(text: string, max = MAX_NESTING): number | undefined {
  const indents: number[] = [];
  let flow = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    // The line's indentation, then its leading sequence and complex-key indicators.
    const lineStart = i;
    while (i < n && (text.charCodeAt(i) === 0x20 || text.charCodeAt(i) === 0x09)) i++;
    let col = i - lineStart;
    const c = text.charCodeAt(i);
    if (i < n && c !== 0x0a && c !== 0x0d && c !== 0x23 /* # */) {
      while (indents.length > 0 && indents[indents.length - 1] >= col) indents.pop();
      indents.push(col);
      for (;;) {
        const d = text.charCodeAt(i);
        const next = text.charCodeAt(i + 1);
        if ((d !== 0x2d && d !== 0x3f) || (next !== 0x20 && next !== 0x09)) break; // "- " or "? "
        i += 2;
        while (i < n && (text.charCodeAt(i) === 0x20 || text.charCodeAt(i) === 0x09)) i++;
        col = i - lineStart;
        indents.push(col);
        if (indents.length + flow > max) return i;
      }
    }
    for (; i < n; i++) {
      const d = text.charCodeAt(i);
      if (d === 0x0a) break;
      if (d === 0x5b || d === 0x7b) {
        if (indents.length + ++flow > max) return i;
      } else if ((d === 0x5d || d === 0x7d) && flow > 0) flow--;
    }
    if (indents.length + flow > max) return lineStart;
    i++;
  }
  return undefined;
}

function parseDocuments(ctx: Ctx, text: string): Parsed[] {
  const isJson = ctx.file.endsWith('.json');
  // YAML accepts more than JSON does (comments, unquoted strings, trailing commas...): a .json
  // file must be strict JSON, checked first; the YAML parser then provides the positions.
  if (isJson && !checkJsonSyntax(ctx, text)) return [];
  const docs = parseAllDocuments(text, { lineCounter: ctx.lines, prettyErrors: false, version: '1.2' });
  const roots: At[] = [];
  let fatal = false;
  for (const doc of docs) {
    if (!checkDocumentSyntax(ctx, doc, text)) {
      fatal = true;
      continue; // its structure is unreliable: semantic checks would only add noise
    }
    // A document with nothing in it (e.g. after a trailing `---`) holds no policy.
    const contents = doc.contents;
    if (contents === null || (isScalar(contents) && contents.value === null && contents.source === '')) continue;
    roots.push(...policyRoots(ctx, treeFromYaml(contents), doc.range[0], isJson));
  }
  if (roots.length === 0 && !fatal) {
    error(ctx.diags, fileLoc(ctx.file), isJson ? 'no policy in file (empty array)' : 'no policy in file');
  }
  return parsePolicies(ctx, roots);
}

/** The policies at `roots`, and duplicate names among them. */
function parsePolicies(ctx: Ctx, roots: At[]): Parsed[] {
  const parsed: Parsed[] = [];
  const firstByName = new Map<string, SourceLocation>();
  for (const root of roots) {
    const p = parsePolicy(ctx, root);
    if (p === undefined) continue;
    parsed.push(p);
    if (p.nameLoc === undefined) continue;
    const first = firstByName.get(p.policy.name);
    if (first !== undefined) {
      err(ctx, p.nameLoc, `duplicate policy name "${p.policy.name}" (first defined at ${where(first)})`);
    } else {
      firstByName.set(p.policy.name, p.nameLoc);
    }
  }
  return parsed;
}

/**
 * Reports the YAML errors and warnings of a document (all as errors: an unresolved tag, say,
 * must not be ignored). Returns false when the document cannot be trusted structurally.
 */
function checkDocumentSyntax(ctx: Ctx, doc: Document.Parsed, text: string): boolean {
  const label = ctx.file.endsWith('.json') ? 'syntax error' : 'YAML syntax error';
  let ok = true;
  const reported = new Set<number>();
  // A mangled file can hold thousands of syntax errors, one a character; the first ones locate it.
  const MAX_SYNTAX_ERRORS = 50;
  for (const [i, e] of doc.errors.entries()) {
    reported.add(e.pos[0]);
    if (i === MAX_SYNTAX_ERRORS) {
      err(ctx, offsetLoc(ctx, e.pos[0], ''), `${label}: ... and ${doc.errors.length - MAX_SYNTAX_ERRORS} more syntax errors from here on`);
      ok = false;
      break;
    }
    err(ctx, offsetLoc(ctx, e.pos[0], ''), `${label}: ${e.message}${syntaxHint(e.code, text, e.pos[0])}`);
    // A duplicate key leaves a well-formed tree behind: keep checking the rest of the document.
    if (e.code !== 'DUPLICATE_KEY') ok = false;
  }
  for (const w of doc.warnings) err(ctx, offsetLoc(ctx, w.pos[0], ''), `YAML: ${w.message}`);
  const version = doc.directives?.yaml;
  if (version?.explicit && version.version !== '1.2') {
    // YAML 1.1 reads `yes`/`on` as booleans and `<<` as a merge: not what a reviewer sees.
    err(ctx, offsetLoc(ctx, doc.range[0], ''), `only YAML 1.2 is supported (remove the %YAML ${version.version} directive)`);
    ok = false;
  }
  visit(doc, {
    Alias(_, node) {
      const offset = node.range?.[0] ?? doc.range[0];
      if (reported.has(offset)) return; // e.g. "Alias cannot be an empty string", with its hint
      // An alias makes a rule's meaning depend on text elsewhere in the file; policies are
      // reviewed rule by rule, so every value is written out. (Usually this is an unquoted
      // wildcard that YAML took for an alias.)
      err(
        ctx,
        offsetLoc(ctx, offset, ''),
        `YAML aliases are not supported ("*${node.source}"); if this is a wildcard, quote it: "*${node.source}"`,
      );
      ok = false;
    },
  });
  return ok;
}

function syntaxHint(code: string, text: string, pos: number): string {
  if (code === 'BAD_ALIAS') return ' (a value starting with "*" must be quoted, e.g. "*:443" or "*.github.com:443")';
  // `connect: [::1]:53` parses as a list followed by ":53".
  if (text[pos] === ':' && text[pos - 1] === ']') return ' (quote bracketed IPv6 destinations, e.g. "[::1]:53")';
  return '';
}

/**
 * The policy objects of a document: the document itself, or (JSON) each element of an array.
 * `docOffset`: where the document starts, for a root without a position.
 */
function policyRoots(ctx: Ctx, root: TreeNode | null, docOffset: number, isJson: boolean): At[] {
  if (isJson && root?.kind === 'list') {
    return root.items.map((item, i) => at(ctx, item, undefined, `/${i}`, root.offset ?? 0));
  }
  return [at(ctx, root, undefined, '', docOffset)];
}

// ---------------------------------------------------------------------------------------------
// Policy, spec, rules

function parsePolicy(ctx: Ctx, v: At): Parsed | undefined {
  if (v.node?.kind !== 'map') {
    const hint = v.node?.kind === 'list' && !ctx.file.endsWith('.json') ? ' (separate policies with "---")' : '';
    typeError(ctx, v, 'a policy', `a mapping with apiVersion, kind, metadata and spec${hint}`);
    return undefined;
  }
  const e = entries(ctx, v, 'the policy', POLICY_KEYS, MISPLACED_KEY_HINTS.policy);
  if (e === undefined) return undefined;

  const apiVersion = required(ctx, e, 'apiVersion', v.loc, 'the policy');
  if (apiVersion) expectExactly(ctx, apiVersion.value, 'apiVersion', [API_VERSION]);
  const kind = required(ctx, e, 'kind', v.loc, 'the policy');
  if (kind) expectExactly(ctx, kind.value, 'kind', [KIND]);

  const { name, nameLoc } = parseMetadata(ctx, required(ctx, e, 'metadata', v.loc, 'the policy'));
  const specEntry = required(ctx, e, 'spec', v.loc, 'the policy');
  const spec = specEntry ? parseSpec(ctx, specEntry) : { roles: [], mode: 'enforce' as Mode, rules: [] };
  return { policy: { name: name ?? '', ...spec, loc: v.loc }, nameLoc };
}

function parseMetadata(ctx: Ctx, entry: Entry | undefined): { name?: string; nameLoc?: SourceLocation } {
  if (entry === undefined) return {};
  const e = entries(ctx, entry.value, 'metadata', METADATA_KEYS);
  if (e === undefined) return {};
  const nameEntry = required(ctx, e, 'name', entry.key.loc, 'metadata');
  if (nameEntry === undefined) return {};
  const name = str(ctx, nameEntry.value, 'metadata.name', true);
  if (name === undefined) return {};
  if (!NAME_RE.test(name)) {
    err(
      ctx,
      nameEntry.value.loc,
      `bad policy name ${q(name)}: use lower-case letters, digits, ".", "_" and "-", starting with a letter or digit`,
    );
    return {};
  }
  return { name, nameLoc: nameEntry.value.loc };
}

interface Spec {
  roles: string[];
  mode: Mode;
  rules: Rule[];
}

function parseSpec(ctx: Ctx, entry: Entry): Spec {
  const spec: Spec = { roles: [], mode: 'enforce', rules: [] };
  const e = entries(ctx, entry.value, 'spec', SPEC_KEYS, MISPLACED_KEY_HINTS.spec);
  if (e === undefined) return spec;

  const rolesEntry = required(ctx, e, 'roles', entry.key.loc, 'spec');
  const roles = rolesEntry ? parseRoles(ctx, rolesEntry.value) : undefined;
  spec.roles = roles ?? [];
  const modeEntry = e.get('mode');
  if (modeEntry) spec.mode = (expectExactly(ctx, modeEntry.value, 'spec.mode', MODES) as Mode | undefined) ?? 'enforce';

  const ids: { id: string; at: At }[] = [];
  const rolesKey = roles === undefined ? '\0' : roles.join('\n');
  // Allow, then block, then contextual, each in file order: the order of Policy.rules.
  for (const kind of RULE_KINDS) {
    const list = e.get(kind);
    if (list === undefined) continue;
    const items = rulesList(ctx, list.value, kind);
    const cache = ctx.json?.cache?.list(ctx.file, list.value.pointer);
    const first = spec.rules.length;
    items.forEach((item, index) => {
      const r = parseRule(ctx, item, kind, index, roles, rolesKey, cache);
      if (r === undefined) return;
      spec.rules.push(r.rule);
      if (r.idAt) ids.push({ id: r.rule.id, at: r.idAt });
    });
    // Where each rule's text is, for parsing an edit of this source (parseEdit).
    if (cache) {
      const starts = items.map((item) => item.node?.offset ?? -1);
      const ends = items.map((item, k) => (item.node?.kind === 'map' && item.node.deferred !== undefined ? starts[k] + item.node.deferred.length : -1));
      ctx.json!.lists.push({ pointer: list.value.pointer, kind, rules: spec.rules, policy: -1, first, roles, rolesKey, starts, ends, kept: cache.kept as CachedRule[] });
    }
  }
  checkDuplicateIds(ctx, ids);
  return spec;
}

function parseRoles(ctx: Ctx, v: At): string[] | undefined {
  // `roles: "*"` cannot be misread; any other single string must be written as a list.
  if (v.node?.kind === 'scalar' && v.node.value === '*') return ['*'];
  if (v.node?.kind !== 'list') {
    if (v.node?.kind === 'scalar' && typeof v.node.value === 'string') {
      err(ctx, v.loc, `spec.roles must be a list, e.g. [${v.node.value}] (or ["*"] for every role)`);
    } else {
      typeError(ctx, v, 'spec.roles', 'a list of role names (or ["*"] for every role)');
    }
    return undefined;
  }
  const items = seqItems(ctx, v);
  if (items.length === 0) {
    err(ctx, v.loc, 'spec.roles is empty: the policy would govern no role (use ["*"] for every role)');
    return undefined;
  }
  const roles: string[] = [];
  let ok = true;
  for (const item of items) {
    const role = str(ctx, item, 'a role', true);
    if (role === undefined) ok = false;
    else if (role === '*') {
      if (items.length > 1) {
        err(ctx, item.loc, '"*" (every role) must be the only entry of spec.roles');
        ok = false;
      }
    } else if (!ROLE_RE.test(role)) {
      err(ctx, item.loc, `bad role name ${q(role)}: use letters, digits, ".", "_" and "-" (or "*" for every role)`);
      ok = false;
    }
    if (role !== undefined) roles.push(role);
  }
  return ok ? roles : undefined;
}

/** The items of an allow/block/contextual list. */
function rulesList(ctx: Ctx, v: At, kind: RuleKind): At[] {
  if (v.node?.kind !== 'list') {
    if (v.node?.kind === 'scalar' && v.node.value === null) {
      err(ctx, v.loc, `spec.${kind} is empty: write a list of rules, or [] for none`);
    } else {
      typeError(ctx, v, `spec.${kind}`, 'a list of rules');
    }
    return [];
  }
  return seqItems(ctx, v);
}

function parseRule(
  ctx: Ctx,
  v: At,
  kind: RuleKind,
  index: number,
  policyRoles: string[] | undefined,
  rolesKey: string,
  cache: RuleListCache | undefined,
): { rule: Rule; idAt?: At } | undefined {
  const text = v.node?.kind === 'map' ? v.node.deferred : undefined;
  if (text === undefined || ctx.json === undefined) return readRule(ctx, v, kind, index, policyRoles);
  // A rule the JSON reader deferred: the one parsed before from the same text, or read now.
  const { line, col } = ctx.lines.linePos(v.node!.offset!);
  const cached = cache && cachedRule(ctx, cache.before[index], text, line, col, rolesKey);
  if (cached !== undefined) {
    cache!.kept[index] = cache!.before[index];
    // Its id's own location is only for a duplicate-id error, which sends the whole source to the
    // YAML reading (parseJsonDirectly): the rule's will do.
    return { rule: cached, idAt: cached.idWritten ? v : undefined };
  }
  const node = ctx.json.tree.valueAt(v.node!.offset!);
  if (node === undefined) throw new RepeatedKey();
  const errors = ctx.diags.length;
  const r = readRule(ctx, v.holding(node), kind, index, policyRoles);
  if (cache && r !== undefined && ctx.diags.length === errors) cache.kept[index] = cacheEntry(text, line, col, rolesKey, r.rule, cache.splitter);
  return r;
}

/** A deferred rule holds a key twice: the YAML reading reports it (see parseJsonDirectly). */
class RepeatedKey extends Error {}

function readRule(
  ctx: Ctx,
  v: At,
  kind: RuleKind,
  index: number,
  policyRoles: string[] | undefined,
): { rule: Rule; idAt?: At } | undefined {
  const generatedId = `${kind}[${index}]`;
  // Messages about the rule name it by its id when it has a good one, wherever `id:` is written.
  const idPair = v.node?.kind === 'map' ? v.node.pairs.find((p) => p.key?.kind === 'scalar' && p.key.value === 'id') : undefined;
  const idValue = idPair?.value?.kind === 'scalar' ? idPair.value.value : undefined;
  const name = typeof idValue === 'string' && ID_RE.test(idValue) ? `rule "${idValue}"` : `rule ${generatedId}`;
  const e = entries(ctx, v, name, RULE_KEYS, MISPLACED_KEY_HINTS.rule);
  if (e === undefined) return undefined;

  const { id, idAt } = parseRuleId(ctx, e.get('id'));
  const rule: Rule = { id: id ?? generatedId, idWritten: id !== undefined, kind, verbs: {}, loc: v.loc };

  for (const verb of VERBS) {
    const entry = e.get(verb);
    if (entry) rule.verbs[verb] = parseTargets(ctx, entry.value, verb, name);
  }
  if (!VERBS.some((verb) => e.has(verb))) {
    err(ctx, v.loc, `${name} has no verb: give at least one of ${VERBS.join(', ')}`);
  }

  const when = e.get('when');
  if (kind !== 'contextual') {
    if (when) err(ctx, when.key.loc, `${name}: when is only allowed on contextual rules (this rule is under ${kind})`);
  } else if (when === undefined) {
    err(ctx, v.loc, `contextual ${name} has no when: a contextual rule needs the condition under which it allows`);
  } else {
    rule.when = parseWhen(ctx, when.value, name, policyRoles);
  }
  return { rule, idAt };
}

function parseRuleId(ctx: Ctx, entry: Entry | undefined): { id?: string; idAt?: At } {
  if (entry === undefined) return {};
  const id = str(ctx, entry.value, 'a rule id', true);
  if (id === undefined) return {};
  if (!ID_RE.test(id)) {
    err(
      ctx,
      entry.value.loc,
      `bad rule id ${q(id)}: use letters, digits, ".", "_" and "-", starting with a letter or digit`,
    );
    return {};
  }
  return { id, idAt: entry.value };
}

function checkDuplicateIds(ctx: Ctx, ids: { id: string; at: At }[]): void {
  if (new Set(ids.map((i) => i.id)).size === ids.length) return;
  // In source order, so the error lands on the one written second whatever the list order.
  const sorted = ids.map(({ id, at }) => ({ id, loc: at.loc })).sort((a, b) => a.loc.line - b.loc.line || a.loc.col - b.loc.col);
  const first = new Map<string, SourceLocation>();
  for (const { id, loc } of sorted) {
    const prev = first.get(id);
    if (prev) err(ctx, loc, `duplicate rule id "${id}" (first used at ${where(prev)})`);
    else first.set(id, loc);
  }
}

// ---------------------------------------------------------------------------------------------
// Targets

function parseTargets(ctx: Ctx, v: At, verb: Verb, ruleName: string): Target[] {
  const targets: Target[] = [];
  for (const item of oneOrList(ctx, v, `${ruleName}: ${verb}`, 'targets')) {
    if (item.node?.kind === 'list' && !isFileVerb(verb)) {
      // `[[::1]:53]` is a list inside the list to YAML.
      err(ctx, item.loc, `${ruleName}: ${verb} target is a list; quote bracketed IPv6 destinations, e.g. "[::1]:53"`);
      continue;
    }
    const s = str(ctx, item, `${ruleName}: ${verb} target`);
    if (s === undefined) continue;
    const t = isFileVerb(verb) ? pathTarget(ctx, item, s, `${ruleName}: ${verb} target`) : netTarget(ctx, item, s, verb, ruleName);
    if (t) targets.push(t);
  }
  return targets;
}

function isFileVerb(verb: Verb): boolean {
  return (FILE_VERBS as readonly string[]).includes(verb);
}

/** A path target (rule target or when.exe), checked and canonicalised. */
function pathTarget(ctx: Ctx, v: At, s: string, what: string): PathTarget | undefined {
  const problem = pathProblem(s);
  if (problem !== undefined) {
    err(ctx, v.loc, `${what} ${q(s)} ${problem}`);
    return undefined;
  }
  // No path the kernel resolves is longer than PATH_MAX; refusing such a string before it is
  // canonicalised also keeps canonicalisation's cost bounded.
  const written = utf8Length(s, MAX_SYSCALL_PATH_BYTES);
  if (written > MAX_SYSCALL_PATH_BYTES) {
    err(ctx, v.loc, `${what} ${q(`${s.slice(0, 40)}...`)} is ${written} bytes long; no path is longer than ${MAX_SYSCALL_PATH_BYTES} bytes (PATH_MAX with its NUL)`);
    return undefined;
  }
  let canonical: string;
  try {
    canonical = canonicalForm(ctx, s);
  } catch (e) {
    err(ctx, v.loc, `${what} ${q(s)} cannot be canonicalised: ${(e as Error).message}`);
    return undefined;
  }
  const subtree = s.endsWith('/');
  // The kernel compares "<path>\0", and "<path>/\0" for a directory: the limit is on the path
  // without its trailing '/', for which room is kept.
  const bytes = utf8Length(subtree && canonical !== '/' ? canonical.slice(0, -1) : canonical, MAX_RULE_PATH_BYTES);
  if (bytes > MAX_RULE_PATH_BYTES) {
    const shown = canonical === s ? '' : ` (canonical form ${q(canonical)})`;
    err(ctx, v.loc, `${what} ${q(s)} is ${bytes} bytes long${shown}; the kernel compares at most ${MAX_RULE_PATH_BYTES}`);
    return undefined;
  }
  return { kind: 'path', written: s, canonical, subtree, loc: v.loc };
}

/** A written path's canonical form, with the trailing '/' of a subtree kept. Throws as ctx.canonicalize does. */
function canonicalForm(ctx: Ctx, s: string): string {
  const canonical = ctx.canonicalize(s);
  return s.endsWith('/') && !canonical.endsWith('/') ? `${canonical}/` : canonical;
}

/** canonicalForm, or undefined where it throws (RuleCache.take: the rule is then read again, and the error reported). */
function canonicalTarget(ctx: Ctx, s: string): string | undefined {
  try {
    return canonicalForm(ctx, s);
  } catch {
    return undefined;
  }
}

/**
 * The length of `s` in UTF-8 where it may exceed `limit`, and a lower bound otherwise: no UTF-16
 * code unit takes more than 3 bytes, so most paths need no counting.
 */
function utf8Length(s: string, limit: number): number {
  return s.length * 3 <= limit ? s.length : Buffer.byteLength(s, 'utf8');
}

/** Why a written path is unacceptable, as the end of a sentence; undefined when it is fine. */
function pathProblem(s: string): string | undefined {
  if (s === '') return 'is empty';
  if (s.includes('\0')) return 'contains a NUL byte';
  // A control character is almost always an accident (a block scalar's newline, a pasted tab);
  // such a rule would silently match a different file than the one the reviewer read.
  const ctl = /[\u0001-\u001f\u007f]/.exec(s);
  if (ctl) return `contains a control character (U+${ctl[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()})`;
  if (!s.startsWith('/')) {
    if (typeof parseNetDestination(s) !== 'string') {
      return 'is a network destination; network destinations go under connect or bind, paths under read, write and exec';
    }
    if (s.startsWith('~')) return 'is a relative path ("~" is not expanded); paths must be absolute (start with "/")';
    return 'is a relative path; paths must be absolute (start with "/")';
  }
  // Paths are matched literally. `/home/*/` in a block rule would block nothing a reviewer
  // expects it to, so a glob character is refused rather than taken as a file name.
  if (s.includes('*')) {
    return 'contains "*": paths are matched literally, there are no wildcards (a trailing "/" covers a directory and everything below it)';
  }
  return undefined;
}

function netTarget(ctx: Ctx, v: At, s: string, verb: Verb, ruleName: string): NetTarget | SocketTarget | undefined {
  const what = `${ruleName}: ${verb} target ${q(s)}`;
  const family = /^(unix|raw|packet):/.exec(s)?.[1] as 'unix' | 'raw' | 'packet' | undefined;
  if (family) {
    if (verb !== 'connect') {
      err(ctx, v.loc, `${what}: ${family} sockets go under connect (binding a unix socket's path is a write of that path)`);
      return undefined;
    }
    return socketTarget(ctx, v, s, family, what);
  }
  if (s.startsWith('/')) {
    err(ctx, v.loc, `${what} is a path; ${verb} takes network destinations (ADDRESS:PORTS), paths go under read, write or exec`);
    return undefined;
  }
  const parsed = parseNetDestination(s);
  if (typeof parsed === 'string') {
    err(ctx, v.loc, `${what} ${parsed}`);
    return undefined;
  }
  if (verb === 'bind' && (parsed.address.type === 'host' || parsed.address.type === 'domain')) {
    err(ctx, v.loc, `${what}: bind takes a local address (an IP address, a CIDR or *), not a host name`);
    return undefined;
  }
  return { kind: 'net', written: s, ...parsed, loc: v.loc };
}

/** Raw IP protocols by name; anything else is written as its number. */
export const RAW_PROTOCOLS: Record<string, number> = { icmp: 1, igmp: 2, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, icmpv6: 58, sctp: 132 };

function socketTarget(ctx: Ctx, v: At, s: string, family: 'unix' | 'raw' | 'packet', what: string): SocketTarget | undefined {
  const rest = s.slice(family.length + 1);
  const fail = (why: string) => void err(ctx, v.loc, `${what} ${why}`);
  if (family === 'unix') {
    if (rest.startsWith('@')) {
      const name = rest.slice(1);
      if (name === '') return fail('has an empty abstract name ("unix:@*" for every abstract socket)');
      if (name !== '*' && name.includes('*')) return fail('has "*" inside an abstract name: only "unix:@*" (every abstract socket) is a wildcard');
      if (/[\u0000-\u001f\u007f]/.test(name)) return fail('has a control character in the abstract name');
      if (Buffer.byteLength(name, 'utf8') > 107) return fail('has an abstract name longer than 107 bytes (sun_path holds 108 with the leading NUL)');
      return { kind: 'socket', written: s, socket: { family, abstract: name }, loc: v.loc };
    }
    if (!rest.startsWith('/')) return fail('needs an absolute path ("unix:/run/app.sock", "unix:/run/app/") or an abstract name ("unix:@name")');
    const path = pathTarget(ctx, v, rest, `${what}: socket path`);
    return path && { kind: 'socket', written: s, socket: { family, path }, loc: v.loc };
  }
  let protocol: number | '*';
  if (rest === '*') protocol = '*';
  else if (family === 'raw' && RAW_PROTOCOLS[rest.toLowerCase()] !== undefined) protocol = RAW_PROTOCOLS[rest.toLowerCase()];
  else if (/^(0|[1-9][0-9]{0,4}|0x[0-9a-fA-F]{1,4})$/.test(rest)) protocol = Number(rest);
  else return fail(family === 'raw' ? `has an unknown protocol ${q(rest)}: a name (${Object.keys(RAW_PROTOCOLS).join(', ')}), a number 0-255, or *` : `has a bad EtherType ${q(rest)}: a number such as 0x0806, or *`);
  if (protocol !== '*' && protocol > (family === 'raw' ? 255 : 0xffff)) return fail(`has protocol ${protocol} out of range (${family === 'raw' ? '0-255' : '0-0xffff'})`);
  return { kind: 'socket', written: s, socket: { family, protocol }, loc: v.loc };
}

// ---------------------------------------------------------------------------------------------
// Network destinations: ADDRESS:PORTS

type NetAddress = NetTarget['address'];
type Ports = NetTarget['ports'];

/** Parses `ADDRESS:PORTS`; on failure returns why, as the end of a sentence. */
function parseNetDestination(s: string): { address: NetAddress; ports: Ports } | string {
  let addr: string;
  let ports: string;
  let bracketed = false;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return 'has "[" without a closing "]"';
    if (s[close + 1] !== ':') return 'needs ":PORTS" after "]", e.g. "[::1]:53"';
    addr = s.slice(1, close);
    ports = s.slice(close + 2);
    bracketed = true;
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) return 'needs ":PORTS", e.g. "api.example.com:443" (":*" for any port)';
    addr = s.slice(0, colon);
    ports = s.slice(colon + 1);
    if (addr.includes(':')) return 'has an IPv6 address without brackets; write "[ADDRESS]:PORTS", e.g. "[::1]:53"';
  }
  const address = parseAddress(addr, bracketed);
  if (typeof address === 'string') return address;
  const range = parsePorts(ports);
  if (typeof range === 'string') return range;
  return { address, ports: range };
}

function parseAddress(a: string, bracketed: boolean): NetAddress | string {
  if (a === '') return 'has no address before ":PORTS" ("*" for any address)';
  if (a.includes('%')) return 'has an IPv6 zone index ("%..."), which is not supported';
  if (bracketed) return parseIpOrCidr(a, 6);
  if (a === '*') return { type: 'any' };
  if (a.includes('/') || net.isIP(a) === 4) return parseIpOrCidr(a, 4);
  if (a.startsWith('*.')) {
    const problem = hostNameProblem(a.slice(2));
    if (problem) return `has a bad wildcard domain ${q(a)}: ${problem}`;
    return { type: 'domain', suffix: a.slice(2).toLowerCase() };
  }
  if (a.includes('*')) return `has "*" inside ${q(a)}: only "*" (any address) or a leading "*." (subdomains) is allowed`;
  if (/^[0-9.]+$/.test(a)) return `has an invalid IPv4 address ${q(a)}`;
  const problem = hostNameProblem(a);
  if (problem) return `has an invalid host name ${q(a)}: ${problem}`;
  // DNS names are case-insensitive; the lower-case form is what is compared.
  return { type: 'host', name: a.toLowerCase() };
}

function parseIpOrCidr(a: string, family: 4 | 6): NetAddress | string {
  const slash = a.indexOf('/');
  const ip = slash < 0 ? a : a.slice(0, slash);
  const got = net.isIP(ip);
  if (got !== family) {
    if (family === 6 && got === 4) return `has an IPv4 address in brackets; brackets are only for IPv6 (write "${a}:PORTS")`;
    return `has an invalid IPv${family} address ${q(ip)}`;
  }
  const bits = family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = a.slice(slash + 1);
    if (!/^(0|[1-9][0-9]*)$/.test(p) || Number(p) > bits) {
      return `has a bad prefix length "/${p}" (0-${bits} for IPv${family})`;
    }
    prefix = Number(p);
  }
  const bytes = addressBytes(ip);
  if (!bytes) return 'is not an IPv4 or IPv6 address'; // zones were refused above
  const masked = maskBytes(bytes, prefix);
  if (masked.some((b, i) => b !== bytes[i])) {
    // 10.0.0.1/8 is most likely 10.0.0.0/8 or 10.0.0.1/32; which one is for the author to say.
    const net4or6 = family === 4 ? formatIPv4(masked) : formatIPv6(masked);
    const suggestion = family === 4 ? `${net4or6}/${prefix}` : `[${net4or6}/${prefix}]`;
    return `has host bits set in ${q(family === 4 ? a : `[${a}]`)}: did you mean ${q(suggestion)}?`;
  }
  return { type: 'ip', family, addr: family === 4 ? ip : formatIPv6(bytes), prefix };
}

function parsePorts(p: string): Ports | string {
  if (p === '*') return { from: 0, to: 65535 };
  const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(p);
  if (!m) return `has bad PORTS ${q(p)}: expected a port (1-65535), a range such as 8000-8999, or *`;
  const from = portNumber(m[1]);
  const to = m[2] === undefined ? from : portNumber(m[2]);
  if (from === undefined || to === undefined) {
    return `has a bad port in ${q(p)}: ports are 1-65535, written without leading zeros`;
  }
  if (from > to) return `has an empty port range ${q(p)}: the first port must not exceed the second`;
  return { from, to };
}

function portNumber(s: string): number | undefined {
  if (!/^[1-9][0-9]{0,4}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 65535 ? n : undefined;
}

/** RFC 1123 host name check; returns the problem or undefined. */
export function hostNameProblem(name: string): string | undefined {
  if (name === '') return 'the name is empty';
  if (name.endsWith('.')) return 'write it without the trailing "."';
  if (name.length > 253) return 'longer than 253 characters';
  const labels = name.split('.');
  for (const label of labels) {
    if (label === '') return 'it has an empty label ("..")';
    if (label.length > 63) return `label ${q(label)} is longer than 63 characters`;
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/.test(label)) {
      return `label ${q(label)} must be letters, digits and inner hyphens (RFC 1123)`;
    }
  }
  // A top-level label is never all digits; such a name is a mistyped address.
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return 'the last label is all digits (a mistyped IP address?)';
  return undefined;
}

function formatIPv4(bytes: number[]): string {
  return bytes.join('.');
}

/** RFC 5952 text form: lower case, no leading zeros, the first longest run (≥2) of zero groups as "::". */
function formatIPv6(bytes: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

function maskBytes(bytes: number[], prefix: number): number[] {
  return bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
}

// ---------------------------------------------------------------------------------------------
// Conditions

function parseWhen(ctx: Ctx, v: At, ruleName: string, policyRoles: string[] | undefined): Conditions | undefined {
  const what = `${ruleName}: when`;
  if (v.node?.kind === 'scalar' && v.node.value === null) {
    err(ctx, v.loc, `${what} is empty; give at least one of ${WHEN_KEYS.join(', ')}`);
    return undefined;
  }
  const e = entries(ctx, v, `when of ${ruleName}`, WHEN_KEYS, MISPLACED_KEY_HINTS.when);
  if (e === undefined) return undefined;
  // Only when nothing at all is written: unknown keys were reported already.
  if ((v.node as TreeMap).pairs.length === 0) {
    err(ctx, v.loc, `${what} is empty; give at least one of ${WHEN_KEYS.join(', ')}`);
    return undefined;
  }
  const cond: Conditions = { loc: v.loc };
  const role = e.get('role');
  if (role) cond.role = whenRoles(ctx, role.value, what, policyRoles);
  const exe = e.get('exe');
  if (exe) {
    cond.exe = oneOrList(ctx, exe.value, `${what}.exe`, 'paths').flatMap((item) => {
      const s = str(ctx, item, `${what}.exe`);
      const t = s === undefined ? undefined : pathTarget(ctx, item, s, `${what}.exe`);
      return t ? [t] : [];
    });
  }
  const label = e.get('label');
  if (label) cond.label = whenLabels(ctx, label.value, what);
  const uid = e.get('uid');
  if (uid) cond.uid = whenUids(ctx, uid.value, what);
  return cond;
}

function whenRoles(ctx: Ctx, v: At, what: string, policyRoles: string[] | undefined): string[] {
  const roles: string[] = [];
  for (const item of oneOrList(ctx, v, `${what}.role`, 'roles')) {
    const role = str(ctx, item, `${what}.role`, true);
    if (role === undefined) continue;
    if (role === '*') {
      err(ctx, item.loc, `${what}.role cannot be "*"; name the roles (or leave role out)`);
    } else if (!ROLE_RE.test(role)) {
      err(ctx, item.loc, `bad role name ${q(role)}: use letters, digits, ".", "_" and "-"`);
    } else if (policyRoles && !policyRoles.includes('*') && !policyRoles.includes(role)) {
      // The policy never applies to that role, so this condition could never hold.
      err(ctx, item.loc, `${what}.role ${q(role)} is not among the roles this policy governs (spec.roles)`);
    } else {
      roles.push(role);
    }
  }
  return roles;
}

function whenLabels(ctx: Ctx, v: At, what: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const e = entries(ctx, v, `${what}.label`, null);
  if (e === undefined) return labels;
  if ((v.node as TreeMap).pairs.length === 0) err(ctx, v.loc, `${what}.label is empty; give key: value pairs or leave label out`);
  for (const [key, entry] of e) {
    if (key === '') err(ctx, entry.key.loc, `${what}.label has an empty key`);
    if (key === '__proto__') {
      // Assigning it to an object sets the prototype instead: the condition would silently lose
      // the label, and hold for every agent of the role.
      err(ctx, entry.key.loc, `${what}.label cannot have the key "__proto__"`);
      continue;
    }
    const n = entry.value.node;
    if (n?.kind === 'scalar' && typeof n.value === 'string') labels[key] = n.value;
    else if (n?.kind === 'scalar' && (typeof n.value === 'number' || typeof n.value === 'boolean')) {
      err(ctx, entry.value.loc, `${what}.label.${key} must be a string; quote it: "${n.source ?? String(n.value)}"`);
    } else typeError(ctx, entry.value, `${what}.label.${key}`, 'a string');
  }
  return labels;
}

function whenUids(ctx: Ctx, v: At, what: string): number[] {
  const uids: number[] = [];
  for (const item of oneOrList(ctx, v, `${what}.uid`, 'uids')) {
    const n = item.node;
    // Decimal only: YAML would also read 0o17 or 1e3 as numbers, which nobody means for a uid.
    const decimal = n?.kind === 'scalar' && typeof n.value === 'number' && /^(0|[1-9][0-9]*)$/.test(n.source ?? String(n.value));
    if (decimal && Number.isSafeInteger(n.value) && (n.value as number) <= MAX_UID) {
      uids.push(n.value as number);
    } else {
      err(ctx, item.loc, `${what}.uid must be a non-negative integer uid (0-${MAX_UID}), got ${describeNode(n)}`);
    }
  }
  return uids;
}

// ---------------------------------------------------------------------------------------------
// Typed access to tree nodes

interface Entry {
  key: At;
  value: At;
}

function at(ctx: Ctx, node: TreeNode | null, parent: At | undefined, token: string | number, fallbackOffset: number): At {
  return new At(ctx, node, parent, token, node?.offset ?? fallbackOffset);
}

/**
 * The entries of a mapping, with unknown keys reported (`allowed` null: any key). Returns
 * undefined (after reporting) when `v` is not a mapping.
 */
function entries(
  ctx: Ctx,
  v: At,
  what: string,
  allowed: readonly string[] | null,
  hints: Record<string, string> = {},
): Map<string, Entry> | undefined {
  const map = v.node;
  if (map?.kind !== 'map') {
    typeError(ctx, v, what, 'a mapping');
    return undefined;
  }
  const out = new Map<string, Entry>();
  for (const pair of map.pairs) {
    const keyOffset = pair.key?.offset ?? map.offset ?? 0;
    const k = pair.key;
    if (k?.kind !== 'scalar' || typeof k.value !== 'string') {
      err(ctx, offsetLoc(ctx, keyOffset, v.pointer), `keys in ${what} must be strings, got ${describeNode(k)}`);
      continue;
    }
    const key = at(ctx, k, v, k.value, keyOffset);
    if (allowed !== null && !allowed.includes(k.value)) {
      err(ctx, key.loc, `unknown key ${q(k.value)} in ${what}${unknownKeyHint(k.value, allowed, hints)}`);
      continue;
    }
    // `key:` with no value is a null scalar positioned after the colon; keep the key's position
    // when there is no node at all.
    out.set(k.value, { key, value: at(ctx, pair.value, v, k.value, keyOffset) });
  }
  return out;
}

function unknownKeyHint(key: string, allowed: readonly string[], hints: Record<string, string>): string {
  if (Object.prototype.hasOwnProperty.call(hints, key)) return ` (${hints[key]})`;
  const s = suggest(key, allowed);
  return s ? ` (did you mean ${q(s)}?)` : ` (expected one of: ${allowed.join(', ')})`;
}

/** A required key's entry, or undefined after reporting it missing (at `ownerLoc`). */
function required(ctx: Ctx, e: Map<string, Entry>, key: string, ownerLoc: SourceLocation, what: string): Entry | undefined {
  const entry = e.get(key);
  if (entry === undefined) err(ctx, ownerLoc, `${what} is missing required key ${q(key)}`);
  return entry;
}

/** A string that must be one of `values` (with a suggestion when it is close to one). */
function expectExactly(ctx: Ctx, v: At, what: string, values: readonly string[]): string | undefined {
  const s = str(ctx, v, what);
  if (s === undefined) return undefined;
  if (values.includes(s)) return s;
  // With a single valid value the message already names it.
  const s2 = values.length > 1 ? suggest(s, values) : undefined;
  const expected = values.map((x) => q(x)).join(' or ');
  err(ctx, v.loc, `${what} must be ${expected}, got ${q(s)}${s2 ? ` (did you mean ${q(s2)}?)` : ''}`);
  return undefined;
}

/**
 * A string value. `freeText`: any text of the right form will do (names, ids, roles), so a number
 * or boolean was most likely meant as text: YAML reads `id: 2024` as a number; say to quote it.
 */
function str(ctx: Ctx, v: At, what: string, freeText = false): string | undefined {
  const n = v.node;
  if (n?.kind === 'scalar' && typeof n.value === 'string') return n.value;
  const quoteIt = freeText && n?.kind === 'scalar' && (typeof n.value === 'number' || typeof n.value === 'boolean');
  err(ctx, v.loc, `${what} must be a string, got ${describeNode(n)}${quoteIt ? ` (quote it: "${n.source ?? String(n.value)}")` : ''}`);
  return undefined;
}

function seqItems(ctx: Ctx, v: At): At[] {
  const list = v.node as TreeList;
  return list.items.map((item, i) => at(ctx, item, v, i, list.offset ?? 0));
}

/**
 * A value that may be written as one item or a list of them ("each verb takes one target or a
 * list"); an empty list or no value at all is an error: it would match nothing.
 */
function oneOrList(ctx: Ctx, v: At, what: string, plural: string): At[] {
  const n = v.node;
  if (n?.kind === 'scalar' && n.value === null) {
    err(ctx, v.loc, `${what} has no ${plural}; give one or a list`);
    return [];
  }
  if (n?.kind === 'map') {
    typeError(ctx, v, what, `one value or a list of ${plural}`);
    return [];
  }
  if (n?.kind !== 'list') return [v];
  const items = seqItems(ctx, v);
  if (items.length === 0) err(ctx, v.loc, `${what} is an empty list; give at least one (an empty list matches nothing)`);
  return items;
}

function typeError(ctx: Ctx, v: At, what: string, expected: string): void {
  // Aliases were reported by checkDocumentSyntax, and their documents skipped.
  err(ctx, v.loc, `${what} must be ${expected}, got ${describeNode(v.node)}`);
}

/** What a YAML node is, for the messages of the other YAML readers (./cases.ts, ../config.ts). */
export { describeYaml as describe } from './tree';

// ---------------------------------------------------------------------------------------------
// Diagnostics and small helpers

function offsetLoc(ctx: Ctx, offset: number, pointer: string): SourceLocation {
  const { line, col } = ctx.lines.linePos(offset);
  return { file: ctx.file, line, col, pointer };
}

function fileLoc(file: string): SourceLocation {
  return { file, line: 1, col: 1, pointer: '' };
}

function err(ctx: Ctx, loc: SourceLocation, message: string): void {
  error(ctx.diags, loc, message);
}

function error(diags: PolicyDiagnostic[], loc: SourceLocation, message: string): void {
  diags.push({ severity: 'error', message, loc });
}

function where(loc: SourceLocation): string {
  return `${loc.file}:${loc.line}:${loc.col}`;
}

function q(s: string): string {
  return JSON.stringify(s);
}

function escapePointer(token: string): string {
  if (!token.includes('~') && !token.includes('/')) return token;
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** The closest candidate to a misspelt word (case-insensitive edit distance), if close enough. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  const limit = w.length <= 3 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best;
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions, adjacent swaps. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

// ---------------------------------------------------------------------------------------------
// Strict JSON

/**
 * A .json file must be JSON, not merely YAML. JSON.parse decides; the scanner below only finds
 * where the problem is (JSON.parse does not always say). Returns false after reporting.
 */
function checkJsonSyntax(ctx: Ctx, text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch (e) {
    const found = findJsonError(text);
    const m = /at position (\d+)/.exec((e as Error).message);
    const offset = found?.offset ?? (m ? Number(m[1]) : 0);
    const message = found?.message ?? (e as Error).message;
    // The line counter is filled by the YAML parser, which does not run for a broken file.
    const { line, col } = linePosIn(text, offset);
    err(ctx, { file: ctx.file, line, col, pointer: '' }, `JSON syntax error: ${message}`);
    return false;
  }
}

/** The line and column (1-based) of an offset into text. */
export function linePosIn(text: string, offset: number): { line: number; col: number } {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  return { line, col: offset - (before.lastIndexOf('\n') + 1) + 1 };
}

/** Position and reason of the first JSON syntax error (RFC 8259), or undefined. */
function findJsonError(text: string): { offset: number; message: string } | undefined {
  let i = 0;
  class Fail {
    constructor(
      readonly offset: number,
      readonly message: string,
    ) {}
  }
  const fail: (message: string) => never = (message) => {
    throw new Fail(i, message);
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const unexpected = () => fail(i >= text.length ? 'unexpected end of input' : `unexpected ${q(text[i])}`);
  const string = () => {
    i++; // opening quote
    for (;;) {
      const c = text[i];
      if (c === undefined) fail('unterminated string');
      if (c === '"') return void i++;
      if (c.charCodeAt(0) < 0x20) fail('control character in a string (escape it, e.g. \\n or \\t)');
      if (c === '\\') {
        i++;
        if (text[i] === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail('bad \\u escape (needs 4 hex digits)');
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) fail('bad escape in a string');
      }
      i++;
    }
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a double-quoted property name');
        string();
        ws();
        if (text[i] !== ':') fail('expected ":" after a property name');
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    const num = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
    num.lastIndex = i;
    if ((c === '-' || (c >= '0' && c <= '9')) && num.exec(text)) return void (i = num.lastIndex);
    for (const literal of ['true', 'false', 'null']) if (text.startsWith(literal, i)) return void (i += literal.length);
    unexpected();
  };
  try {
    value();
    ws();
    if (i < text.length) fail('unexpected content after the JSON value');
    return undefined;
  } catch (e) {
    if (e instanceof Fail) return { offset: e.offset, message: e.message };
    return undefined; // e.g. nesting too deep for the stack: fall back to JSON.parse's message
  }
}
