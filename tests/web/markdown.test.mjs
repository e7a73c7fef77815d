// The phone's Markdown: what each construct becomes, that nothing the model writes
// becomes markup, and that a streamed answer costs work linear in its length.
// Run with `node --test tests/web/` (scripts/test does). A small fake DOM stands in for
// the browser's: it records what is built, and counts the elements made.

import { test } from "node:test";
import assert from "node:assert/strict";

let made = 0;
let written = 0; // characters put into the tree, as text

class Node {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.style = {};
    this.className = "";
  }
  set textContent(text) {
    written += String(text).length;
    this.children = [String(text)];
  }
  get textContent() {
    return this.children.map((c) => (typeof c === "string" ? c : c.textContent)).join("");
  }
  append(...nodes) {
    for (const n of nodes) {
      if (typeof n === "string") written += n.length;
      if (n instanceof Node && n.tagName === "#FRAGMENT") this.children.push(...n.children.splice(0));
      else this.children.push(n);
    }
  }
  replaceChildren(...nodes) {
    this.children = [];
    this.append(...nodes);
  }
  insertBefore(node, before) {
    const at = this.children.indexOf(before);
    const nodes = node.tagName === "#FRAGMENT" ? node.children.splice(0) : [node];
    this.children.splice(at < 0 ? this.children.length : at, 0, ...nodes);
  }
}

globalThis.document = {
  createElement: (tag) => {
    made++;
    return new Node(tag);
  },
  createDocumentFragment: () => new Node("#fragment"),
};

const { render, Streamed } = await import("../../web/phone/js/markdown.js");

/// The tree as compact HTML-like text (the live wrapper left out: it has no box).
function html(node) {
  if (typeof node === "string") return node;
  const inner = node.children.map(html).join("");
  if (node.className === "live" || node.className === "part") return inner;
  const tag = node.tagName.toLowerCase();
  const attrs = [
    node.className && ` class="${node.className}"`,
    node.style.textAlign && ` align="${node.style.textAlign}"`,
    node.start && ` start="${node.start}"`,
    node.href && ` href="${node.href}"`,
  ].join("");
  return `<${tag}${attrs}>${inner}</${tag}>`;
}

const shown = (source) => {
  const into = new Node("div");
  render(into, source);
  return into.children.map(html).join("");
};

test("paragraphs, headings, emphasis, code and links", () => {
  assert.equal(shown("# Title\nsome **bold** and *em*\nnext line\n\nnew `x` [doc](https://a.example/d)"),
    '<p><strong>Title</strong></p><p>some <strong>bold</strong> and <em>em</em><br></br>next line</p>' +
    '<p>new <code>x</code> <a href="https://a.example/d">doc</a></p>');
  assert.equal(shown("```rust\nfn main() {}\n\n**not bold**\n```\nafter"),
    "<pre><code>fn main() {}\n\n**not bold**</code></pre><p>after</p>");
});

test("lists nest by indentation, and ordered ones keep their start", () => {
  assert.equal(shown("- a\n  - a1\n  - a2\n    - deep\n- b\n\n3. three\n4. four"),
    "<ul><li>a<ul><li>a1</li><li>a2<ul><li>deep</li></ul></li></ul></li><li>b</li></ul>" +
    '<ol start="3"><li>three</li><li>four</li></ol>');
  // A list of another kind at the same depth is another list; an indented line goes on
  // in the item above.
  assert.equal(shown("- x\n  more about x\n1. one"), "<ul><li>x<br></br>more about x</li></ul><ol><li>one</li></ol>");
});

test("block quotes hold blocks, and pipe tables have a head, a body and alignment", () => {
  assert.equal(shown("> quoted **text**\n> - item\nafter"),
    "<blockquote><p>quoted <strong>text</strong></p><ul><li>item</li></ul></blockquote><p>after</p>");
  assert.equal(shown("| name | size |\n|:-----|-----:|\n| a.rs | 10 |\n| `b` | 2 |\n\nend"),
    '<div class="table"><table><thead><tr><th>name</th><th align="right">size</th></tr></thead>' +
    '<tbody><tr><td>a.rs</td><td align="right">10</td></tr>' +
    '<tr><td><code>b</code></td><td align="right">2</td></tr></tbody></table></div><p>end</p>');
  // A line with a pipe but no rule under it is text.
  assert.equal(shown("a | b"), "<p>a | b</p>");
});

