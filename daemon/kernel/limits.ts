// Limits imposed by the kernel side. They mirror bpf/helm.h; test/unit/layout.test.ts
// fails if the two drift apart.

/** Bytes of path the kernel compares (LPM trie data is at most 256 bytes: 4 for the role, 252 for the path). */
export const HELM_PATH_BUF = 252;
/** Longest canonical rule path, in bytes (UTF-8): room is kept for a '/' and a NUL terminator. */
export const MAX_RULE_PATH_BYTES = HELM_PATH_BUF - 2;
/** Rules (map entries) one generation of the path table holds. */
export const HELM_MAX_PATH_ENTRIES = 65536;
/** Deepest cgroup level at which an agent may be attached. */
export const HELM_MAX_CGROUP_DEPTH = 32;
