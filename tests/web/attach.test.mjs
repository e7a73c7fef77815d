// What the phone accepts to send with a message, before anything reaches the computer:
// the kinds, the names without a type, the size limit, and base64 that round-trips.
// Run with `node --test tests/web/` (scripts/test does).

import { test } from "node:test";
import assert from "node:assert/strict";

const { prepare, toBase64, MAX_FILES, ACCEPT } = await import("../../web/phone/js/attach.js");

test("a text file without a type is known by its extension and sent as a document", async () => {
  const r = await prepare(new File(["# notes\n"], "notes.md", { type: "" }));
  assert.equal(r.error, undefined);
  assert.deepEqual(r.attachment, {
    type: "document",
    mediaType: "text/markdown",
    data: Buffer.from("# notes\n").toString("base64"),
    name: "notes.md",
  });
});

test("a small picture goes as it is", async () => {
  const bytes = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  const r = await prepare(new File([bytes], "a.png", { type: "image/png" }));
  assert.equal(r.attachment.type, "image");
  assert.equal(r.attachment.mediaType, "image/png");
  assert.deepEqual(r.bytes, bytes);
});

test("kinds Claude cannot take are refused, saying which go", async () => {
  for (const [name, type] of [["x.svg", "image/svg+xml"], ["tool.exe", "application/x-msdownload"], ["x", ""]]) {
    const r = await prepare(new File(["<svg/>"], name, { type }));
    assert.equal(r.attachment, undefined, name);
    assert.match(r.error, /^.+: only pictures \(PNG, JPEG, GIF, WebP\), PDFs and text files can be sent\.$/);
  }
});

test("a document over the limit is refused with both sizes", async () => {
  const r = await prepare(new File([new Uint8Array(720 * 1024 + 1)], "big.pdf", { type: "application/pdf" }));
  assert.equal(r.error, "big.pdf is 721 KiB; a file may be at most 720 KiB.");
  const ok = await prepare(new File([new Uint8Array(720 * 1024)], "ok.pdf", { type: "application/pdf" }));
  assert.equal(ok.error, undefined);
});

test("base64 round-trips every byte, also past one chunk", () => {
  const bytes = new Uint8Array(100000).map((_, i) => (i * 7) % 256);
  assert.deepEqual(new Uint8Array(Buffer.from(toBase64(bytes), "base64")), bytes);
});

test("the picker offers what the protocol takes", () => {
  assert.equal(MAX_FILES, 4);
  for (const t of ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain", ".md"]) {
    assert.ok(ACCEPT.split(",").includes(t), t);
  }
  assert.ok(!ACCEPT.includes("svg"));
});
