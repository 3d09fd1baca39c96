// The side list: every annotation of the open article that passes the
// filter, by position, with its note's first lines, its anchor state, a
// link to it, and its actions; changed one item at a time.

import { $, el } from "./dom.js";
import { matches } from "./filters.js";
import { anchorLabel, short, VERDICTS } from "./format.js";
import type { Annotation } from "./gen/factcheck/v1/factcheck_pb.js";
import { mayChange, mayModerate, state } from "./state.js";
import { filterContext } from "./text.js";

export interface ListActions {
  goTo(name: string): void;
  edit(name: string, anchor: HTMLElement): void;
  remove(name: string): void;
  moderate(name: string): void;
  history(name: string): void;
}

let actions: ListActions;
export function setListActions(a: ListActions) {
  actions = a;
}

let shown: Annotation[] = [];
const items = new Map<string, HTMLElement>();

const before = (x: Annotation, y: Annotation) =>
  x.span!.start - y.span!.start || x.span!.end - y.span!.end || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0);

export const linkOf = (name: string) => `#${encodeURIComponent(name)}`;

function item(a: Annotation): HTMLElement {
  const quote = short(a.quote);
  const label = `annotation ‘${quote}’ by ${a.analyst}`;
  const anchor = anchorLabel(a.anchorState);
  const li = el(
    "li",
    { class: `item v${a.verdict}`, "data-name": a.name },
    el(
      "button",
      { type: "button", class: "goto" },
      el("span", { class: `icon v${a.verdict}`, "aria-hidden": "true" }),
      el("q", {}, a.quote),
      el("span", { class: "by" }, ` ${VERDICTS[a.verdict]} · ${a.analyst}`),
    ),
  );
  if (anchor) li.append(el("p", { class: "anchor" }, `⟲ ${anchor}`));
  if (a.note) li.append(el("p", { class: "snippet" }, a.note));
  li.querySelector(".goto")!.addEventListener("click", () => actions.goTo(a.name));
  const row = el("div", { class: "item-actions" });
  row.append(el("a", { class: "link", href: linkOf(a.name), "aria-label": `Link to ${label}` }, "Link"));
  const hist = el("button", { type: "button", class: "history", "aria-label": `History of ${label}` }, "History");
  hist.addEventListener("click", () => actions.history(a.name));
  row.append(hist);
  if (mayChange(a)) {
    const edit = el("button", { type: "button", class: "edit", "aria-label": `Edit ${label}` }, "Edit");
    edit.addEventListener("click", () => actions.edit(a.name, edit));
    const del = el("button", { type: "button", class: "delete", "aria-label": `Delete ${label}` }, "Delete");
    del.addEventListener("click", () => actions.remove(a.name));
    row.append(edit, del);
  } else if (mayModerate(a)) {
    const mod = el("button", { type: "button", class: "moderate", "aria-label": `Remove ${label} (moderation)` }, "Remove…");
    mod.addEventListener("click", () => actions.moderate(a.name));
    row.append(mod);
  }
  li.append(row);
  return li;
}

function count() {
  const total = state.open?.annotations.size ?? 0;
  $("annotation-count").textContent = shown.length === total ? `(${total})` : `(${shown.length} of ${total})`;
  $("tab-list-count").textContent = `${shown.length}`;
}

/** The whole list again (a new article, or a new filter). */
export function renderList() {
  const o = state.open;
  items.clear();
  if (!o) {
    shown = [];
    $("annotation-list").replaceChildren();
    return;
  }
  const ctx = filterContext();
  shown = [...o.annotations.values()].filter((a) => matches(a, state.filter, ctx)).sort(before);
  const lis = shown.map((a) => {
    const li = item(a);
    items.set(a.name, li);
    return li;
  });
  $("annotation-list").replaceChildren(...lis);
  count();
}

/** One annotation changed, appeared or went (`a` undefined). */
export function updateItem(name: string, a: Annotation | undefined) {
  const list = $("annotation-list");
  const old = items.get(name);
  if (old) {
    old.remove();
    items.delete(name);
    shown = shown.filter((x) => x.name !== name);
  }
  if (a && matches(a, state.filter, filterContext())) {
    let lo = 0;
    let hi = shown.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(shown[mid], a) < 0) lo = mid + 1;
      else hi = mid;
    }
    const li = item(a);
    list.insertBefore(li, shown[lo] ? items.get(shown[lo].name)! : null);
    shown.splice(lo, 0, a);
    items.set(name, li);
  }
  count();
}

export function itemOf(name: string): HTMLElement | undefined {
  return items.get(name);
}
