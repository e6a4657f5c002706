import { defineConfig } from "vite";

// The build is embedded in the appstack binary (services/console/dist) and served by main,
// so it must be self-contained: no inline scripts or styles (the CSP forbids them), and
// hashed asset names that can be cached forever.
export default defineConfig({
  build: {
    outDir: "../services/console/dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: "es2022",
  },
});
