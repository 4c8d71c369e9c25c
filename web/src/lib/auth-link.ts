// Takes a sign-in link's code out of the address bar as soon as the app loads, before
// anything can route elsewhere, so it stays out of the history; the sign-in screen
// then spends it.
import { router } from "./router.svelte";
import { takeLinkCode } from "./auth";

let pending: string | null = takeLinkCode(new URL(location.href));
if (location.pathname === "/signin") router.go("/login", true);

/** The link code waiting to be exchanged for a session; given out once. */
export function pendingLinkCode(): string | null {
  const code = pending;
  pending = null;
  return code;
}
