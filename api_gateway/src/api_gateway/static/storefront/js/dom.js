// Building the page from data, safely: text is always set as text (never parsed as
// HTML), so nothing a product name or an error says can run in the page.

/** `h("a", {href: "#/"}, "Home")`: an element with attributes, handlers and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** Replace what `container` shows. */
export function show(container, ...children) {
  container.replaceChildren(...children.flat().filter(Boolean));
}

const moneyFormats = new Map();

/** "12.99" + "EUR" -> "€12.99", in the reader's locale; money stays a string until shown. */
export function money(amount, currency = "EUR") {
  if (!moneyFormats.has(currency)) {
    moneyFormats.set(currency, new Intl.NumberFormat(undefined, { style: "currency", currency }));
  }
  return moneyFormats.get(currency).format(Number(amount));
}

export function when(timestamp) {
  return new Date(timestamp).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

let fieldCount = 0;

/** A labelled form field; `input` gets an id and its hint and error are tied to it. */
export function field(label, input, hint) {
  const id = input.id || `field-${++fieldCount}`;
  input.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [error.id];
  const parts = [h("label", { for: id }, label), input];
  if (hint) {
    parts.push(h("p", { class: "hint", id: `${id}-hint` }, hint));
    described.push(`${id}-hint`);
  }
  input.setAttribute("aria-describedby", described.join(" "));
  return h("div", { class: "field" }, ...parts, error);
}

/** Show an API error in a form: a summary, and each field's own message by its field. */
export function formError(form, error) {
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  for (const message of form.querySelectorAll(".field-error")) message.hidden = true;
  const fields = error.fieldErrors ? error.fieldErrors() : {};
  for (const [name, text] of Object.entries(fields)) {
    const input = form.elements.namedItem(name) || form.elements.namedItem(name.split(".").pop());
    if (input && input.id) {
      input.setAttribute("aria-invalid", "true");
      const message = document.getElementById(`${input.id}-error`);
      if (message) {
        message.textContent = text;
        message.hidden = false;
      }
    }
  }
  const summary = form.querySelector(".form-status");
  if (summary) {
    summary.className = "form-status alert error";
    summary.textContent = error.message;
    summary.focus();
  }
}

/** A status line in a form: read out by screen readers as it changes. */
export function formStatus() {
  return h("p", { class: "form-status", role: "alert", tabindex: "-1" });
}

/** An error as a page shows it. */
export function errorBox(error) {
  const text = error && error.message ? error.message : String(error);
  return h("p", { class: "alert error", role: "alert" }, text);
}

/** Say something to screen reader users without moving their focus. */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A change after an empty tick is read even when the text repeats.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** Disable a form's controls while `work` runs, so a double click sends nothing twice. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll("button, input, select, textarea")];
  const was = controls.map((control) => control.disabled);
  controls.forEach((control) => {
    control.disabled = true;
  });
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    controls.forEach((control, index) => {
      control.disabled = was[index];
    });
    form.removeAttribute("aria-busy");
  }
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}
