// My notifications: the e-mails the shop sent (or recorded, without SMTP).

import { api } from "../api.js";
import { h, show, when } from "../dom.js";

export async function render(main, { signal }) {
  const page = await api("/api/v1/notifications?limit=50", { signal });
  show(
    main,
    h("h1", {}, "Notifications"),
    page.items.length === 0
      ? h("p", {}, "Nothing yet.")
      : h(
          "ul",
          { class: "notifications" },
          page.items.map((note) =>
            h(
              "li",
              { class: "card" },
              h(
                "details",
                {},
                h("summary", {}, h("strong", {}, note.subject), " ", h("time", { datetime: note.created_at }, when(note.created_at))),
                h("pre", { class: "body" }, note.body),
              ),
            ),
          ),
        ),
  );
}
