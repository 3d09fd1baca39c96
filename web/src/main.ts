// The factcheck web app: sign in with a token, read an article with its
// annotations highlighted by verdict, annotate by selecting text, edit and
// delete with etags, read histories, and follow everyone's changes live.
// See ../README.md for the code map.

import { type Api, Code, connect, describe, isCode, storeToken, storedToken } from "./api.js";
import { follow, type Follower, type LiveState } from "./live.js";
import { codePointOffset, codePoints, segments } from "./spans.js";
import {
  AnchorState,
  type Annotation,
  type AnnotationEvent,
  type ArticleEvent,
  type ReviewEvent,
  AnnotationEvent_Type as EventType,
  type Article,
  type ArticleReview,
  ArticleView,
  ReviewState,
  Verdict,
} from "./gen/factcheck/v1/factcheck_pb.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const VERDICTS: Record<number, string> = {
  [Verdict.VERIFIED]: "verified",
  [Verdict.DISPUTED]: "disputed",
  [Verdict.UNATTRIBUTED]: "unattributed",
};

interface Open {
  article: Article;
  /** The text as code points: spans index into this. */
  chars: string[];
  annotations: Map<string, Annotation>;
  /** The revision the annotations were listed at: older events are in it. */
  listedAt: bigint;
}

let api: Api | null = null;
let me: { analyst: string; role: string } | null = null;
let articles: Article[] = [];
const reviews = new Map<string, ArticleReview>();
let open: Open | null = null;
let follower: Follower | null = null;

const canWrite = () => me !== null && me.role !== "reader";
const canChangeAny = () => me !== null && (me.role === "reviewer" || me.role === "admin");
const mayChange = (a: Annotation) => canChangeAny() || (canWrite() && a.analyst === me?.analyst);

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

function time(t: Timestamp | undefined): string {
  if (!t) return "";
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6)).toLocaleString();
}

function setLive(state: LiveState) {
  const live = $("live");
  live.className = `live ${state}`;
  live.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "offline";
}

// ---- signing in ----

async function signIn(token: string): Promise<void> {
  const client = connect(token);
  const caller = await client.getCaller({});
  api = client;
  me = { analyst: caller.analyst, role: caller.role };
  storeToken(token);
  $("who").textContent = `${me.analyst} · ${me.role}`;
  $("signout").hidden = false;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("hint").hidden = !canWrite();
  document.body.classList.toggle("reader-only", !canWrite());
  const head = await loadArticles();
  follower?.stop();
  follower = follow(client, head, {
    events: onEvents,
    state: setLive,
    relist: relist,
    unauthenticated: (message) => signOut(`Signed out: ${message}`),
  });
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = articles.find((a) => a.name === wanted) ?? null;
  if (first) await openArticle(first.name);
}

function signOut(message = "") {
  follower?.stop();
  follower = null;
  api = null;
  me = null;
  open = null;
  storeToken(null);
  $("who").textContent = "";
  $("signout").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  setLive("offline");
}

// ---- articles and reviews ----

/** Lists the articles and their reviews; returns the store revision. */
async function loadArticles(): Promise<bigint> {
  if (!api) return 0n;
  const list = await api.listArticles({ pageSize: 1000 });
  articles = list.articles;
  const head = (await api.listAnnotations({ parent: "articles/-", pageSize: 1 })).revision;
  await Promise.all(articles.map((a) => refreshReview(a.name)));
  renderArticleList();
  return head;
}

async function refreshReview(articleName: string) {
  if (!api) return;
  const review = await api.getArticleReview({ name: `${articleName}/review` });
  reviews.set(articleName, review);
}

const STATES: Record<number, string> = {
  [ReviewState.NOT_STARTED]: "not started",
  [ReviewState.IN_PROGRESS]: "in progress",
  [ReviewState.NEEDS_ADJUDICATION]: "needs adjudication",
  [ReviewState.READY]: "ready",
  [ReviewState.SIGNED_OFF]: "signed off",
};

