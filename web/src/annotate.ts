// Annotating: the popover for a selection (mouse or keyboard), editing and
// deleting with etags (a conflict names who changed it and what differs),
// and an annotation's history, field by field.

import { Code, describe, isCode } from "./api.js";
import { type Change, changes } from "./diff.js";
import { $, ask, el } from "./dom.js";
import { noteStatus, VERDICTS, time } from "./format.js";
import { type Annotation, AnnotationEvent_Type as EventType, type Verdict } from "./gen/factcheck/v1/factcheck_pb.js";
import { codePointOffset } from "./spans.js";
import { canWrite, state } from "./state.js";

export interface Store {
  apply(a: Annotation): void;
  remove(name: string): void;
}
let store: Store;
export function setStore(s: Store) {
  store = s;
}

type Values = { verdict: Verdict; note: string; sources: string[] };

let pendingSpan: { start: number; end: number; quote: string } | null = null;
let editing: { name: string; etag: string; base: Annotation } | null = null;
let back: HTMLElement | null = null;

/** The selection inside the text as a code-point span, if any. */
export function selectedSpan(): { start: number; end: number; quote: string } | null {
  const o = state.open;
  if (!o) return null;
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
  const text = o.article.text;
  const a = utf16(range.startContainer, range.startOffset);
  const b = utf16(range.endContainer, range.endOffset);
  if (b <= a) return null;
  return { start: codePointOffset(text, a), end: codePointOffset(text, b), quote: text.slice(a, b) };
}

function place(form: HTMLElement, at: DOMRect) {
  const width = document.documentElement.clientWidth;
  const height = document.documentElement.clientHeight;
  form.style.left = `${Math.max(8, Math.min(window.scrollX + at.left, window.scrollX + width - form.offsetWidth - 8))}px`;
  // Below the selection, or above it when it would run off the bottom.
  let top = at.bottom + 8;
  if (top + form.offsetHeight > height - 8) top = Math.max(8, Math.min(at.top - form.offsetHeight - 8, height - form.offsetHeight - 8));
  form.style.top = `${window.scrollY + top}px`;
}

function showPopover(at: DOMRect, quote: string, values?: Values) {
  const form = $<HTMLFormElement>("popover");
  back = document.activeElement as HTMLElement | null;
  $("popover-quote").textContent = quote;
  // No verdict is chosen for the analyst: Save waits for one.
  for (const r of form.querySelectorAll<HTMLInputElement>("input[name=verdict]")) r.checked = values !== undefined && Number(r.value) === values.verdict;
  $<HTMLTextAreaElement>("popover-note").value = values?.note ?? "";
  $<HTMLTextAreaElement>("popover-sources").value = values?.sources.join("\n") ?? "";
  $("popover-error").textContent = "";
  form.hidden = false;
  check();
  place(form, at);
  (form.querySelector<HTMLInputElement>("input[name=verdict]:checked") ?? form.querySelector<HTMLInputElement>("input[name=verdict]"))!.focus();
}

/** Save is possible once a verdict is chosen and the note fits. */
function check() {
  const chosen = document.querySelector("#popover input[name=verdict]:checked");
  const note = noteStatus($<HTMLTextAreaElement>("popover-note").value);
  const counter = $("popover-counter");
  counter.textContent = note.text;
  counter.classList.toggle("over", note.over > 0);
  $("popover-note").setAttribute("aria-invalid", `${note.over > 0}`);
  $<HTMLButtonElement>("popover-save").disabled = !chosen || note.over > 0;
  $("popover-needs").textContent = chosen ? "" : "Choose a verdict (1, 2 or 3).";
}

export function hidePopover(restore = true) {
  $("popover").hidden = true;
  pendingSpan = null;
  editing = null;
  if (restore && back?.isConnected) back.focus();
  back = null;
}

function formValues(): Values | null {
  const checked = document.querySelector<HTMLInputElement>("#popover input[name=verdict]:checked");
  if (!checked) return null;
  return {
    verdict: Number(checked.value) as Verdict,
    note: $<HTMLTextAreaElement>("popover-note").value,
    sources: $<HTMLTextAreaElement>("popover-sources").value.split("\n").map((s) => s.trim()).filter(Boolean),
  };
}

