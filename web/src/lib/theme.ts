// The theme choice: saved per browser, applied to <html data-theme> (theme.js applies it
// before first paint; this keeps it current afterwards).
export type Theme = "system" | "light" | "dark" | "terminal";
const KEY = "mainloop.theme";

export function savedTheme(): Theme {
  const t = localStorage.getItem(KEY);
  return t === "light" || t === "dark" || t === "terminal" ? t : "system";
}

function resolve(t: Theme): string {
  if (t !== "system") return t;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function applyTheme(t: Theme): void {
  localStorage.setItem(KEY, t);
  document.documentElement.setAttribute("data-theme", resolve(t));
}

/** Follows the system setting while the choice is "system". */
export function watchSystemTheme(): void {
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (savedTheme() === "system") applyTheme("system");
  });
}
