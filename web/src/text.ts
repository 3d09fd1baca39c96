// The article text, highlighted: one mark per piece covered by the same
// annotations, one region per contested span (its outline, every verdict
// present, settled or not), drawn again only where a change falls.

import { $, el, sourceItems } from "./dom.js";
import { isLink, time, VERDICTS } from "./format.js";
import { matches } from "./filters.js";
import { type Adjudication, type Annotation, type ArticleReview, type ContestedSpan } from "./gen/factcheck/v1/factcheck_pb.js";
import { type Block, isDense, layout } from "./spans.js";
import { canReview, onOpenText, state } from "./state.js";

export interface Drawn {
  start: number;
  end: number;
  a: Annotation;
}

export interface RegionInfo {
  start: number;
  end: number;
  contested: ContestedSpan;
  /** The adjudication in force, if any. */
  settled: Adjudication | undefined;
  /** Settled once, unsettled since by a change inside it. */
  reopened: boolean;
}

/** A paragraph of the text (up to and including its line break), drawn
 * as its own block: a change relayouts its paragraph, not the article. */
interface Paragraph {
  start: number;
  end: number;
  node: HTMLElement;
}

let paragraphs: Paragraph[] = [];
let spans: Drawn[] = [];
let regions: RegionInfo[] = [];
let regionKey = "";

/** Called when a region is activated (click or Enter) by a reviewer. */
export let onAdjudicate: (r: RegionInfo) => void = () => undefined;
export function setAdjudicate(f: (r: RegionInfo) => void) {
  onAdjudicate = f;
}

export const currentRegions = () => regions;

/** The open article's annotations that the text draws: anchored ones that
 * pass the filter, by start. */
export function visible(): Drawn[] {
  const o = state.open;
  if (!o) return [];
  const ctx = filterContext();
  return [...o.annotations.values()]
    .filter((a) => onOpenText(a) && matches(a, state.filter, ctx))
    .map((a) => ({ start: a.span!.start, end: a.span!.end, a }))
    .sort((x, y) => x.start - y.start || x.end - y.end || (x.a.name < y.a.name ? -1 : 1));
}

export function filterContext() {
  return {
    me: state.me?.analyst ?? "",
    unresolved: regions.filter((r) => !r.settled),
  };
}

/** The contested regions of `review`, those of the open article's
 * current text. */
export function regionsOf(review: ArticleReview | undefined): RegionInfo[] {
  const o = state.open;
  // Regions of another revision of the text (a correction not yet read
  // again) would point at the wrong words.
  const revision = review?.articleRevision.split("@").pop();
  if (!o || !review || revision !== o.article.revisionId) return [];
  const settledBefore = o.events.filter((e) => e.adjudication).map((e) => e.adjudication!.span!);
  return review.contestedSpans.map((c) => ({
    start: c.span!.start,
    end: c.span!.end,
    contested: c,
    settled: c.adjudication,
    reopened: !c.adjudication && settledBefore.some((s) => s.start < c.span!.end && s.end > c.span!.start),
  }));
}

const key = (rs: RegionInfo[]) =>
  rs.map((r) => `${r.start}-${r.end}-${r.settled?.name ?? ""}-${r.reopened}-${r.contested.verdicts.join("")}`).join(",");

/** Screen readers read the words of a highlight, and this as its
 * description: one hidden element per kind, shared. */
function describedBy(kind: string, text: string): string {
  const id = `desc-${kind}`;
  if (!document.getElementById(id)) $("descriptions").append(el("span", { id }, text));
  return id;
}

function markNode(b: Extract<Block<Drawn, RegionInfo>, { kind: "mark" }>, focusable: boolean): HTMLElement {
  const verdicts = [...new Set(b.covering.map((c) => c.a.verdict))].sort();
  const mark = el("mark", { class: `v${b.covering[0].a.verdict} d${Math.min(b.covering.length, 4)}` }, state.open!.chars.slice(b.start, b.end).join(""));
  if (verdicts.length > 1) mark.classList.add("mixed");
  if (focusable) mark.tabIndex = 0;
  mark.dataset.s = `${b.start}`;
  mark.dataset.e = `${b.end}`;
  mark.dataset.names = b.covering.map((c) => c.a.name).join(" ");
  const n = b.covering.length;
  const words = `${verdicts.map((v) => VERDICTS[v]).join(" and ")}, ${n} annotation${n > 1 ? "s" : ""}`;
  mark.setAttribute("aria-describedby", describedBy(`${verdicts.join("")}-${n}`, words));
  return mark;
}

