// The factcheck web app: wiring only. Each view lives in its own module
// (see ../README.md for the code map): text.ts draws the article, list.ts
// the side list, annotate.ts the popover, review.ts the review panel,
// adjudicate.ts the adjudication panel, dashboard.ts the dashboard; state.ts
// holds what they share and live.ts follows the server.

import { openAdjudication, panelChanged, setOnSettled, wireAdjudication } from "./adjudicate.js";
import { annotateSelection, deleteAnnotation, editAnnotation, hidePopover, moderateAnnotation, setStore, showHistory, wireAnnotate } from "./annotate.js";
import { Code, connect, describe, isCode, storeToken, storedToken } from "./api.js";
import { hideDashboard, showDashboard, wireDashboard } from "./dashboard.js";
import { $, el } from "./dom.js";
import { VERDICTS } from "./format.js";
import { type Annotation, type AnnotationEvent, AnnotationEvent_Type as EventType, type ArticleEvent, ArticleView, type ReviewEvent } from "./gen/factcheck/v1/factcheck_pb.js";
import { itemOf, renderList, setListActions, updateItem } from "./list.js";
import { follow, type Follower, type LiveState } from "./live.js";
import { figures, loadEvents, refreshReview, renderPanel } from "./review.js";
import { codePoints } from "./spans.js";
import { articleOf, canReview, canWrite, onOpenText, state } from "./state.js";
import { markOf, redraw, regionAt, renderText, reviewChanged, setAdjudicate, showCard } from "./text.js";

let follower: Follower | null = null;

function setLive(s: LiveState) {
  const live = $("live");
  live.className = `live ${s}`;
  live.textContent = s === "live" ? "live" : s === "reconnecting" ? "reconnecting…" : "offline";
}

// ---- signing in ----

async function signIn(token: string): Promise<void> {
  const client = connect(token);
  const caller = await client.getCaller({});
  state.api = client;
  state.me = { analyst: caller.analyst, role: caller.role };
  storeToken(token);
  $("who").textContent = `${state.me.analyst} · ${state.me.role}`;
  $("signout").hidden = false;
  $("nav").hidden = false;
  $("signin").hidden = true;
  $("hint").hidden = !canWrite();
  document.body.classList.toggle("reader-only", !canWrite());
  const head = await loadArticles();
  follower?.stop();
  follower = follow(client, head, {
    events: onEvents,
    state: setLive,
    relist,
    unauthenticated: (message) => signOut(`Signed out: ${message}`),
  });
  await route();
}

function signOut(message = "") {
  follower?.stop();
  follower = null;
  hideDashboard();
  state.api = null;
  state.me = null;
  state.open = null;
  storeToken(null);
  $("who").textContent = "";
  $("signout").hidden = true;
  $("nav").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  setLive("offline");
}

// ---- routes: #dashboard, #articles%2F…, #articles%2F…%2Fannotations%2F… ----

async function route() {
  if (!state.api) return;
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash === "dashboard") {
    showDashboard();
    return;
  }
  hideDashboard();
  $("app").hidden = false;
  const article = articleOf(hash);
  if (!state.articles.some((a) => a.name === article)) return;
  if (state.open?.article.name !== article) await openArticle(article);
  if (hash.includes("/annotations/")) showAnnotation(hash);
}

/** Scrolls to an annotation, its highlight focused and its card open. */
function showAnnotation(name: string) {
  for (const t of document.querySelectorAll(".item.target")) t.classList.remove("target");
  const item = itemOf(name);
  if (item) {
    item.classList.add("target");
    item.scrollIntoView({ block: "nearest" });
  }
  const mark = markOf(name);
  if (mark) {
    mark.scrollIntoView({ block: "center" });
    showCard(mark, name);
    $("card").dataset.for = name;
  } else if (item) {
    // Orphaned, or filtered out of the text: the card by its list item.
    showCard(item, name);
  }
}

// ---- articles ----

