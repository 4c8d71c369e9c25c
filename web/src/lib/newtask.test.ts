// The "New task" form's rules: drafts, the repositories offered, and where errors show.
import { describe, expect, it } from "vitest";
import type { Project, Task } from "./api";
import {
  budgetUsd,
  EMPTY_DRAFT,
  errorField,
  missing,
  parseCostCap,
  parseDraft,
  parseLabels,
  recentRepos,
  runnerLabels,
  serializeDraft,
} from "./newtask";

function project(id: string, repo: string, created: string): Project {
  return { id, repo, name: repo.split("/").pop() ?? repo, settings: {}, created_at: created };
}

function task(projectId: string, updated: string): Task {
  return { project_id: projectId, updated_at: updated } as unknown as Task;
}

describe("drafts", () => {
  it("round-trip, and an empty draft is not stored", () => {
    const d = { description: "fix the\nbuild", repo: "/src/app", skipPlan: true, costCap: "2.50", labels: "gpu" };
    expect(parseDraft(serializeDraft(d))).toEqual(d);
    expect(serializeDraft(EMPTY_DRAFT)).toBeNull();
    expect(serializeDraft({ description: "  ", repo: "\n", skipPlan: false, costCap: " ", labels: " " })).toBeNull();
    expect(serializeDraft({ ...EMPTY_DRAFT, skipPlan: true })).not.toBeNull();
    expect(serializeDraft({ ...EMPTY_DRAFT, costCap: "5" })).not.toBeNull();
    expect(serializeDraft({ ...EMPTY_DRAFT, labels: "gpu" })).not.toBeNull();
  });

  it("read anything unreadable as empty, field by field", () => {
    for (const raw of [null, "", "not json", "[]", "42", "null", '"text"']) {
      expect(parseDraft(raw)).toEqual(EMPTY_DRAFT);
    }
    expect(parseDraft('{"description":7,"repo":"owner/name","skipPlan":"yes","costCap":5}')).toEqual({
      description: "",
      repo: "owner/name",
      skipPlan: false,
      costCap: "",
      labels: "",
    });
    // A draft stored before the cost cap and labels existed reads with none.
    expect(parseDraft('{"description":"d","repo":"r","skipPlan":true}')).toEqual({ description: "d", repo: "r", skipPlan: true, costCap: "", labels: "" });
  });
});

describe("recentRepos", () => {
  const a = project("a", "/src/a", "2026-01-01T00:00:00Z");
  const b = project("b", "owner/b", "2026-01-02T00:00:00Z");
  const c = project("c", "https://example.com/c.git", "2026-01-03T00:00:00Z");

  it("puts the repository with the latest task first, then the newest projects", () => {
    const tasks = [task("a", "2026-02-01T00:00:00Z"), task("a", "2026-01-05T00:00:00Z"), task("b", "2026-01-20T00:00:00Z")];
    expect(recentRepos([c, b, a], tasks)).toEqual(["/src/a", "owner/b", "https://example.com/c.git"]);
    expect(recentRepos([c, b, a], [])).toEqual(["https://example.com/c.git", "owner/b", "/src/a"]);
  });

  it("lists each repository once and stops at the limit", () => {
    const twin = project("d", "/src/a", "2026-01-04T00:00:00Z");
    expect(recentRepos([a, b, c, twin], [])).toEqual(["/src/a", "https://example.com/c.git", "owner/b"]);
    expect(recentRepos([a, b, c], [], 2)).toHaveLength(2);
    expect(recentRepos([], [task("x", "2026-01-01T00:00:00Z")])).toEqual([]);
  });
});

describe("missing", () => {
  it("asks for a description and a repository, ignoring whitespace", () => {
    expect(Object.keys(missing(EMPTY_DRAFT)).sort()).toEqual(["description", "repo"]);
    expect(missing({ ...EMPTY_DRAFT, description: " \n", repo: "/r" })).toHaveProperty("description");
    expect(missing({ ...EMPTY_DRAFT, description: "do it", repo: "/r" })).toEqual({});
  });

  it("refuses a cost cap out of range, and nothing else about it", () => {
    const d = { ...EMPTY_DRAFT, description: "do it", repo: "/r" };
    expect(missing({ ...d, costCap: "5" })).toEqual({});
    expect(Object.keys(missing({ ...d, costCap: "0" }))).toEqual(["costCap"]);
    expect(Object.keys(missing({ ...EMPTY_DRAFT, costCap: "lots" })).sort()).toEqual(["costCap", "description", "repo"]);
  });
});

