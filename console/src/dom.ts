// Building the page from data without HTML strings, so nothing a request holds can become
// markup (the CSP forbids inline script anyway; this keeps text text).

type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | boolean | ((event: Event) => void)> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (typeof value === "function") element.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) element.setAttribute(name, "");
    else if (value !== false) element.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return element;
}

/** Replaces the page's content and moves focus to it (for screen readers). */
export function show(title: string, ...content: Child[]): void {
  const app = document.getElementById("app");
  if (!app) return;
  document.title = `${title} · AppStack console`;
  app.replaceChildren(h("h1", {}, title), ...content.filter((c): c is Node | string => !!c));
  app.focus({ preventScroll: true });
}

export function toast(message: string): void {
  const box = document.getElementById("toast");
  if (box) box.textContent = message;
}

export function time(text: string | null): string {
  if (!text) return "—";
  const at = new Date(text);
  return Number.isNaN(at.getTime()) ? text : at.toLocaleString();
}

export function badge(status: string): HTMLElement {
  return h("span", { class: `badge badge-${status}` }, status);
}
