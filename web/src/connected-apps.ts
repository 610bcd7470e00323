import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Grant, KeygateClient } from "../../src/client/web.js";
import { actionButton, h } from "./dom.js";
import { describeError } from "./messages.js";

/**
 * The signed-in page's "Connected apps": the applications the person let sign them in through
 * this workspace (its OpenID Provider's grants), and a way to take that back. Removing an
 * app's access ends its sessions, so its tokens stop working, and forgets the consent, so it
 * asks again next time.
 */

/** What a person reads for a grant's scopes. */
const scopeWords: Record<string, string> = {
  openid: "your account id",
  email: "your email address",
  profile: "your profile",
  offline_access: "staying signed in",
};

export function connectedAppsCard(
  kg: KeygateClient,
  when: (t: Timestamp | undefined) => string,
  say: (text: string, ok?: boolean) => void,
): HTMLElement {
  const rows = h("ul", { class: "rows", "aria-label": "Connected apps" });
  const empty = h("p", { class: "row-sub" }, "No application signs you in with this account.");
  const render = (list: readonly Grant[]) => {
    empty.hidden = list.length > 0;
    rows.replaceChildren(...list.map(row));
  };
  const reload = async () => render((await kg.auth.listGrants({ pageSize: 100 })).grants);

  const row = (g: Grant): HTMLElement => {
    const name = g.clientName || g.clientId;
    const may = g.scopes.map((s) => scopeWords[s] ?? s).join(", ");
    return h(
      "li",
      {},
      h(
        "div",
        { class: "row-main" },
        h("div", { class: "row-title" }, name),
        h(
          "div",
          { class: "row-sub" },
          `${may || "no scopes"} · connected ${when(g.createTime)} · last used ${when(g.lastUseTime)}`,
        ),
      ),
      actionButton(
        "Remove access",
        async () => {
          try {
            await kg.auth.revokeGrant({ clientId: g.clientId });
            await reload();
            say(`${name} no longer has access. It will ask you again next time.`);
          } catch (error) {
            say(describeError(error).message, false);
          }
        },
        { class: "danger small", "aria-label": `Remove access: ${name}` },
      ),
    );
  };

  reload().catch((error: unknown) => say(describeError(error).message, false));
  return h(
    "section",
    { class: "card span-all", "aria-labelledby": "apps-h" },
    h("div", { class: "section-head" }, h("h2", { id: "apps-h" }, "Connected apps")),
    h("p", { class: "lead" }, "Applications you signed in to with this account."),
    empty,
    rows,
  );
}