test("nothing the model writes becomes markup", () => {
  const into = new Node("div");
  render(into, '<img src=x onerror=alert(1)>\n| <b>h</b> |\n|---|\n| <script>x</script> |\n[x](javascript:alert(1))');
  const strings = [];
  const walk = (n) => (typeof n === "string" ? strings.push(n) : n.children.forEach(walk));
  walk(into);
  // Every tag in the source is text, never an element, and the javascript: link is not one.
  assert.ok(strings.some((s) => s.includes("<img src=x onerror=alert(1)>")));
  assert.ok(strings.some((s) => s.includes("<script>x</script>")));
  const tags = new Set();
  const tagsOf = (n) => typeof n !== "string" && (tags.add(n.tagName), n.children.forEach(tagsOf));
  tagsOf(into);
  assert.deepEqual([...tags].sort(), ["DIV", "P", "TABLE", "TBODY", "TD", "TH", "THEAD", "TR"].sort());
});

test("a streamed answer ends as the whole answer renders", () => {
  const answer = "Intro line\n\n- one\n  - nested\n\n```\ncode\n\nstill code\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> done";
  const into = new Node("div");
  const view = new Streamed(into);
  for (let n = 1; n <= answer.length; n += 3) view.update(answer.slice(0, n));
  view.update(answer);
  assert.equal(into.children.map(html).join(""), shown(answer));
});

test("streaming costs work linear in the answer's length", () => {
  const paragraph = "A sentence of the answer that goes on for a while. ".repeat(2) + "\n\n";
  const count = (paragraphs) => {
    const answer = paragraph.repeat(paragraphs);
    made = 0;
    const view = new Streamed(new Node("div"));
    for (let n = 10; n < answer.length; n += 10) view.update(answer.slice(0, n));
    view.update(answer);
    return made;
  };
  // Twice the answer, about twice the elements made (redrawing it whole at each delta
  // would make four times as many).
  const [small, big] = [count(100), count(200)];
  assert.ok(big < small * 2.2, `${small} elements for 100 paragraphs, ${big} for 200`);
});

test("an answer that ends on its closing fence shows no fence, streamed or ended", () => {
  const answer = "Look:\n```\nlet x = 1;\n```";
  const into = new Node("div");
  const view = new Streamed(into);
  for (let n = 1; n <= answer.length; n++) view.update(answer.slice(0, n));
  assert.ok(!into.textContent.includes("```"), into.textContent);
  view.end(answer);
  assert.equal(into.children.map(html).join(""), shown(answer));
});

test("a long code block streams in work linear in its length", () => {
  const count = (lines) => {
    const answer = "Here it is:\n```rust\n" + "let x = compute(1, 2, 3); // a line of code\n".repeat(lines) + "```\nDone.\n";
    written = 0;
    made = 0;
    const into = new Node("div");
    const view = new Streamed(into);
    for (let n = 7; n < answer.length; n += 7) view.update(answer.slice(0, n));
    view.update(answer);
    assert.equal(into.children.map(html).join(""), shown(answer));
    return { written, made };
  };
  // Redrawing the block at each delta would put four times the text in for twice the
  // lines; adding each line once, about twice.
  const [small, big] = [count(1000), count(2000)];
  assert.ok(big.written < small.written * 2.2, `${small.written} characters for 1000 lines, ${big.written} for 2000`);
  assert.ok(big.made < small.made * 2.2, `${small.made} elements for 1000 lines, ${big.made} for 2000`);
});

test("hostile shapes render as text instead of running away", () => {
  // Thousands of nested quotes: the depth stops at 8, the rest is text.
  const deep = new Node("div");
  render(deep, ">".repeat(5000) + " deep");
  let depth = 0;
  for (let n = deep.children[0]; n && n.tagName === "BLOCKQUOTE"; n = n.children[0]) depth++;
  assert.equal(depth, 8);
  assert.ok(deep.textContent.endsWith(" deep"));
  // Lines that would make the formatting expressions backtrack are left unformatted.
  const brackets = "[".repeat(100000);
  assert.equal(shown(brackets), `<p>${brackets}</p>`);
  const rule = "|" + " ".repeat(100000) + "-";
  assert.ok(shown(`a | b\n${rule}`).startsWith("<p>a | b<br></br>|"));
});
