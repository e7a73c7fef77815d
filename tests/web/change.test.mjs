// What a file tool would change, as the phone shows it before the person says yes.
// Run with `node --test tests/web/` (scripts/test does).

import { test } from "node:test";
import assert from "node:assert/strict";

const { lineDiff, describeChange, cut } = await import("../../web/phone/js/change.js");

const show = (rows) => rows.map((r) => `${r.kind}${r.text}`);

test("an edit shows what it removes and adds, with two unchanged lines around it", () => {
  const old = "a\nb\nc\nold line\nd\ne\nf";
  const now = "a\nb\nc\nnew line\nnew second\nd\ne\nf";
  assert.deepEqual(show(lineDiff(old, now)), [" b", " c", "-old line", "+new line", "+new second", " d", " e"]);
  // Nothing in common: all out, all in.
  assert.deepEqual(show(lineDiff("x\ny", "z")), ["-x", "-y", "+z"]);
  // Pure additions and removals; an empty side is no line at all.
  assert.deepEqual(show(lineDiff("", "new")), ["+new"]);
  assert.deepEqual(show(lineDiff("gone", "")), ["-gone"]);
  // Repeated lines do not confuse the trimming: the shared end never overlaps the start.
  assert.deepEqual(show(lineDiff("x\nx", "x")), [" x", "-x"]);
  assert.deepEqual(show(lineDiff("x", "x\nx")), [" x", "+x"]);
});

test("Edit, MultiEdit and Write are described; other tools and bad inputs are not", () => {
  const edit = describeChange("Edit", { file_path: "/p/a.rs", old_string: "1", new_string: "2", replace_all: true });
  assert.equal(edit.path, "/p/a.rs");
  assert.deepEqual(edit.hunks.map(show), [["-1", "+2"]]);
  assert.equal(edit.replaceAll, true);

  const multi = describeChange("MultiEdit", {
    file_path: "/p/b.rs",
    edits: [{ old_string: "a", new_string: "b" }, "not an edit", { old_string: "c", new_string: "d" }],
  });
  assert.deepEqual(multi.hunks.map(show), [["-a", "+b"], ["-c", "+d"]]);

  const write = describeChange("Write", { file_path: "/p/new.txt", content: "one\ntwo" });
  assert.deepEqual(write.created.lines, ["one", "two"]);
  assert.deepEqual(write.hunks, []);

  assert.equal(describeChange("Bash", { command: "ls" }), null);
  assert.equal(describeChange("Write", { file_path: "/p/x" }), null, "no content: nothing to show as a change");
  assert.equal(describeChange("MultiEdit", { file_path: "/p/x", edits: "all of them" }), null);
  assert.equal(describeChange("Edit", null), null);
  // Markup is text here: the page only ever sets it as textContent.
  const hostile = describeChange("Edit", { file_path: "<b>x</b>", old_string: "", new_string: "<script>alert(1)</script>" });
  assert.deepEqual(hostile.hunks.map(show), [["+<script>alert(1)</script>"]]);
});

test("a huge write is described in time linear in its size and cut for display", () => {
  const big = Array.from({ length: 200000 }, (_, i) => `line ${i}`).join("\n");
  const started = process.hrtime.bigint();
  const change = describeChange("Write", { file_path: "/p/big", content: big });
  const edit = describeChange("Edit", { file_path: "/p/big", old_string: big, new_string: big + "\nend" });
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  assert.equal(change.created.lines.length, 200000);
  assert.deepEqual(show(edit.hunks[0]), [" line 199998", " line 199999", "+end"]);
  const { shown, more } = cut(change.created.lines, 200);
  assert.equal(shown.length, 200);
  assert.equal(more, 199800);
  // Printed, not asserted: a figure, not a timing test.
  console.log(`described 2 × 200 000 lines in ${elapsedMs.toFixed(1)} ms`);
});
