// The cart and the checkout: change quantities, then a shipping address and a payment
// token (the sandbox's test cards), sent once with an Idempotency-Key.

import { api } from "../api.js";
import { navigate } from "../app.js";
import { announce, busy, errorBox, field, formError, formStatus, h, money, show } from "../dom.js";

const TEST_CARDS = [
  ["tok_ok", "Test card that is approved"],
  ["tok_decline", "Test card that is declined"],
];

// One key per checkout attempt: a retry of the same submission (a timeout, a double
// click) must not order twice, a new submission after a change is a new order.
let checkoutKey = null;

export async function render(main, { signal }) {
  const cart = await api("/api/v1/cart", { signal });
  const lines = h("section", { "aria-labelledby": "lines-heading" });
  show(main, h("h1", {}, "Your cart"), lines);
  renderLines(lines, cart, main);
}

function renderLines(container, cart, main) {
  if (cart.items.length === 0) {
    show(
      container,
      h("h2", { id: "lines-heading", class: "visually-hidden" }, "Lines"),
      h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the catalog")),
    );
    return;
  }
  const table = h(
    "table",
    { class: "lines" },
    h("caption", { class: "visually-hidden" }, "Products in your cart"),
    h("thead", {}, h("tr", {}, ["Product", "Price", "Quantity", "Total", ""].map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, cart.items.map((line) => lineRow(line, cart, container, main))),
    h(
      "tfoot",
      {},
      h("tr", {}, h("th", { scope: "row", colspan: "3" }, "Total"), h("td", { class: "total" }, money(cart.total_amount, cart.currency)), h("td")),
    ),
  );
  show(
    container,
    h("h2", { id: "lines-heading", class: "visually-hidden" }, "Lines"),
    h("div", { class: "table-scroll" }, table),
    checkoutForm(cart),
  );
}

function lineRow(line, cart, container, main) {
  const quantity = h("input", {
    type: "number",
    min: "1",
    max: "100",
    value: String(line.quantity),
    "aria-label": `Quantity of ${line.product_name}`,
    inputmode: "numeric",
    onchange: (event) => update(line, Number(event.target.value), container, main),
  });
  const shortage = line.available !== null && line.available < line.quantity;
  return h(
    "tr",
    {},
    h(
      "th",
      { scope: "row" },
      h("a", { href: `#/products/${line.product_id}` }, line.product_name),
      shortage ? h("p", { class: "hint warning" }, `Only ${line.available} in stock`) : null,
    ),
    h("td", {}, money(line.unit_price, cart.currency)),
    h("td", {}, quantity),
    h("td", {}, money(line.line_total, cart.currency)),
    h(
      "td",
      {},
      h("button", { type: "button", class: "secondary", onclick: () => remove(line, container, main) }, h("span", { "aria-hidden": "true" }, "✕ "), `Remove ${line.product_name}`),
    ),
  );
}

async function update(line, quantity, container, main) {
  try {
    const cart = await api(`/api/v1/cart/items/${line.product_id}`, { method: "PUT", body: { quantity } });
    checkoutKey = null;
    renderLines(container, cart, main);
    announce(`${line.product_name}: quantity ${quantity}. Total ${money(cart.total_amount, cart.currency)}.`);
  } catch (error) {
    container.prepend(errorBox(error));
  }
}

async function remove(line, container, main) {
  try {
    const cart = await api(`/api/v1/cart/items/${line.product_id}`, { method: "DELETE" });
    checkoutKey = null;
    renderLines(container, cart, main);
    announce(`${line.product_name} removed.`);
  } catch (error) {
    container.prepend(errorBox(error));
  }
}

function text(name, label, attributes = {}) {
  return field(label, h("input", { type: "text", name, maxlength: "200", required: true, ...attributes }));
}

function checkoutForm(cart) {
  const cards = h("select", { name: "payment_token", required: true }, TEST_CARDS.map(([value, label]) => h("option", { value }, label)));
  return h(
    "form",
    { class: "checkout", onsubmit: (event) => checkout(event, cart), "aria-labelledby": "checkout-heading" },
    h("h2", { id: "checkout-heading" }, "Checkout"),
    formStatus(),
    h(
      "fieldset",
      {},
      h("legend", {}, "Shipping address"),
      text("full_name", "Full name", { autocomplete: "name" }),
      text("line1", "Address", { autocomplete: "address-line1" }),
      field("Address, second line (optional)", h("input", { type: "text", name: "line2", maxlength: "200", autocomplete: "address-line2" })),
      text("city", "City", { autocomplete: "address-level2" }),
      text("postal_code", "Postal code", { autocomplete: "postal-code" }),
      text("country", "Country code", { autocomplete: "country", minlength: "2", maxlength: "2", pattern: "[A-Za-z]{2}", placeholder: "DE" }),
    ),
    field("Payment", cards, "This shop runs on a payment sandbox: pick a test card."),
    h("button", { type: "submit" }, `Pay ${money(cart.total_amount, cart.currency)}`),
  );
}

async function checkout(event, cart) {
  event.preventDefault();
  const form = event.target;
  const values = Object.fromEntries(new FormData(form));
  const address = {
    full_name: values.full_name,
    line1: values.line1,
    city: values.city,
    postal_code: values.postal_code,
    country: String(values.country).toUpperCase(),
  };
  if (values.line2) address.line2 = values.line2;
  checkoutKey ??= crypto.randomUUID();
  let order;
  try {
    order = await busy(form, () =>
      api("/api/v1/cart/checkout", {
        method: "POST",
        headers: { "idempotency-key": checkoutKey },
        body: { payment_token: values.payment_token, shipping_address: address },
      }),
    );
  } catch (error) {
    if (error.status !== 409 || !error.message.includes("running")) checkoutKey = null;
    formError(form, error);
    return;
  }
  checkoutKey = null;
  if (order.status === "cancelled") {
    const reason =
      order.cancel_reason === "payment_declined"
        ? "Your payment was declined. Nothing was charged; your cart is unchanged. Try another card."
        : "Some of these products are no longer in stock, so the order was not placed. Nothing was charged.";
    formError(form, { message: reason });
    return;
  }
  navigate(`/orders/${order.id}`);
  announce(`Order placed: ${money(order.total_amount, order.currency)}.`);
}
