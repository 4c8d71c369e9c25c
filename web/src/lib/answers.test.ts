import { describe, expect, it } from "vitest";
import { answerText, toAnswer } from "./answers";

describe("answers as given", () => {
  it("sends ticks and a note together, and each alone", () => {
    expect(toAnswer({ choices: ["Rust", "Go"], text: " keep it small " })).toEqual({
      choices: ["Rust", "Go"],
      note: "keep it small",
    });
    expect(toAnswer({ choices: ["Rust"], text: "  " })).toEqual(["Rust"]);
    expect(toAnswer({ choices: [], text: "Zig" })).toBe("Zig");
  });

  it("reads every shape back in words", () => {
    expect(answerText(["Rust", "Go"])).toBe("Rust, Go");
    expect(answerText("Zig")).toBe("Zig");
    expect(answerText({ choices: ["Rust"], note: "small" })).toBe("Rust — small");
    expect(answerText(undefined)).toBe("");
  });
});
