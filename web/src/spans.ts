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
