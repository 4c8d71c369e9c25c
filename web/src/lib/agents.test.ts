import { describe, expect, it } from "vitest";
import type { AgentInfo } from "./api";
import { agentOptions, preselected } from "./agents";

function agent(name: string, installed: boolean, isDefault = false): AgentInfo {
  return {
    name,
    protocol: name === "claude" ? "claude-code" : "acp",
    command: [name],
    installed,
    version: installed ? "1.0.0" : null,
    capabilities: {
      plan_mode: "native",
      questions: "native",
      resume: true,
      permission_requests: true,
      cost: "usd",
      streaming: true,
    },
    max_concurrent: null,
    default: isDefault,
  };
}

describe("agent options", () => {
  it("offers installed agents, shows the others disabled, and marks the default", () => {
    const agents = [agent("claude", true, true), agent("gemini", false), agent("opencode", true)];
    expect(agentOptions(agents)).toEqual([
      { name: "claude", label: "claude (default)", disabled: false },
      { name: "gemini", label: "gemini (not installed)", disabled: true },
      { name: "opencode", label: "opencode", disabled: false },
    ]);
    expect(preselected(agents)).toBe("claude");
  });

  it("chooses an installed agent when none is the default, and nothing from nothing", () => {
    expect(preselected([agent("gemini", false), agent("codex", true)])).toBe("codex");
    expect(preselected([])).toBe("");
  });
});
