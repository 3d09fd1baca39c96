// Words and numbers for people: verdict and state names, times, short
// quotes, note limits. Pure: no DOM, unit-tested under Node (test/).

import { AnchorState, ReviewState, Verdict } from "./gen/factcheck/v1/factcheck_pb.js";

/** Most code points a note may hold: the server refuses more. */
export const MAX_NOTE_CHARS = 10_000;

export const VERDICTS: Record<number, string> = {
  [Verdict.VERIFIED]: "verified",
  [Verdict.DISPUTED]: "disputed",
  [Verdict.UNATTRIBUTED]: "unattributed",
};

export const STATES: Record<number, string> = {
  [ReviewState.NOT_STARTED]: "not started",
  [ReviewState.IN_PROGRESS]: "in progress",
  [ReviewState.NEEDS_ADJUDICATION]: "needs adjudication",
  [ReviewState.READY]: "ready",
  [ReviewState.SIGNED_OFF]: "signed off",
};

/** How an anchor state reads in a list, or "" when nothing is to be done. */
export function anchorLabel(s: AnchorState): string {
  if (s === AnchorState.CHANGED) return "needs re-review: its text was edited";
  if (s === AnchorState.ORPHANED) return "needs re-review: its text is gone";
  return "";
}

export const needsReReview = (s: AnchorState) => s === AnchorState.CHANGED || s === AnchorState.ORPHANED;

export function time(t: { seconds: bigint; nanos: number } | undefined): string {
  if (!t) return "";
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6)).toLocaleString();
}

/** The first `n` code points of `s`, with an ellipsis when cut. */
export function short(s: string, n = 30): string {
  const cps = Array.from(s.replace(/\s+/g, " ").trim());
  return cps.length <= n ? cps.join("") : `${cps.slice(0, n).join("")}…`;
}

/** Code points in `s`: what the server's limits count. */
export const codePointLength = (s: string) => Array.from(s).length;

/** How a note stands against the limit: the counter's text, and whether
 * it may be saved. */
export function noteStatus(note: string): { count: number; over: number; text: string } {
  const count = codePointLength(note);
  const over = Math.max(0, count - MAX_NOTE_CHARS);
  const text = over > 0
    ? `${count.toLocaleString("en")} / ${MAX_NOTE_CHARS.toLocaleString("en")}: ${over.toLocaleString("en")} too many`
    : `${count.toLocaleString("en")} / ${MAX_NOTE_CHARS.toLocaleString("en")}`;
  return { count, over, text };
}

/** A source is a link only when it is an http(s) URL; anything else is a
 * citation, shown as text. */
export const isLink = (s: string) => /^https?:\/\/[^\s]+$/i.test(s.trim());

/** Krippendorff's alpha for a person: two decimals, or "—" when undefined. */
export const alpha = (a: number | undefined) => (a === undefined ? "—" : a.toFixed(2));
