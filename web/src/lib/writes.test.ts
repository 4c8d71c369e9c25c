// Every change to the model goes through `app.apply` and its staleness check: no
// screen writes the model's maps or lists itself.
import { expect, it } from "vitest";

const sources = import.meta.glob(["../components/*.svelte", "../App.svelte"], {
  query: "?raw",
  import: "default",
  eager: true,
}) as Record<string, string>;

it("no component writes tasks, inbox items or messages directly", () => {
  expect(Object.keys(sources).length).toBeGreaterThan(10);
  const direct = /\bapp\.(tasks|inbox|messages|streaming|lastOutput)\s*(\.(set|delete|clear)\(|=[^=]|\[)/;
  const offenders = Object.entries(sources).flatMap(([file, text]) =>
    text.split("\n").flatMap((line, i) => (direct.test(line) ? [`${file}:${i + 1}: ${line.trim()}`] : [])),
  );
  expect(offenders).toEqual([]);
});
