// One-time sign-in links (`/signin#<code>`): reading the code from such a URL. The code
// rides in the fragment, which browsers never send to the server.

/** The code from a `/signin#<code>` URL, or null for any other URL. */
export function takeLinkCode(url: URL): string | null {
  if (url.pathname !== "/signin") return null;
  let code = url.hash.replace(/^#/, "");
  try {
    code = decodeURIComponent(code);
  } catch {
    // A malformed escape: send it as it is and let the server refuse it.
  }
  code = code.trim();
  return code ? code : null;
}