function stateBadge(r: ArticleReview): HTMLElement {
  const label = STATES[r.state] ?? "unknown";
  const by = r.signOff ? ` by ${r.signOff.reviewer}` : "";
  return el("span", { class: "fig state", "data-state": label.replaceAll(" ", "-"), title: "review state" }, `${label}${by}`);
}

function figures(r: ArticleReview | undefined): Node[] {
  if (!r) return [];
  const pct = `${Math.round(r.coveredFraction * 1000) / 10}%`;
  return [
    stateBadge(r),
    el("span", { class: "fig v1", title: "verified" }, `${r.verifiedCount}`),
    el("span", { class: "fig v2", title: "disputed" }, `${r.disputedCount}`),
    el("span", { class: "fig v3", title: "unattributed" }, `${r.unattributedCount}`),
    el("span", { class: "fig cover", title: "text covered" }, `${pct} covered`),
    el("span", { class: "fig contested", title: "contested spans" }, `${r.contestedSpanCount} contested`),
  ];
}

function renderArticleList() {
  const ul = $("article-list");
  ul.replaceChildren(
    ...articles.map((a) => {
      const button = el("button", { type: "button", class: "article-link", "data-name": a.name }, el("span", { class: "title" }, a.title || a.name));
      if (open?.article.name === a.name) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => void openArticle(a.name));
      return el("li", {}, button, el("div", { class: "figs", "data-figures": a.name }, ...figures(reviews.get(a.name))));
    }),
  );
}

function renderFigures() {
  if (!open) return;
  const review = reviews.get(open.article.name);
  $("figures").replaceChildren(...figures(review));
  if (review && review.state === ReviewState.READY && canChangeAny()) $("figures").append(signOffButton(review));
  for (const div of document.querySelectorAll<HTMLElement>("[data-figures]")) {
    div.replaceChildren(...figures(reviews.get(div.dataset.figures!)));
  }
}

async function openArticle(name: string) {
  if (!api) return;
  const started = performance.now();
  const article = await api.getArticle({ name, view: ArticleView.FULL });
  const annotations = new Map<string, Annotation>();
  let pageToken = "";
  let listedAt = 0n;
  do {
    const page = await api.listAnnotations({ parent: name, pageSize: 1000, pageToken });
    for (const a of page.annotations) annotations.set(a.name, a);
    if (listedAt === 0n) listedAt = page.revision;
    pageToken = page.nextPageToken;
  } while (pageToken);
  open = { article, chars: codePoints(article.text), annotations, listedAt };
  // On a narrow screen the list sits above the text: fold it away.
  if (window.matchMedia("(max-width: 900px)").matches) $<HTMLDetailsElement>("articles-box").open = false;
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  $("article-title").textContent = article.title || name;
  await refreshReview(name);
  renderArticleList();
  renderFigures();
  renderText();
  // Fetching, listing and rendering, until the browser can lay it out.
  requestAnimationFrame(() => performance.measure("factcheck:open", { start: started }));
}

/** Signs off the review the page shows, at its etag: a review changed
 * meanwhile is refused, and the figures are read again. */
function signOffButton(review: ArticleReview): HTMLElement {
  const button = el("button", { type: "button", id: "sign-off", class: "sign-off" }, "Sign off");
  button.addEventListener("click", async () => {
    if (!api) return;
    const name = review.name.replace(/\/review$/, "");
    try {
      reviews.set(name, await api.signOffArticleReview({ name: review.name, etag: review.etag }));
      renderFigures();
    } catch (e) {
      await ask("Not signed off", [el("p", {}, describe(e))], [["ok", "OK"]]);
      await refreshReview(name).catch(() => undefined);
      renderFigures();
    }
  });
  return button;
}

// ---- the text, highlighted ----

const sorted = (o: Open) =>
  [...o.annotations.values()].sort((a, b) => (a.span!.start - b.span!.start) || (a.span!.end - b.span!.end) || a.name.localeCompare(b.name));