async function save(ev: Event) {
  ev.preventDefault();
  const o = state.open;
  const values = formValues();
  if (!state.api || !o || !values || noteStatus(values.note).over > 0) return;
  try {
    if (editing) {
      const { name, etag, base } = editing;
      hidePopover();
      await update(name, etag, base, values);
      return;
    }
    if (pendingSpan) {
      const span = pendingSpan;
      const twin = [...o.annotations.values()].find(
        (a) => a.analyst === state.me?.analyst && a.span?.start === span.start && a.span?.end === span.end && a.verdict === values.verdict,
      );
      if (twin) {
        const sure = await ask(
          "You already have this annotation",
          [el("p", {}, "You marked ", el("q", {}, twin.quote), ` as ${VERDICTS[twin.verdict]} already${twin.note ? `: “${twin.note}”` : ""}. Save a second one?`)],
          [
            ["save", "Save a second one"],
            ["cancel", "Cancel"],
          ],
        );
        if (sure !== "save") return;
      }
      const created = await state.api.createAnnotation({
        parent: o.article.name,
        annotation: { span: { start: span.start, end: span.end }, ...values },
        expectedQuote: span.quote,
        requestId: crypto.randomUUID(),
      });
      store.apply(created);
      hidePopover(false);
      window.getSelection()?.removeAllRanges();
      // Back to the text, at the new highlight.
      $("text").focus();
    }
  } catch (e) {
    $("popover-error").textContent = describe(e);
  }
}

