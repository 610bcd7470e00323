#!/usr/bin/env node
// Runs the TypeScript sources through tsx: the generated enums are not erasable syntax.
import { register } from "tsx/esm/api";

register();
await import("../src/cli.ts");