function renderText() {
  if (!open) return;
  const started = performance.now();
  const o = open;
  // An orphan's span points into an older revision of the text.
  const spans = sorted(o)
    .filter((a) => a.anchorState !== AnchorState.ORPHANED)
    .map((a) => ({ start: a.span!.start, end: a.span!.end, a }));
  const text = $("text");
  const nodes: Node[] = [];
  for (const seg of segments(o.chars.length, spans)) {
    const piece = o.chars.slice(seg.start, seg.end).join("");
    if (seg.covering.length === 0) {
      nodes.push(document.createTextNode(piece));
      continue;
    }
    const verdicts = new Set(seg.covering.map((c) => c.a.verdict));
    const mark = el("mark", { tabindex: "0" }, piece);
    const first = seg.covering[0].a.verdict;
    mark.classList.add(`v${first}`, `d${Math.min(seg.covering.length, 4)}`);
    if (verdicts.size > 1) mark.classList.add("contested");
    mark.dataset.names = seg.covering.map((c) => c.a.name).join(" ");
    mark.setAttribute(
      "aria-label",
      `${[...verdicts].map((v) => VERDICTS[v]).join(" and ")}${verdicts.size > 1 ? " (contested)" : ""}: ${seg.covering.length} annotation${seg.covering.length > 1 ? "s" : ""}`,
    );
    nodes.push(mark);
  }
  text.replaceChildren(...nodes);
  renderSideList();
  // For benches/render.rs: how long building the highlighted text took.
  performance.measure("factcheck:render", { start: started });
}

function renderSideList() {
  if (!open) return;
  const list = sorted(open);
  $("annotation-count").textContent = `(${list.length})`;
  $("annotation-list").replaceChildren(
    ...list.map((a) => {
      const item = el(
        "li",
        { class: `item v${a.verdict}`, "data-name": a.name },
        el("button", { type: "button", class: "goto" }, el("span", { class: `icon v${a.verdict}`, "aria-hidden": "true" }), el("q", {}, a.quote), el("span", { class: "by" }, ` ${VERDICTS[a.verdict]} · ${a.analyst}`)),
      );
      item.querySelector(".goto")!.addEventListener("click", () => goTo(a.name));
      const actions = el("div", { class: "item-actions" });
      const hist = el("button", { type: "button", class: "history" }, "History");
      hist.addEventListener("click", () => void showHistory(a.name));
      actions.append(hist);
      if (mayChange(a)) {
        const edit = el("button", { type: "button", class: "edit" }, "Edit");
        edit.addEventListener("click", () => editAnnotation(a.name, edit));
        const del = el("button", { type: "button", class: "delete" }, "Delete");
        del.addEventListener("click", () => void deleteAnnotation(a.name));
        actions.append(edit, del);
      }
      item.append(actions);
      return item;
    }),
  );
}

function markOf(name: string): HTMLElement | null {
  for (const m of document.querySelectorAll<HTMLElement>("#text mark")) {
    if (m.dataset.names?.split(" ").includes(name)) return m;
  }
  return null;
}

function goTo(name: string) {
  const mark = markOf(name);
  if (!mark) return;
  mark.scrollIntoView({ block: "center" });
  mark.focus();
}

