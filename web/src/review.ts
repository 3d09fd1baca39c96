// The review of an article: its figures in the article list, and the
// review panel over the text (state, agreement, unresolved and re-review
// counts, sign-off), Sign off with a confirmation of what is signed, and
// the review's history.

import { describe } from "./api.js";
import { $, ask, el } from "./dom.js";
import { alpha, STATES, time, VERDICTS } from "./format.js";
import { type ArticleReview, type ReviewEvent, ReviewEvent_Type, ReviewState } from "./gen/factcheck/v1/factcheck_pb.js";
import { canReview, state } from "./state.js";

export async function refreshReview(articleName: string) {
  if (!state.api) return;
  const review = await state.api.getArticleReview({ name: `${articleName}/review` });
  state.reviews.set(articleName, review);
}

export async function loadEvents(articleName: string): Promise<ReviewEvent[]> {
  if (!state.api) return [];
  const out: ReviewEvent[] = [];
  let pageToken = "";
  do {
    const page = await state.api.listReviewEvents({ parent: `${articleName}/review`, pageSize: 1000, pageToken });
    out.push(...page.events);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

export function stateBadge(r: ArticleReview): HTMLElement {
  const label = STATES[r.state] ?? "unknown";
  const by = r.signOff ? ` by ${r.signOff.reviewer}` : "";
  return el("span", { class: "fig state", "data-state": label.replaceAll(" ", "-"), title: "review state" }, `${label}${by}`);
}

/** The figures of a review, for the article list and the panel. */
export function figures(r: ArticleReview | undefined): Node[] {
  if (!r) return [];
  const pct = `${Math.round(r.coveredFraction * 1000) / 10}%`;
  const out: Node[] = [
    stateBadge(r),
    el("span", { class: "fig v1", title: "verified" }, `${r.verifiedCount}`),
    el("span", { class: "fig v2", title: "disputed" }, `${r.disputedCount}`),
    el("span", { class: "fig v3", title: "unattributed" }, `${r.unattributedCount}`),
    el("span", { class: "fig cover", title: "text covered" }, `${pct} covered`),
    el(
      "span",
      { class: "fig contested", title: "contested spans no adjudication settles, of all contested spans", "data-unresolved": `${r.unresolvedContestedSpanCount}` },
      `${r.unresolvedContestedSpanCount} unresolved of ${r.contestedSpanCount} contested`,
    ),
  ];
  if (r.needsReviewCount > 0) out.push(el("span", { class: "fig rereview", title: "annotations a correction left to look at again" }, `${r.needsReviewCount} need re-review`));
  if (r.movingCount > 0) out.push(el("span", { class: "fig moving", title: "annotations a correction is still moving onto the new text: sign-off and adjudication wait for them" }, `${r.movingCount} moving`));
  return out;
}

/** The panel over the text. */
export function renderPanel() {
  const o = state.open;
  const panel = $("figures");
  if (!o) {
    panel.replaceChildren();
    return;
  }
  const r = state.reviews.get(o.article.name);
  if (!r) {
    panel.replaceChildren();
    return;
  }
  const row = el("div", { class: "figs-row" }, ...figures(r));
  const more: Node[] = [
    el("span", { class: "fig analysts" }, `${r.analystCount} analyst${r.analystCount === 1 ? "" : "s"} (${r.minAnalysts} needed)`),
    el("span", { class: "fig alpha", title: "Krippendorff's alpha (nominal) among the analysts" }, `α ${alpha(r.krippendorffAlpha)}`),
  ];
  if (r.signOff) more.push(el("span", { class: "fig signed" }, `signed off by ${r.signOff.reviewer}, ${time(r.signOff.signOffTime)}`));
  const details = el("details", { class: "agreement" }, el("summary", {}, "Agreement between analysts"));
  if (r.pairwiseAgreements.length) {
    details.append(
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Analyst"), el("th", { scope: "col" }, "Other analyst"), el("th", { scope: "col" }, "α"))),
        el("tbody", {}, ...r.pairwiseAgreements.map((p) => el("tr", {}, el("td", {}, p.analyst), el("td", {}, p.otherAnalyst), el("td", {}, alpha(p.krippendorffAlpha))))),
      ),
    );
  } else details.append(el("p", {}, "Fewer than two analysts: no agreement to show."));
  const actions = el("div", { class: "review-actions" });
  const hist = el("button", { type: "button", id: "review-history" }, "Review history");
  hist.addEventListener("click", () => void showReviewHistory(o.article.name));
  actions.append(hist);
  if (canReview() && r.state === ReviewState.READY) actions.append(signOffButton(r));
  panel.replaceChildren(row, el("div", { class: "figs-row" }, ...more), details, actions);
}

/** Signs off the review the page shows, at its etag, after a confirmation
 * naming what is signed; a review changed meanwhile is refused. */
function signOffButton(review: ArticleReview): HTMLElement {
  const button = el("button", { type: "button", id: "sign-off", class: "sign-off" }, "Sign off…");
  button.addEventListener("click", async () => {
    if (!state.api) return;
    const name = review.name.replace(/\/review$/, "");
    const article = state.articles.find((a) => a.name === name);
    const settled = review.contestedSpanCount - review.unresolvedContestedSpanCount;
    const sure = await ask(
      "Sign off this review?",
      [
        el(
          "dl",
          { class: "signing" },
          el("dt", {}, "Article"), el("dd", {}, article?.title || name),
          el("dt", {}, "Text"), el("dd", {}, review.articleRevision),
          el("dt", {}, "State"), el("dd", { "data-signing": "state" }, STATES[review.state]),
          el("dt", {}, "Annotations"), el("dd", { "data-signing": "annotations" }, `${review.totalCount} by ${review.analystCount} analysts (${review.verifiedCount} verified, ${review.disputedCount} disputed, ${review.unattributedCount} unattributed)`),
          el("dt", {}, "Contested spans"), el("dd", { "data-signing": "contested" }, `${review.contestedSpanCount}, ${settled} settled`),
          el("dt", {}, "Agreement"), el("dd", {}, `α ${alpha(review.krippendorffAlpha)}`),
          el("dt", {}, "Review version"), el("dd", { "data-signing": "etag" }, review.etag),
        ),
        el("p", {}, "Any change to the article or its annotations after this withdraws the sign-off."),
      ],
      [
        ["sign", "Sign off"],
        ["cancel", "Cancel"],
      ],
    );
    if (sure !== "sign") return;
    try {
      state.reviews.set(name, await state.api.signOffArticleReview({ name: review.name, etag: review.etag }));
      renderPanel();
    } catch (e) {
      await ask("Not signed off", [el("p", {}, describe(e))], [["ok", "OK"]]);
      await refreshReview(name).catch(() => undefined);
      renderPanel();
    }
  });
  return button;
}

export function eventLine(e: ReviewEvent): HTMLElement {
  if (e.type === ReviewEvent_Type.ADJUDICATED && e.adjudication) {
    const a = e.adjudication;
    return el(
      "li",
      {},
      el("strong", {}, "adjudicated"),
      ` by ${e.actor}, ${time(e.time)}: `,
      el("q", {}, a.quote),
      ` settled as ${VERDICTS[a.verdict]} (${a.acceptedCount} accepted, ${a.overruledCount} overruled) — ${a.rationale}`,
    );
  }
  if (e.type === ReviewEvent_Type.SIGNED_OFF) return el("li", {}, el("strong", {}, "signed off"), ` by ${e.actor}, ${time(e.time)} (${e.signOff?.articleRevision ?? ""})`);
  if (e.type === ReviewEvent_Type.SIGN_OFF_WITHDRAWN) return el("li", {}, el("strong", {}, "sign-off withdrawn"), ` by ${e.actor}, ${time(e.time)}: ${e.reason}`);
  return el("li", {}, `${e.actor}, ${time(e.time)}`);
}

async function showReviewHistory(articleName: string) {
  let rows: HTMLElement[];
  try {
    const events = await loadEvents(articleName);
    rows = events.length ? events.map(eventLine) : [el("li", {}, "Nothing yet: no adjudication or sign-off.")];
  } catch (e) {
    rows = [el("li", {}, describe(e))];
  }
  await ask("Review history", [el("ol", { class: "history-list" }, ...rows)], [["ok", "Close"]]);
}