function regionNode(b: Extract<Block<Drawn, RegionInfo>, { kind: "region" }>): HTMLElement {
  const r = b.region;
  const has = r.contested.verdicts.map((v) => `${v}`).join("");
  const region = el("span", { class: `region has${has}`, tabindex: "0" });
  region.dataset.s = `${r.start}`;
  region.dataset.e = `${r.end}`;
  region.dataset.region = `${r.start}-${r.end}`;
  let words: string;
  if (r.settled) {
    region.classList.add("settled", `f${r.settled.verdict}`);
    words = `contested, settled as ${VERDICTS[r.settled.verdict]}`;
  } else {
    region.classList.add("unresolved");
    if (r.reopened) region.classList.add("reopened");
    words = `contested, ${r.reopened ? "re-opened" : "unresolved"}: ${r.contested.verdicts.map((v) => VERDICTS[v]).join(" and ")}`;
  }
  region.setAttribute("aria-describedby", describedBy(`region-${r.settled ? `s${r.settled.verdict}` : r.reopened ? "r" : "u"}-${has}`, words));
  for (const p of b.pieces) region.append(p.kind === "mark" ? markNode(p, false) : document.createTextNode(state.open!.chars.slice(p.start, p.end).join("")));
  return region;
}

function nodesOf(blocks: Block<Drawn, RegionInfo>[]): Node[] {
  const out: Node[] = [];
  let prevEnd = -1;
  for (const b of blocks) {
    if (b.kind === "text") {
      out.push(document.createTextNode(state.open!.chars.slice(b.start, b.end).join("")));
      prevEnd = -1;
    } else if (b.kind === "mark") {
      // One tab stop per run of touching marks, not one per piece.
      out.push(markNode(b, prevEnd !== b.start));
      prevEnd = b.end;
    } else {
      out.push(regionNode(b));
      prevEnd = -1;
    }
  }
  return out;
}

/** The paragraphs of the text: each ends after a line break (or at the end). */
export function paragraphsOf(chars: string[]): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  let start = 0;
  for (let i = 0; i < chars.length; i++) {
    if (chars[i] === "\n") {
      out.push({ start, end: i + 1 });
      start = i + 1;
    }
  }
  if (start < chars.length || out.length === 0) out.push({ start, end: chars.length });
  return out;
}

function drawParagraph(p: Paragraph) {
  p.node.replaceChildren(...nodesOf(layout(p.start, p.end, spans, regions)));
}

/** Draws the whole text again. */
export function renderText() {
  const o = state.open;
  const text = $("text");
  if (!o) {
    text.replaceChildren();
    paragraphs = [];
    return;
  }
  const started = performance.now();
  regions = regionsOf(state.reviews.get(o.article.name));
  regionKey = key(regions);
  spans = visible();
  text.classList.toggle("dense", isDense(spans.length, o.chars.length));
  paragraphs = paragraphsOf(o.chars).map((r) => ({ ...r, node: el("div", { class: "para", dir: "auto" }) }));
  for (const p of paragraphs) drawParagraph(p);
  text.replaceChildren(...paragraphs.map((p) => p.node));
  // For benches/render.rs: how long building the highlighted text took.
  performance.measure("factcheck:render", { start: started });
}

/** Draws again the paragraphs that `ranges` (and the regions they touch)
 * fall in, with the annotations as they are now. */
export function redraw(ranges: { start: number; end: number }[]) {
  const o = state.open;
  if (!o || ranges.length === 0) return;
  spans = visible();
  $("text").classList.toggle("dense", isDense(spans.length, o.chars.length));
  const dirty = new Set<Paragraph>();
  for (const range of ranges) {
    let lo = range.start;
    let hi = range.end;
    for (const r of regions) if (r.start < hi && r.end > lo) [lo, hi] = [Math.min(lo, r.start), Math.max(hi, r.end)];
    for (let i = firstEndingAfter(lo); i < paragraphs.length && paragraphs[i].start < Math.max(hi, lo + 1); i++) dirty.add(paragraphs[i]);
  }
  for (const p of dirty) drawParagraph(p);
}

