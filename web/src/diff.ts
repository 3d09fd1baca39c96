// What changed between two versions of an annotation, field by field: for
// the history's rows and the conflict dialog. Pure: no DOM, unit-tested
// under Node (test/).

import { VERDICTS } from "./format.js";

export interface Version {
  verdict: number;
  note: string;
  sources: string[];
  span?: { start: number; end: number };
  quote?: string;
}

export interface Change {
  field: "verdict" | "note" | "sources" | "span";
  before: string;
  after: string;
  /** For sources: which were added and removed. */
  added?: string[];
  removed?: string[];
}

const spanText = (v: Version) => (v.span ? `${v.span.start}..${v.span.end}${v.quote !== undefined ? ` “${v.quote}”` : ""}` : "");

/** The fields that differ from `before` to `after`, in a fixed order;
 * everything is "added" when there is no `before`. */
export function changes(before: Version | null, after: Version): Change[] {
  const out: Change[] = [];
  const b: Version = before ?? { verdict: 0, note: "", sources: [] };
  if (!before || (b.span?.start !== after.span?.start || b.span?.end !== after.span?.end)) {
    if (after.span) out.push({ field: "span", before: before ? spanText(b) : "", after: spanText(after) });
  }
  if (b.verdict !== after.verdict) out.push({ field: "verdict", before: VERDICTS[b.verdict] ?? "", after: VERDICTS[after.verdict] ?? "" });
  if (b.note !== after.note) out.push({ field: "note", before: b.note, after: after.note });
  const same = b.sources.length === after.sources.length && b.sources.every((s, i) => s === after.sources[i]);
  if (!same) {
    const added = after.sources.filter((s) => !b.sources.includes(s));
    const removed = b.sources.filter((s) => !after.sources.includes(s));
    out.push({ field: "sources", before: b.sources.join("\n"), after: after.sources.join("\n"), added, removed });
  }
  return out;
}
