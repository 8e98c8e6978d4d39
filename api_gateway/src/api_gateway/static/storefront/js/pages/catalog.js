// The catalog: search, filters and pages, all kept in the address so a search can be
// shared, reloaded and gone back to.

import { api } from "../api.js";
import { errorBox, field, h, money, show } from "../dom.js";

const PAGE_SIZE = 12;

export async function render(main, { query, signal }) {
  const q = query.get("q") || "";
  const category = query.get("category") || "";
  const minPrice = query.get("min_price") || "";
  const maxPrice = query.get("max_price") || "";
  const offset = Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0);

  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Search the catalog", onsubmit: search },
    field("Search", h("input", { type: "search", name: "q", value: q, autocomplete: "off" })),
    field("Category", h("input", { type: "text", name: "category", value: category })),
    field("Lowest price", h("input", { type: "number", name: "min_price", value: minPrice, min: "0", step: "0.01", inputmode: "decimal" })),
    field("Highest price", h("input", { type: "number", name: "max_price", value: maxPrice, min: "0", step: "0.01", inputmode: "decimal" })),
    h("button", { type: "submit" }, "Search"),
  );
  const results = h("section", { "aria-labelledby": "results-heading" });
  show(main, h("h1", {}, q ? `Results for “${q}”` : "Catalog"), form, results);

  const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
  for (const [name, value] of [["q", q], ["category", category], ["min_price", minPrice], ["max_price", maxPrice]]) {
    if (value) params.set(name, value);
  }
  let page;
  try {
    page = await api(`/api/v1/products?${params}`, { signal });
  } catch (error) {
    show(results, h("h2", { id: "results-heading", class: "visually-hidden" }, "Products"), errorBox(error));
    return;
  }
  const first = page.total === 0 ? 0 : offset + 1;
  const last = offset + page.items.length;
  show(
    results,
    h("h2", { id: "results-heading", class: "visually-hidden" }, "Products"),
    h("p", { class: "count", role: "status" }, page.total === 0 ? "No products match." : `Showing ${first}–${last} of ${page.total}${page.total_is_estimate ? "+" : ""}`),
    h("ul", { class: "products" }, page.items.map(card)),
    pager(query, offset, page),
  );
}

function card(product) {
  return h(
    "li",
    { class: "card" },
    h("h3", {}, h("a", { href: `#/products/${product.id}` }, product.name)),
    h("p", { class: "category" }, product.category),
    h("p", { class: "price" }, money(product.price, product.currency)),
  );
}

function pager(query, offset, page) {
  const link = (label, to) => {
    const next = new URLSearchParams(query);
    next.set("offset", String(to));
    return h("a", { href: `#/?${next}`, class: "button secondary" }, label);
  };
  const parts = [];
  if (offset > 0) parts.push(link("Previous page", Math.max(0, offset - PAGE_SIZE)));
  if (offset + page.items.length < page.total) parts.push(link("Next page", offset + PAGE_SIZE));
  return parts.length ? h("nav", { class: "pager", "aria-label": "Pages" }, parts) : null;
}

function search(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(event.target)) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  location.hash = `/?${params}`;
}
