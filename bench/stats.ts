// Order statistics of timing samples, and how the report writes them.

/** Median, 99th percentile (nearest rank) and count of samples in nanoseconds. */
export interface Figure {
  median: number;
  p99: number;
  n: number;
}

export function figure(samples: number[]): Figure {
  if (samples.length === 0) throw new Error('no samples');
  const s = Float64Array.from(samples).sort();
  const rank = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  return { median: rank(0.5), p99: rank(0.99), n: s.length };
}

/** 1234 → "1.23 µs"; three significant digits, the unit chosen by size. */
export function formatNs(ns: number): string {
  const abs = Math.abs(ns);
  const [div, unit] = abs >= 1e9 ? [1e9, 's'] : abs >= 1e6 ? [1e6, 'ms'] : abs >= 1e3 ? [1e3, 'µs'] : [1, 'ns'];
  const v = ns / div;
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${unit}`;
}

/** The change from `base` to `value` as a signed percentage: "+4.2 %", "-0.3 %". */
export function formatChange(value: number, base: number): string {
  const pct = (value / base - 1) * 100;
  const digits = Math.abs(pct) >= 100 ? 0 : 1;
  return `${pct >= 0 ? '+' : '−'}${Math.abs(pct).toFixed(digits)} %`;
}

export function formatSignedNs(ns: number): string {
  return `${ns >= 0 ? '+' : '−'}${formatNs(Math.abs(ns))}`;
}
