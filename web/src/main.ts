import { mount } from "svelte";
import App from "./App.svelte";
import { watchSystemTheme } from "./lib/theme";
import "./app.css";

watchSystemTheme();
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/sw.js").catch((e: unknown) => console.warn("service worker not registered", e));
}
const target = document.getElementById("app");
if (target) mount(App, { target });
