// For administrators: the catalog and its stock, and every order (ship, deliver,
// refund).

import { api } from "../api.js";
import { announce, busy, errorBox, field, formError, formStatus, h, money, show, statusBadge, when } from "../dom.js";

export async function renderProducts(main, { query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0);
  const page = await api(`/api/v1/products?limit=50&offset=${offset}`, { signal });
  const stocks = await Promise.all(
    page.items.map((product) => api(`/api/v1/inventory/${product.id}`, { signal }).catch(() => null)),
  );
  const rows = page.items.map((product, index) => productRow(product, stocks[index]));
  show(
    main,
    h("h1", {}, "Products & stock"),
    newProductForm(),
    h(
      "div",
      { class: "table-scroll" },
      h(
        "table",
        { class: "lines" },
        h("caption", {}, `${page.total} products`),
        h("thead", {}, h("tr", {}, ["Product", "Price", "Available", "Reserved", ""].map((title) => h("th", { scope: "col" }, title)))),
        h("tbody", {}, rows),
      ),
    ),
    offset + page.items.length < page.total ? h("a", { class: "button secondary", href: `#/admin/products?offset=${offset + 50}` }, "Next page") : null,
  );
}

function productRow(product, stock) {
  const available = h("input", { type: "number", name: "available", min: "0", value: stock ? String(stock.available) : "0", "aria-label": `Stock of ${product.name}`, inputmode: "numeric", required: true });
  const price = h("input", { type: "number", name: "price", min: "0.01", step: "0.01", value: product.price, "aria-label": `Price of ${product.name}`, inputmode: "decimal", required: true });
  const form = h(
    "form",
    { class: "inline", onsubmit: (event) => saveProduct(event, product) },
    price,
    available,
    h("button", { type: "submit", "aria-label": `Save ${product.name}` }, "Save"),
    formStatus(),
  );
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, h("a", { href: `#/products/${product.id}` }, product.name), h("p", { class: "hint" }, product.sku)),
    h("td", { colspan: "2" }, form),
    h("td", {}, stock ? String(stock.reserved) : "–"),
    h("td", {}),
  );
}

async function saveProduct(event, product) {
  event.preventDefault();
  const form = event.target;
  const status = form.querySelector(".form-status");
  try {
    await busy(form, async () => {
      if (form.elements.price.value !== product.price) {
        Object.assign(product, await api(`/api/v1/products/${product.id}`, { method: "PATCH", body: { price: form.elements.price.value } }));
      }
      await api(`/api/v1/inventory/${product.id}`, { method: "PUT", body: { available: Number(form.elements.available.value) } });
    });
  } catch (error) {
    formError(form, error);
    return;
  }
  status.className = "form-status success";
  status.textContent = "Saved.";
}

function newProductForm() {
  const form = h(
    "form",
    { class: "new-product", onsubmit: createProduct },
    formStatus(),
    field("SKU", h("input", { type: "text", name: "sku", required: true })),
    field("Name", h("input", { type: "text", name: "name", required: true })),
    field("Description", h("textarea", { name: "description", rows: "2" })),
    field("Price", h("input", { type: "number", name: "price", min: "0.01", step: "0.01", required: true, inputmode: "decimal" })),
    field("Category", h("input", { type: "text", name: "category", required: true })),
    field("Stock", h("input", { type: "number", name: "available", min: "0", value: "0", required: true, inputmode: "numeric" })),
    h("button", { type: "submit" }, "Add product"),
  );
  return h("details", { class: "card" }, h("summary", {}, "Add a product"), form);
}

