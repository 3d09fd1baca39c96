// The page's shared state: who is signed in, the articles and their
// reviews, the open article, the filter; and a tiny event bus the views
// listen on, so that live changes reach only what they concern.

import type { Api } from "./api.js";
import { type Filter, NO_FILTER } from "./filters.js";
import { AnchorState, type Annotation, type Article, type ArticleReview, type ReviewEvent } from "./gen/factcheck/v1/factcheck_pb.js";

export interface Open {
  article: Article;
  /** The text as code points: spans index into this. */
  chars: string[];
  annotations: Map<string, Annotation>;
  /** The revision the annotations were listed at: older events are in it. */
  listedAt: bigint;
  /** The review's history (adjudications, sign-offs, withdrawals). */
  events: ReviewEvent[];
}

export const state = {
  api: null as Api | null,
  me: null as { analyst: string; role: string } | null,
  articles: [] as Article[],
  reviews: new Map<string, ArticleReview>(),
  open: null as Open | null,
  filter: { ...NO_FILTER } as Filter,
};

export const canWrite = () => state.me !== null && state.me.role !== "reader";
export const canReview = () => state.me !== null && (state.me.role === "reviewer" || state.me.role === "admin");
/** An annotation's verdict, span, note and sources are its analyst's:
 * only they edit or delete it (reviewers settle disagreements by
 * adjudication, not by changing what analysts said). */
export const mayChange = (a: Annotation) => canWrite() && a.analyst === state.me?.analyst;
/** Whether the annotation's span points into the open text: not an
 * orphan's, nor one a correction has not moved yet (it still names the
 * revision before; its chunk's event moves it). */
export const onOpenText = (a: Annotation) => a.anchorState !== AnchorState.ORPHANED && a.articleRevision === state.open?.article.revisionId;
/** An admin may remove another analyst's annotation, giving a reason. */
export const mayModerate = (a: Annotation) => state.me?.role === "admin" && a.analyst !== state.me.analyst;

/** The article of an annotation's name. */
export const articleOf = (name: string) => name.split("/annotations/")[0];
