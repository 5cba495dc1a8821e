// The document tree the policy validator reads: mappings, lists and scalars, each with the
// offset in the source text where it starts (for `file:line:col` messages).
//
// YAML documents come from the yaml library's syntax tree (treeFromYaml, below); JSON documents
// are read straight into this tree (./json-tree.ts), because the YAML parser takes most of a
// second on a 10,000-rule policy and JSON.parse a few milliseconds. One validator over one tree
// means both syntaxes are checked, and their errors located, by the same code.

import { isAlias, isMap, isScalar, isSeq, type Pair, type YAMLMap, type YAMLSeq } from 'yaml';

export type TreeNode = TreeMap | TreeList | TreeScalar | TreeAlias;

export interface TreeMap {
  kind: 'map';
  /** Where the node starts; undefined when the syntax tree gave no position. */
  offset: number | undefined;
  pairs: TreePair[];
  /**
   * A rule's mapping that the JSON reader did not read (readJsonTree's `deferRules`): `pairs` is
   * empty, and this is the mapping's text. Only the parser's rule reading meets one.
   */
  deferred?: string;
}

/** A mapping entry; key or value is null where nothing at all is written (YAML `? x`, `x:`). */
export interface TreePair {
  key: TreeNode | null;
  value: TreeNode | null;
}

export interface TreeList {
  kind: 'list';
  offset: number | undefined;
  items: (TreeNode | null)[];
}

export interface TreeScalar {
  kind: 'scalar';
  offset: number | undefined;
  /** string, number, boolean or null for JSON and YAML's core schema; anything a YAML tag made it otherwise. */
  value: unknown;
  /** The scalar's text before it was given a type (e.g. "1e3" for 1000), for messages. */
  source: string | undefined;
}

/** A YAML alias (`*name`): only ever described in messages, the parser refuses aliases. */
export interface TreeAlias {
  kind: 'alias';
  offset: number | undefined;
}

/**
 * The tree of a YAML node. Iterative, not recursive: a document the YAML parser could still
 * read may be nested deeper than a recursion here would go, and is then reported by the
 * validator for what it is (a wrong type), not as a stack overflow.
 */
export function treeFromYaml(root: unknown): TreeNode | null {
  const todo: [unknown, TreeNode][] = [];
  const convert = (n: unknown): TreeNode | null => {
    const node = shallow(n);
    if (node !== null && node.kind !== 'scalar' && node.kind !== 'alias') todo.push([n, node]);
    return node;
  };
  const tree = convert(root);
  while (todo.length > 0) {
    const [n, node] = todo.pop() as [unknown, TreeMap | TreeList];
    if (node.kind === 'map') {
      node.pairs = ((n as YAMLMap).items as Pair<unknown, unknown>[]).map((p) => ({ key: convert(p.key), value: convert(p.value) }));
    } else {
      node.items = (n as YAMLSeq).items.map(convert);
    }
  }
  return tree;
}

/** A YAML node's tree node, without its children (mappings and lists come back empty). */
function shallow(n: unknown): TreeNode | null {
  const offset = (n as { range?: [number, number, number] } | null)?.range?.[0];
  if (isScalar(n)) return { kind: 'scalar', offset, value: n.value, source: n.source as string | undefined };
  if (isMap(n)) return { kind: 'map', offset, pairs: [] };
  if (isSeq(n)) return { kind: 'list', offset, items: [] };
  if (isAlias(n)) return { kind: 'alias', offset };
  return null;
}

/** What a node is, for "must be X, got Y" messages. */
export function describeNode(n: TreeNode | null): string {
  if (n === null) return 'nothing';
  if (n.kind === 'map') return 'a mapping';
  if (n.kind === 'list') return 'a list';
  if (n.kind === 'alias') return 'an alias';
  const value = n.value;
  if (value === null) return 'an empty value';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  if (typeof value === 'number') return `the number ${n.source ?? value}`;
  if (typeof value === 'boolean') return `the boolean ${value}`;
  return `a ${typeof value} value`;
}

/** What a YAML node is, for messages (see describeNode). */
export function describeYaml(n: unknown): string {
  if (n === null || n === undefined) return 'nothing';
  return shallow(n) === null ? 'an unsupported value' : describeNode(shallow(n));
}