/** Lists the articles and their reviews; returns the store revision. */
async function loadArticles(): Promise<bigint> {
  const api = state.api;
  if (!api) return 0n;
  const list = await api.listArticles({ pageSize: 1000 });
  state.articles = list.articles;
  const head = (await api.listAnnotations({ parent: "articles/-", pageSize: 1 })).revision;
  await Promise.all(state.articles.map((a) => refreshReview(a.name)));
  renderArticleList();
  return head;
}

function renderArticleList() {
  $("article-list").replaceChildren(
    ...state.articles.map((a) => {
      const button = el("button", { type: "button", class: "article-link", "data-name": a.name }, el("span", { class: "title" }, a.title || a.name));
      if (state.open?.article.name === a.name) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => {
        location.hash = encodeURIComponent(a.name);
      });
      return el("li", {}, button, el("div", { class: "figs", "data-figures": a.name }, ...figures(state.reviews.get(a.name))));
    }),
  );
}

function renderArticleFigures() {
  for (const div of document.querySelectorAll<HTMLElement>("[data-figures]")) div.replaceChildren(...figures(state.reviews.get(div.dataset.figures!)));
}

async function openArticle(name: string) {
  const api = state.api;
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
  const [events] = await Promise.all([loadEvents(name).catch(() => []), refreshReview(name)]);
  state.open = { article, chars: codePoints(article.text), annotations, listedAt, events };
  // On a narrow screen the list sits above the text: fold it away.
  if (window.matchMedia("(max-width: 900px)").matches) $<HTMLDetailsElement>("articles-box").open = false;
  if (!location.hash.includes("%2Fannotations%2F")) history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  $("article-title").textContent = article.title || name;
  const source = $("article-source");
  source.replaceChildren(...(article.sourceUrl ? ["Published at ", el("a", { href: article.sourceUrl, rel: "noreferrer noopener", target: "_blank" }, article.sourceUrl)] : []));
  renderArticleList();
  renderPanel();
  analystOptions();
  renderText();
  renderList();
  // Fetching, listing and rendering, until the browser can lay it out.
  requestAnimationFrame(() => performance.measure("factcheck:open", { start: started }));
}

// ---- filters ----

function analystOptions() {
  const select = $<HTMLSelectElement>("f-analyst");
  const names = [...new Set([...(state.open?.annotations.values() ?? [])].map((a) => a.analyst))].sort();
  const want = ["", ...names].join("\n");
  if (select.dataset.names === want) return;
  select.dataset.names = want;
  const value = select.value;
  select.replaceChildren(el("option", { value: "" }, "everyone"), ...names.map((n) => el("option", { value: n }, n)));
  select.value = names.includes(value) ? value : "";
}

function readFilter() {
  state.filter = {
    search: $<HTMLInputElement>("f-search").value,
    analyst: $<HTMLSelectElement>("f-analyst").value,
    verdict: Number($<HTMLSelectElement>("f-verdict").value),
    unresolved: $<HTMLInputElement>("f-unresolved").checked,
    reReview: $<HTMLInputElement>("f-rereview").checked,
    mine: $<HTMLInputElement>("f-mine").checked,
  };
  renderText();
  renderList();
}

// ---- local and live changes ----

const spanOf = (a: Annotation | undefined) => (a && onOpenText(a) && a.span ? [{ start: a.span.start, end: a.span.end }] : []);

/** One annotation as it is now (ours, or from an event): only what it
 * touches is drawn again. */
function applyAnnotation(a: Annotation) {
  const o = state.open;
  if (!o || articleOf(a.name) !== o.article.name) return;
  const old = o.annotations.get(a.name);
  o.annotations.set(a.name, a);
  redraw([...spanOf(old), ...spanOf(a)]);
  updateItem(a.name, a);
  analystOptions();
  panelChanged();
  scheduleReviews(o.article.name);
}

