// What a file tool would change, as a person checks it before saying yes: the lines an
// Edit or MultiEdit removes and adds (with a few unchanged lines around them), a Write's
// whole new contents. Pure functions of the tool's input, so they are tested without a
// browser; app.js turns them into nodes (always through textContent).
//
// The diff trims the lines both sides share at the start and at the end and shows the
// rest as removed, then added: linear in the input's length, whatever an agent sends,
// and exact for the usual edit (one region changed). Long changes are cut to `limit`
// lines for display, saying how many more there are.

/// Unchanged lines kept around a change.
const CONTEXT = 2;

/// The file tools whose input carries the change itself.
export const FILE_TOOLS = new Set(["Edit", "MultiEdit", "Write"]);

const lines = (text) => (typeof text === "string" && text !== "" ? text.split("\n") : []);

/// `old` → `new` as `[{kind: " " | "-" | "+", text}]`.
export function lineDiff(oldText, newText) {
  const a = lines(oldText);
  const b = lines(newText);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end++;
  const before = a.slice(Math.max(0, start - CONTEXT), start).map((text) => ({ kind: " ", text }));
  const removed = a.slice(start, a.length - end).map((text) => ({ kind: "-", text }));
  const added = b.slice(start, b.length - end).map((text) => ({ kind: "+", text }));
  const after = a.slice(a.length - end, a.length - end + CONTEXT).map((text) => ({ kind: " ", text }));
  return [...before, ...removed, ...added, ...after];
}

/// What `tool` with `input` changes, or null when it is not a file tool (or its input
/// is not what that tool takes): `{path, hunks: [[{kind, text}]], created?: {lines}}`.
export function describeChange(tool, input) {
  if (!FILE_TOOLS.has(tool) || !input || typeof input !== "object") return null;
  const path = typeof input.file_path === "string" ? input.file_path : "";
  if (tool === "Write") {
    if (typeof input.content !== "string") return null;
    return { path, hunks: [], created: { lines: lines(input.content) } };
  }
  const edits = tool === "MultiEdit" ? input.edits : [input];
  if (!Array.isArray(edits)) return null;
  const hunks = edits
    .filter((e) => e && typeof e === "object")
    .map((e) => lineDiff(e.old_string, e.new_string));
  return { path, hunks, replaceAll: input.replace_all === true };
}

/// The first `limit` of `items`, and how many were left out.
export function cut(items, limit) {
  return { shown: items.slice(0, limit), more: Math.max(0, items.length - limit) };
}