async function createProduct(event) {
  event.preventDefault();
  const form = event.target;
  const values = Object.fromEntries(new FormData(form));
  try {
    await busy(form, async () => {
      const product = await api("/api/v1/products", {
        method: "POST",
        body: { sku: values.sku, name: values.name, description: values.description, price: values.price, category: values.category },
      });
      await api(`/api/v1/inventory/${product.id}`, { method: "PUT", body: { available: Number(values.available) } });
    });
  } catch (error) {
    formError(form, error);
    return;
  }
  announce(`${values.name} added.`);
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

export async function renderOrders(main, { query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0);
  const page = await api(`/api/v1/orders?limit=20&offset=${offset}`, { signal });
  show(
    main,
    h("h1", {}, "All orders"),
    page.items.length === 0
      ? h("p", {}, "No orders yet.")
      : h("ul", { class: "orders" }, page.items.map((order) => orderCard(order))),
    offset + page.items.length < page.total ? h("a", { class: "button secondary", href: `#/admin/orders?offset=${offset + 20}` }, "Older orders") : null,
  );
}

function orderCard(order) {
  const card = h("li", { class: "card", "data-order": order.id });
  renderCard(card, order);
  return card;
}

function renderCard(card, order) {
  const actions = [];
  if (order.status === "confirmed") actions.push(transition(card, order, "ship", "Mark shipped"));
  if (order.status === "shipped") actions.push(transition(card, order, "deliver", "Mark delivered"));
  if (["confirmed", "shipped", "delivered"].includes(order.status)) actions.push(refundForm(card, order));
  show(
    card,
    h("h2", {}, h("a", { href: `#/orders/${order.id}` }, `Order of ${when(order.created_at)}`)),
    h(
      "p",
      {},
      statusBadge(order.status),
      " ",
      money(order.total_amount, order.currency),
      order.cancel_reason ? ` (${order.cancel_reason.replaceAll("_", " ")})` : "",
      Number(order.refunded_amount) > 0 ? ` · refunded ${money(order.refunded_amount, order.currency)}` : "",
    ),
    h("p", { class: "hint" }, order.items.map((line) => `${line.quantity} × ${line.product_name}`).join(", ")),
    h("div", { class: "actions" }, actions),
  );
}

function transition(card, order, action, label) {
  return h(
    "button",
    {
      type: "button",
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          const updated = await api(`/api/v1/orders/${order.id}/${action}`, { method: "POST" });
          renderCard(card, updated);
          announce(`Order ${updated.status}.`);
        } catch (error) {
          event.target.disabled = false;
          card.append(errorBox(error));
        }
      },
    },
    label,
  );
}

function refundForm(card, order) {
  const lines = order.items.map((line) =>
    field(`Refund units of ${line.product_name}`, h("input", { type: "number", name: line.product_id, min: "0", max: String(line.quantity), value: "0", inputmode: "numeric" })),
  );
  const form = h(
    "form",
    { class: "refund", onsubmit: (event) => refund(event, card, order) },
    formStatus(),
    lines,
    field("Reason", h("input", { type: "text", name: "reason", maxlength: "200", required: true })),
    h("div", { class: "field check" }, h("input", { type: "checkbox", name: "restock", id: `restock-${order.id}`, checked: true }), h("label", { for: `restock-${order.id}` }, "Put the units back on sale")),
    h("button", { type: "submit" }, "Refund"),
  );
  // The same key for retries of one submission; a new one after it answered.
  form.dataset.key = crypto.randomUUID();
  return h("details", {}, h("summary", {}, "Refund"), form);
}

async function refund(event, card, order) {
  event.preventDefault();
  const form = event.target;
  const lines = order.items
    .map((line) => ({ product_id: line.product_id, quantity: Number(form.elements.namedItem(line.product_id).value) }))
    .filter((line) => line.quantity > 0);
  if (lines.length === 0) {
    formError(form, { message: "Choose at least one unit to refund." });
    return;
  }
  try {
    const made = await busy(form, () =>
      api(`/api/v1/orders/${order.id}/refunds`, {
        method: "POST",
        headers: { "idempotency-key": form.dataset.key },
        body: { lines, restock: form.elements.restock.checked, reason: form.elements.reason.value },
      }),
    );
    announce(`Refunded ${money(made.amount, order.currency)}.`);
    renderCard(card, await api(`/api/v1/orders/${order.id}`));
  } catch (error) {
    // An answer settles the key; a lost connection keeps it, so a retry is the same refund.
    if (error.status) form.dataset.key = crypto.randomUUID();
    formError(form, error);
  }
}
