import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  startAuthentication,
  startRegistration,
  WebAuthnAbortService,
} from "@simplewebauthn/browser";
import {
  ConnectError,
  errorReason,
  FactorPurpose,
  type KeygateClient,
  type Passkey,
} from "../../src/client/web.js";
import { actionButton, h } from "./dom.js";
import { describeError } from "./messages.js";

/**
 * Passkeys in the web app: the ceremonies (options from FactorService, the browser's
 * navigator.credentials through @simplewebauthn/browser, the answer back) and the
 * signed-in page's "Passkeys" section.
 */

type Scope = { workspaceId?: string; workspaceSlug?: string; pendingLoginId?: string };

/** What to tell a person when the browser or the server refused a passkey. */
export function describePasskeyError(error: unknown): string {
  if (error instanceof ConnectError) {
    if (errorReason(error) === "PASSKEY_INVALID") return "That passkey was not accepted.";
    return describeError(error).message;
  }
  const name = (error as { name?: string } | null)?.name;
  if (name === "NotAllowedError" || name === "AbortError")
    return "The passkey prompt was closed or timed out.";
  if (name === "InvalidStateError") return "This device already holds a passkey for you here.";
  if (name === "NotSupportedError" || name === "SecurityError")
    return "This browser cannot use passkeys on this site.";
  return "Something went wrong with the passkey. Try again.";
}

/** Asks the browser for an assertion and sends it; answers FinishPasskeyAuthentication's result. */
export async function authenticate(
  kg: KeygateClient,
  purpose: FactorPurpose,
  scope: Scope,
  options: { autofill?: boolean } = {},
) {
  const begin = await kg.factors.beginPasskeyAuthentication({ purpose, ...scope });
  const credential: AuthenticationResponseJSON = await startAuthentication({
    optionsJSON: begin.options as unknown as PublicKeyCredentialRequestOptionsJSON,
    useBrowserAutofill: options.autofill ?? false,
  });
  return kg.factors.finishPasskeyAuthentication({
    purpose,
    ...scope,
    credential: credential as never,
  });
}

/** Creates a passkey on this device (signed in, or for an enrollment pending login). */
export async function register(kg: KeygateClient, pendingLoginId = "", name = "") {
  const begin = await kg.factors.beginPasskeyRegistration({ pendingLoginId });
  const credential = await startRegistration({
    optionsJSON: begin.options as unknown as PublicKeyCredentialCreationOptionsJSON,
  });
  return kg.factors.finishPasskeyRegistration({
    credential: credential as never,
    name,
    pendingLoginId,
  });
}

/** Ends a waiting autofill request (leaving the sign-in page). */
export function cancelCeremony(): void {
  WebAuthnAbortService.cancelCeremony();
}

/** Whether the browser offers passkeys in the username field's autofill. */
export async function autofillAvailable(): Promise<boolean> {
  const pkc = globalThis.PublicKeyCredential as
    | { isConditionalMediationAvailable?: () => Promise<boolean> }
    | undefined;
  return (await pkc?.isConditionalMediationAvailable?.()) ?? false;
}

/** The signed-in page's "Passkeys" section. */
export function passkeysCard(
  kg: KeygateClient,
  when: (t: Timestamp | undefined) => string,
  say: (text: string, ok?: boolean) => void,
): HTMLElement {
  const rows = h("ul", { class: "rows", "aria-label": "Your passkeys" });
  const empty = h("p", { class: "row-sub" }, "No passkeys yet.");
  const render = (list: readonly Passkey[]) => {
    empty.hidden = list.length > 0;
    rows.replaceChildren(...list.map(row));
  };
  const reload = async () => render((await kg.factors.listFactors({})).passkeys);

  const row = (p: Passkey): HTMLElement => {
    const title = h("div", { class: "row-title" }, p.name);
    const li = h(
      "li",
      {},
      h(
        "div",
        { class: "row-main" },
        title,
        h(
          "div",
          { class: "row-sub" },
          `${p.backedUp ? "Synced" : "Bound to one device"} · added ${when(p.createTime)} · last used ${when(p.lastUseTime)}`,
        ),
      ),
    );
    const rename = actionButton(
      "Rename",
      async () => {
        const input = h("input", {
          type: "text",
          value: p.name,
          maxlength: "100",
          "aria-label": `New name for ${p.name}`,
        });
        input.value = p.name;
        const save = actionButton(
          "Save",
          async () => {
            try {
              await kg.factors.renamePasskey({ passkeyId: p.id, name: input.value });
              await reload();
              say(`Renamed to ${input.value.trim()}.`);
            } catch (error) {
              say(describeError(error).message, false);
            }
          },
          { class: "small" },
        );
        title.replaceChildren(input, save);
        input.focus();
      },
      { class: "secondary small", "aria-label": `Rename passkey ${p.name}` },
    );
    const remove = actionButton(
      "Delete",
      async () => {
        try {
          // Confirmed with a passkey: the answer is the action proof DeletePasskey needs.
          const proof = await authenticate(kg, FactorPurpose.SENSITIVE_ACTION, {});
          if (proof.result.case !== "actionProof") throw new Error("no action proof");
          await kg.factors.deletePasskey({
            passkeyId: p.id,
            actionProof: proof.result.value.proof,
          });
          await reload();
          say(`Deleted ${p.name}. It no longer signs in.`);
        } catch (error) {
          say(describePasskeyError(error), false);
        }
      },
      { class: "danger small", "aria-label": `Delete passkey ${p.name}` },
    );
    li.append(rename, remove);
    return li;
  };

  const add = actionButton(
    "Add a passkey",
    async () => {
      try {
        const res = await register(kg);
        await reload();
        say(`Added ${res.passkey?.name ?? "a passkey"}.`);
      } catch (error) {
        say(describePasskeyError(error), false);
      }
    },
    { class: "small" },
  );
  reload().catch((error: unknown) => say(describeError(error).message, false));
  return h(
    "section",
    { class: "card span-all", "aria-labelledby": "passkeys-h" },
    h("div", { class: "section-head" }, h("h2", { id: "passkeys-h" }, "Passkeys"), add),
    h(
      "p",
      { class: "lead" },
      "Sign in with your fingerprint, face or screen lock instead of a password.",
    ),
    empty,
    rows,
  );
}
