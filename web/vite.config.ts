import { defineConfig } from "vite";

// The web app Keygate serves at /ui/ (KEYGATE_UI). `npm run build:web` writes web/dist, which
// src/http/web-app.ts reads at start.
export default defineConfig({
  root: import.meta.dirname,
  base: "/ui/",
  publicDir: "public",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Everything from files: the Content-Security-Policy allows no inline script or style.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
});
