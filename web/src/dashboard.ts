// The dashboard (#dashboard): every article's review, its state, counts,
// agreement, unresolved and re-review counts and sign-off, filterable by
// state, live through WatchArticleReviews.

import { Code, describe, isCode } from "./api.js";
import { $, el } from "./dom.js";
import { alpha, STATES, time } from "./format.js";
import { type ArticleReview, ReviewState } from "./gen/factcheck/v1/factcheck_pb.js";
import { state } from "./state.js";

let abort: AbortController | null = null;
const rows = new Map<string, ArticleReview>();

const articleName = (r: ArticleReview) => r.name.replace(/\/review$/, "");

function row(r: ArticleReview): HTMLElement {
  const name = articleName(r);
  const title = state.articles.find((a) => a.name === name)?.title || name;
  const label = STATES[r.state] ?? "unknown";
  return el(
    "tr",
    { "data-review": r.name, "data-state": label.replaceAll(" ", "-") },
    el("th", { scope: "row" }, el("a", { href: `#${encodeURIComponent(name)}` }, title)),
    el("td", { class: "state" }, label),
    el("td", {}, `${r.totalCount}`, el("span", { class: "by" }, ` (${r.verifiedCount} ✓ ${r.disputedCount} ✗ ${r.unattributedCount} ?)`)),
    el("td", {}, `${r.analystCount}`),
    el("td", {}, alpha(r.krippendorffAlpha)),
    el("td", { class: "unresolved" }, `${r.unresolvedContestedSpanCount}`, el("span", { class: "by" }, ` of ${r.contestedSpanCount}`)),
    el("td", { class: "rereview" }, `${r.needsReviewCount}`),
    el("td", { class: "signed" }, r.signOff ? `${r.signOff.reviewer}, ${time(r.signOff.signOffTime)}` : "—"),
  );
}

function render() {
  const want = Number($<HTMLSelectElement>("dash-state").value);
  const list = [...rows.values()].filter((r) => !want || r.state === want).sort((a, b) => (a.name < b.name ? -1 : 1));
  $("dash-rows").replaceChildren(...list.map(row));
  $("dash-count").textContent = `${list.length} of ${rows.size} articles`;
}

export function showDashboard() {
  $("dashboard").hidden = false;
  $("app").hidden = true;
  document.title = "Dashboard · factcheck";
  if (abort) return;
  const api = state.api;
  if (!api) return;
  const controller = new AbortController();
  abort = controller;
  const run = async () => {
    let backoff = 250;
    while (!controller.signal.aborted) {
      try {
        const stream = api.watchArticleReviews({ parent: "articles/-" }, { signal: controller.signal });
        let fresh = true;
        for await (const msg of stream) {
          if (msg.initial && fresh) {
            rows.clear();
            fresh = false;
          }
          for (const r of msg.reviews) rows.set(r.name, r);
          if (!msg.more) {
            render();
            $("dash-live").textContent = "live";
          }
          backoff = 250;
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        $("dash-live").textContent = isCode(e, Code.Unauthenticated) ? describe(e) : "reconnecting…";
        if (isCode(e, Code.Unauthenticated)) return;
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 4000);
    }
  };
  void run();
}

export function hideDashboard() {
  abort?.abort();
  abort = null;
  $("dashboard").hidden = true;
}

export function wireDashboard() {
  const select = $<HTMLSelectElement>("dash-state");
  select.replaceChildren(
    el("option", { value: "0" }, "every state"),
    ...[ReviewState.NOT_STARTED, ReviewState.IN_PROGRESS, ReviewState.NEEDS_ADJUDICATION, ReviewState.READY, ReviewState.SIGNED_OFF].map((s) =>
      el("option", { value: `${s}` }, STATES[s]),
    ),
  );
  select.addEventListener("change", render);
}
