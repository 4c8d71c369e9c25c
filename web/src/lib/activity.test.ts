import { describe, expect, it } from "vitest";
import type { TranscriptEntry } from "./api";
import { ActivityLog, activity, codeParts, reason, relPath, shortenPaths, statusText, stepLine } from "./activity";

const WT = "/home/ml/.local/share/mainloop/worktrees/7f3c9a2e-1b4d-4e8f-9a6b-2c1d0e9f8a7b";
const DATA = "/home/ml/.local/share/mainloop";
const PLAN = "/home/ml/.local/share/mainloop/home/.claude/plans/build-the-greeter-effervescent-planet.md";
const cx = { worktree: WT };

const call = (id: string, name: string, summary: string): TranscriptEntry => ({ kind: "tool_call", payload: { id, name, summary } });
const result = (id: string, summary: string, is_error = false): TranscriptEntry => ({ kind: "tool_result", payload: { tool_use_id: id, summary, is_error } });
const text = (t: string): TranscriptEntry => ({ kind: "text", payload: { text: t } });

const lines = (entries: TranscriptEntry[]) => activity(entries, cx).map(stepLine);

describe("activity", () => {
  it("reads a planning run as plain steps", () => {
    // Shapes as the worker records them from the real claude CLI (tool_call summaries
    // from `tool_call_summary`, results as the CLI words them).
    const entries: TranscriptEntry[] = [
      { kind: "session", payload: { session_id: "3c1b…", model: "claude-opus-4-1" } },
      text("Two questions first."),
      call("toolu_1", "AskUserQuestion", "AskUserQuestion: Which language?"),
      {
        kind: "question",
        payload: {
          questions: [
            { id: "q1", question: "Which language?", options: [{ label: "Rust" }, { label: "Go" }] },
            { id: "q2", question: "Which extras?", options: [{ label: "Tests" }], multi_select: true },
          ],
        },
      },
      result("toolu_1", 'Your questions have been answered: "Which language?"="Go", "Which extras?"="Tests, Docs". You can now continue with these answers in mind.'),
      call("toolu_2", "Write", `Write ${PLAN}`),
      result("toolu_2", `File created successfully at: ${PLAN} (file state is current in your context — no need to Read it back)`),
      call("toolu_3", "ExitPlanMode", "ExitPlanMode"),
      { kind: "plan", payload: { plan: "# Plan\n\nA greeter in Go.\n" } },
      result("toolu_3", "Please add tests.", true),
      text("Revising."),
      call("toolu_4", "Write", `Write ${PLAN}`),
      result("toolu_4", `File created successfully at: ${PLAN} (file state is current in your context — no need to Read it back)`),
      call("toolu_5", "ExitPlanMode", "ExitPlanMode"),
      { kind: "plan", payload: { plan: "# Plan (revised)\n\nWith tests.\n" } },
      result("toolu_5", "User has approved your plan. You can now start coding.\n\n## Approved Plan:\n# Plan (revised)"),
    ];
    expect(lines(entries)).toEqual([
      "Two questions first.",
      "Asked 2 questions",
      "You: Which language? → Go; Which extras? → Tests, Docs",
      "Wrote a plan",
      "You: Please add tests.",
      "Revising.",
      "Revised the plan",
      "You approved the plan",
    ]);
    // The user's feedback is theirs, not an error.
    expect(activity(entries, cx).find((s) => s.kind === "you" && s.text.includes("add tests"))?.failed).toBe(false);
  });

  it("groups reads, shows written and edited files relative to the worktree", () => {
    const entries: TranscriptEntry[] = [
      call("a", "Read", `Read ${WT}/README.md`),
      result("a", "     1\t# demo\n"),
      call("b", "Read", `Read ${WT}/src/app.ts`),
      call("c", "Read", `Read ${WT}/src/lib.ts`),
      call("d", "Read", `Read ${WT}/src/app.ts`),
      call("e", "Write", `Write ${WT}/GREETING.md`),
      result("e", `File created successfully at: ${WT}/GREETING.md (file state is current in your context — no need to Read it back)`),
      call("f", "Edit", `Edit ${WT}/src/app.ts`),
      result("f", `The file ${WT}/src/app.ts has been updated successfully.`),
    ];
    const steps = activity(entries, cx);
    expect(steps.map(stepLine)).toEqual(["Read 3 files", "Wrote `GREETING.md`", "Edited `src/app.ts`"]);
    expect(steps[0]?.detail).toBe("README.md, src/app.ts, src/lib.ts");
    expect(JSON.stringify(steps)).not.toContain(DATA);
    expect(JSON.stringify(steps)).not.toContain("file state is current");
  });

  it("marks a failing command and says why, without the CLI's wrappers", () => {
    const entries: TranscriptEntry[] = [
      call("t", "Bash", "Bash: npm test"),
      result("t", "Exit code 1\nError: 2 tests failed\n    at run (/x/y.js:1)", true),
      call("w", "Write", `Write ${WT}/a.txt`),
      result("w", "<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>", true),
    ];
    const steps = activity(entries, cx);
    expect(steps.map(stepLine)).toEqual([
      "Ran `npm test` → failed: 2 tests failed (exit code 1)",
      "Wrote `a.txt` → File has not been read yet. Read it first before writing to it.",
    ]);
    expect(steps.every((s) => s.failed)).toBe(true);
    expect(JSON.stringify(steps)).not.toContain("tool_use_error");
  });

  it("does not fold a file into a step that failed", () => {
    const steps = activity(
      [call("a", "Write", `Write ${WT}/a`), result("a", "<tool_use_error>nope</tool_use_error>", true), call("b", "Write", `Write ${WT}/b`)],
      cx,
    );
    expect(steps.map(stepLine)).toEqual(["Wrote `a` → nope", "Wrote `b`"]);
  });

  it("hides bookkeeping and words the rest for people", () => {
    const entries: TranscriptEntry[] = [
      { kind: "permission", payload: { tool: "Write", allowed: true } },
      { kind: "malformed", payload: { line: "{", error: "EOF" } },
      { kind: "unknown", payload: { kind: "future", payload: {} } },
      call("g", "Grep", `Grep: greet in ${WT}/src`),
      call("h", "Glob", "Glob: **/*.ts"),
      call("t", "TodoWrite", "TodoWrite: 3 items"),
      call("m", "mcp__x__y", 'mcp__x__y {"a":1}'),
      { kind: "status", payload: { text: "running checks: npm test" } },
      { kind: "checks", payload: { command: "npm test", output: "1 failed", passed: false } },
      { kind: "status", payload: { text: "merged into main as 0123456789abcdef0123456789abcdef01234567" } },
      { kind: "finished", payload: { is_error: false, cost_usd: 0.01 } },
      { kind: "error", payload: { text: "Not logged in · Please run /login\nmore" } },
    ];
    expect(lines(entries)).toEqual([
      "Searched the code",
      "Updated its to-do list",
      "Used mcp__x__y",
      "Running checks: `npm test`",
      "Checks failed (`npm test`)",
      "Merged into main as 0123456",
      "Finished",
      "The agent stopped → Not logged in · Please run /login",
    ]);
  });

  it("words a turn that met the usage limit as a wait, not a failure", () => {
    const result = "You've hit your 5-hour limit · resets 3:58am (UTC)";
    const steps = activity([
      { kind: "finished", payload: { is_error: true, result, cost_usd: 0, usage_limit: true } },
      { kind: "finished", payload: { is_error: true, result: "API Error: 500", cost_usd: 0 } },
    ]);
    expect(steps.map((s) => [s.text, s.failed])).toEqual([
      ["Stopped at the usage limit", false],
      ["Stopped with an error", true],
    ]);
    expect(steps[0]?.detail).toContain("5-hour limit");
  });

  it("reads a run recorded from the real CLI", () => {
    // GET /api/tasks/{id}/transcript of tests/activity.spec.ts's task, payloads as served.
    const entries: TranscriptEntry[] = [
      { kind: "status", payload: { text: "agent started" } },
      { kind: "session", payload: { session_id: "748e173b-32a6-4400-9feb-4a0f64d4fb9a", model: "claude-opus-5-5" } },
      text("Reading the README first."),
      call("toolu_fake_1", "Read", "Read README.md"),
      result("toolu_fake_1", "1\t# demo\n2\t"),
      call("toolu_fake_4", "Write", "Write GREETING.md"),
      result("toolu_fake_4", "File created successfully at: GREETING.md (file state is current in your context \u2014 no need to Read it back)"),
      call("toolu_fake_7", "Bash", "Bash: until [ -e go ]; do sleep 0.1; done; rm go"),
      result("toolu_fake_7", "(Bash completed with no output)"),
      text("Done: GREETING.md added."),
      { kind: "finished", payload: { is_error: false, result: "Done: GREETING.md added.", session_id: "748e173b", cost_usd: 0.228284 } },
      { kind: "status", payload: { text: "committed 79dc790d4c39a2f4a001d6bd1aea1c54d608ad7b" } },
      { kind: "status", payload: { text: "no check command configured; skipping checks" } },
    ];
    expect(lines(entries)).toEqual([
      "Agent started",
      "Reading the README first.",
      "Read `README.md`",
      "Wrote `GREETING.md`",
      "Ran `until [ -e go ]; do sleep 0.1; done; rm go`",
      "Done: GREETING.md added.",
      "Finished",
      "Committed 79dc790",
      "No checks configured, so none ran",
    ]);
  });

  it("shortens the agent's prose and the paths in it", () => {
    const [s] = activity([text(`I wrote ${WT}/src/a.ts.\n\nSecond paragraph.`), text("And more.")], cx);
    expect(s?.text).toBe("I wrote src/a.ts. And more.");
    const [long] = activity([text("x".repeat(500))], cx);
    expect(long?.text.length).toBe(160);
  });

  it("keeps only the newest steps when told, and says the current one", () => {
    const log = new ActivityLog(cx, 1);
    expect(log.now()).toBeNull();
    log.add({ ...call("a", "Read", `Read ${WT}/a`), seq: 1 });
    log.add({ ...call("b", "Read", `Read ${WT}/b`), seq: 2 });
    expect(log.now()).toBe("Read 2 files");
    log.add({ ...call("c", "Bash", "Bash: cargo test"), seq: 3 });
    expect(log.steps).toHaveLength(1);
    expect(log.now()).toBe("Ran `cargo test`");
    log.add({ ...result("c", "Exit code 101\ntest failed", true), seq: 4 });
    expect(log.now()).toBe("Ran `cargo test` → failed: test failed (exit code 101)");
    expect(log.steps[0]?.seq).toBe(3);
  });

  it("reads a plan sent back by a refusal as the user's words", () => {
    const steps = activity(
      [
        call("p", "ExitPlanMode", "ExitPlanMode"),
        result("p", "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). To tell you how to proceed, the user said:\nUse Go instead.", true),
      ],
      cx,
    );
    expect(steps.map(stepLine)).toEqual(["You: Use Go instead."]);
  });
});

