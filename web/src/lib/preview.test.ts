import { describe, expect, it } from "vitest";
import { offersPreview, previewError, previewLabel, previewUrl } from "./preview";

describe("offersPreview", () => {
  it("offers a preview for a task with a worktree that has not ended", () => {
    expect(offersPreview({ state: "review", worktree: "/w/t1" })).toBe(true);
    expect(offersPreview({ state: "implementing", worktree: "/w/t1" })).toBe(true);
    expect(offersPreview({ state: "failed", worktree: "/w/t1" })).toBe(true);
  });

  it("offers none before the worktree exists or once the task ended", () => {
    expect(offersPreview({ state: "queued", worktree: null })).toBe(false);
    expect(offersPreview({ state: "planning" })).toBe(false);
    expect(offersPreview({ state: "merged", worktree: "/w/t1" })).toBe(false);
    expect(offersPreview({ state: "cancelled", worktree: "/w/t1" })).toBe(false);
  });
});

describe("previewLabel", () => {
  it("says it is starting while busy", () => {
    expect(previewLabel(false)).toBe("Open preview");
    expect(previewLabel(true)).toBe("Starting preview…");
  });
});

describe("previewUrl", () => {
  it("accepts only http and https addresses", () => {
    expect(previewUrl("http://t-0a1b2c3d.localhost:8080/?preview_code=x")).toBe("http://t-0a1b2c3d.localhost:8080/?preview_code=x");
    expect(previewUrl("https://t-0a1b2c3d.preview.example.com/?preview_code=x")).toContain("https://");
    expect(previewUrl("javascript:alert(1)")).toBeNull();
    expect(previewUrl("not a url")).toBeNull();
    expect(previewUrl(undefined)).toBeNull();
  });
});

describe("previewError", () => {
  it("splits the reason from the command's output", () => {
    expect(previewError("the preview `node x` exited (code 1) before answering on port 20000; its output:\nError: boom\n  at x")).toEqual({
      headline: "the preview `node x` exited (code 1) before answering on port 20000; its output:",
      output: "Error: boom\n  at x",
    });
    expect(previewError("this task has no preview")).toEqual({ headline: "this task has no preview", output: "" });
    expect(previewError("  ").headline).toBe("The preview could not open.");
  });
});
