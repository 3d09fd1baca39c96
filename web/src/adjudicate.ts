// The adjudication panel (reviewers and admins): a contested region's
// annotations by verdict, the final verdict and a required rationale,
// settled with CreateAdjudication at the review's etag; a region changed
// meanwhile is shown as it is now, never overwritten.

import { Code, describe, isCode } from "./api.js";
import { $ } from "./dom.js";
import { VERDICTS } from "./format.js";
import { refreshReview } from "./review.js";
import { state } from "./state.js";
import { currentRegions, groupedByVerdict, intersecting, type RegionInfo } from "./text.js";

let current: { start: number; end: number; etag: string } | null = null;
let onSettled: () => void = () => undefined;
let back: HTMLElement | null = null;

export function setOnSettled(f: () => void) {
  onSettled = f;
}

function fill(region: RegionInfo, status: string) {
  const o = state.open!;
  const review = state.reviews.get(o.article.name)!;
  current = { start: region.start, end: region.end, etag: review.etag };
  $("adj-quote").textContent = o.chars.slice(region.start, region.end).join("");
  const settled = region.settled
    ? `Settled as ${VERDICTS[region.settled.verdict]} by ${region.settled.reviewer}: ${region.settled.rationale}`
    : region.reopened
      ? "Re-opened: an annotation in it changed since it was settled."
      : "Unresolved.";
  $("adj-state").textContent = settled;
  $("adj-status").textContent = status;
  $("adj-groups").replaceChildren(...groupedByVerdict(intersecting(region.start, region.end)));
  // Only the verdicts present may be final.
  const present = new Set(region.contested.verdicts);
  for (const r of document.querySelectorAll<HTMLInputElement>("#adj-form input[name=final]")) {
    r.disabled = !present.has(Number(r.value));
    if (r.disabled) r.checked = false;
  }
  check();
}

function check() {
  const chosen = document.querySelector<HTMLInputElement>("#adj-form input[name=final]:checked");
  const rationale = $<HTMLTextAreaElement>("adj-rationale").value.trim();
  $<HTMLButtonElement>("adj-submit").disabled = !chosen || !rationale;
}

export function openAdjudication(region: RegionInfo) {
  if (!state.open) return;
  back = document.activeElement as HTMLElement | null;
  $("card").hidden = true;
  for (const r of document.querySelectorAll<HTMLInputElement>("#adj-form input[name=final]")) r.checked = false;
  $<HTMLTextAreaElement>("adj-rationale").value = "";
  $("adj-error").textContent = "";
  fill(region, "");
  $<HTMLDialogElement>("adjudication").showModal();
  $("adj-groups").scrollTop = 0;
}

function close() {
  $<HTMLDialogElement>("adjudication").close();
  current = null;
  if (back?.isConnected) back.focus();
}

async function submit(ev: Event) {
  ev.preventDefault();
  const o = state.open;
  if (!state.api || !o || !current) return;
  const chosen = document.querySelector<HTMLInputElement>("#adj-form input[name=final]:checked");
  const rationale = $<HTMLTextAreaElement>("adj-rationale").value.trim();
  if (!chosen || !rationale) return;
  $("adj-error").textContent = "";
  try {
    await state.api.createAdjudication({
      parent: o.article.name,
      adjudication: { span: { start: current.start, end: current.end }, verdict: Number(chosen.value), rationale },
      etag: current.etag,
    });
    await refreshReview(o.article.name).catch(() => undefined);
    close();
    onSettled();
  } catch (e) {
    if (isCode(e, Code.Aborted)) {
      // Someone changed the region meanwhile: show it as it is now.
      const was = current;
      await refreshReview(o.article.name).catch(() => undefined);
      onSettled();
      const now = currentRegions().find((r) => r.start < was.end && r.end > was.start);
      if (now) {
        fill(now, "This region changed since you opened it: it is shown as it is now. Read it again, then settle it.");
      } else {
        $("adj-status").textContent = "This region changed since you opened it and is no longer contested: nothing to settle.";
        $("adj-groups").replaceChildren();
        current = null;
        $<HTMLButtonElement>("adj-submit").disabled = true;
      }
      $("adj-error").textContent = describe(e);
      $("adj-status").focus();
    } else {
      $("adj-error").textContent = describe(e);
    }
  }
}

export function wireAdjudication() {
  $("adj-form").addEventListener("submit", (ev) => void submit(ev));
  $("adj-form").addEventListener("input", check);
  $("adj-form").addEventListener("change", check);
  $("adj-cancel").addEventListener("click", close);
  $<HTMLDialogElement>("adjudication").addEventListener("cancel", (ev) => {
    ev.preventDefault();
    close();
  });
}

/** Annotations changed while the panel is open: show the region's
 * annotations as they are now (the etag stays the one the reviewer read,
 * so settling refuses a state they did not see). */
export function panelChanged() {
  if (!current || !$<HTMLDialogElement>("adjudication").open) return;
  $("adj-groups").replaceChildren(...groupedByVerdict(intersecting(current.start, current.end)));
}
