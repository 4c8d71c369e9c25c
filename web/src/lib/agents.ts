// Which coding agents the New task form offers: every configured one, those not
// installed on the server shown but not choosable, and the server's default first chosen.
import type { AgentInfo } from "./api";

export interface AgentOption {
  name: string;
  label: string;
  disabled: boolean;
}

/** One option per agent, in the server's order, saying which is the default and which are missing. */
export function agentOptions(agents: readonly AgentInfo[]): AgentOption[] {
  return agents.map((a) => {
    const notes = [a.default ? "default" : "", a.installed ? "" : "not installed"].filter(Boolean);
    return {
      name: a.name,
      label: notes.length ? `${a.name} (${notes.join(", ")})` : a.name,
      disabled: !a.installed,
    };
  });
}

/** The agent chosen before the user picks one: the server's default. */
export function preselected(agents: readonly AgentInfo[]): string {
  return (agents.find((a) => a.default) ?? agents.find((a) => a.installed))?.name ?? "";
}
