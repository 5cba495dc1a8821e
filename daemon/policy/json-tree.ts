// JSON text → the policy document tree (./tree.ts), with where every value starts.
//
// Why not the YAML parser, which reads JSON too: on a 10,000-rule policy (~1 MB) it takes most
// of a second, where JSON.parse takes a few milliseconds, and apply-to-live is meant to take
// 20 ms. Why not JSON.parse alone: it says nothing of positions, which every rule and target
// carries (and every message shows), and it keeps the last of duplicate keys silently.
//
// The text must already be accepted by JSON.parse: JSON.parse is the judge of what JSON is,
// this reader only finds the values (and assumes the grammar). It gives the tree the YAML
// reading gives for the same text, node for node and offset for offset; where that could
// differ it gives up (undefined) and the caller reads the text with the YAML parser instead:
//   - a key repeated in one object (YAML reports it; JSON.parse would keep the last one);
//   - a carriage return not followed by a line feed (JSON whitespace; YAML reads it as part
//     of the next plain scalar);
//   - a document that is a bare scalar (YAML refuses tabs before it as indentation). It is no
//     policy anyway.
// test/unit/json-tree.test.ts compares the two readings over random and mutated documents.

import { LineCounter } from 'yaml';
import type { TreeList, TreeMap, TreeNode, TreePair, TreeScalar } from './tree';

export interface JsonTree {
  root: TreeNode;
  /** Where the lines start, for turning offsets into line:col as the YAML reading does. */
  lines: LineCounter;
}

const LONE_CR = /\r(?!\n)/;

/** The tree of a JSON text JSON.parse accepts, or undefined where the YAML reading may differ (see above). */
export function readJsonTree(text: string): JsonTree | undefined {
  if (LONE_CR.test(text)) return undefined;
  const lines = new LineCounter();
  const lineStarts = lines.lineStarts;
  lineStarts.push(0);
  let i = 0;
  // The next backslash at or after i: a string holds escapes only if one lies inside it. Kept
  // across strings so that finding it costs one pass over the text, not one per string.
  let backslash = -1;
  let duplicateKey = false;
  // The members of the objects and arrays being read, innermost last: each is copied out once
  // complete, into an array of exactly its size (arrays grown by push are mostly empty room,
  // and a large policy's tree lives through the whole parse).
  const pending: (TreePair | TreeNode)[] = [];

  const space = (): void => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0d) i++;
      else if (c === 0x0a) lineStarts.push(++i);
      else return;
    }
  };

  const string = (): TreeScalar => {
    const start = i;
    if (backslash !== text.length && backslash < start) {
      backslash = text.indexOf('\\', start);
      if (backslash < 0) backslash = text.length;
    }
    let end = text.indexOf('"', start + 1);
    let value: string;
    if (end < backslash) {
      value = text.slice(start + 1, end);
    } else {
      // Escapes: find the closing quote the slow way, and let JSON.parse decode them.
      end = start + 1;
      for (let c = text.charCodeAt(end); c !== 0x22; c = text.charCodeAt(++end)) if (c === 0x5c) end++;
      value = JSON.parse(text.slice(start, end + 1)) as string;
    }
    i = end + 1;
    return { kind: 'scalar', offset: start, value, source: value };
  };

  const value = (): TreeNode => {
    const start = i;
    const c = text.charCodeAt(i);
    if (c === 0x22) return string();
    if (c === 0x7b) {
      // {
      const node: TreeMap = { kind: 'map', offset: start, pairs: [] };
      i++;
      space();
      if (text.charCodeAt(i) === 0x7d) {
        i++;
        return node;
      }
      const first = pending.length;
      for (;;) {
        space();
        const key = string();
        space();
        i++; // :
        space();
        pending.push({ key, value: value() });
        space();
        if (text.charCodeAt(i++) === 0x7d) break; // else ","
      }
      node.pairs = pending.splice(first) as TreePair[];
      if (node.pairs.length > 1 && hasRepeatedKey(node.pairs)) duplicateKey = true;
      return node;
    }
    if (c === 0x5b) {
      // [
      const node: TreeList = { kind: 'list', offset: start, items: [] };
      i++;
      space();
      if (text.charCodeAt(i) === 0x5d) {
        i++;
        return node;
      }
      const first = pending.length;
      for (;;) {
        space();
        pending.push(value());
        space();
        if (text.charCodeAt(i++) === 0x5d) break; // else ","
      }
      node.items = pending.splice(first) as TreeNode[];
      return node;
    }
    const literal = c === 0x74 ? 'true' : c === 0x66 ? 'false' : c === 0x6e ? 'null' : undefined;
    if (literal !== undefined) {
      i += literal.length;
      return { kind: 'scalar', offset: start, value: literal === 'null' ? null : literal === 'true', source: literal };
    }
    NUMBER.lastIndex = i;
    NUMBER.exec(text);
    i = NUMBER.lastIndex;
    const source = text.slice(start, i);
    return { kind: 'scalar', offset: start, value: Number(source), source };
  };

  space();
  if (text.charCodeAt(i) !== 0x7b && text.charCodeAt(i) !== 0x5b) return undefined;
  const root = value();
  return duplicateKey ? undefined : { root, lines };
}

/** A JSON number (the text is known to be JSON: this only finds where it ends). */
const NUMBER = /-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

function hasRepeatedKey(pairs: TreePair[]): boolean {
  // Most objects of a policy have two or three keys: comparing them is cheaper than hashing.
  if (pairs.length <= 8) {
    for (let a = 1; a < pairs.length; a++) {
      for (let b = 0; b < a; b++) if ((pairs[a].key as TreeScalar).value === (pairs[b].key as TreeScalar).value) return true;
    }
    return false;
  }
  const keys = new Set<unknown>();
  for (const p of pairs) {
    const k = (p.key as TreeScalar).value;
    if (keys.has(k)) return true;
    keys.add(k);
  }
  return false;
}
