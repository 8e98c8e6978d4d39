// The storefront: one page, plain ES modules, no build step. Each view is a function
// of the address after `#` (so the gateway serves one file for every page and the back
// button works), rendered into <main>.

import { api, session } from "./api.js";
import { errorBox, h, show } from "./dom.js";
import * as admin from "./pages/admin.js";
import * as account from "./pages/account.js";
import * as cart from "./pages/cart.js";
import * as catalog from "./pages/catalog.js";
import * as notifications from "./pages/notifications.js";
import * as orders from "./pages/orders.js";
import * as product from "./pages/product.js";

const ROUTES = [
  [/^\/$/, catalog.render],
  [/^\/products\/([^/]+)$/, product.render],
  [/^\/login$/, account.renderLogin],
  [/^\/register$/, account.renderRegister],
  [/^\/cart$/, cart.render, { signedIn: true }],
  [/^\/orders$/, orders.renderList, { signedIn: true }],
  [/^\/orders\/([^/]+)$/, orders.renderOne, { signedIn: true }],
  [/^\/notifications$/, notifications.render, { signedIn: true }],
  [/^\/admin\/products$/, admin.renderProducts, { admin: true }],
  [/^\/admin\/orders$/, admin.renderOrders, { admin: true }],
];

/** Who is signed in (`GET /users/me`), or null. */
export const user = { current: null };

const main = document.getElementById("main");
let leave = null; // the current view's clean-up (an open stream, say)

function parseLocation() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  return { path, query: new URLSearchParams(query) };
}

/** Go to a page: `navigate("/orders/1")`. */
export function navigate(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = path;
}

/** Learn who signed in (after signing in, or on load). */
export async function refreshUser() {
  if (!session.signedIn) {
    user.current = null;
  } else {
    try {
      user.current = await api("/api/v1/users/me");
    } catch {
      user.current = null;
    }
  }
  renderNav();
}

function renderNav() {
  const signedIn = user.current !== null;
  const links = [h("li", {}, h("a", { href: "#/" }, "Catalog"))];
  if (signedIn) {
    links.push(
      h("li", {}, h("a", { href: "#/cart" }, "Cart")),
      h("li", {}, h("a", { href: "#/orders" }, "My orders")),
      h("li", {}, h("a", { href: "#/notifications" }, "Notifications")),
    );
    if (user.current.role === "admin") {
      links.push(
        h("li", {}, h("a", { href: "#/admin/products" }, "Products & stock")),
        h("li", {}, h("a", { href: "#/admin/orders" }, "All orders")),
      );
    }
    links.push(
      h(
        "li",
        {},
        h("button", { type: "button", class: "link", onclick: signOut }, `Sign out (${user.current.full_name})`),
      ),
    );
  } else {
    links.push(
      h("li", {}, h("a", { href: "#/login" }, "Sign in")),
      h("li", {}, h("a", { href: "#/register" }, "Register")),
    );
  }
  show(document.getElementById("nav-links"), links);
  markCurrent();
}

function markCurrent() {
  const { path } = parseLocation();
  for (const link of document.querySelectorAll("#nav-links a")) {
    const target = link.getAttribute("href").slice(1);
    if (target === path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function signOut() {
  session.set(null);
  navigate("/");
}

async function route() {
  if (leave) leave();
  leave = null;
  const { path, query } = parseLocation();
  markCurrent();
  for (const [pattern, render, needs = {}] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    if ((needs.signedIn || needs.admin) && !session.signedIn) {
      navigate(`/login?next=${encodeURIComponent(path)}`);
      return;
    }
    if (needs.admin && user.current?.role !== "admin") {
      show(main, h("h1", {}, "Not for you"), h("p", {}, "This page is for administrators."));
      return;
    }
    const controller = new AbortController();
    leave = () => controller.abort();
    main.setAttribute("aria-busy", "true");
    try {
      await render(main, { params: match.slice(1).map(decodeURIComponent), query, signal: controller.signal });
    } catch (error) {
      if (error.name !== "AbortError") show(main, h("h1", {}, "Something went wrong"), errorBox(error));
    } finally {
      main.removeAttribute("aria-busy");
    }
    const heading = main.querySelector("h1");
    if (heading) {
      document.title = `${heading.textContent} · Shop`;
      heading.setAttribute("tabindex", "-1");
      if (moved) heading.focus({ preventScroll: false });
    }
    moved = true;
    return;
  }
  show(main, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/" }, "Back to the catalog")));
}

let moved = false; // focus the new page's heading on navigation, not on the first load

session.onChange(() => {
  // Signed out, or the session ran out: the menu says so at once.
  if (!session.signedIn && user.current !== null) {
    user.current = null;
    renderNav();
  }
});
window.addEventListener("hashchange", route);

async function start() {
  await refreshUser();
  await route();
  document.documentElement.dataset.ready = "true";
  // The first view is on the page and answers input: the time to interactive that
  // the browser tests hold to a budget (`performance.getEntriesByName`).
  performance.mark("storefront-ready");
}

start();
