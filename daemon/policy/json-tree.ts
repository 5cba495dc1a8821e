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
  /**
   * The value starting at an offset of the text (a deferred rule), or undefined where readJsonTree
   * would have given up (a repeated key). One reader for the whole text: what it learnt of the
   * text (where the backslashes are) serves every rule.
   */
  valueAt(offset: number): TreeNode | undefined;
}

const LONE_CR = /\r(?!\n)/;

/**
 * The tree of a JSON text JSON.parse accepts, or undefined where the YAML reading may differ (see above).
 *
 * `deferRules`: the rules of a policy (the mappings in the lists under spec.allow, spec.block and
 * spec.contextual, at a document's root or in a root list of policies) are not read: each is a
 * mapping with no pairs and `deferred` set to its text, for the parser to read with
 * JsonTree.valueAt when it does not have that rule already (parse.ts, RuleCache). Reading them is
 * most of the tree's time and garbage on a large policy, where an edit changes a few.
 */
export function readJsonTree(text: string, deferRules = false): JsonTree | undefined {
  // indexOf first: most texts have no CR at all, and it is much faster than the expression.
  if (text.includes('\r') && LONE_CR.test(text)) return undefined;
  const reader = jsonReader(text, deferRules);
  const root = reader.root();
  return root === undefined ? undefined : { root, lines: lineCounterOf(text), valueAt: reader.at };
}

/**
 * The `count` values of a list that start at `offset` of a JSON text, each with where it ends (for
 * parse.ts, an edit of a source read before: the rules an edit replaced). Undefined where
 * readJsonTree would give up: a repeated key. The text from `offset` must hold that many values
 * separated by commas, as JSON.parse found.
 */
export function readJsonItems(text: string, offset: number, count: number): { node: TreeNode; end: number }[] | undefined {
  const reader = jsonReader(text, false);
  const items: { node: TreeNode; end: number }[] = [];
  let at = offset;
  for (let k = 0; k < count; k++) {
    const node = reader.at(at);
    if (node === undefined) return undefined;
    const end = reader.position();
    items.push({ node, end });
    // Past the comma (between values there is only white space and one comma) to the next value.
    at = end;
    for (let c = text.charCodeAt(at); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x2c; c = text.charCodeAt(++at));
  }
  return items;
}

/** Line starts of a text, as the YAML parser's LineCounter has them (JSON strings hold no raw newline). */
export function lineCounterOf(text: string): LineCounter {
  const lines = new LineCounter();
  const starts = lines.lineStarts;
  starts.push(0);
  for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', nl + 1)) starts.push(nl + 1);
  return lines;
}

/** Where a deferred value is in the document (see readJsonTree): its depth and the keys above it. */
const enum Place {
  /** Anywhere a rule cannot be. */
  Other,
  /** A policy: the document, or an item of a root list. */
  Policy,
  /** A policy's spec. */
  Spec,
  /** A list of rules (spec.allow, spec.block, spec.contextual). */
  Rules,
  /** An item of such a list. */
  Rule,
}

function jsonReader(text: string, defer: boolean) {
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
      if (c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a) i++;
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

  /** Past the object or array at i (the text is JSON: only strings need care). */
  const skip = (): void => {
    let depth = 0;
    for (;;) {
      const c = text.charCodeAt(i++);
      if (c === 0x22) {
        for (let d = text.charCodeAt(i); d !== 0x22; d = text.charCodeAt(++i)) if (d === 0x5c) i++;
        i++;
      } else if (c === 0x7b || c === 0x5b) depth++;
      else if ((c === 0x7d || c === 0x5d) && --depth === 0) return;
    }
  };

  const value = (place: Place): TreeNode => {
    const start = i;
    const c = text.charCodeAt(i);
    if (c === 0x22) return string();
    if (c === 0x7b) {
      // {
      if (place === Place.Rule && defer) {
        skip();
        return { kind: 'map', offset: start, pairs: [], deferred: text.slice(start, i) };
      }
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
        const inner = place === Place.Policy && key.value === 'spec' ? Place.Spec : place === Place.Spec && RULE_LISTS.has(key.value as string) ? Place.Rules : Place.Other;
        pending.push({ key, value: value(inner) });
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
      // A root list holds policies; a rules list, rules; nothing else holds either.
      const inner = place === Place.Rules ? Place.Rule : start === rootStart && place === Place.Policy ? Place.Policy : Place.Other;
      const first = pending.length;
      for (;;) {
        space();
        pending.push(value(inner));
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

  let rootStart = -1;
  return {
    /** The document's value: undefined for a bare scalar or a repeated key (see above). */
    root(): TreeNode | undefined {
      space();
      if (text.charCodeAt(i) !== 0x7b && text.charCodeAt(i) !== 0x5b) return undefined;
      rootStart = i;
      const root = value(Place.Policy);
      return duplicateKey ? undefined : root;
    },
    at(offset: number): TreeNode | undefined {
      // `backslash` holds for positions after the last one read; before it, it is found again.
      if (offset < i) backslash = -1;
      i = offset;
      const node = value(Place.Other);
      return duplicateKey ? undefined : node;
    },
    /** Where the last value read ends. */
    position(): number {
      return i;
    },
  };
}

const RULE_LISTS = new Set(['allow', 'block', 'contextual']);

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
