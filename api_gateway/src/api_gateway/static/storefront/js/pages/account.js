// Signing in and registering.

import { api, signIn } from "../api.js";
import { navigate, refreshUser } from "../app.js";
import { busy, field, formError, formStatus, h, show } from "../dom.js";

function nextPage(query) {
  const next = query.get("next") || "/";
  // Only a page of this shop: never somewhere a crafted link chose.
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

export function renderLogin(main, { query }) {
  const form = h(
    "form",
    { class: "narrow", onsubmit: (event) => submitLogin(event, nextPage(query)) },
    formStatus(),
    field("E-mail", h("input", { type: "email", name: "username", autocomplete: "username", required: true })),
    field("Password", h("input", { type: "password", name: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Sign in"),
  );
  show(
    main,
    h("h1", {}, "Sign in"),
    form,
    h("p", {}, "New here? ", h("a", { href: `#/register?next=${encodeURIComponent(nextPage(query))}` }, "Create an account")),
  );
}

async function submitLogin(event, next) {
  event.preventDefault();
  const form = event.target;
  try {
    await busy(form, async () => {
      await signIn(form.elements.username.value, form.elements.password.value);
      await refreshUser();
    });
  } catch (error) {
    if (error.status === 401) error.message = "That e-mail and password do not match an account.";
    if (error.status === 429) error.message = `Too many attempts; try again in ${error.retryAfter || "a few"} seconds.`;
    formError(form, error);
    return;
  }
  navigate(next);
}

export function renderRegister(main, { query }) {
  const form = h(
    "form",
    { class: "narrow", onsubmit: (event) => submitRegister(event, nextPage(query)) },
    formStatus(),
    field("Full name", h("input", { type: "text", name: "full_name", autocomplete: "name", required: true, maxlength: "200" })),
    field("E-mail", h("input", { type: "email", name: "email", autocomplete: "email", required: true })),
    field(
      "Password",
      h("input", { type: "password", name: "password", autocomplete: "new-password", required: true, minlength: "8", maxlength: "128" }),
      "8 to 128 characters.",
    ),
    h("button", { type: "submit" }, "Create account"),
  );
  show(main, h("h1", {}, "Create an account"), form, h("p", {}, "Have one? ", h("a", { href: "#/login" }, "Sign in")));
}

async function submitRegister(event, next) {
  event.preventDefault();
  const form = event.target;
  const body = {
    full_name: form.elements.full_name.value,
    email: form.elements.email.value,
    password: form.elements.password.value,
  };
  try {
    await busy(form, async () => {
      await api("/api/v1/auth/register", { method: "POST", body });
      await signIn(body.email, body.password);
      await refreshUser();
    });
  } catch (error) {
    if (error.status === 409) error.message = "An account with this e-mail exists already; sign in instead.";
    formError(form, error);
    return;
  }
  navigate(next);
}
