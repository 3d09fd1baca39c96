import assert from "node:assert/strict";
import { test } from "node:test";
import { inRegions, isFiltered, matches, NO_FILTER } from "../src/filters.js";

const a = (over: object = {}) => ({
  name: "articles/x/annotations/1",
  analyst: "alice",
  verdict: 2,
  quote: "Kim Jong Un met",
  note: "The wire says otherwise",
  anchorState: 1,
  span: { start: 10, end: 20 },
  ...over,
});
const ctx = { me: "alice", unresolved: [{ start: 0, end: 5 }, { start: 15, end: 30 }] };

test("no filter lets everything through", () => {
  assert.equal(isFiltered(NO_FILTER), false);
  assert.equal(matches(a(), NO_FILTER, ctx), true);
});

test("analyst, verdict and mine", () => {
  assert.equal(matches(a(), { ...NO_FILTER, analyst: "bob" }, ctx), false);
  assert.equal(matches(a(), { ...NO_FILTER, verdict: 2 }, ctx), true);
  assert.equal(matches(a(), { ...NO_FILTER, verdict: 1 }, ctx), false);
  assert.equal(matches(a({ analyst: "bob" }), { ...NO_FILTER, mine: true }, ctx), false);
});

test("search: every word, in the quote or the note, any case", () => {
  assert.equal(matches(a(), { ...NO_FILTER, search: "kim WIRE" }, ctx), true);
  assert.equal(matches(a(), { ...NO_FILTER, search: "kim moon" }, ctx), false);
});

test("needs re-review: CHANGED and ORPHANED", () => {
  assert.equal(matches(a(), { ...NO_FILTER, reReview: true }, ctx), false);
  assert.equal(matches(a({ anchorState: 3 }), { ...NO_FILTER, reReview: true }, ctx), true);
  assert.equal(matches(a({ anchorState: 4 }), { ...NO_FILTER, reReview: true }, ctx), true);
});

test("unresolved: intersecting an unresolved region", () => {
  assert.equal(matches(a(), { ...NO_FILTER, unresolved: true }, ctx), true);
  assert.equal(matches(a({ span: { start: 5, end: 15 } }), { ...NO_FILTER, unresolved: true }, ctx), false);
  assert.equal(inRegions({ start: 4, end: 6 }, ctx.unresolved), true);
  assert.equal(inRegions({ start: 30, end: 40 }, ctx.unresolved), false);
});
