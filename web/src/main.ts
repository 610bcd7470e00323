import "./styles.css";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type AuthorizationRequest,
  Code,
  ConnectError,
  createKeygateClient,
  errorReason,
  FactorPurpose,
  FactorType,
  type GetSessionResponse,
  type Membership,
  OtpPurpose,
  type PendingLogin,
  Role,
  type Session,
  sessionStorageTokenStore,
} from "../../src/client/web.js";
import {
  appCodeField,
  authenticatorAppCard,
  enrollmentPanel,
  recoveryCodeField,
  recoveryCodesBlock,
} from "./authenticator-app.js";
import { connectedAppsCard } from "./connected-apps.js";
import { actionButton, type Field, form, h, linkButton } from "./dom.js";
import { describeError } from "./messages.js";
import {
  authenticate,
  autofillAvailable,
  cancelCeremony,
  describePasskeyError,
  passkeysCard,
  register,
} from "./passkeys.js";

const meta = (name: string) =>
  document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? "";
const defaultWorkspaceId = meta("keygate-workspace-id");
const defaultWorkspaceSlug = meta("keygate-workspace-slug");

// Keygate only through connect-web; the session lives in this tab's sessionStorage.
const kg = createKeygateClient({
  baseUrl: location.origin,
  transport: "connect",
  tokens: sessionStorageTokenStore(),
  ...(defaultWorkspaceId ? { workspaceId: defaultWorkspaceId } : {}),
});

const app = document.getElementById("app") as HTMLElement;
const account = document.getElementById("account") as HTMLElement;

/** The workspace public forms start from: the last one used in this browser, else the default. */
const remembered = {
  get workspace() {
    return localStorage.getItem("keygate.workspace") || defaultWorkspaceSlug || "";
  },
  set workspace(slug: string) {
    localStorage.setItem("keygate.workspace", slug);
  },
  email: "",
};

// ---------------------------------------------------------------------------------------------
// Layout

function show(
  options: { title: string; lead?: string; banner?: string; wide?: boolean },
  ...body: (Node | null)[]
) {
  // A passkey prompt still waiting in the username field belongs to the page being left.
  cancelCeremony();
  app.className = options.wide ? "wide" : "";
  const heading = h("h1", { tabindex: "-1" }, options.title);
  const content = options.wide
    ? h("div", {}, h("div", { class: "section-head" }, heading), ...body)
    : h(
        "section",
        { class: "card", "aria-labelledby": "" },
        options.banner ? h("p", { class: "banner", role: "status" }, options.banner) : null,
        heading,
        options.lead ? h("p", { class: "lead" }, options.lead) : null,
        ...body,
      );
  app.replaceChildren(content);
  document.title = `${options.title} · Keygate`;
  // Keyboard and screen-reader users land on the first field, or on the heading.
  const first = app.querySelector<HTMLInputElement>("input");
  (first ?? heading).focus();
}

function links(...items: (Node | null)[]) {
  return h("div", { class: "links" }, ...items);
}

const workspaceField = (): Field => ({
  name: "workspace",
  label: "Workspace",
  value: remembered.workspace,
  autocomplete: "organization",
  hint: "The short name of your organisation's workspace.",
});
const emailField = (value = remembered.email, autocomplete = "email"): Field => ({
  name: "email",
  label: "Email",
  type: "email",
  autocomplete,
  value,
});
const codeField: Field = {
  name: "code",
  label: "Code",
  inputmode: "numeric",
  autocomplete: "one-time-code",
  pattern: "[0-9]{6}",
  maxlength: 6,
  code: true,
  hint: "6 digits, from the email we just sent.",
};
const newPasswordField: Field = {
  name: "password",
  label: "New password",
  type: "password",
  autocomplete: "new-password",
  minlength: 8,
  hint: "At least 8 characters. Any characters work; a long phrase is best.",
};

function fail(handle: { error(message: string, field?: string): void }, error: unknown) {
  const { message, field } = describeError(error);
  handle.error(message, field);
}

