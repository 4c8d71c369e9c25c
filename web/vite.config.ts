import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { fileURLToPath } from "node:url";

const page = (file: string) => fileURLToPath(new URL(file, import.meta.url));

// The server embeds `dist/` (or the directory given by --outDir); during `npm run dev`
// API calls go to a mainloop on MAINLOOP_DEV_API (default http://127.0.0.1:8080).
// Two pages: the app (`index.html`) and the API reference (`docs.html`, served at
// `/api/docs`), which share no code, so the app's first load does not carry the docs.
export default defineConfig({
  plugins: [svelte()],
  build: {
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 200,
    // Neither page loads chunks of its own (no dynamic imports), so the polyfill would
    // only become a chunk the two share: one more request on the app's first load.
    modulePreload: { polyfill: false },
    rolldownOptions: {
      input: { index: page("index.html"), docs: page("docs.html") },
    },
  },
  server: {
    proxy: {
      "/api": {
        target: process.env.MAINLOOP_DEV_API ?? "http://127.0.0.1:8080",
        changeOrigin: false,
      },
    },
  },
});
