// Client-side routing over the History API: the URL is the source of truth for which
// screen shows and for the inbox's project filter, so links and reloads land right.
import { digestIdFromPath } from "./memory";

class Router {
  path = $state(location.pathname);
  search = $state(location.search);
  /** The `#…` part: which item of a screen to scroll to (a note, say). */
  hash = $state(location.hash);

  constructor() {
    addEventListener("popstate", () => this.sync());
    // Same-origin links navigate in place instead of reloading the app.
    document.addEventListener("click", (ev) => {
      if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
      const a = (ev.target as Element | null)?.closest?.("a");
      if (!a || a.target || a.hasAttribute("download")) return;
      const url = new URL(a.href, location.href);
      if (url.origin !== location.origin || url.pathname.startsWith("/api/")) return;
      ev.preventDefault();
      this.go(url.pathname + url.search + url.hash);
    });
  }

  get params(): URLSearchParams {
    return new URLSearchParams(this.search);
  }

  go(to: string, replace = false): void {
    if (to === location.pathname + location.search + location.hash) return;
    if (replace) history.replaceState(null, "", to);
    else history.pushState(null, "", to);
    this.sync();
    if (!replace) window.scrollTo(0, 0);
  }

  /** Sets one query parameter (or removes it with null), keeping the path. */
  setParam(key: string, value: string | null): void {
    const p = this.params;
    if (value === null || value === "") p.delete(key);
    else p.set(key, value);
    const q = p.toString();
    this.go(`${location.pathname}${q ? `?${q}` : ""}`, true);
  }

  private sync(): void {
    this.path = location.pathname;
    this.search = location.search;
    this.hash = location.hash;
  }
}

export const router = new Router();

/** The screen a path shows. */
export type Route =
  | { name: "chat" }
  | { name: "inbox" }
  | { name: "task"; id: string }
  | { name: "settings" }
  | { name: "usage" }
  | { name: "new" }
  | { name: "projects" }
  | { name: "notes" }
  | { name: "memory"; id: string | null }
  | { name: "login" }
  | { name: "notfound" };

export function match(path: string): Route {
  if (path === "/" || path === "") return { name: "chat" };
  if (path === "/inbox") return { name: "inbox" };
  if (path === "/settings") return { name: "settings" };
  if (path === "/usage") return { name: "usage" };
  if (path === "/new") return { name: "new" };
  if (path === "/projects") return { name: "projects" };
  if (path === "/notes") return { name: "notes" };
  if (path === "/login") return { name: "login" };
  if (path === "/memory" || path === "/memory/") return { name: "memory", id: null };
  const digest = digestIdFromPath(path);
  if (digest) return { name: "memory", id: digest };
  const m = /^\/tasks\/([0-9a-fA-F-]{8,36})\/?$/.exec(path);
  if (m?.[1]) return { name: "task", id: m[1] };
  return { name: "notfound" };
}
