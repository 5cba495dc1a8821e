// learnedAddresses: what each agent's own DNS lookups taught helm — address → host-name
// pattern ids, each with its own expiry — mirrored into the kernel's learned_addrs map.
//
// The kernel entry carries one expiry for all of an address's names (the latest); sweep()
// rewrites an entry as soon as one of its names expires, so a name outlives its TTL by at
// most the sweep interval.
import { C } from '../kernel/layout';
import { addressText } from '../audit/record';

export interface LearnedMapWriter {
  learn(agentId: bigint, addr16: Buffer, nameIds: readonly number[], expiresBootNs: bigint): void;
  forget(agentId: bigint, addr16: Buffer): boolean;
}

interface Entry {
  addr16: Buffer;
  /** name id → when it expires (CLOCK_BOOTTIME ns) and the name that was asked. */
  names: Map<number, { expires: bigint; host: string }>;
}

export class LearnedAddresses {
  private readonly byAgent = new Map<bigint, Map<string, Entry>>();

  constructor(
    private readonly kernel: LearnedMapWriter,
    private readonly nowBootNs: () => bigint,
  ) {}

  /** false when the kernel map cannot take the address (full): the caller fails the lookup. */
  learn(agentId: bigint, addr16: Buffer, host: string, nameIds: readonly number[], ttlSec: number): boolean {
    const key = addr16.toString('hex');
    let entries = this.byAgent.get(agentId);
    if (!entries) this.byAgent.set(agentId, (entries = new Map()));
    const entry = entries.get(key) ?? { addr16: Buffer.from(addr16), names: new Map() };
    const expires = this.nowBootNs() + BigInt(Math.round(ttlSec * 1e9));
    for (const id of nameIds) {
      const prev = entry.names.get(id);
      entry.names.set(id, { expires: prev && prev.expires > expires ? prev.expires : expires, host });
    }
    try {
      this.write(agentId, entry);
    } catch {
      return false; // the map is full (E2BIG): nothing was changed in the kernel
    }
    entries.set(key, entry);
    return true;
  }

  /** The name most recently asked for this address by this agent, if still learned. */
  hostOf(agentId: bigint, addr16: Buffer): string | undefined {
    const entry = this.byAgent.get(agentId)?.get(addr16.toString('hex'));
    if (!entry) return undefined;
    let best: { expires: bigint; host: string } | undefined;
    for (const n of entry.names.values()) if (!best || n.expires > best.expires) best = n;
    return best?.host;
  }

  /** Drops expired names; rewrites or removes the kernel entries they were in. */
  sweep(): void {
    const now = this.nowBootNs();
    for (const [agentId, entries] of this.byAgent) {
      for (const [key, entry] of entries) {
        let changed = false;
        for (const [id, n] of entry.names) {
          if (n.expires <= now) {
            entry.names.delete(id);
            changed = true;
          }
        }
        if (!changed) continue;
        if (entry.names.size === 0) {
          this.kernel.forget(agentId, entry.addr16);
          entries.delete(key);
        } else {
          this.write(agentId, entry);
        }
      }
    }
  }

  forgetAgent(agentId: bigint): void {
    for (const entry of this.byAgent.get(agentId)?.values() ?? []) this.kernel.forget(agentId, entry.addr16);
    this.byAgent.delete(agentId);
  }

  /** For status and tests: an agent's learned addresses as text. */
  list(agentId: bigint): { addr: string; names: string[]; ids: number[] }[] {
    return [...(this.byAgent.get(agentId)?.values() ?? [])].map((e) => ({
      addr: addressText(e.addr16),
      names: [...new Set([...e.names.values()].map((n) => n.host))],
      ids: [...e.names.keys()],
    }));
  }

  /** The kernel holds HELM_LEARNED_NAMES ids per address: the latest-expiring ones are kept. */
  private write(agentId: bigint, entry: Entry): void {
    const kept = [...entry.names.entries()].sort((a, b) => (a[1].expires > b[1].expires ? -1 : a[1].expires < b[1].expires ? 1 : a[0] - b[0]));
    for (const [id] of kept.slice(C.HELM_LEARNED_NAMES)) entry.names.delete(id);
    const ids = kept.slice(0, C.HELM_LEARNED_NAMES).map(([id]) => id);
    const expires = kept.reduce((m, [, n]) => (n.expires > m ? n.expires : m), 0n);
    this.kernel.learn(agentId, entry.addr16, ids, expires);
  }
}
