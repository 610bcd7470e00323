/** Small DOM helpers: elements are built, never parsed from strings, so text stays text. */

type Attrs = Record<string, string | boolean | undefined>;
type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

export interface Field {
  readonly name: string;
  readonly label: string;
  readonly type?: string;
  readonly autocomplete?: string;
  readonly value?: string;
  readonly hint?: string;
  readonly inputmode?: string;
  readonly pattern?: string;
  readonly minlength?: number;
  readonly maxlength?: number;
  readonly code?: boolean;
  readonly required?: boolean;
}

export interface FormHandle {
  readonly element: HTMLFormElement;
  /** Shows an error in the form's message line; marks the named field invalid. */
  error(message: string, field?: string): void;
  ok(message: string): void;
  clear(): void;
  input(name: string): HTMLInputElement | undefined;
}

let uid = 0;

/**
 * A labelled form whose submit button shows a spinner while `onSubmit` runs and whose message
 * line (role=alert) always keeps its height.
 */
export function form(options: {
  fields: readonly Field[];
  submit: string;
  onSubmit(values: Record<string, string>, handle: FormHandle): Promise<void>;
  extra?: Child;
}): FormHandle {
  const inputs = new Map<string, HTMLInputElement>();
  const message = h("p", {
    id: `m${++uid}`,
    class: "message",
    role: "alert",
    "aria-live": "assertive",
  });
  const button = h("button", { type: "submit" }, options.submit);
  const element = h("form", { novalidate: true });
  for (const f of options.fields) {
    const id = `f${++uid}-${f.name}`;
    const hintId = f.hint ? `${id}-hint` : undefined;
    const input = h("input", {
      id,
      name: f.name,
      type: f.type ?? "text",
      autocomplete: f.autocomplete ?? "off",
      inputmode: f.inputmode,
      pattern: f.pattern,
      minlength: f.minlength === undefined ? undefined : String(f.minlength),
      maxlength: f.maxlength === undefined ? undefined : String(f.maxlength),
      required: f.required ?? true,
      "aria-describedby": hintId,
      class: f.code ? "code" : undefined,
      spellcheck: f.type === "email" || f.code ? "false" : undefined,
    });
    if (f.value) input.value = f.value;
    inputs.set(f.name, input);
    element.append(
      h(
        "div",
        { class: "field" },
        h("label", { for: id }, f.label),
        input,
        f.hint ? h("span", { class: "hint", id: hintId }, f.hint) : null,
      ),
    );
  }
  element.append(message, button);
  if (options.extra) element.append(options.extra);

  const handle: FormHandle = {
    element,
    error(text, field) {
      message.className = "message error";
      message.textContent = text;
      for (const [name, input] of inputs) {
        if (name === field) {
          input.setAttribute("aria-invalid", "true");
          input.setAttribute("aria-errormessage", message.id);
          input.focus();
        } else input.removeAttribute("aria-invalid");
      }
    },
    ok(text) {
      message.className = "message ok";
      message.textContent = text;
    },
    clear() {
      message.className = "message";
      message.textContent = "";
      for (const input of inputs.values()) input.removeAttribute("aria-invalid");
    },
    input: (name) => inputs.get(name),
  };

  element.addEventListener("submit", (event) => {
    event.preventDefault();
    if (button.getAttribute("aria-busy") === "true") return;
    handle.clear();
    for (const f of options.fields) {
      const input = inputs.get(f.name) as HTMLInputElement;
      if ((f.required ?? true) && input.value.trim() === "") {
        handle.error(`${f.label} is required.`, f.name);
        return;
      }
    }
    const values = Object.fromEntries(
      [...inputs].map(([name, input]) => [
        name,
        input.type === "password" ? input.value : input.value.trim(),
      ]),
    );
    button.setAttribute("aria-busy", "true");
    options
      .onSubmit(values, handle)
      .catch((error: unknown) => handle.error(String(error)))
      .finally(() => button.removeAttribute("aria-busy"));
  });
  return handle;
}

/** A button that shows a spinner while its action runs. */
export function actionButton(
  label: string,
  action: (button: HTMLButtonElement) => Promise<void>,
  attrs: Attrs = {},
): HTMLButtonElement {
  const button = h("button", { type: "button", ...attrs }, label);
  button.addEventListener("click", () => {
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    action(button).finally(() => button.removeAttribute("aria-busy"));
  });
  return button;
}

/** A text-styled button that moves to another view. */
export function linkButton(label: string, onClick: () => void): HTMLButtonElement {
  const button = h("button", { type: "button", class: "link" }, label);
  button.addEventListener("click", onClick);
  return button;
}