// ---------------------------------------------------------------------------------------------
// Signing in to an application (the workspace's OpenID Provider)

/**
 * An application sent the browser here to sign in (/ui/authorize?request=<id>). The request
 * is kept in this tab while the person signs in, whichever way they do; once signed in, the
 * next page is the application's (after consent, for a third-party one) instead of home.
 */
const pendingAuthorization = {
  get id(): string | null {
    return sessionStorage.getItem("keygate.authorization");
  },
  set id(value: string | null) {
    if (value === null) sessionStorage.removeItem("keygate.authorization");
    else sessionStorage.setItem("keygate.authorization", value);
  },
};

/**
 * The request as the signed-in person sees it: with their token, needsConsent says whether they
 * allowed the client everything it asks for before. A stored session that no longer
 * authenticates (ended, or its membership disabled) is dropped, and the request read as anyone
 * reads it: the person signs in afresh.
 */
async function readAuthorizationRequest(requestId: string) {
  try {
    return await kg.oauth.getAuthorizationRequest({ requestId });
  } catch (error) {
    if (
      !(error instanceof ConnectError) ||
      (error.code !== Code.Unauthenticated && error.code !== Code.PermissionDenied)
    ) {
      throw error;
    }
    await kg.tokens.set(undefined);
    return kg.oauth.getAuthorizationRequest({ requestId });
  }
}

async function authorizeStart(requestId: string) {
  const { request } = await readAuthorizationRequest(requestId);
  if (!request) throw new Error("the authorization request answered nothing");
  pendingAuthorization.id = request.id;
  remembered.workspace = request.workspaceSlug;
  if (request.loginHint) remembered.email = request.loginHint;
  const tokens = await kg.tokens.get();
  if (tokens && tokens.workspaceId === request.workspaceId && !request.signInAfter) {
    return authorizeContinue(request);
  }
  signIn(`Sign in to continue to ${request.clientName}.`);
}

/** Signed in with a request pending: consent if the client is a third party, then back. */
async function authorizeContinue(known?: AuthorizationRequest): Promise<void> {
  const requestId = known?.id ?? pendingAuthorization.id;
  if (!requestId) return home();
  let request = known;
  try {
    // Asked again once signed in: the answer depends on who is (their remembered consent).
    request ??= (await readAuthorizationRequest(requestId)).request;
  } catch (error) {
    pendingAuthorization.id = null;
    if (error instanceof ConnectError && error.code === Code.NotFound) {
      return home(
        "The application's sign-in request has expired. Start again from the application.",
      );
    }
    throw error;
  }
  if (!request) return home();
  const accept = async () => {
    try {
      const { redirectTo } = await kg.oauth.acceptAuthorizationRequest({ requestId });
      pendingAuthorization.id = null;
      location.assign(redirectTo);
    } catch (error) {
      if (errorReason(error) === "LOGIN_REQUIRED") {
        await kg.tokens.set(undefined);
        return signIn(`${request.clientName} asks you to sign in again.`);
      }
      pendingAuthorization.id = null;
      throw error;
    }
  };
  if (!request.needsConsent) return accept();
  const scopes = request.scopes.filter((s) => s !== "openid");
  show(
    {
      title: `Allow ${request.clientName}?`,
      lead: `${request.clientName} wants to sign you in with your ${request.workspaceName} account.`,
    },
    ...(request.clientRegisteredDynamically
      ? [
          h(
            "p",
            { class: "banner warning", role: "note" },
            `${request.workspaceName} has not verified this application: its name is its own claim. Allow it only if you started this from an application you trust.`,
          ),
        ]
      : []),
    h(
      "ul",
      { class: "rows", "aria-label": "What it asks for" },
      h("li", {}, "Know who you are (your account's id)"),
      ...scopes.map((scope) => h("li", {}, scopeText[scope] ?? scope)),
      ...request.resources.map((resource) => h("li", {}, `Act for you at ${resource}`)),
    ),
    h(
      "div",
      { class: "links" },
      actionButton("Allow", accept),
      actionButton(
        "Deny",
        async () => {
          const { redirectTo } = await kg.oauth.rejectAuthorizationRequest({ requestId });
          pendingAuthorization.id = null;
          location.assign(redirectTo);
        },
        { class: "secondary" },
      ),
    ),
  );
}

