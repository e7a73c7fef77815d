// The phone's deploy card: each step with its state and time, a failed step's last
// lines, the release's fate; a markup-looking line from a build stays text; a dirty
// refusal is recognised so the phone can offer to deploy the changes as they are.
// Run with `node --test tests/web/` (scripts/test does). A small fake DOM records what
// is built.

import { test } from "node:test";
import assert from "node:assert/strict";

class Node {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.className = "";
  }
  set textContent(text) {
    this.children = [String(text)];
  }
  get textContent() {
    return this.children.map((c) => (typeof c === "string" ? c : c.textContent)).join("");
  }
  append(...nodes) {
    this.children.push(...nodes);
  }
  replaceChildren(...nodes) {
    this.children = [...nodes];
  }
}
globalThis.document = { createElement: (tag) => new Node(tag) };

const { draw, buildKey, refusedAsDirty } = await import("../../web/phone/js/deploy.js");

const find = (node, cls) => {
  if (typeof node === "string") return [];
  const here = node.className.split(" ").includes(cls) ? [node] : [];
  return here.concat(node.children.flatMap((c) => find(c, cls)));
};

function build(overrides) {
  return {
    source: "/home/me/chroxy", rev: "HEAD", commit: "0123456789abcdef0123", dirty: false,
    requestedBy: "pixel", startedAt: 1000, outcome: "running", error: null, release: null, deploy: null,
    steps: [
      { name: "checkout", state: "passed", durationMs: 120, tail: [] },
      { name: "build", state: "running", durationMs: 41000, tail: ["Compiling chroxy v0.1.0"] },
      { name: "check", state: "waiting", durationMs: 0, tail: [] },
      { name: "store", state: "waiting", durationMs: 0, tail: [] },
    ],
    ...overrides,
  };
}

test("a running build shows each step, its time, and only what has started", () => {
  const card = new Node("div");
  draw(card, build({}));
  assert.equal(card.className, "msg deploy running");
  assert.match(find(card, "title")[0].textContent, /Deploy of \/home\/me\/chroxy at 0123456789ab: building/);
  const steps = find(card, "step").map((s) => s.textContent);
  assert.deepEqual(steps, ["✓ checkout 0.1 s", "… build 41.0 s", "· check", "· store"]);
  assert.equal(find(card, "tail").length, 0, "no lines while nothing failed");
});

test("a failed step's last lines are shown as text, and the card is redrawn in place", () => {
  const card = new Node("div");
  draw(card, build({}));
  const failed = build({
    outcome: "failed",
    error: "the build step failed (exit status 101)",
    steps: [
      { name: "checkout", state: "passed", durationMs: 120, tail: [] },
      { name: "build", state: "failed", durationMs: 52000, tail: ["error[E0308]: mismatched types", "<img src=x onerror=alert(1)>"] },
      { name: "check", state: "waiting", durationMs: 0, tail: [] },
      { name: "store", state: "waiting", durationMs: 0, tail: [] },
    ],
  });
  draw(card, failed);
  assert.equal(find(card, "title").length, 1, "drawn again, not added to");
  const tail = find(card, "tail")[0];
  assert.equal(tail.children[1].tagName, "PRE");
  assert.equal(tail.children[1].children[0], "error[E0308]: mismatched types\n<img src=x onerror=alert(1)>");
  assert.equal(find(card, "error")[0].textContent, "the build step failed (exit status 101)");
  assert.equal(buildKey(failed), buildKey(build({})), "the same build");
});

test("what became of the release is shown, good or bad", () => {
  const card = new Node("div");
  draw(card, build({ outcome: "stored", release: "4-ab", deploy: { ok: true, message: "release 4-ab survived its canary window", event: "promoted" } }));
  assert.equal(find(card, "good")[0].textContent, "release 4-ab survived its canary window");
  draw(card, build({ outcome: "stored", release: "5-cd", deploy: { ok: false, message: "release 5-cd exited before its health gate passed; 4-ab keeps serving", event: "worker_exited" } }));
  assert.match(find(card, "bad")[0].textContent, /keeps serving/);
});

test("a refusal for uncommitted changes is told apart from other failures", () => {
  const checkoutFailed = (error) => build({
    outcome: "failed", error,
    steps: [{ name: "checkout", state: "failed", durationMs: 10, tail: [] }],
  });
  assert.ok(refusedAsDirty(checkoutFailed("/x has uncommitted changes (a.rs): commit them, or deploy them as they are with --allow-dirty")));
  assert.ok(!refusedAsDirty(checkoutFailed("`v9` names no commit in this repository")));
  assert.ok(!refusedAsDirty(build({})));
});
