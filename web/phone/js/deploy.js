// Deploy from the phone (docs/protocol.md "Deploy from the phone"): the card that shows
// a source build as it goes — each step, how long it took, the last lines of one that
// failed — and what became of its release. One card per build, redrawn in place from
// each `deploy_status`; server strings reach the page through textContent only.

const STATE_MARK = { waiting: "·", running: "…", passed: "✓", failed: "✗", skipped: "–" };
const OUTCOME = { running: "building", failed: "failed", cancelled: "stopped", stored: "built" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/// A build's key: a status of the same build redraws the same card.
export function buildKey(build) {
  return `${build.startedAt}:${build.source}`;
}

/// Draws `build` into `card` (emptied first).
export function draw(card, build) {
  card.replaceChildren();
  card.className = `msg deploy ${build.outcome}`;
  const commit = build.commit ? ` at ${build.commit.slice(0, 12)}` : "";
  const dirty = build.dirty ? " with uncommitted changes" : "";
  card.append(el("div", "title", `Deploy of ${build.source}${commit}${dirty}: ${OUTCOME[build.outcome] ?? build.outcome}`));
  const steps = el("ol", "steps");
  for (const step of build.steps ?? []) {
    const seconds = step.state === "waiting" ? "" : ` ${(step.durationMs / 1000).toFixed(1)} s`;
    const row = el("li", `step ${step.state}`, `${STATE_MARK[step.state] ?? "?"} ${step.name}${seconds}`);
    steps.append(row);
    if (step.state === "failed" && step.tail?.length) {
      const lines = el("details", "tail");
      lines.open = true;
      lines.append(el("summary", "", `last lines of ${step.name}`), el("pre", "", step.tail.join("\n")));
      row.append(lines);
    }
  }
  card.append(steps);
  if (build.error) card.append(el("div", "error", build.error));
  if (build.deploy) {
    card.append(el("div", build.deploy.ok ? "outcome good" : "outcome bad", build.deploy.message));
  }
}

/// Whether a failed build was refused for uncommitted changes only (the phone may then
/// offer to deploy them as they are).
export function refusedAsDirty(build) {
  return build.outcome === "failed"
    && (build.steps ?? []).some((s) => s.name === "checkout" && s.state === "failed")
    && /uncommitted changes/.test(build.error ?? "");
}