const scopeText: Record<string, string> = {
  email: "Your email address, and whether it is verified",
  profile: "Your profile",
  offline_access: "Stay signed in to it while you are away",
};

// ---------------------------------------------------------------------------------------------
// Signed out

/** After a passkey check: the session, or the workspace's next step. */
async function passkeyDone(res: Awaited<ReturnType<typeof authenticate>>) {
  if (res.result.case !== "tokens") throw new Error("the sign-in answered no tokens");
  await home("You are signed in.");
}

function signIn(banner?: string) {
  account.replaceChildren();
  const workspaceScope = (slug: string) =>
    slug ? { workspaceSlug: slug } : defaultWorkspaceId ? { workspaceId: defaultWorkspaceId } : {};
  const f = form({
    fields: [
      // "webauthn": the browser offers this site's passkeys in the field's autofill.
      emailField(remembered.email, "username webauthn"),
      {
        name: "password",
        label: "Password",
        type: "password",
        autocomplete: "current-password",
      },
      workspaceField(),
    ],
    submit: "Sign in",
    async onSubmit(values, handle) {
      remembered.email = values.email as string;
      try {
        const res = await kg.auth.login({
          email: values.email as string,
          password: values.password as string,
          workspaceSlug: values.workspace as string,
        });
        remembered.workspace = values.workspace as string;
        if (res.result.case === "pendingLogin")
          return secondStep(
            res.result.value.pendingLoginId,
            values.email as string,
            res.result.value,
          );
        await home("You are signed in.");
      } catch (error) {
        if (errorReason(error) === "EMAIL_NOT_VERIFIED")
          return verifyEmail(values.email as string, describeError(error).message);
        fail(handle, error);
      }
    },
    extra: actionButton(
      "Sign in with a passkey",
      async () => {
        f.clear();
        const slug = f.input("workspace")?.value.trim() ?? "";
        try {
          await passkeyDone(
            await authenticate(kg, FactorPurpose.PASSKEY_SIGN_IN, workspaceScope(slug)),
          );
          if (slug) remembered.workspace = slug;
        } catch (error) {
          f.error(describePasskeyError(error));
        }
      },
      { class: "secondary" },
    ),
  });
  show(
    {
      title: "Sign in",
      lead: "Welcome back. Sign in to your workspace.",
      ...(banner ? { banner } : {}),
    },
    f.element,
    links(
      linkButton("Create an account", () => signUp()),
      linkButton("Email me a sign-in link", () => magicLink()),
      linkButton("Forgot password?", () => forgotPassword()),
    ),
  );
  // Conditional mediation: the passkeys wait in the email field's autofill while the page
  // is open; picking one signs in without typing anything.
  const slug = remembered.workspace;
  void autofillAvailable().then(async (available) => {
    if (!available || (!slug && !defaultWorkspaceId)) return;
    try {
      await passkeyDone(
        await authenticate(kg, FactorPurpose.PASSKEY_SIGN_IN, workspaceScope(slug), {
          autofill: true,
        }),
      );
    } catch (error) {
      // Only a passkey the server turned down is worth telling: the browser's own refusals
      // (the page was left, the button was used instead, no passkey here) asked nothing of
      // the person.
      if (errorReason(error) === "PASSKEY_INVALID" && f.element.isConnected)
        f.error(describePasskeyError(error));
    }
  });
}

