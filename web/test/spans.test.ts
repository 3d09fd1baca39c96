import assert from "node:assert/strict";
import { test } from "node:test";
import { codePointOffset, isDense, layout, segments } from "../src/spans.js";

test("code points, not UTF-16 units", () => {
  const text = "a😀b";
  assert.equal(codePointOffset(text, 3), 2);
  assert.equal(codePointOffset(text, 4), 3);
});

test("segments cover the text and keep what covers each piece", () => {
  const segs = segments(10, [{ start: 2, end: 6 }, { start: 4, end: 8 }]);
  assert.deepEqual(segs.map((s) => [s.start, s.end, s.covering.length]), [[0, 2, 0], [2, 4, 1], [4, 6, 2], [6, 8, 1], [8, 10, 0]]);
});

test("a contested region is one block holding its pieces", () => {
  const spans = [
    { start: 2, end: 6, v: 1 },
    { start: 4, end: 8, v: 2 },
  ];
  const region = { start: 4, end: 6 };
  const blocks = layout(0, 10, spans, [region]);
  assert.deepEqual(
    blocks.map((b) => [b.kind, b.start, b.end]),
    [["text", 0, 2], ["mark", 2, 4], ["region", 4, 6], ["mark", 6, 8], ["text", 8, 10]],
  );
  const r = blocks[2];
  assert.ok(r.kind === "region" && r.region === region && r.pieces.length === 1);
});

test("a region spanning uncovered and covered text is still one block", () => {
  const blocks = layout(0, 12, [{ start: 3, end: 5 }, { start: 7, end: 9 }], [{ start: 3, end: 9 }]);
  assert.deepEqual(blocks.map((b) => [b.kind, b.start, b.end]), [["text", 0, 3], ["region", 3, 9], ["text", 9, 12]]);
  const r = blocks[1];
  assert.ok(r.kind === "region");
  assert.deepEqual(r.pieces.map((p) => p.kind), ["mark", "text", "mark"]);
});

test("a window draws only its part, at the text's offsets", () => {
  const blocks = layout(5, 9, [{ start: 2, end: 7 }], []);
  assert.deepEqual(blocks.map((b) => [b.kind, b.start, b.end]), [["mark", 5, 7], ["text", 7, 9]]);
});

test("density: hundreds of annotations are drawn as underlines", () => {
  assert.equal(isDense(3, 1000), false);
  assert.equal(isDense(1000, 20000), true);
});