describe("paths and words", () => {
  it("makes paths relative to the worktree, and short outside it", () => {
    expect(relPath(`${WT}/src/a.ts`, cx)).toBe("src/a.ts");
    expect(relPath(`${WT}/`, { worktree: `${WT}/` })).toBe(".");
    expect(relPath("/etc/ssl/certs/x.pem", cx)).toBe("…/certs/x.pem");
    expect(relPath("src/a.ts", {})).toBe("src/a.ts");
    // A sibling whose name starts like the worktree is not inside it.
    expect(relPath(`${WT}x/a`, cx)).toBe(`…/${WT.split("/").at(-1)}x/a`);
  });

  it("shortens every path and hash in text", () => {
    expect(shortenPaths(`cat ${WT}/a.txt > "${PLAN}"`, cx)).toBe('cat a.txt > "the plan"');
    expect(shortenPaths("at deadbeefdeadbeefdeadbeefdeadbeefdeadbeef", cx)).toBe("at deadbee");
  });

  it("turns a tool error into a short reason", () => {
    expect(reason("<tool_use_error>String to replace not found in file.</tool_use_error>", cx)).toBe("String to replace not found in file.");
    expect(reason("Exit code 2", cx)).toBe("exit code 2");
    expect(reason(`Error: ENOENT ${WT}/x`, cx)).toBe("ENOENT x");
  });

  it("words the worker's notes for people", () => {
    expect(statusText("no check command configured; skipping checks")).toBe("No checks configured, so none ran");
  });

  it("splits code spans as text", () => {
    expect(codeParts("Wrote `a<b>.md` now")).toEqual([
      { code: false, text: "Wrote " },
      { code: true, text: "a<b>.md" },
      { code: false, text: " now" },
    ]);
  });
});
