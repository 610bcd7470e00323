import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  type ConfirmTotpResponse,
  FactorPurpose,
  type KeygateClient,
} from "../../src/client/web.js";
import { actionButton, type Field, form, h } from "./dom.js";
import { describeError } from "./messages.js";

/** Six digits from the app. */
export const appCodeField: Field = {
  name: "code",
  label: "Code from your authenticator app",
  inputmode: "numeric",
  autocomplete: "one-time-code",
  pattern: "[0-9]{6}",
  maxlength: 6,
  code: true,
  hint: "6 digits; a new one every 30 seconds.",
};

export const recoveryCodeField: Field = {
  name: "code",
  label: "Recovery code",
  autocomplete: "off",
  maxlength: 20,
  hint: "One of the codes you saved when you set up your second factor. Each works once.",
};

/** The QR code as an image: the server's SVG never runs as part of the page. */
function qrImage(svg: string): HTMLImageElement {
  const img = h("img", {
    class: "qr",
    alt: "QR code for your authenticator app",
    width: "200",
    height: "200",
  });
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
  return img;
}

/** Recovery codes, shown this once, with a way to keep them. */
export function recoveryCodesBlock(codes: readonly string[]): HTMLElement {
  const list = h("ol", { class: "codes mono", "aria-label": "Recovery codes" });
  list.replaceChildren(...codes.map((c) => h("li", {}, c)));
  const copy = actionButton(
    "Copy the codes",
    async () => {
      await navigator.clipboard?.writeText(codes.join("\n"));
    },
    { class: "secondary small" },
  );
  return h(
    "div",
    { class: "recovery", "data-testid": "recovery-codes" },
    h(
      "p",
      { class: "lead" },
      "Save these recovery codes somewhere safe. Each signs you in once if you lose your authenticator; they are not shown again.",
    ),
    list,
    copy,
  );
}

/**
 * Enrollment: EnrollTotp, the QR code and the secret, then ConfirmTotp with the app's first
 * code. Signed in, or with a pending login that needs a first factor (`pendingLoginId`);
 * `done` gets the answer (recovery codes, and the login's tokens for a pending login).
 */
export async function enrollmentPanel(
  kg: KeygateClient,
  options: {
    pendingLoginId?: string;
    actionProof?: string;
    done(res: ConfirmTotpResponse): Promise<void> | void;
  },
): Promise<HTMLElement> {
  const enrolled = await kg.factors.enrollTotp({
    pendingLoginId: options.pendingLoginId ?? "",
    actionProof: options.actionProof ?? "",
  });
  const f = form({
    fields: [appCodeField],
    submit: "Confirm",
    async onSubmit(values, handle) {
      try {
        const res = await kg.factors.confirmTotp({
          code: values.code as string,
          pendingLoginId: options.pendingLoginId ?? "",
        });
        await options.done(res);
      } catch (error) {
        const { message, field } = describeError(error);
        handle.error(message, field);
      }
    },
  });
  return h(
    "div",
    { class: "enroll" },
    h(
      "p",
      { class: "lead" },
      "Scan this code with your authenticator app (or type the key below), then enter the 6 digits it shows.",
    ),
    qrImage(enrolled.qrCodeSvg),
    h(
      "p",
      { class: "row-sub" },
      "Key: ",
      h("span", { class: "mono", "data-testid": "totp-secret" }, enrolled.secret),
    ),
    f.element,
  );
}

/**
 * The signed-in page's authenticator-app card: set one up, replace the recovery codes, remove
 * it. The last two are confirmed with a current code from the app (an action proof).
 */
export function authenticatorAppCard(
  kg: KeygateClient,
  when: (t: Timestamp | undefined) => string,
  say: (text: string, ok?: boolean) => void,
): HTMLElement {
  const body = h("div", {});
  const head = h("div", { class: "section-head" }, h("h2", { id: "totp-h" }, "Authenticator app"));
  const card = h("section", { class: "card span-all", "aria-labelledby": "totp-h" }, head, body);

  /** A current code from the app, traded for an action proof, then `then` with it. */
  const confirmWithCode = (label: string, then: (proof: string) => Promise<void>) => {
    const f = form({
      fields: [appCodeField],
      submit: label,
      async onSubmit(values, handle) {
        try {
          const res = await kg.factors.verifyFactor({
            purpose: FactorPurpose.SENSITIVE_ACTION,
            factor: { case: "totpCode", value: values.code as string },
          });
          if (res.result.case !== "actionProof") throw new Error("no action proof");
          await then(res.result.value.proof);
        } catch (error) {
          const { message, field } = describeError(error);
          handle.error(message, field);
        }
      },
    });
    body.replaceChildren(f.element);
    f.input("code")?.focus();
  };

  const render = async () => {
    const factors = await kg.factors.listFactors({});
    if (!factors.totpCreateTime) {
      body.replaceChildren(
        h("p", { class: "row-sub" }, "No authenticator app yet."),
        actionButton(
          "Set up an authenticator app",
          async () => {
            try {
              body.replaceChildren(
                await enrollmentPanel(kg, {
                  async done(res) {
                    await render();
                    if (res.recoveryCodes.length > 0)
                      body.append(recoveryCodesBlock(res.recoveryCodes));
                    say("Your authenticator app is set up.");
                  },
                }),
              );
            } catch (error) {
              say(describeError(error).message, false);
            }
          },
          { class: "small" },
        ),
      );
      return;
    }
    body.replaceChildren(
      h(
        "p",
        { class: "row-sub" },
        `Set up ${when(factors.totpCreateTime)} · ${factors.recoveryCodesLeft} recovery codes left`,
      ),
      h(
        "div",
        { class: "links" },
        actionButton(
          "New recovery codes",
          async () =>
            confirmWithCode("Make new codes", async (actionProof) => {
              const res = await kg.factors.regenerateRecoveryCodes({ actionProof });
              await render();
              body.append(recoveryCodesBlock(res.recoveryCodes));
              say("New recovery codes made; the old ones no longer work.");
            }),
          { class: "secondary small" },
        ),
        actionButton(
          "Remove",
          async () =>
            confirmWithCode("Remove the app", async (actionProof) => {
              await kg.factors.removeTotp({ actionProof });
              await render();
              say("The authenticator app was removed.");
            }),
          { class: "danger small", "aria-label": "Remove the authenticator app" },
        ),
      ),
    );
  };
  render().catch((error: unknown) => say(describeError(error).message, false));
  return card;
}
