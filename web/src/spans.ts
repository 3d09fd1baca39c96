// Spans: the server counts Unicode code points; a JavaScript string counts
// UTF-16 units, in which an astral character (an emoji) is two. Every
// conversion between the two lives here.

/** The code points of `text`, one string each. */
export function codePoints(text: string): string[] {
  return Array.from(text);
}

/** How many code points the first `utf16` units of `text` hold. */
export function codePointOffset(text: string, utf16: number): number {
  let n = 0;
  for (let i = 0; i < utf16; i++) {
    const c = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < utf16) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

export interface Marked<T> {
  start: number;
  end: number;
  /** What covers [start, end), in the order given. */
  covering: T[];
}

/**
 * Cuts [0, length) at every span boundary: each piece is covered by the same
 * set of spans throughout. Pieces covered by nothing are included (empty
 * `covering`), so joining them gives back the whole text.
 */
export function segments<T extends { start: number; end: number }>(length: number, spans: T[]): Marked<T>[] {
  const cuts = new Set<number>([0, length]);
  for (const s of spans) {
    cuts.add(Math.max(0, Math.min(length, s.start)));
    cuts.add(Math.max(0, Math.min(length, s.end)));
  }
  const points = [...cuts].sort((a, b) => a - b);
  // Sweep: spans sorted by start enter, and leave once past their end.
  const byStart = [...spans].sort((a, b) => a.start - b.start);
  const out: Marked<T>[] = [];
  let next = 0;
  let open: T[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const a = points[i];
    const b = points[i + 1];
    while (next < byStart.length && byStart[next].start <= a) open.push(byStart[next++]);
    open = open.filter((s) => s.end > a);
    out.push({ start: a, end: b, covering: open.filter((s) => s.start <= a && s.end >= b) });
  }
  return out;
}

export interface Region {
  start: number;
  end: number;
}

/** A piece of the drawn text: uncovered text, a mark covered by the same
 * annotations throughout, or a contested region holding its pieces. */
export type Block<T, R> =
  | { kind: "text"; start: number; end: number }
  | { kind: "mark"; start: number; end: number; covering: T[] }
  | { kind: "region"; start: number; end: number; region: R; pieces: Block<T, R>[] };

/**
 * The blocks that draw [from, to): `spans` cut into pieces as `segments`
 * does, and the pieces inside each of the sorted, disjoint `regions`
 * gathered into one region block (one outline per contested region, not
 * one per piece). A region is cut at the window's edges: callers widen the
 * window to whole regions.
 */
export function layout<T extends { start: number; end: number }, R extends Region>(
  from: number,
  to: number,
  spans: T[],
  regions: R[],
): Block<T, R>[] {
  const inside = spans
    .filter((s) => s.start < to && s.end > from)
    .map((s) => ({ start: Math.max(from, s.start) - from, end: Math.min(to, s.end) - from, s }));
  const rs = regions.filter((r) => r.start < to && r.end > from);
  const cuts = new Set<number>();
  for (const r of rs) {
    cuts.add(Math.max(from, r.start) - from);
    cuts.add(Math.min(to, r.end) - from);
  }
  // Region edges cut the text too, so that no piece straddles one.
  const marker = [...cuts].map((c) => ({ start: c, end: c, s: null as T | null }));
  const pieces: Block<T, R>[] = segments(to - from, [...inside, ...marker]).map((seg) => {
    const covering = seg.covering.filter((c) => c.s !== null).map((c) => c.s as T);
    const start = seg.start + from;
    const end = seg.end + from;
    return covering.length ? { kind: "mark", start, end, covering } : { kind: "text", start, end };
  });
  const out: Block<T, R>[] = [];
  let r = 0;
  for (const p of pieces) {
    while (r < rs.length && rs[r].end <= p.start) r++;
    const region = rs[r];
    if (region && region.start <= p.start && p.end <= region.end) {
      const last = out[out.length - 1];
      if (last?.kind === "region" && last.region === region) {
        last.pieces.push(p);
        last.end = p.end;
      } else out.push({ kind: "region", start: p.start, end: p.end, region, pieces: [p] });
    } else out.push(p);
  }
  return out;
}

/** Whether a piece's coverage is dense enough to draw verdict underlines
 * only (backgrounds on hover): `count` annotations over `length` code
 * points. Chosen so that a text reads as text at 1,000 annotations. */
export const isDense = (count: number, length: number) => count > 200 || (length > 0 && count / length > 0.02);
