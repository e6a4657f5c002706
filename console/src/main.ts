// The console's shell: hash routes, the navigation, and who is signed in.

import "./style.css";
import { ApiError, call, signOut, signedIn } from "./api";
import { h, show, toast } from "./dom";
import { adminPage, loginPage, newScope, requestPage, requestsPage } from "./pages";
import type { WhoAmI } from "./types";

let me: WhoAmI | null = null;

function navigation(): void {
  const nav = document.getElementById("nav");
  if (!nav) return;
  if (!me) {
    nav.replaceChildren();
    return;
  }
  const links = [h("a", { href: "#/requests" }, "Requests")];
  if (me.roles.includes("admin")) links.push(h("a", { href: "#/admin" }, "Operations"));
  nav.replaceChildren(
    ...links,
    h("span", { class: "who" }, me.email || me.subject),
    h("button", { type: "button", class: "secondary", onclick: () => { signOut(); me = null; location.hash = "#/login"; } }, "Sign out"),
  );
}

async function route(): Promise<void> {
  const path = location.hash.replace(/^#/, "") || "/requests";
  if (!signedIn() || path === "/login") {
    me = null;
    navigation();
    loginPage(() => { location.hash = "#/requests"; void route(); });
    return;
  }
  try {
    me ??= await call<WhoAmI>("GET", "/v1/auth/me");
    navigation();
    const request = path.match(/^\/requests\/([^/]+)$/);
    if (request) await requestPage(decodeURIComponent(request[1]));
    else if (path === "/admin") await adminPage();
    else await requestsPage();
  } catch (error) {
    if (error instanceof ApiError && error.httpStatus === 401) {
      signOut();
      location.hash = "#/login";
      return;
    }
    newScope();
    show("Something went wrong", h("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error)));
    toast("");
  }
}

window.addEventListener("hashchange", () => void route());
void route();
