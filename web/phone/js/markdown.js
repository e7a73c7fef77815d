// A small Markdown renderer that builds DOM nodes: text always goes in through
// textContent, so nothing the model writes can become markup or script. Paragraphs,
// headings, fenced code, lists (nested by indentation), block quotes and pipe tables.
//
// A streamed answer grows by deltas; rendering it whole at each delta costs the square
// of its length. `Streamed` renders a part once it can no longer change (it ends before
// a blank line outside a code fence, or before a fence) and redraws only the part after
// it; inside a code fence each whole line is added once, so a long code block streams
// in linear time too.

function inline(parent, text) {
  if (text.length > MAX_FORMATTED_LINE) {
    parent.append(text);
    return;
  }
  // `code`, **bold**, *em*, [label](https://…)
  const re = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*|\[[^\]]+\]\(https?:\/\/[^)\s]+\))/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    const t = m[0];
    let node;
    if (t.startsWith("`")) {
      node = document.createElement("code");
      node.textContent = t.slice(1, -1);
    } else if (t.startsWith("**")) {
      node = document.createElement("strong");
      node.textContent = t.slice(2, -2);
    } else if (t.startsWith("*")) {
      node = document.createElement("em");
      node.textContent = t.slice(1, -1);
    } else {
      const [, label, href] = t.match(/^\[([^\]]+)\]\((.+)\)$/);
      node = document.createElement("a");
      node.textContent = label;
      node.href = href;
      node.target = "_blank";
      node.rel = "noopener noreferrer";
    }
    parent.append(node);
    last = m.index + t.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

