import { defineConfig } from "vite";
import { svelte } from "@sveltejs/vite-plugin-svelte";

// The server embeds `dist/` (or the directory given by --outDir); during `npm run dev`
// API calls go to a mainloop on MAINLOOP_DEV_API (default http://127.0.0.1:8080).
export default defineConfig({
  plugins: [svelte()],
  build: {
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 200,
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