function firstEndingAfter(at: number): number {
  let lo = 0;
  let hi = paragraphs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (paragraphs[mid].end <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The review changed: redraw the regions that differ, if any. */
export function reviewChanged() {
  const o = state.open;
  if (!o) return;
  const next = regionsOf(state.reviews.get(o.article.name));
  const k = key(next);
  if (k === regionKey) return;
  const old = regions;
  regions = next;
  regionKey = k;
  const oldKeys = new Set(old.map((r) => key([r])));
  const newKeys = new Set(next.map((r) => key([r])));
  redraw([...old.filter((r) => !newKeys.has(key([r]))), ...next.filter((r) => !oldKeys.has(key([r])))]);
}

// ---- finding and showing ----

export function markOf(name: string): HTMLElement | null {
  const a = state.open?.annotations.get(name);
  if (!a) return null;
  for (const m of document.querySelectorAll<HTMLElement>("#text mark")) {
    if (Number(m.dataset.s) >= a.span!.end) break;
    if (m.dataset.names?.split(" ").includes(name)) return m;
  }
  return null;
}

export function regionAt(el: HTMLElement): RegionInfo | undefined {
  const id = el.dataset.region;
  return regions.find((r) => `${r.start}-${r.end}` === id);
}

function noteNode(note: string): HTMLElement {
  if (!note) return el("p", { class: "note empty" }, "(no note)");
  if (Array.from(note).length <= 280) return el("p", { class: "note" }, note);
  const p = el("p", { class: "note collapsed" }, note);
  const more = el("button", { type: "button", class: "more", "aria-expanded": "false" }, "more");
  more.addEventListener("click", () => {
    const open = p.classList.toggle("collapsed");
    more.textContent = open ? "more" : "less";
    more.setAttribute("aria-expanded", `${!open}`);
  });
  return el("div", {}, p, more);
}

export function entryNode(a: Annotation): HTMLElement {
  return el(
    "div",
    { class: `entry v${a.verdict}`, "data-name": a.name },
    el("strong", {}, a.analyst),
    el("span", { class: "by" }, ` · ${time(a.updateTime)}`),
    noteNode(a.note),
    sourceItems(a.sources, isLink),
  );
}

/** The annotations by verdict, with counts. */
export function groupedByVerdict(list: Annotation[]): HTMLElement[] {
  const groups = new Map<number, Annotation[]>();
  for (const a of list) groups.set(a.verdict, [...(groups.get(a.verdict) ?? []), a]);
  return [...groups.entries()]
    .sort(([a], [b]) => a - b)
    .map(([v, as]) =>
      el(
        "section",
        { class: `group v${v}` },
        el("h3", {}, el("span", { class: `icon v${v}`, "aria-hidden": "true" }), ` ${VERDICTS[v]} (${as.length})`),
        ...as.map(entryNode),
      ),
    );
}

/** The annotations of the open article intersecting [start, end). */
export function intersecting(start: number, end: number): Annotation[] {
  return visible()
    .filter((d) => d.start < end && d.end > start)
    .map((d) => d.a);
}

export function showCard(target: HTMLElement, only?: string) {
  const o = state.open;
  if (!o) return;
  const card = $("card");
  const kids: Node[] = [];
  const regionEl = target.closest<HTMLElement>(".region");
  const region = regionEl ? regionAt(regionEl) : undefined;
  if (region) {
    const c = region.contested;
    const head = region.settled
      ? el("p", { class: "settled-head" }, "⚖ Settled as ", el("strong", {}, VERDICTS[region.settled.verdict]), ` by ${region.settled.reviewer}: `, el("span", { class: "rationale" }, region.settled.rationale))
      : el("p", { class: "unresolved-head" }, region.reopened ? "⚠ Re-opened: changed since it was settled" : "⚠ Contested, unresolved", ` (${c.annotationCount} annotations)`);
    kids.push(head);
    if (canReview()) {
      const b = el("button", { type: "button", class: "adjudicate" }, region.settled ? "Adjudicate again…" : "Adjudicate…");
      b.addEventListener("click", () => onAdjudicate(region));
      kids.push(b);
    }
  }
  let names = (target.tagName === "MARK" ? target.dataset.names?.split(" ") : undefined) ?? (region ? intersecting(region.start, region.end).map((a) => a.name) : []);
  if (only) names = [only];
  kids.push(...groupedByVerdict(names.map((n) => o.annotations.get(n)).filter((a): a is Annotation => !!a)));
  card.replaceChildren(...kids);
  const r = target.getBoundingClientRect();
  card.hidden = false;
  const width = document.documentElement.clientWidth;
  card.style.top = `${window.scrollY + r.bottom + 6}px`;
  card.style.left = `${Math.max(8, Math.min(window.scrollX + r.left, window.scrollX + width - card.offsetWidth - 8))}px`;
}


