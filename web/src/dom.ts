// Small DOM helpers shared by the views, and the one modal dialog.

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

/** A modal dialog; resolves with the value of the button pressed ("" for
 * Escape). Focus goes back where it was. */
export function ask(title: string, body: Node[], buttons: [string, string][]): Promise<string> {
  const dialog = $<HTMLDialogElement>("dialog");
  const back = document.activeElement as HTMLElement | null;
  $("dialog-title").textContent = title;
  $("dialog-body").replaceChildren(...body);
  $("dialog-actions").replaceChildren(...buttons.map(([value, label]) => el("button", { value }, label)));
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) =>
    dialog.addEventListener(
      "close",
      () => {
        if (back?.isConnected) back.focus();
        resolve(dialog.returnValue);
      },
      { once: true },
    ),
  );
}

/** Sources as list items: http(s) URLs as links, anything else as text. */
export function sourceItems(sources: string[], isLink: (s: string) => boolean): HTMLElement {
  return el("ul", { class: "sources" }, ...sources.map((s) => el("li", {}, isLink(s) ? el("a", { href: s.trim(), rel: "noreferrer noopener", target: "_blank" }, s) : s)));
}
