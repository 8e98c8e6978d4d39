// My orders, and one order whose status follows the order stream as it changes.

import { api, ApiError, followEvents } from "../api.js";
import { announce, errorBox, h, money, show, statusBadge, when } from "../dom.js";

const FINAL = new Set(["delivered", "cancelled"]);
const POLL_SECONDS = 5;
const RECONNECT_SECONDS = 3; // EventSource's usual pause before opening a stream again
const STREAM_ATTEMPTS = 3;

export async function renderList(main, { query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get("offset") || "0", 10) || 0);
  const page = await api(`/api/v1/orders?limit=20&offset=${offset}`, { signal });
  if (page.items.length === 0) {
    show(main, h("h1", {}, "My orders"), h("p", {}, "No orders yet. ", h("a", { href: "#/" }, "Browse the catalog")));
    return;
  }
  show(
    main,
    h("h1", {}, "My orders"),
    h(
      "ul",
      { class: "orders" },
      page.items.map((order) =>
        h(
          "li",
          { class: "card" },
          h("h2", {}, h("a", { href: `#/orders/${order.id}` }, `Order of ${when(order.created_at)}`)),
          h("p", {}, statusBadge(order.status), " ", money(order.total_amount, order.currency), ` · ${order.items.length} product${order.items.length === 1 ? "" : "s"}`),
        ),
      ),
    ),
    offset + page.items.length < page.total ? h("a", { class: "button secondary", href: `#/orders?offset=${offset + 20}` }, "Older orders") : null,
  );
}

export async function renderOne(main, { params: [id], signal }) {
  const order = await api(`/api/v1/orders/${encodeURIComponent(id)}`, { signal });
  const status = h("p", { class: "order-status", role: "status", "aria-live": "polite" });
  const timeline = h("ol", { class: "timeline" });
  const cancel = cancelButton(order, main);
  show(
    main,
    h("p", {}, h("a", { href: "#/orders" }, "← My orders")),
    h("h1", {}, `Order of ${when(order.created_at)}`),
    status,
    h("div", { class: "table-scroll" }, itemsTable(order)),
    order.shipping_address ? address(order.shipping_address) : null,
    h("section", { "aria-labelledby": "timeline-heading" }, h("h2", { id: "timeline-heading" }, "History"), timeline),
    cancel,
  );
  const current = { ...order };
  const shown = (next) => {
    Object.assign(current, next);
    renderStatus(status, current);
    if (cancel) cancel.hidden = !["pending", "confirmed"].includes(current.status);
  };
  shown({});
  loadTimeline(timeline, id, signal);
  if (!FINAL.has(order.status)) follow(id, shown, timeline, signal);
}

function renderStatus(container, order) {
  const parts = ["Status: ", statusBadge(order.status)];
  if (order.cancel_reason) parts.push(` (${order.cancel_reason.replaceAll("_", " ")})`);
  if (order.refunded_amount && Number(order.refunded_amount) > 0) parts.push(` · refunded ${money(order.refunded_amount, order.currency)}`);
  container.dataset.status = order.status;
  show(container, parts);
}

function itemsTable(order) {
  return h(
    "table",
    { class: "lines" },
    h("caption", { class: "visually-hidden" }, "Products in this order"),
    h("thead", {}, h("tr", {}, ["Product", "Price", "Quantity", "Total"].map((title) => h("th", { scope: "col" }, title)))),
    h(
      "tbody",
      {},
      order.items.map((line) =>
        h("tr", {}, h("th", { scope: "row" }, line.product_name), h("td", {}, money(line.unit_price, order.currency)), h("td", {}, String(line.quantity)), h("td", {}, money(line.line_total, order.currency))),
      ),
    ),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "3" }, "Total"), h("td", { class: "total" }, money(order.total_amount, order.currency)))),
  );
}

function address(a) {
  return h(
    "section",
    { "aria-labelledby": "address-heading" },
    h("h2", { id: "address-heading" }, "Shipping to"),
    h("address", {}, [a.full_name, a.line1, a.line2, `${a.postal_code} ${a.city}`, a.country].filter(Boolean).flatMap((line) => [line, h("br")])),
  );
}

async function loadTimeline(container, id, signal) {
  try {
    const events = await api(`/api/v1/orders/${encodeURIComponent(id)}/timeline`, { signal });
    show(
      container,
      events.map((event) => h("li", {}, h("time", { datetime: event.at }, when(event.at)), " ", event.event, event.detail ? ` — ${event.detail}` : "")),
    );
  } catch (error) {
    if (error.name !== "AbortError") container.closest("section").hidden = true;
  }
}

/**
 * Follow the order's stream as EventSource would: opened again a few seconds after it
 * drops (the server sends the current status first, so nothing is missed). Where the
 * stream is not available (an error answer, or it cannot be reached three times in a
 * row: an older order service, a proxy that refuses it), ask every few seconds instead.
 */
async function follow(id, shown, timeline, signal) {
  const path = `/api/v1/orders/${encodeURIComponent(id)}`;
  let last = null; // what was shown last: a refund changes the amount, not the status
  const changed = (state) => {
    shown(state);
    const refunded = Number(state.refunded_amount || 0);
    if (last !== null && (state.status !== last.status || refunded !== last.refunded)) {
      announce(state.status !== last.status ? `Order status: ${state.status}` : "A refund was made on this order.");
      loadTimeline(timeline, id, signal);
    }
    last = { status: state.status, refunded };
  };
  const onEvent = (name, data) => {
    if (name === "status" && data && data.status) changed(data);
  };
  for (let unreachable = 0; unreachable < STREAM_ATTEMPTS; ) {
    try {
      await followEvents(`${path}/stream`, onEvent, signal);
      if (FINAL.has(last?.status)) return; // the server ends the stream at a final status
      unreachable = 0;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError) break; // answered, but no stream here
      unreachable += 1;
    }
    if (!(await pause(RECONNECT_SECONDS, signal))) return;
  }
  while (await pause(POLL_SECONDS, signal)) {
    try {
      const order = await api(path, { signal });
      changed(order);
      if (FINAL.has(order.status)) return;
    } catch {
      // a failed poll is tried again at the next tick
    }
  }
}

/** Wait `seconds`; false when the page was left meanwhile. */
async function pause(seconds, signal) {
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return !signal.aborted;
}

function cancelButton(order, main) {
  if (!["pending", "confirmed"].includes(order.status)) return null;
  return h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async (event) => {
        if (!confirm("Cancel this order? Its payment is given back.")) return;
        event.target.disabled = true;
        try {
          await api(`/api/v1/orders/${order.id}/cancel`, { method: "POST" });
          location.reload();
        } catch (error) {
          event.target.disabled = false;
          main.append(errorBox(error));
        }
      },
    },
    "Cancel order",
  );
}