describe("parseCostCap", () => {
  it("reads dollars, with or without a $ and cents; empty is the default", () => {
    expect(parseCostCap("")).toEqual({ usd: null });
    expect(parseCostCap("   ")).toEqual({ usd: null });
    expect(parseCostCap("5")).toEqual({ usd: 5 });
    expect(parseCostCap(" $2.50 ")).toEqual({ usd: 2.5 });
    expect(parseCostCap("$ 3")).toEqual({ usd: 3 });
    expect(parseCostCap(".5")).toEqual({ usd: 0.5 });
    expect(parseCostCap("7.")).toEqual({ usd: 7 });
    expect(parseCostCap("1000000")).toEqual({ usd: 1_000_000 });
  });

  it("refuses what is not a positive amount of at most a million", () => {
    for (const t of ["0", "0.00", "$0"]) expect(parseCostCap(t)).toEqual({ error: expect.stringContaining("more than $0") });
    for (const t of ["1000000.01", "2000000"]) expect(parseCostCap(t)).toEqual({ error: expect.stringContaining("at most $1,000,000") });
    for (const t of ["-5", "five", "1e3", "0x10", "Infinity", "NaN", "1,5", "5$", "1.2.3", "$"]) {
      expect(parseCostCap(t), t).toEqual({ error: expect.stringContaining("number of dollars") });
    }
  });

  it("sends budget_usd only for a cap typed", () => {
    expect(budgetUsd({ ...EMPTY_DRAFT, costCap: "$12.5" })).toEqual({ budget_usd: 12.5 });
    expect(budgetUsd(EMPTY_DRAFT)).toEqual({});
    expect(budgetUsd({ ...EMPTY_DRAFT, costCap: "-1" })).toEqual({});
  });
});

describe("parseLabels", () => {
  it("reads labels between commas or spaces, each once, in order", () => {
    expect(parseLabels("")).toEqual({ labels: [] });
    expect(parseLabels(" , ")).toEqual({ labels: [] });
    expect(parseLabels("gpu")).toEqual({ labels: ["gpu"] });
    expect(parseLabels(" linux-x64, gpu  gpu,big.box_2 ")).toEqual({ labels: ["big.box_2", "gpu", "linux-x64"] });
  });

  it("refuses what a runner could not carry, naming it, and more than eight", () => {
    for (const bad of ["GPU", "gpu!", "é", "x".repeat(64)]) {
      expect(parseLabels(`gpu ${bad}`), bad).toEqual({ error: expect.stringContaining(`"${bad}"`) });
    }
    expect(parseLabels("a b c d e f g h i")).toEqual({ error: "At most 8 labels." });
    expect(parseLabels("a b c d e f g h h")).toEqual({ labels: ["a", "b", "c", "d", "e", "f", "g", "h"] });
  });

  it("sends runner_labels only when some are typed, and stops a send with a bad one", () => {
    expect(runnerLabels({ ...EMPTY_DRAFT, labels: "gpu, big" })).toEqual({ runner_labels: ["big", "gpu"] });
    expect(runnerLabels(EMPTY_DRAFT)).toEqual({});
    const d = { ...EMPTY_DRAFT, description: "do it", repo: "/r" };
    expect(Object.keys(missing({ ...d, labels: "Big" }))).toEqual(["labels"]);
    expect(missing({ ...d, labels: "big" })).toEqual({});
  });
});

describe("errorField", () => {
  it("places the server's field messages by the field, and the rest on the form", () => {
    expect(errorField("repo: /nope is not a git repository")).toBe("repo");
    expect(errorField("repo must not be empty")).toBe("repo");
    expect(errorField("description is longer than 20000 characters")).toBe("description");
    expect(errorField("budget_usd must be a positive number of US dollars, at most 1000000")).toBe("costCap");
    expect(errorField('runner_labels: label "GPU" is not 1 to 63 lowercase letters')).toBe("labels");
    expect(errorField("the project's runner_labels setting: at most 8 labels, got 9")).toBeNull();
    expect(errorField("Cannot reach the server. Check the connection and try again.")).toBeNull();
    expect(errorField("repository is unavailable")).toBeNull();
    expect(errorField("the description is bad")).toBeNull();
  });
});
