// The critical path of a trace: the chain of work that decided when the root finished.
//
// The standard algorithm (Jaeger's): start at the root's end; among its children (clamped to
// the parent's time) take the last-finishing one that ends before the cursor, its own
// critical path, then move the cursor to that child's start and repeat; the parent's time not
// covered by a chosen child is blocking time of the parent itself. No DOM: node can import it.

/**
 * `spans`: `{span_id, parent_span_id, start, end}` in any unit. Returns the blocking sections
 * `{span_id, start, end}` from the root's end backwards, and the ids of the spans the walk
 * went through (each once, root first), including a span whose time its child covers whole.
 */
export function criticalPath(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    const parent = span.parent_span_id;
    if (parent && parent !== span.span_id && byId.has(parent)) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(span);
    } else {
      roots.push(span);
    }
  }
  if (!roots.length) return {sections: [], spanIds: []};
  // The true root (no parent at all) if there is one, else the orphan that ends last.
  const real = roots.filter((s) => !s.parent_span_id);
  const candidates = real.length ? real : roots;
  const root = candidates.reduce((best, s) => (s.end > best.end ? s : best));
  const sections = [];
  const spanIds = [];
  const seen = new Set();
  // An explicit stack: a deep trace must not overflow the call stack.
  const visit = (first, firstStart, firstEnd) => {
    const work = [{span: first, start: firstStart, end: firstEnd, kids: null, cursor: firstEnd, index: 0}];
    while (work.length) {
      const frame = work[work.length - 1];
      if (!frame.kids) {
        frame.kids = (children.get(frame.span.span_id) || [])
          .filter((c) => !seen.has(c.span_id))
          .map((c) => ({span: c, start: Math.max(c.start, frame.start), end: Math.min(c.end, frame.end)}))
          .filter((c) => c.end >= c.start)
          .sort((a, b) => b.end - a.end || b.start - a.start);
        seen.add(frame.span.span_id);
        spanIds.push(frame.span.span_id);
      }
      let next = null;
      while (frame.index < frame.kids.length && frame.cursor > frame.start) {
        const kid = frame.kids[frame.index++];
        if (kid.end > frame.cursor) continue; // overlaps the child already on the path
        next = kid;
        break;
      }
      if (next) {
        if (next.end < frame.cursor) sections.push({span_id: frame.span.span_id, start: next.end, end: frame.cursor});
        frame.cursor = next.start;
        work.push({span: next.span, start: next.start, end: next.end, kids: null, cursor: next.end, index: 0});
        continue;
      }
      if (frame.cursor > frame.start) sections.push({span_id: frame.span.span_id, start: frame.start, end: frame.cursor});
      work.pop();
    }
  };
  visit(root, root.start, root.end);
  return {sections, spanIds};
}
