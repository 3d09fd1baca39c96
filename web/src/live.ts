// Following WatchAnnotations: from the revision the page listed at, resuming
// after a dropped connection or a server restart from the last revision
// received + 1 (nothing missed, nothing doubled), and re-listing when the
// changelog no longer holds it.

import type { Api } from "./api.js";
import { Code, isCode } from "./api.js";
import {
  type AnnotationEvent,
  type ArticleEvent,
  type ReviewEvent,
  WatchAnnotationsResponse_Kind as Kind,
} from "./gen/factcheck/v1/factcheck_pb.js";

export type LiveState = "live" | "reconnecting" | "offline";

export interface Follower {
  /** The last revision received: everything up to it is applied. */
  applied(): bigint;
  stop(): void;
}

export interface Handlers {
  events(revision: bigint, events: AnnotationEvent[], articles: ArticleEvent[], reviews: ReviewEvent[]): void;
  state(state: LiveState): void;
  /** The resume point was compacted: list again; returns the new revision. */
  relist(): Promise<bigint>;
  /** The token is no longer valid. */
  unauthenticated(message: string): void;
}

export function follow(api: Api, from: bigint, on: Handlers): Follower {
  let applied = from;
  const abort = new AbortController();
  const run = async () => {
    let backoff = 250;
    while (!abort.signal.aborted) {
      try {
        const stream = api.watchAnnotations({ parent: "articles/-", startRevision: applied + 1n }, { signal: abort.signal });
        for await (const msg of stream) {
          on.state("live");
          backoff = 250;
          if (msg.kind === Kind.EVENTS) on.events(msg.revision, msg.events, msg.articleEvents, msg.reviewEvents);
          // EVENTS and PROGRESS advance the resume point; CREATED does not,
          // nor a part of a revision that more messages complete.
          if (msg.kind !== Kind.CREATED && !msg.more && msg.revision > applied) applied = msg.revision;
        }
      } catch (e) {
        if (abort.signal.aborted) break;
        if (isCode(e, Code.Unauthenticated)) {
          on.state("offline");
          on.unauthenticated(e.rawMessage);
          return;
        }
        if (isCode(e, Code.FailedPrecondition) && e.rawMessage.includes("compacted")) {
          try {
            applied = await on.relist();
            continue;
          } catch {
            // Fall through to the back-off.
          }
        }
      }
      if (abort.signal.aborted) break;
      on.state("reconnecting");
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 4000);
    }
    on.state("offline");
  };
  void run();
  return { applied: () => applied, stop: () => abort.abort() };
}
