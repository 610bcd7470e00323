import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Mustache from "mustache";

/**
 * Every message Keygate sends, and the variables its templates may use. Each template also
 * gets `product`, `workspace` and `email` (in signup_existing_account, which goes to an
 * address whose owner did not ask for it, `workspace` is the short name of an existing
 * workspace or empty, never text from the request). The caller of `render` passes all of them, so a
 * template (built-in or an operator's override) never renders with a silently empty value.
 */
const templateVariables = {
  verify_email_code: ["code", "minutes"],
  verify_email_link: ["link", "minutes"],
  password_reset_code: ["code", "minutes"],
  password_reset_link: ["link", "minutes"],
  magic_link: ["link", "minutes"],
  login_code: ["code", "minutes"],
  action_code: ["code", "minutes"],
  password_changed: ["time"],
  signup_existing_account: ["login_link", "reset_link", "join_link"],
  invitation: ["link", "days"],
  factor_changed: ["change", "time"],
} as const satisfies Record<string, readonly string[]>;

export type MailTemplate = keyof typeof templateVariables;

export const mailTemplateNames = Object.keys(templateVariables) as MailTemplate[];

const commonVariables = ["product", "workspace", "email"] as const;

/**
 * Variables that carry a secret. They may appear in the bodies, which the outbox erases once
 * the message is delivered, but never in the subject, which it keeps.
 */
const secretVariables = new Set(["code", "link", "login_link", "reset_link", "join_link"]);

export const defaultTemplatesDir = fileURLToPath(new URL("./templates/", import.meta.url));

export class MailTemplateError extends Error {
  override name = "MailTemplateError";
}

interface CompiledTemplate {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
  readonly variables: readonly string[];
}

export interface RenderedMail {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

// The text part and the subject are not HTML: values go in as they are, except that a value
// is always one line (every variable is: codes, links, addresses, names), so a stored value
// with line breaks cannot add lines of its own to a message.
const textMode: Mustache.RenderOptions = {
  escape: (value: unknown) => String(value).replace(/[\p{Cc}\p{Zl}\p{Zp}]+/gu, " "),
};

/**
 * The mail templates: <name>.txt (first line `Subject: …`, then the text body) and <name>.html
 * under src/mail/templates/, each template replaceable by an operator's own pair of files.
 */
export class MailTemplates {
  private constructor(private readonly templates: ReadonlyMap<MailTemplate, CompiledTemplate>) {}

  /**
   * Loads and checks the built-in templates and, from `overrideDir`, the operator's. An
   * override replaces a template as a whole, both parts: a new text part next to the old HTML
   * part would send two different messages in one. Any problem fails the load with an error
   * that names the file.
   */
  static async load(
    overrideDir?: string,
    options: { builtInDir?: string } = {},
  ): Promise<MailTemplates> {
    const builtInDir = options.builtInDir ?? defaultTemplatesDir;
    const overridden = overrideDir ? await overriddenTemplates(overrideDir) : new Set<string>();
    const templates = new Map<MailTemplate, CompiledTemplate>();
    for (const name of mailTemplateNames) {
      const dir = overrideDir && overridden.has(name) ? overrideDir : builtInDir;
      templates.set(name, await loadTemplate(dir, name));
    }
    return new MailTemplates(templates);
  }