function showCard(mark: HTMLElement) {
  if (!open) return;
  const card = $("card");
  const names = mark.dataset.names?.split(" ") ?? [];
  card.replaceChildren(
    ...names.map((n) => {
      const a = open!.annotations.get(n);
      if (!a) return el("div");
      const sources = el("ul", { class: "sources" }, ...a.sources.map((s) => el("li", {}, /^https?:\/\//.test(s) ? el("a", { href: s, rel: "noreferrer noopener", target: "_blank" }, s) : s)));
      return el(
        "div",
        { class: `entry v${a.verdict}` },
        el("strong", {}, el("span", { class: `icon v${a.verdict}`, "aria-hidden": "true" }), ` ${VERDICTS[a.verdict]}`),
        el("span", { class: "by" }, ` by ${a.analyst}`),
        el("p", { class: "note" }, a.note || "(no note)"),
        sources,
        el("p", { class: "times" }, `created ${time(a.createTime)} · updated ${time(a.updateTime)}`),
      );
    }),
  );
  const r = mark.getBoundingClientRect();
  card.hidden = false;
  card.style.top = `${window.scrollY + r.bottom + 6}px`;
  card.style.left = `${Math.max(8, Math.min(window.scrollX + r.left, window.scrollX + document.documentElement.clientWidth - card.offsetWidth - 8))}px`;
}

// ---- annotating ----

let pendingSpan: { start: number; end: number; quote: string } | null = null;
let editing: { name: string; etag: string } | null = null;

/** The selection inside the text as a code-point span, if any. */
function selectedSpan(): { start: number; end: number; quote: string } | null {
  if (!open) return null;
  const sel = window.getSelection();
  if (!sel || sel.isCollapsed || sel.rangeCount === 0) return null;
  const range = sel.getRangeAt(0);
  const root = $("text");
  if (!root.contains(range.startContainer) || !root.contains(range.endContainer)) return null;
  const utf16 = (container: Node, offset: number) => {
    const pre = document.createRange();
    pre.selectNodeContents(root);
    pre.setEnd(container, offset);
    return pre.toString().length;
  };
  const text = open.article.text;
  const a = utf16(range.startContainer, range.startOffset);
  const b = utf16(range.endContainer, range.endOffset);
  if (b <= a) return null;
  return { start: codePointOffset(text, a), end: codePointOffset(text, b), quote: text.slice(a, b) };
}

function showPopover(at: DOMRect, quote: string, values?: { verdict: number; note: string; sources: string[] }) {
  const form = $<HTMLFormElement>("popover");
  $("popover-quote").textContent = quote;
  const v = values?.verdict ?? Verdict.VERIFIED;
  for (const r of form.querySelectorAll<HTMLInputElement>("input[name=verdict]")) r.checked = Number(r.value) === v;
  $<HTMLTextAreaElement>("popover-note").value = values?.note ?? "";
  $<HTMLTextAreaElement>("popover-sources").value = values?.sources.join("\n") ?? "";
  $("popover-error").textContent = "";
  form.hidden = false;
  form.style.top = `${window.scrollY + at.bottom + 8}px`;
  form.style.left = `${Math.max(8, Math.min(window.scrollX + at.left, window.scrollX + document.documentElement.clientWidth - form.offsetWidth - 8))}px`;
  form.querySelector<HTMLInputElement>("input[name=verdict]:checked")!.focus();
}

function hidePopover() {
  $("popover").hidden = true;
  pendingSpan = null;
  editing = null;
}

function formValues() {
  const form = $<HTMLFormElement>("popover");
  const checked = form.querySelector<HTMLInputElement>("input[name=verdict]:checked");
  return {
    verdict: Number(checked?.value ?? Verdict.VERIFIED) as Verdict,
    note: $<HTMLTextAreaElement>("popover-note").value,
    sources: $<HTMLTextAreaElement>("popover-sources").value.split("\n").map((s) => s.trim()).filter(Boolean),
  };
}

async function save(ev: SubmitEvent) {
  ev.preventDefault();
  if (!api || !open) return;
  const values = formValues();
  try {
    if (editing) {
      const { name, etag } = editing;
      await update(name, etag, values);
    } else if (pendingSpan) {
      const created = await api.createAnnotation({
        parent: open.article.name,
        annotation: { span: { start: pendingSpan.start, end: pendingSpan.end }, ...values },
        expectedQuote: pendingSpan.quote,
        requestId: crypto.randomUUID(),
      });
      applyAnnotation(created, open.listedAt);
    }
    hidePopover();
    window.getSelection()?.removeAllRanges();
  } catch (e) {
    $("popover-error").textContent = describe(e);
  }
}

type Values = { verdict: Verdict; note: string; sources: string[] };

async function update(name: string, etag: string, values: Values) {
  if (!api || !open) return;
  try {
    const updated = await api.updateAnnotation({
      annotation: { name, ...values },
      updateMask: { paths: ["verdict", "note", "sources"] },
      etag,
    });
    applyAnnotation(updated, open.listedAt);
  } catch (e) {
    if (!isCode(e, Code.Aborted)) throw e;
    // Someone changed it meanwhile: show theirs, never overwrite silently.
    const current = await api.getAnnotation({ name });
    applyAnnotation(current, open.listedAt);
    hidePopover();
    const choice = await ask(
      "This annotation changed meanwhile",
      [
        el("p", {}, `${current.analyst}'s annotation now says: `, el("strong", {}, VERDICTS[current.verdict]), ` — ${current.note || "(no note)"}`),
        el("p", {}, "Yours: ", el("strong", {}, VERDICTS[values.verdict]), ` — ${values.note || "(no note)"}`),
      ],
      [
        ["overwrite", "Apply mine to the current version"],
        ["keep", "Keep the current version"],
      ],
    );
    if (choice === "overwrite") await update(name, current.etag, values);
  }
}

function editAnnotation(name: string, anchor: HTMLElement) {
  const a = open?.annotations.get(name);
  if (!a) return;
  editing = { name, etag: a.etag };
  pendingSpan = null;
  showPopover(anchor.getBoundingClientRect(), a.quote, { verdict: a.verdict, note: a.note, sources: a.sources });
}

async function deleteAnnotation(name: string) {
  if (!api || !open) return;
  const a = open.annotations.get(name);
  if (!a) return;
  const sure = await ask("Delete this annotation?", [el("p", {}, el("q", {}, a.quote), ` — ${VERDICTS[a.verdict]}`)], [
    ["delete", "Delete"],
    ["cancel", "Cancel"],
  ]);
  if (sure !== "delete") return;
  try {
    await api.deleteAnnotation({ name, etag: a.etag });
    removeAnnotation(name);
  } catch (e) {
    if (isCode(e, Code.Aborted)) {
      const current = await api.getAnnotation({ name });
      applyAnnotation(current, open.listedAt);
      await ask("Not deleted: it changed meanwhile", [el("p", {}, `It now says ${VERDICTS[current.verdict]} — ${current.note || "(no note)"}. Read it and delete again if you still mean to.`)], [["ok", "OK"]]);
    } else {
      await ask("Not deleted", [el("p", {}, describe(e))], [["ok", "OK"]]);
    }
  }
}

async function showHistory(name: string) {
  if (!api) return;
  const rows: Node[] = [];
  let pageToken = "";
  do {
    const page = await api.listAnnotationRevisions({ name, pageSize: 100, pageToken });
    for (const r of page.revisions) {
      const a = r.annotation!;
      const kind = EventType[r.type].toLowerCase();
      const changed = r.changedFields?.paths.length ? ` (${r.changedFields.paths.join(", ")})` : "";
      rows.push(el("li", {}, el("strong", {}, `${kind}${changed}`), ` by ${r.actor}, ${time(r.changeTime)} — ${VERDICTS[a.verdict]}: `, el("q", {}, a.quote), a.note ? ` — ${a.note}` : ""));
    }
    pageToken = page.nextPageToken;
  } while (pageToken);
  await ask("History", [el("ol", { class: "history-list" }, ...rows)], [["ok", "Close"]]);
}

/** A modal dialog; resolves with the value of the button pressed. */
function ask(title: string, body: Node[], buttons: [string, string][]): Promise<string> {
  const dialog = $<HTMLDialogElement>("dialog");
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...body);
  $("dialog-actions").replaceChildren(...buttons.map(([value, label]) => el("button", { value }, label)));
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
}

// ---- live changes ----

function applyAnnotation(a: Annotation, _at: bigint) {
  if (!open || !a.name.startsWith(`${open.article.name}/`)) return;
  open.annotations.set(a.name, a);
  renderText();
  scheduleReviews(open.article.name);
}

function removeAnnotation(name: string) {
  if (!open) return;
  open.annotations.delete(name);
  renderText();
  scheduleReviews(open.article.name);
}

function onEvents(revision: bigint, events: AnnotationEvent[], corrected: ArticleEvent[], reviewed: ReviewEvent[]) {
  // Adjudications, sign-offs and their withdrawals change only reviews.
  for (const e of reviewed) scheduleReviews(e.review.replace(/\/review$/, ""));
  if (corrected.length > 0) {
    // A new article, or a correction: its text and every span on it moved.
    // Read them again rather than patch the old text.
    void loadArticles().catch(() => undefined);
    const name = open?.article.name;
    if (name && corrected.some((e) => e.article?.name === name)) {
      void openArticle(name).catch(() => undefined);
      return;
    }
  }
  const touched = new Set<string>();
  for (const e of events) {
    const a = e.annotation!;
    const article = a.name.split("/annotations/")[0];
    touched.add(article);
    if (!open || article !== open.article.name || revision <= open.listedAt) continue;
    if (e.type === EventType.DELETED) open.annotations.delete(a.name);
    else {
      // An older copy (our own write, answered first) never replaces a newer.
      const have = open.annotations.get(a.name);
      if (!have || BigInt(have.etag.replaceAll('"', "")) <= revision) open.annotations.set(a.name, a);
    }
  }
  if (open && touched.has(open.article.name)) renderText();
  for (const article of touched) scheduleReviews(article);
}

const reviewTimers = new Map<string, number>();
function scheduleReviews(article: string) {
  if (reviewTimers.has(article)) return;
  reviewTimers.set(
    article,
    window.setTimeout(async () => {
      reviewTimers.delete(article);
      try {
        await refreshReview(article);
        renderFigures();
      } catch {
        // The next change or a reload tries again.
      }
    }, 150),
  );
}

async function relist(): Promise<bigint> {
  const head = await loadArticles();
  if (open) await openArticle(open.article.name);
  return head;
}

// ---- wiring ----

function wire() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $<HTMLInputElement>("token").value.trim();
    $("signin-error").textContent = "";
    signIn(token).catch((e) => {
      $("signin-error").textContent = isCode(e, Code.Unauthenticated) ? "That token is not known here." : describe(e);
    });
  });
  $("signout").addEventListener("click", () => signOut());
  $("popover").addEventListener("submit", (ev) => void save(ev as SubmitEvent));
  $("popover-cancel").addEventListener("click", hidePopover);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      hidePopover();
      $("card").hidden = true;
    }
  });
  const text = $("text");
  const onSelect = () => {
    if (!canWrite() || editing) return;
    const span = selectedSpan();
    if (!span) return;
    pendingSpan = span;
    const rect = window.getSelection()!.getRangeAt(0).getBoundingClientRect();
    showPopover(rect, span.quote);
  };
  text.addEventListener("mouseup", () => setTimeout(onSelect, 0));
  text.addEventListener("keyup", (ev) => {
    if (ev.shiftKey) onSelect();
  });
  const card = (ev: Event) => {
    const mark = (ev.target as HTMLElement).closest?.("mark");
    if (mark instanceof HTMLElement) showCard(mark);
  };
  text.addEventListener("mouseover", card);
  text.addEventListener("focusin", card);
  // The card stays while the pointer moves onto it (its links are clickable).
  text.addEventListener("mouseleave", (ev) => {
    if (!$("card").contains(ev.relatedTarget as Node | null)) $("card").hidden = true;
  });
  $("card").addEventListener("mouseleave", () => ($("card").hidden = true));
  text.addEventListener("focusout", () => ($("card").hidden = true));
}

wire();
const token = storedToken();
if (token) {
  signIn(token).catch(() => signOut("Your session ended: sign in again."));
} else {
  signOut();
}