/** Who made the current version of an annotation: its last record's actor. */
async function lastActor(name: string): Promise<string> {
  if (!state.api) return "";
  let pageToken = "";
  let actor = "";
  do {
    const page = await state.api.listAnnotationRevisions({ name, pageSize: 1000, pageToken });
    if (page.revisions.length) actor = page.revisions[page.revisions.length - 1].actor;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return actor;
}

function changeRows(list: Change[]): HTMLElement {
  if (!list.length) return el("p", {}, "(nothing differs)");
  return el(
    "table",
    { class: "changes" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Field"), el("th", { scope: "col" }, "Before"), el("th", { scope: "col" }, "After"))),
    el(
      "tbody",
      {},
      ...list.map((c) =>
        el(
          "tr",
          { "data-field": c.field },
          el("th", { scope: "row" }, c.field),
          el("td", {}, c.field === "sources" ? (c.removed?.length ? `− ${c.removed.join("\n− ")}` : "") : c.before),
          el("td", {}, c.field === "sources" ? (c.added?.length ? `+ ${c.added.join("\n+ ")}` : "") : c.after),
        ),
      ),
    ),
  );
}

async function update(name: string, etag: string, base: Annotation, values: Values) {
  const o = state.open;
  if (!state.api || !o) return;
  try {
    const updated = await state.api.updateAnnotation({
      annotation: { name, ...values },
      updateMask: { paths: ["verdict", "note", "sources"] },
      etag,
    });
    store.apply(updated);
  } catch (e) {
    if (!isCode(e, Code.Aborted)) {
      await ask("Not saved", [el("p", {}, describe(e))], [["ok", "OK"]]);
      return;
    }
    // Someone changed it meanwhile: show theirs, never overwrite silently.
    const current = await state.api.getAnnotation({ name });
    store.apply(current);
    const who = await lastActor(name).catch(() => "");
    const theirs = changes(base, current);
    const choice = await ask(
      "This annotation changed meanwhile",
      [
        el("p", { class: "changed-by" }, `${who || "Someone"} changed ${current.analyst === who ? "their" : `${current.analyst}'s`} annotation after you opened it. What they changed:`),
        changeRows(theirs),
        el("p", {}, "What you were saving, against the current version:"),
        changeRows(changes(current, { ...values, span: current.span, quote: current.quote })),
      ],
      [
        ["overwrite", "Apply mine to the current version"],
        ["keep", "Keep the current version"],
      ],
    );
    if (choice === "overwrite") await update(name, current.etag, current, values);
  }
}

export function editAnnotation(name: string, anchor: HTMLElement) {
  const a = state.open?.annotations.get(name);
  if (!a) return;
  showPopover(anchor.getBoundingClientRect(), a.quote, { verdict: a.verdict, note: a.note, sources: a.sources });
  editing = { name, etag: a.etag, base: a };
  pendingSpan = null;
}

export async function deleteAnnotation(name: string) {
  const o = state.open;
  if (!state.api || !o) return;
  const a = o.annotations.get(name);
  if (!a) return;
  const sure = await ask("Delete this annotation?", [el("p", {}, el("q", {}, a.quote), ` — ${VERDICTS[a.verdict]}`)], [
    ["delete", "Delete"],
    ["cancel", "Cancel"],
  ]);
  if (sure !== "delete") return;
  await remove(a, "", ["deleted", "delete"]);
}

/** Deletes `a` (with a moderation `reason`, if any) at the etag shown; a
 * conflict shows what changed meanwhile. The verbs: what the page calls it. */
async function remove(a: Annotation, reason: string, [done, doing]: [string, string]) {
  if (!state.api) return;
  try {
    await state.api.deleteAnnotation({ name: a.name, etag: a.etag, reason });
    store.remove(a.name);
    $("annotation-list-heading").focus();
  } catch (e) {
    if (isCode(e, Code.Aborted)) {
      const current = await state.api.getAnnotation({ name: a.name });
      store.apply(current);
      await ask(`Not ${done}: it changed meanwhile`, [changeRows(changes(a, current)), el("p", {}, `Read it and ${doing} it again if you still mean to.`)], [["ok", "OK"]]);
    } else {
      await ask(`Not ${done}`, [el("p", {}, describe(e))], [["ok", "OK"]]);
    }
  }
}

/** An admin removes another analyst's annotation (moderation): the reason
 * is required, and its history records it for everyone to read. */
export async function moderateAnnotation(name: string) {
  const o = state.open;
  if (!state.api || !o) return;
  const a = o.annotations.get(name);
  if (!a) return;
  const reason = el("textarea", { id: "moderation-reason", rows: "3", maxlength: "1000", "aria-describedby": "moderation-hint" });
  let problem = "";
  for (;;) {
    const hint = problem || "Recorded in its history, which its analyst and every reader can see.";
    const choice = await ask(
      `Remove ${a.analyst}’s annotation?`,
      [
        el("p", {}, el("q", {}, a.quote), ` — ${VERDICTS[a.verdict]} by ${a.analyst}`),
        el("label", { for: "moderation-reason" }, "Reason (required)"),
        reason,
        el("p", { id: "moderation-hint", class: problem ? "error" : "counter", role: problem ? "alert" : "note" }, hint),
      ],
      [
        ["remove", "Remove"],
        ["cancel", "Cancel"],
      ],
    );
    if (choice !== "remove") return;
    if (reason.value.trim()) break;
    problem = "Say why: a removal without a reason is refused.";
  }
  await remove(a, reason.value.trim(), ["removed", "remove"]);
}

export async function showHistory(name: string) {
  if (!state.api) return;
  const rows: Node[] = [];
  let pageToken = "";
  let previous: Annotation | null = null;
  do {
    const page = await state.api.listAnnotationRevisions({ name, pageSize: 100, pageToken });
    for (const r of page.revisions) {
      const a = r.annotation!;
      const kind = EventType[r.type].toLowerCase();
      const list = r.type === EventType.DELETED ? [] : changes(previous, a);
      const why = r.moderationReason ? el("p", { class: "moderation" }, `Removed by a moderator: ${r.moderationReason}`) : "";
      rows.push(el("li", {}, el("strong", {}, kind), ` by ${r.actor}, ${time(r.changeTime)}`, list.length ? changeRows(list) : "", why));
      previous = a;
    }
    pageToken = page.nextPageToken;
  } while (pageToken);
  await ask("History", [el("ol", { class: "history-list" }, ...rows)], [["ok", "Close"]]);
}

/** Opens the popover for the text's selection, if there is one. */
export function annotateSelection(): boolean {
  if (!canWrite() || editing) return false;
  const span = selectedSpan();
  if (!span) return false;
  pendingSpan = span;
  const rect = window.getSelection()!.getRangeAt(0).getBoundingClientRect();
  showPopover(rect, span.quote);
  return true;
}

export function wireAnnotate() {
  const form = $("popover");
  form.addEventListener("submit", (ev) => void save(ev));
  form.addEventListener("input", check);
  form.addEventListener("change", check);
  $("popover-cancel").addEventListener("click", () => hidePopover());
  // Verdict hotkeys: 1, 2, 3 outside the text fields.
  form.addEventListener("keydown", (ev) => {
    const t = ev.target as HTMLElement;
    if (t.tagName === "TEXTAREA" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "1" || ev.key === "2" || ev.key === "3") {
      const r = form.querySelector<HTMLInputElement>(`input[name=verdict][value="${ev.key}"]`)!;
      r.checked = true;
      r.focus();
      check();
      ev.preventDefault();
    }
  });
}