  /**
   * Renders a message. HTML escapes every value in the HTML part; the subject and the text
   * part take values verbatim. Throws when a variable of the template is missing from `vars`.
   */
  render(name: MailTemplate, vars: Readonly<Record<string, string>>): RenderedMail {
    const template = this.templates.get(name);
    if (!template) throw new MailTemplateError(`unknown mail template ${String(name)}`);
    const missing = template.variables.filter((v) => typeof vars[v] !== "string");
    if (missing.length > 0) {
      throw new MailTemplateError(`mail template ${name} needs ${missing.join(", ")}`);
    }
    // Only the declared variables reach the template, so a stray key in `vars` cannot turn
    // into content.
    const view = Object.fromEntries(template.variables.map((v) => [v, vars[v]]));
    return {
      // A subject is one header line whatever the values hold.
      subject: Mustache.render(template.subject, view, {}, textMode).replace(/\s+/g, " ").trim(),
      text: Mustache.render(template.text, view, {}, textMode),
      html: Mustache.render(template.html, view),
    };
  }
}

/** The templates that `dir` overrides; a file that matches no template is refused. */
async function overriddenTemplates(dir: string): Promise<Set<string>> {
  let files: string[];
  try {
    files = await readdir(dir);
  } catch (error) {
    throw new MailTemplateError(
      `cannot read the mail template directory ${dir}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const names = new Set<string>();
  for (const file of files) {
    const ext = path.extname(file);
    if (ext !== ".txt" && ext !== ".html") continue;
    const name = file.slice(0, -ext.length);
    if (!(mailTemplateNames as string[]).includes(name)) {
      throw new MailTemplateError(
        `mail template file ${path.join(dir, file)} matches no template (expected one of ${mailTemplateNames.join(", ")})`,
      );
    }
    names.add(name);
  }
  return names;
}

async function loadTemplate(dir: string, name: MailTemplate): Promise<CompiledTemplate> {
  const textFile = path.join(dir, `${name}.txt`);
  const htmlFile = path.join(dir, `${name}.html`);
  const textSource = await readPart(textFile);
  const html = await readPart(htmlFile);

  const newline = textSource.indexOf("\n");
  const firstLine = (newline === -1 ? textSource : textSource.slice(0, newline)).replace(/\r$/, "");
  const subjectMatch = /^Subject:[ \t]*(\S.*)$/.exec(firstLine);
  if (!subjectMatch) {
    throw new MailTemplateError(`mail template ${textFile} must start with a "Subject: …" line`);
  }
  const subject = subjectMatch[1] as string;
  // One blank line may separate the subject from the body, as in a message.
  const text = newline === -1 ? "" : textSource.slice(newline + 1).replace(/^\r?\n/, "");
  if (text.trim() === "") throw new MailTemplateError(`mail template ${textFile} has no body`);

  const allowed = new Set<string>([...commonVariables, ...templateVariables[name]]);
  const subjectVariables = variablesOf(subject, textFile);
  for (const variable of subjectVariables) {
    if (secretVariables.has(variable)) {
      throw new MailTemplateError(
        `mail template ${textFile} uses {{${variable}}} in its subject; subjects are kept after delivery, so codes and links belong in the body only`,
      );
    }
  }
  for (const [file, used] of [
    [textFile, [...subjectVariables, ...variablesOf(text, textFile)]],
    [htmlFile, variablesOf(html, htmlFile)],
  ] as const) {
    const unknown = used.filter((v) => !allowed.has(v));
    if (unknown.length > 0) {
      throw new MailTemplateError(
        `mail template ${file} uses ${unknown.map((v) => `{{${v}}}`).join(", ")}, which ${name} does not have (it has ${[...allowed].join(", ")})`,
      );
    }
  }
  return { subject, text, html, variables: [...allowed] };
}

async function readPart(file: string): Promise<string> {
  let content: string;
  try {
    content = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new MailTemplateError(`mail template ${file} is missing`, { cause: error });
    }
    throw new MailTemplateError(`cannot read mail template ${file}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (content.trim() === "") throw new MailTemplateError(`mail template ${file} is empty`);
  return content;
}

/** The variable names a template refers to; partials are refused, they have nowhere to come from. */
function variablesOf(template: string, file: string): string[] {
  let tokens: Mustache.TemplateSpans;
  try {
    tokens = Mustache.parse(template);
  } catch (error) {
    throw new MailTemplateError(`mail template ${file} is not valid: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const names: string[] = [];
  const walk = (spans: Mustache.TemplateSpans) => {
    for (const span of spans) {
      const [type, value] = span;
      if (type === ">") {
        throw new MailTemplateError(`mail template ${file} uses a partial ({{> ${value}}})`);
      }
      if (type === "name" || type === "&" || type === "#" || type === "^") names.push(value);
      const children = span[4];
      if (Array.isArray(children)) walk(children);
    }
  };
  walk(tokens);
  return names;
}
