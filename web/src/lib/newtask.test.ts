// The "New task" form's rules: drafts, the repositories offered, and where errors show.
import { describe, expect, it } from "vitest";
import type { Project, Task } from "./api";
import { EMPTY_DRAFT, errorField, missing, parseDraft, recentRepos, serializeDraft } from "./newtask";

function project(id: string, repo: string, created: string): Project {
  return { id, repo, name: repo.split("/").pop() ?? repo, settings: {}, created_at: created };
}

function task(projectId: string, updated: string): Task {
  return { project_id: projectId, updated_at: updated } as unknown as Task;
}

describe("drafts", () => {
  it("round-trip, and an empty draft is not stored", () => {
    const d = { description: "fix the\nbuild", repo: "/src/app", skipPlan: true };
    expect(parseDraft(serializeDraft(d))).toEqual(d);
    expect(serializeDraft(EMPTY_DRAFT)).toBeNull();
    expect(serializeDraft({ description: "  ", repo: "\n", skipPlan: false })).toBeNull();
    expect(serializeDraft({ ...EMPTY_DRAFT, skipPlan: true })).not.toBeNull();
  });

  it("read anything unreadable as empty, field by field", () => {
    for (const raw of [null, "", "not json", "[]", "42", "null", '"text"']) {
      expect(parseDraft(raw)).toEqual(EMPTY_DRAFT);
    }
    expect(parseDraft('{"description":7,"repo":"owner/name","skipPlan":"yes"}')).toEqual({
      description: "",
      repo: "owner/name",
      skipPlan: false,
    });
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
    expect(missing({ description: " \n", repo: "/r", skipPlan: false })).toHaveProperty("description");
    expect(missing({ description: "do it", repo: "/r", skipPlan: false })).toEqual({});
  });
});

describe("errorField", () => {
  it("places the server's field messages by the field, and the rest on the form", () => {
    expect(errorField("repo: /nope is not a git repository")).toBe("repo");
    expect(errorField("repo must not be empty")).toBe("repo");
    expect(errorField("description is longer than 20000 characters")).toBe("description");
    expect(errorField("Cannot reach the server. Check the connection and try again.")).toBeNull();
    expect(errorField("repository is unavailable")).toBeNull();
    expect(errorField("the description is bad")).toBeNull();
  });
});
