import { describe, expect, it } from "vitest";
import { takeLinkCode } from "./auth";

describe("sign-in links", () => {
  it("take the code from the fragment of /signin only", () => {
    expect(takeLinkCode(new URL("https://m.example/signin#mll_abc"))).toBe("mll_abc");
    expect(takeLinkCode(new URL("https://m.example/signin#%20mll_x%20"))).toBe("mll_x");
    expect(takeLinkCode(new URL("https://m.example/signin"))).toBeNull();
    expect(takeLinkCode(new URL("https://m.example/signin#"))).toBeNull();
    expect(takeLinkCode(new URL("https://m.example/tasks#mll_abc"))).toBeNull();
  });
});