function secondStep(pendingLoginId: string, email: string, pending?: PendingLogin) {
  const factors = pending?.factors ?? [FactorType.EMAIL_CODE];
  if (pending?.enrollmentRequired) return enrollFirstFactor(pendingLoginId);
  if (factors.includes(FactorType.TOTP)) return appStep(pendingLoginId, factors);
  if (factors.includes(FactorType.PASSKEY) && !factors.includes(FactorType.EMAIL_CODE)) {
    return passkeyStep(pendingLoginId, factors);
  }
  const f = form({
    fields: [codeField],
    submit: "Continue",
    async onSubmit(values, handle) {
      try {
        await kg.otp.verifyOtp({
          purpose: OtpPurpose.LOGIN_SECOND_STEP,
          pendingLoginId,
          code: values.code as string,
        });
        await home("You are signed in.");
      } catch (error) {
        fail(handle, error);
      }
    },
    extra: actionButton(
      "Send a new code",
      async () => {
        try {
          await kg.otp.sendOtp({ purpose: OtpPurpose.LOGIN_SECOND_STEP, pendingLoginId });
          f.ok("A new code is on its way.");
        } catch (error) {
          fail(f, error);
        }
      },
      { class: "secondary" },
    ),
  });
  show(
    {
      title: "Check your email",
      lead: `Your workspace asks for a second step. Enter the code we sent to ${email}.`,
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

/**
 * The second step with the workspace's authenticator app, or (`recovery`) one of the
 * recovery codes; links to the other factors the pending login lists.
 */
function appStep(pendingLoginId: string, factors: readonly FactorType[], recovery = false) {
  const f = form({
    fields: [recovery ? recoveryCodeField : appCodeField],
    submit: "Continue",
    async onSubmit(values, handle) {
      try {
        await kg.factors.verifyFactor({
          purpose: FactorPurpose.LOGIN_SECOND_STEP,
          pendingLoginId,
          factor: {
            case: recovery ? "recoveryCode" : "totpCode",
            value: values.code as string,
          },
        });
        await home("You are signed in.");
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: recovery ? "Use a recovery code" : "Confirm it is you",
      lead: recovery
        ? "Enter one of the recovery codes you saved."
        : "Your workspace asks for a second step: enter the code from your authenticator app.",
    },
    f.element,
    links(
      factors.includes(FactorType.PASSKEY)
        ? linkButton("Use a passkey instead", () => passkeyStep(pendingLoginId, factors))
        : null,
      !recovery && factors.includes(FactorType.RECOVERY_CODE)
        ? linkButton("Use a recovery code", () => appStep(pendingLoginId, factors, true))
        : null,
      recovery && factors.includes(FactorType.TOTP)
        ? linkButton("Use the authenticator app", () => appStep(pendingLoginId, factors))
        : null,
      linkButton("Back to sign in", () => signIn()),
    ),
  );
}

/** The second step with a passkey of this workspace. */
function passkeyStep(pendingLoginId: string, factors: readonly FactorType[] = []) {
  const message = h("p", { class: "message", role: "alert", "aria-live": "assertive" });
  const use = actionButton("Use a passkey", async () => {
    message.className = "message";
    message.textContent = "";
    try {
      await passkeyDone(
        await authenticate(kg, FactorPurpose.LOGIN_SECOND_STEP, { pendingLoginId }),
      );
    } catch (error) {
      message.className = "message error";
      message.textContent = describePasskeyError(error);
    }
  });
  show(
    {
      title: "Confirm it is you",
      lead: "Your workspace asks for a second step: use a passkey you added to it.",
    },
    message,
    use,
    links(
      factors.includes(FactorType.TOTP)
        ? linkButton("Use the authenticator app", () => appStep(pendingLoginId, factors))
        : null,
      factors.includes(FactorType.RECOVERY_CODE)
        ? linkButton("Use a recovery code", () => appStep(pendingLoginId, factors, true))
        : null,
      linkButton("Back to sign in", () => signIn()),
    ),
  );
}

/**
 * A workspace that requires a factor, and a member with none yet: set up a passkey or an
 * authenticator app with the pending login; the first factor finishes the sign-in.
 */
function enrollFirstFactor(pendingLoginId: string) {
  const message = h("p", { class: "message", role: "alert", "aria-live": "assertive" });
  const app = actionButton(
    "Set up an authenticator app",
    async () => {
      try {
        const panel = await enrollmentPanel(kg, {
          pendingLoginId,
          async done(res) {
            if (!res.tokens) throw new Error("the enrollment answered no tokens");
            show(
              { title: "You are set up", lead: "Your authenticator app is ready." },
              recoveryCodesBlock(res.recoveryCodes),
              actionButton("Continue", () => home("You are signed in.")),
            );
          },
        });
        show(
          {
            title: "Set up an authenticator app",
            lead: "Your workspace asks every member for a second factor.",
          },
          panel,
          links(linkButton("Back", () => enrollFirstFactor(pendingLoginId))),
        );
      } catch (error) {
        message.className = "message error";
        message.textContent = describeError(error).message;
      }
    },
    { class: "secondary" },
  );
  show(
    {
      title: "Set up a second factor",
      lead: "Your workspace asks every member for a second factor: a passkey on this device, or an authenticator app on your phone.",
    },
    message,
    h(
      "div",
      { class: "links" },
      actionButton("Set up a passkey", async () => enrollPasskey(pendingLoginId)),
      app,
    ),
    links(linkButton("Back to sign in", () => signIn())),
  );
}

/** Setting up a passkey as the first factor, with the pending login. */
function enrollPasskey(pendingLoginId: string) {
  const message = h("p", { class: "message", role: "alert", "aria-live": "assertive" });
  const add = actionButton("Set up a passkey", async () => {
    message.className = "message";
    message.textContent = "";
    try {
      const res = await register(kg, pendingLoginId);
      if (!res.tokens) throw new Error("the enrollment answered no tokens");
      await home("Your passkey is set up and you are signed in.");
    } catch (error) {
      message.className = "message error";
      message.textContent = describePasskeyError(error);
    }
  });
  show(
    {
      title: "Set up a passkey",
      lead: "Your workspace asks every member for a second factor. Add a passkey on this device to continue.",
    },
    message,
    add,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function signUp() {
  if (!defaultWorkspaceId) {
    show(
      {
        title: "Create an account",
        lead: "Sign-up here is not available: ask your workspace for an invitation.",
      },
      links(linkButton("Back to sign in", () => signIn())),
    );
    return;
  }
  const f = form({
    fields: [emailField(), newPasswordField],
    submit: "Create account",
    async onSubmit(values, handle) {
      remembered.email = values.email as string;
      try {
        await kg.auth.signUp({
          email: values.email as string,
          password: values.password as string,
        });
        remembered.workspace = defaultWorkspaceSlug;
        verifyEmail(
          values.email as string,
          "Account created. We emailed you a code to confirm your address.",
        );
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: "Create an account",
      lead: `You will join the ${defaultWorkspaceSlug || "default"} workspace.`,
    },
    f.element,
    links(linkButton("I already have an account", () => signIn())),
  );
}

function verifyEmail(email: string, banner?: string) {
  const f = form({
    fields: [emailField(email), codeField],
    submit: "Verify email",
    async onSubmit(values, handle) {
      try {
        await kg.auth.verifyEmail({
          proof: {
            case: "code",
            value: {
              email: values.email as string,
              code: values.code as string,
              workspaceSlug: remembered.workspace,
            },
          },
        });
        signIn("Your email address is verified. You can sign in now.");
      } catch (error) {
        fail(handle, error);
      }
    },
    extra: actionButton(
      "Send a new code",
      async () => {
        try {
          const address = f.input("email")?.value.trim() ?? email;
          await kg.auth.sendEmailVerification({
            email: address,
            workspaceSlug: remembered.workspace,
          });
          f.ok("If that address has an account, a new code is on its way.");
        } catch (error) {
          fail(f, error);
        }
      },
      { class: "secondary" },
    ),
  });
  show(
    {
      title: "Verify your email",
      lead: "Enter the 6-digit code from the email we sent you.",
      ...(banner ? { banner } : {}),
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function magicLink() {
  const f = form({
    fields: [emailField(), workspaceField()],
    submit: "Email me a link",
    async onSubmit(values, handle) {
      remembered.email = values.email as string;
      try {
        await kg.auth.requestMagicLink({
          email: values.email as string,
          workspaceSlug: values.workspace as string,
        });
        remembered.workspace = values.workspace as string;
        handle.ok("If that address has an account, a sign-in link is on its way. It works once.");
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: "Sign in with a link",
      lead: "We email you a link that signs you in, no password needed.",
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function forgotPassword() {
  const f = form({
    fields: [emailField(), workspaceField()],
    submit: "Send reset instructions",
    async onSubmit(values, handle) {
      remembered.email = values.email as string;
      try {
        await kg.auth.requestPasswordReset({
          email: values.email as string,
          workspaceSlug: values.workspace as string,
        });
        remembered.workspace = values.workspace as string;
        resetWithCode(values.email as string);
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: "Reset your password",
      lead: "We email you a link or a code to choose a new password.",
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function resetWithCode(email: string) {
  const f = form({
    fields: [emailField(email), codeField, newPasswordField],
    submit: "Set new password",
    async onSubmit(values, handle) {
      try {
        await kg.auth.resetPassword({
          proof: {
            case: "code",
            value: {
              email: values.email as string,
              code: values.code as string,
              workspaceSlug: remembered.workspace,
            },
          },
          newPassword: values.password as string,
        });
        signIn(
          "Your password was changed and every session was signed out. Sign in with the new password.",
        );
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: "Choose a new password",
      lead: "If that address has an account, we emailed it. Got a link? Open it. Got a code? Enter it here.",
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function resetWithLink(token: string) {
  const f = form({
    fields: [newPasswordField],
    submit: "Set new password",
    async onSubmit(values, handle) {
      try {
        await kg.auth.resetPassword({
          proof: { case: "token", value: token },
          newPassword: values.password as string,
        });
        signIn(
          "Your password was changed and every session was signed out. Sign in with the new password.",
        );
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    { title: "Choose a new password", lead: "Every session of your account will be signed out." },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

function acceptInvitation(token: string) {
  const f = form({
    // Optional: an account that already has a proven password may keep it; the server says
    // when one is needed.
    fields: [
      {
        ...newPasswordField,
        required: false,
        hint: "Needed for a new account. If you already have one, leave it empty to keep your password.",
      },
    ],
    submit: "Accept and sign in",
    async onSubmit(values, handle) {
      try {
        await kg.auth.acceptInvitation({ token, password: values.password as string });
        await home("Welcome! Your account is ready.");
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    { title: "Accept your invitation", lead: "Join the workspace you were invited to." },
    f.element,
  );
}

/**
 * A sign-in link asks for a click before it is used: opened on page load, an attacker's own
 * link would sign a victim into the attacker's account (login CSRF), and mail scanners that
 * open links would use them up. Nothing about the link is shown, since the API cannot tell
 * whose it is without consuming it.
 */
function confirmMagicLink(token: string) {
  const f = form({
    fields: [],
    submit: "Continue",
    async onSubmit(_values, handle) {
      try {
        await kg.auth.consumeMagicLink({ token });
        await home("You are signed in.");
      } catch (error) {
        fail(handle, error);
      }
    },
  });
  show(
    {
      title: "Sign in with your link",
      lead: "Continue to sign in with the link you were emailed. If you did not ask for one, close this page.",
    },
    f.element,
    links(linkButton("Back to sign in", () => signIn())),
  );
}

async function linkOutcome(title: string, run: () => Promise<void>) {
  show({ title, lead: "One moment…" });
  try {
    await run();
  } catch (error) {
    show(
      { title, lead: describeError(error).message },
      links(linkButton("Back to sign in", () => signIn())),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Signed in

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const when = (t: Timestamp | undefined) => (t ? dateFormat.format(timestampDate(t)) : "—");
const roleName = (role: Role) =>
  ({ [Role.OWNER]: "Owner", [Role.ADMIN]: "Admin", [Role.MEMBER]: "Member" })[role as number] ??
  "—";

/** "Chrome on Linux" from a user agent, or the raw string when it is not a browser's. */
function device(userAgent: string): string {
  if (!userAgent) return "Unknown device";
  const browser = /Edg\//.test(userAgent)
    ? "Edge"
    : /HeadlessChrome\//.test(userAgent)
      ? "Headless Chrome"
      : /Chrome\//.test(userAgent)
        ? "Chrome"
        : /Firefox\//.test(userAgent)
          ? "Firefox"
          : /Safari\//.test(userAgent)
            ? "Safari"
            : undefined;
  const os = /Windows/.test(userAgent)
    ? "Windows"
    : /Android/.test(userAgent)
      ? "Android"
      : /iPhone|iPad/.test(userAgent)
        ? "iOS"
        : /Mac OS X/.test(userAgent)
          ? "macOS"
          : /Linux/.test(userAgent)
            ? "Linux"
            : undefined;
  if (!browser) return userAgent.slice(0, 60);
  return os ? `${browser} on ${os}` : browser;
}

/** The sessions signed in on devices; an app's sessions are under "Connected apps". */
const listDeviceSessions = async () =>
  (await kg.auth.listSessions({ pageSize: 50 })).sessions.filter((s) => s.clientId === "");

async function home(banner?: string): Promise<void> {
  // An application is waiting for this sign-in: go on there instead.
  if (pendingAuthorization.id) return authorizeContinue();
  let me: GetSessionResponse;
  let sessions: Session[];
  let memberships: Membership[];
  try {
    [me, sessions, memberships] = await Promise.all([
      kg.auth.getSession({}),
      listDeviceSessions(),
      kg.auth.listMyWorkspaces({ pageSize: 100 }).then((r) => r.memberships),
    ]);
  } catch (error) {
    if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
      await kg.tokens.set(undefined);
      return signIn(describeError(error).message);
    }
    throw error;
  }
  const user = me.user;
  const workspace = me.workspace;
  if (workspace) remembered.workspace = workspace.slug;
  const status = h("p", { class: "message", role: "status", "aria-live": "polite" }, banner ?? "");
  if (banner) status.className = "message ok";
  const say = (text: string, ok = true) => {
    status.className = `message ${ok ? "ok" : "error"}`;
    status.textContent = text;
  };

  account.replaceChildren(
    h("span", {}, user?.email ?? ""),
    actionButton(
      "Log out",
      async () => {
        try {
          await kg.auth.logout({});
        } catch {
          // Signed out here whatever the server said.
        }
        await kg.tokens.set(undefined);
        signIn("You are signed out.");
      },
      { class: "secondary small" },
    ),
  );

  const accountCard = h(
    "section",
    { class: "card", "aria-labelledby": "account-h" },
    h("div", { class: "section-head" }, h("h2", { id: "account-h" }, "Your account")),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Email"),
      h(
        "dd",
        {},
        user?.email ?? "",
        user?.emailVerified
          ? h("span", { class: "badge ok" }, "Verified")
          : h("span", { class: "badge warn" }, "Not verified"),
      ),
      h("dt", {}, "User ID"),
      h("dd", { class: "mono" }, user?.id ?? ""),
      h("dt", {}, "Member since"),
      h("dd", {}, when(user?.createTime)),
    ),
  );

  const workspaceCard = h(
    "section",
    { class: "card", "aria-labelledby": "workspace-h" },
    h("div", { class: "section-head" }, h("h2", { id: "workspace-h" }, "Workspace")),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Name"),
      h("dd", { "data-testid": "workspace-name" }, workspace?.name ?? ""),
      h("dt", {}, "Short name"),
      h("dd", { class: "mono" }, workspace?.slug ?? ""),
      h("dt", {}, "Your role"),
      h("dd", {}, roleName(me.role)),
    ),
  );

  const workspaceRows = h(
    "ul",
    { class: "rows", "aria-label": "Your workspaces" },
    ...memberships.map((m) => {
      const current = m.workspaceId === workspace?.id;
      const name = m.workspace?.name ?? m.workspaceId;
      return h(
        "li",
        {},
        h(
          "div",
          { class: "row-main" },
          h(
            "div",
            { class: "row-title" },
            name,
            current ? h("span", { class: "badge" }, "Current") : null,
          ),
          h("div", { class: "row-sub" }, `${m.workspace?.slug ?? ""} · ${roleName(m.role)}`),
        ),
        current
          ? null
          : actionButton(
              "Switch",
              async () => {
                try {
                  const res = await kg.auth.switchWorkspace({ workspaceId: m.workspaceId });
                  // The target workspace may ask for its emailed second step first.
                  if (res.pendingLogin)
                    return secondStep(
                      res.pendingLogin.pendingLoginId,
                      user?.email ?? "",
                      res.pendingLogin,
                    );
                  await home(`You are now in ${name}.`);
                } catch (error) {
                  say(describeError(error).message, false);
                }
              },
              { class: "secondary small", "aria-label": `Switch to ${name}` },
            ),
      );
    }),
  );
  const workspacesCard = h(
    "section",
    { class: "card", "aria-labelledby": "workspaces-h" },
    h("div", { class: "section-head" }, h("h2", { id: "workspaces-h" }, "Switch workspace")),
    workspaceRows,
  );

  const sessionRows = h("ul", { class: "rows", "aria-label": "Active sessions" });
  const renderSessions = (list: Session[]) => {
    sessionRows.replaceChildren(
      ...list.map((s) => {
        const name = device(s.userAgent);
        return h(
          "li",
          {},
          h(
            "div",
            { class: "row-main" },
            h(
              "div",
              { class: "row-title" },
              name,
              s.current ? h("span", { class: "badge" }, "This device") : null,
            ),
            h(
              "div",
              { class: "row-sub" },
              `${s.ipAddress || "unknown address"} · signed in ${when(s.createTime)} · last active ${when(s.lastUseTime)}`,
            ),
          ),
          s.current
            ? null
            : actionButton(
                "Revoke",
                async () => {
                  try {
                    await kg.auth.revokeSession({ sessionId: s.id });
                    renderSessions(await listDeviceSessions());
                    say(`Signed out ${name}.`);
                  } catch (error) {
                    say(describeError(error).message, false);
                  }
                },
                {
                  class: "danger small",
                  "aria-label": `Revoke session: ${name}, signed in ${when(s.createTime)}`,
                },
              ),
        );
      }),
    );
  };
  renderSessions(sessions);
  const sessionsCard = h(
    "section",
    { class: "card span-all", "aria-labelledby": "sessions-h" },
    h("div", { class: "section-head" }, h("h2", { id: "sessions-h" }, "Sessions")),
    sessionRows,
  );

  show(
    { title: `Hello, ${user?.email ?? ""}`, wide: true },
    status,
    h(
      "div",
      { class: "grid" },
      accountCard,
      workspaceCard,
      workspacesCard,
      passkeysCard(kg, when, say),
      authenticatorAppCard(kg, when, say),
      connectedAppsCard(kg, when, say),
      sessionsCard,
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  const route = location.pathname.replace(/^\/ui\/?/, "").replace(/\/$/, "");
  const token = new URLSearchParams(location.search).get("token") ?? "";
  if (token) history.replaceState(null, "", "/ui/"); // the token stays out of history
  switch (route) {
    case "magic-link":
      return confirmMagicLink(token);
    case "verify-email":
      return linkOutcome("Verifying your email", async () => {
        await kg.auth.verifyEmail({ proof: { case: "token", value: token } });
        if (await kg.tokens.get()) await home("Your email address is verified.");
        else signIn("Your email address is verified. You can sign in now.");
      });
    case "reset-password":
      return resetWithLink(token);
    case "accept-invitation":
      return acceptInvitation(token);
    case "authorize": {
      const requestId = new URLSearchParams(location.search).get("request") ?? "";
      history.replaceState(null, "", "/ui/");
      return authorizeStart(requestId);
    }
  }
  if (route) history.replaceState(null, "", "/ui/");
  if (await kg.tokens.get()) return home();
  signIn();
}

start().catch((error: unknown) => {
  show(
    { title: "Something went wrong", lead: describeError(error).message },
    links(linkButton("Back to sign in", () => signIn())),
  );
});