const FENCE = /^\s*```/;
/// Past these, text is shown as it is: the model's output (which a prompt injection can
/// shape) must not make the page's regular expressions or recursion run away.
const MAX_QUOTE_DEPTH = 8;
const MAX_FORMATTED_LINE = 4000;
const ITEM = /^(\s*)([-*+]|\d+[.)])\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function cells(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split("|").map((c) => c.trim());
}

function isTableStart(lines, i) {
  const rule = lines[i + 1];
  return lines[i].includes("|") && rule !== undefined && rule.length <= MAX_FORMATTED_LINE && rule.includes("-") && TABLE_RULE.test(rule);
}

function table(into, lines, i) {
  const wrap = document.createElement("div");
  wrap.className = "table";
  const t = document.createElement("table");
  const align = cells(lines[i + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : ""));
  const row = (line, cell) => {
    const tr = document.createElement("tr");
    cells(line).forEach((text, k) => {
      const c = document.createElement(cell);
      if (align[k]) c.style.textAlign = align[k];
      inline(c, text);
      tr.append(c);
    });
    return tr;
  };
  const head = document.createElement("thead");
  head.append(row(lines[i], "th"));
  t.append(head);
  const body = document.createElement("tbody");
  let j = i + 2;
  for (; j < lines.length && lines[j].includes("|") && lines[j].trim(); j++) body.append(row(lines[j], "td"));
  t.append(body);
  wrap.append(t);
  into.append(wrap);
  return j;
}

/// Lists from line `i` on: deeper indentation nests a list in the item above it.
function lists(into, lines, i) {
  const stack = []; // {indent, list, item}
  for (; i < lines.length; i++) {
    const line = lines[i];
    const m = line.match(ITEM);
    if (!m) {
      // An indented line goes on in the item above; anything else ends the lists.
      if (stack.length && line.trim() && /^\s+/.test(line) && !FENCE.test(line)) {
        const item = stack[stack.length - 1].item;
        item.append(document.createElement("br"));
        inline(item, line.trim());
        continue;
      }
      break;
    }
    const [, space, marker, text] = m;
    const indent = space.replace(/\t/g, "    ").length;
    const ordered = /\d/.test(marker);
    while (stack.length && indent < stack[stack.length - 1].indent) stack.pop();
    let top = stack[stack.length - 1];
    if (!top || indent > top.indent || (top.list.tagName === "OL") !== ordered) {
      const list = document.createElement(ordered ? "ol" : "ul");
      if (ordered && parseInt(marker, 10) !== 1) list.start = parseInt(marker, 10);
      if (top && indent > top.indent) top.item.append(list);
      else {
        if (top) stack.pop();
        into.append(list);
      }
      top = { indent, list, item: null };
      stack.push(top);
    }
    const li = document.createElement("li");
    inline(li, text);
    top.list.append(li);
    top.item = li;
  }
  return i;
}

/// Renders Markdown `source` and appends it to `into`; `depth` counts the block quotes
/// it is in.
function blocks(into, source, depth = 0) {
  const lines = source.split("\n");
  let para = null;
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    if (FENCE.test(line)) {
      const code = [];
      for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
      i++;
      const pre = document.createElement("pre");
      const c = document.createElement("code");
      c.textContent = code.join("\n");
      pre.append(c);
      into.append(pre);
      para = null;
      continue;
    }
    if (ITEM.test(line)) {
      i = lists(into, lines, i);
      para = null;
      continue;
    }
    if (depth < MAX_QUOTE_DEPTH && QUOTE.test(line)) {
      const inner = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) inner.push(lines[i].match(QUOTE)[1]);
      const quote = document.createElement("blockquote");
      blocks(quote, inner.join("\n"), depth + 1);
      into.append(quote);
      para = null;
      continue;
    }
    if (isTableStart(lines, i)) {
      i = table(into, lines, i);
      para = null;
      continue;
    }
    i++;
    if (!line.trim()) {
      para = null;
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const h = document.createElement("strong");
      const p = document.createElement("p");
      h.textContent = heading[2];
      p.append(h);
      into.append(p);
      para = null;
      continue;
    }
    if (!para) {
      para = document.createElement("p");
      into.append(para);
    } else {
      para.append(document.createElement("br"));
    }
    inline(para, line);
  }
}

/// Renders `source` into `into` (replacing its content).
export function render(into, source) {
  into.replaceChildren();
  blocks(into, source);
}

/// An answer as it streams into `into`: `update(text)` with the whole text so far.
export class Streamed {
  constructor(into) {
    this.into = into;
    this.done = 0; // source before this is rendered for good, into `this.into`
    this.scanned = 0; // where the search for the next cut goes on
    this.code = null; // the fenced code block being streamed: {lines, tail}
    this.live = document.createElement("div"); // the part after `done`, redrawn
    this.live.className = "live";
    into.replaceChildren(this.live);
  }

  update(source) {
    let at = this.scanned;
    while (true) {
      const end = source.indexOf("\n", at);
      if (end < 0) break;
      const line = source.slice(at, end);
      if (FENCE.test(line)) {
        if (this.code) {
          // The fence closes: the block stands as it is.
          this.code.tail.textContent = "";
          this.code = null;
        } else {
          // A fence starts a block of its own: whatever came before is final.
          this.settle(source, at);
          this.code = this.openCode();
        }
        this.done = end + 1;
      } else if (this.code) {
        // A whole line of code is final: added once, never redrawn.
        this.code.lines.append(this.code.empty ? line : "\n" + line);
        this.code.empty = false;
        this.done = end + 1;
      } else if (!line.trim()) {
        this.settle(source, end + 1);
      }
      at = end + 1;
    }
    this.scanned = at;
    this.live.replaceChildren();
    const rest = source.slice(this.done);
    // A closing fence still without its newline (an answer's last line) shows as one.
    if (this.code) this.code.tail.textContent = !rest || FENCE.test(rest) ? "" : this.code.empty ? rest : "\n" + rest;
    else blocks(this.live, rest);
  }

  /// The answer is whole: drawn as `render` draws it (once, in one linear pass), so
  /// nothing only a streamed answer shows (a last line without its newline) stays.
  end(source) {
    render(this.into, source);
  }

  /// Renders the source up to `upto` for good (a block ended there).
  settle(source, upto) {
    if (upto <= this.done) return;
    const final = document.createDocumentFragment();
    blocks(final, source.slice(this.done, upto));
    this.into.insertBefore(final, this.live);
    this.done = upto;
  }

  /// A code block the streamed lines go into (what `blocks` draws for a fence, its
  /// text in two parts: the lines that are whole, then the one still arriving).
  openCode() {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    const lines = document.createElement("span");
    const tail = document.createElement("span");
    lines.className = tail.className = "part";
    code.append(lines, tail);
    pre.append(code);
    this.into.insertBefore(pre, this.live);
    return { lines, tail, empty: true };
  }
}
