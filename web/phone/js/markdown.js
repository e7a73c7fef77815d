// A small Markdown renderer that builds DOM nodes: text always goes in through
// textContent, so nothing the model writes can become markup or script.

function inline(parent, text) {
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

/// Renders `source` into `into` (replacing its content).
export function render(into, source) {
  into.replaceChildren();
  const lines = source.split("\n");
  let list = null;
  let para = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      const pre = document.createElement("pre");
      const c = document.createElement("code");
      c.textContent = code.join("\n");
      pre.append(c);
      into.append(pre);
      list = para = null;
      continue;
    }
    const item = line.match(/^\s*(?:[-*]|\d+\.)\s+(.*)$/);
    if (item) {
      if (!list) {
        list = document.createElement(/^\s*\d/.test(line) ? "ol" : "ul");
        into.append(list);
      }
      const li = document.createElement("li");
      inline(li, item[1]);
      list.append(li);
      para = null;
      continue;
    }
    list = null;
    if (!line.trim()) {
      para = null;
      continue;
    }
    const heading = line.match(/^(#{1,3})\s+(.*)$/);
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