function removeAnnotation(name: string) {
  const o = state.open;
  if (!o) return;
  const old = o.annotations.get(name);
  o.annotations.delete(name);
  redraw(spanOf(old));
  updateItem(name, undefined);
  panelChanged();
  scheduleReviews(o.article.name);
}

function onEvents(revision: bigint, events: AnnotationEvent[], corrected: ArticleEvent[], reviewed: ReviewEvent[]) {
  const started = performance.now();
  // Adjudications, sign-offs and their withdrawals change only reviews.
  for (const e of reviewed) {
    const article = e.review.replace(/\/review$/, "");
    if (state.open?.article.name === article && !state.open.events.some((x) => x.revision === e.revision && x.type === e.type)) state.open.events.push(e);
    scheduleReviews(article);
  }
  if (corrected.length > 0) {
    // A new article, or a correction: its text and every span on it moved.
    // Read them again rather than patch the old text.
    void loadArticles().catch(() => undefined);
    const name = state.open?.article.name;
    if (name && corrected.some((e) => e.article?.name === name)) {
      void openArticle(name).catch(() => undefined);
      return;
    }
  }
  const o = state.open;
  const touched = new Set<string>();
  const ranges: { start: number; end: number }[] = [];
  const changed = new Map<string, Annotation | undefined>();
  for (const e of events) {
    const a = e.annotation!;
    const article = articleOf(a.name);
    touched.add(article);
    if (!o || article !== o.article.name || revision <= o.listedAt) continue;
    const have = o.annotations.get(a.name);
    if (e.type === EventType.DELETED) {
      ranges.push(...spanOf(have));
      o.annotations.delete(a.name);
      changed.set(a.name, undefined);
    } else if (!have || BigInt(have.etag.replaceAll('"', "")) <= revision) {
      // An older copy (our own write, answered first) never replaces a newer.
      ranges.push(...spanOf(have), ...spanOf(a));
      o.annotations.set(a.name, a);
      changed.set(a.name, a);
    }
  }
  if (changed.size) {
    redraw(ranges);
    for (const [name, a] of changed) updateItem(name, a);
    analystOptions();
    panelChanged();
    // For benches/render.rs: how long a live event took, the script's part
    // and until the frame showing it was laid out and painted.
    performance.measure("factcheck:event-script", { start: started });
    requestAnimationFrame(() => setTimeout(() => performance.measure("factcheck:event", { start: started }), 0));
  }
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
        reviewsChanged(article);
      } catch {
        // The next change or a reload tries again.
      }
    }, 150),
  );
}

function reviewsChanged(article: string) {
  renderArticleFigures();
  if (state.open?.article.name !== article) return;
  renderPanel();
  reviewChanged();
  if (state.filter.unresolved) renderList();
}

async function relist(): Promise<bigint> {
  const head = await loadArticles();
  if (state.open) await openArticle(state.open.article.name);
  return head;
}

// ---- the text by keyboard ----

/** Arrows move a caret in the text, Shift+arrows select, Enter (or A)
 * annotates the selection; on a contested region Enter adjudicates. */
