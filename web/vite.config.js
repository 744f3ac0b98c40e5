import { defineConfig } from "vite";

// The bundle lands in web/dist (git-ignored), which the API serves at "/"; nothing is loaded from a CDN.
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1500 },
});
