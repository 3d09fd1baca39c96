import assert from "node:assert/strict";
import { test } from "node:test";
import { changes } from "../src/diff.js";
import { noteStatus, short, isLink } from "../src/format.js";

test("changes name each field that differs, sources added and removed", () => {
  const before = { verdict: 1, note: "a", sources: ["https://x", "Reuters"], span: { start: 1, end: 4 } };
  const after = { verdict: 2, note: "a", sources: ["Reuters", "AP"], span: { start: 1, end: 4 } };
  const c = changes(before, after);
  assert.deepEqual(c.map((x) => x.field), ["verdict", "sources"]);
  assert.equal(c[0].before, "verified");
  assert.equal(c[0].after, "disputed");
  assert.deepEqual(c[1].added, ["AP"]);
  assert.deepEqual(c[1].removed, ["https://x"]);
});

test("a first version: everything it says", () => {
  const c = changes(null, { verdict: 3, note: "n", sources: [], span: { start: 0, end: 2 }, quote: "ab" });
  assert.deepEqual(c.map((x) => x.field), ["span", "verdict", "note"]);
  assert.equal(c[0].after, "0..2 “ab”");
});

test("a span moved", () => {
  const c = changes({ verdict: 1, note: "", sources: [], span: { start: 0, end: 2 } }, { verdict: 1, note: "", sources: [], span: { start: 3, end: 5 } });
  assert.deepEqual(c.map((x) => [x.field, x.before, x.after]), [["span", "0..2", "3..5"]]);
});

test("the note counter counts code points and says how many too many", () => {
  assert.equal(noteStatus("😀".repeat(10_000)).over, 0);
  const over = noteStatus("a".repeat(10_003));
  assert.equal(over.over, 3);
  assert.match(over.text, /3 too many/);
});

test("short quotes and links", () => {
  assert.equal(short("Kim Jong Un met the president in Pyongyang", 12), "Kim Jong Un …");
  assert.equal(isLink("https://example.org/a"), true);
  assert.equal(isLink("javascript:alert(1)"), false);
  assert.equal(isLink("Reuters: interview"), false);
});
