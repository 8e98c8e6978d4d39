// One product: its description, price and stock, and a quantity to put in the cart.

import { api, session } from "../api.js";
import { navigate } from "../app.js";
import { busy, field, formError, formStatus, h, money, show } from "../dom.js";

export async function render(main, { params: [id], signal }) {
  const [product, stock] = await Promise.all([
    api(`/api/v1/products/${encodeURIComponent(id)}`, { signal }),
    // Stock is shown when inventory answers; the product page does not need it to show.
    api(`/api/v1/inventory/${encodeURIComponent(id)}`, { signal }).catch(() => null),
  ]);
  const available = stock ? stock.available : null;
  const quantity = h("input", { type: "number", name: "quantity", value: "1", min: "1", max: String(Math.min(100, available ?? 100)), required: true, inputmode: "numeric" });
  const status = formStatus();
  const form = h(
    "form",
    { class: "add-to-cart", onsubmit: (event) => addToCart(event, product, status) },
    field("Quantity", quantity),
    h("button", { type: "submit", disabled: available === 0 }, "Add to cart"),
    status,
  );
  show(
    main,
    h("p", {}, h("a", { href: "#/" }, "← Catalog")),
    h(
      "article",
      { class: "product" },
      h("h1", {}, product.name),
      h("p", { class: "price" }, money(product.price, product.currency)),
      h("p", { class: "stock", "data-available": available ?? "" }, stockText(available)),
      h("p", {}, product.description),
      h("p", { class: "meta" }, `${product.category} · SKU ${product.sku}`),
      product.is_active ? form : h("p", { class: "alert" }, "No longer on sale."),
    ),
  );
}

function stockText(available) {
  if (available === null) return "Stock unknown right now";
  if (available === 0) return "Out of stock";
  return `${available} in stock`;
}

async function addToCart(event, product, status) {
  event.preventDefault();
  if (!session.signedIn) {
    navigate(`/login?next=${encodeURIComponent(`/products/${product.id}`)}`);
    return;
  }
  const form = event.target;
  const quantity = Number(form.elements.quantity.value);
  try {
    await busy(form, () => api(`/api/v1/cart/items/${product.id}`, { method: "PUT", body: { quantity } }));
  } catch (error) {
    formError(form, error);
    return;
  }
  status.className = "form-status alert success";
  show(status, `${quantity} × ${product.name} in your cart. `, h("a", { href: "#/cart" }, "Go to the cart"));
}

