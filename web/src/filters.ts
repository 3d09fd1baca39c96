// Which annotations the side list and the text show: by analyst, verdict,
// unresolved only, needs re-review only, mine only, and a search over
// quotes and notes. Pure: no DOM, unit-tested under Node (test/).

import { needsReReview } from "./format.js";

export interface Filter {
  /** "" for everyone. */
  analyst: string;
  /** 0 for every verdict. */
  verdict: number;
  unresolved: boolean;
  reReview: boolean;
  mine: boolean;
  /** Words that must all appear in the quote or the note (any case). */
  search: string;
}

export const NO_FILTER: Filter = { analyst: "", verdict: 0, unresolved: false, reReview: false, mine: false, search: "" };

export interface Filterable {
  name: string;
  analyst: string;
  verdict: number;
  quote: string;
  note: string;
  anchorState: number;
  span?: { start: number; end: number };
}

export interface Context {
  /** Who is signed in. */
  me: string;
  /** The unresolved contested regions. */
  unresolved: { start: number; end: number }[];
}

export const isFiltered = (f: Filter) =>
  f.analyst !== "" || f.verdict !== 0 || f.unresolved || f.reReview || f.mine || f.search.trim() !== "";

/** Whether `a` intersects one of the sorted, disjoint `regions`. */
export function inRegions(a: { start: number; end: number }, regions: { start: number; end: number }[]): boolean {
  let lo = 0;
  let hi = regions.length;
  // The first region ending after a.start.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (regions[mid].end <= a.start) lo = mid + 1;
    else hi = mid;
  }
  return lo < regions.length && regions[lo].start < a.end;
}

export function matches(a: Filterable, f: Filter, ctx: Context): boolean {
  if (f.analyst && a.analyst !== f.analyst) return false;
  if (f.verdict && a.verdict !== f.verdict) return false;
  if (f.mine && a.analyst !== ctx.me) return false;
  if (f.reReview && !needsReReview(a.anchorState)) return false;
  if (f.unresolved && !(a.span && inRegions(a.span, ctx.unresolved))) return false;
  const words = f.search.toLocaleLowerCase().split(/\s+/).filter(Boolean);
  if (words.length) {
    const hay = `${a.quote}\n${a.note}`.toLocaleLowerCase();
    if (!words.every((w) => hay.includes(w))) return false;
  }
  return true;
}
