// The busy and error state every request on screen shares.
import { describe, expect, it } from "vitest";
import { ApiError } from "./api";
import { RequestState } from "./request.svelte";

describe("RequestState", () => {
  it("is busy while the request runs, and clears the last error when it starts", async () => {
    const r = new RequestState();
    expect(await r.run(() => Promise.reject(new Error("first")))).toBe(false);
    expect(r.error).toBe("first");
    let finish = () => {};
    const running = r.run(() => new Promise<void>((resolve) => (finish = resolve)));
    expect(r.busy).toBe(true);
    expect(r.error).toBeNull();
    finish();
    expect(await running).toBe(true);
    expect(r.busy).toBe(false);
    expect(r.error).toBeNull();
  });

  it("says what failed in the screen's own words when given them", async () => {
    const r = new RequestState((e) => (e instanceof ApiError && e.status === 401 ? "That token is not valid." : "?"));
    await r.run(() => Promise.reject(new ApiError(401, "unauthorized", "no")));
    expect(r.error).toBe("That token is not valid.");
    expect(r.busy).toBe(false);
  });

  it("can start busy, for a load that begins on mount", () => {
    expect(new RequestState(undefined, true).busy).toBe(true);
  });
});