function textKeys(ev: KeyboardEvent) {
  const text = $("text");
  const target = ev.target as HTMLElement;
  const region = target.classList.contains("region") ? target : null;
  if (ev.key === "Enter" && region && canReview() && (window.getSelection()?.isCollapsed ?? true)) {
    const r = regionAt(region);
    if (r) openAdjudication(r);
    ev.preventDefault();
    return;
  }
  const sel = window.getSelection();
  if (!sel) return;
  if ((ev.key === "Enter" || ev.key === "a") && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
    if (annotateSelection()) ev.preventDefault();
    return;
  }
  const moves: Record<string, [string, string]> = {
    ArrowLeft: ["backward", ev.ctrlKey || ev.altKey ? "word" : "character"],
    ArrowRight: ["forward", ev.ctrlKey || ev.altKey ? "word" : "character"],
    ArrowUp: ["backward", "line"],
    ArrowDown: ["forward", "line"],
    Home: ["backward", ev.ctrlKey ? "documentboundary" : "lineboundary"],
    End: ["forward", ev.ctrlKey ? "documentboundary" : "lineboundary"],
  };
  const move = moves[ev.key];
  if (!move) return;
  if (sel.rangeCount === 0 || !text.contains(sel.anchorNode)) {
    // The caret starts where the focus is: the start of the text, or of
    // the focused highlight.
    const range = document.createRange();
    range.setStart(target === text ? text : target, 0);
    sel.removeAllRanges();
    sel.addRange(range);
  }
  sel.modify(ev.shiftKey ? "extend" : "move", move[0], move[1]);
  ev.preventDefault();
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
  window.addEventListener("hashchange", () => void route());
  setStore({ apply: applyAnnotation, remove: removeAnnotation });
  setListActions({
    goTo: (name) => {
      const mark = markOf(name);
      if (mark) {
        mark.scrollIntoView({ block: "center" });
        if (!mark.hasAttribute("tabindex")) mark.tabIndex = -1;
        (mark.closest<HTMLElement>(".region") ?? mark).focus();
        showCard(mark, name);
      }
    },
    edit: editAnnotation,
    remove: (name) => void deleteAnnotation(name),
    moderate: (name) => void moderateAnnotation(name),
    history: (name) => void showHistory(name),
  });
  setAdjudicate(openAdjudication);
  setOnSettled(() => {
    if (state.open) reviewsChanged(state.open.article.name);
  });
  wireAnnotate();
  wireAdjudication();
  wireDashboard();
  $("f-verdict").replaceChildren(el("option", { value: "0" }, "every verdict"), ...[1, 2, 3].map((v) => el("option", { value: `${v}` }, VERDICTS[v])));
  $("filters").addEventListener("input", readFilter);
  $("filters").addEventListener("change", readFilter);
  $("skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    document.body.classList.add("show-list");
    $("annotation-list-heading").focus();
  });
  for (const tab of document.querySelectorAll<HTMLButtonElement>("[data-tab]")) {
    tab.addEventListener("click", () => {
      const list = tab.dataset.tab === "list";
      document.body.classList.toggle("show-list", list);
      for (const t of document.querySelectorAll("[data-tab]")) t.setAttribute("aria-pressed", `${t === tab}`);
    });
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      if (!$("popover").hidden) hidePopover();
      $("card").hidden = true;
    }
  });
  const text = $("text");
  text.addEventListener("mouseup", () =>
    setTimeout(() => {
      if (annotateSelection()) return;
      // A click (no selection) on a contested region opens it for reviewers.
      const sel = window.getSelection();
      const focused = document.activeElement as HTMLElement | null;
      if (canReview() && (sel?.isCollapsed ?? true) && focused?.classList.contains("region")) {
        const r = regionAt(focused);
        if (r) openAdjudication(r);
      }
    }, 0),
  );
  text.addEventListener("keydown", textKeys);
  const card = (ev: Event) => {
    const t = ev.target as HTMLElement;
    const target = t.closest?.("mark") ?? t.closest?.(".region");
    if (target instanceof HTMLElement) showCard(target);
  };
  text.addEventListener("mouseover", card);
  text.addEventListener("focusin", card);
  // The card stays while the pointer moves onto it (its links are clickable).
  text.addEventListener("mouseleave", (ev) => {
    if (!$("card").contains(ev.relatedTarget as Node | null)) $("card").hidden = true;
  });
  $("card").addEventListener("mouseleave", () => ($("card").hidden = true));
  text.addEventListener("focusout", (ev) => {
    if (!$("card").contains(ev.relatedTarget as Node | null)) $("card").hidden = true;
  });
}

wire();
const token = storedToken();
if (token) {
  signIn(token).catch(() => signOut("Your session ended: sign in again."));
} else {
  signOut();
}
