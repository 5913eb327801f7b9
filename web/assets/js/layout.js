// A layered left-to-right layout in linear time, for graphs too big for dagre.
//
// dagre's crossing minimisation grows much faster than the graph; above a few hundred nodes
// it takes seconds and the tab freezes. Here a node's column is its breadth-first distance
// from an entry point, and nodes in a column are ordered by the mean row of their callers in
// the column before, in one sweep. Columns taller than the graph is wide are wrapped, so
// that the picture stays roughly square.

/**
 * @param {string[]} nodeIds
 * @param {Array<[string, string]>} edges source and target ids
 * @returns {Map<string, {x: number, y: number}>}
 */
export function layeredPositions(nodeIds, edges, {columnGap = 240, rowGap = 56} = {}) {
  const index = new Map(nodeIds.map((id, i) => [id, i]));
  const n = nodeIds.length;
  const out = Array.from({length: n}, () => []);
  const indegree = new Array(n).fill(0);
  for (const [source, target] of edges) {
    const s = index.get(source);
    const t = index.get(target);
    if (s === undefined || t === undefined || s === t) continue;
    out[s].push(t);
  }
  // A node's column is its distance from an entry point (breadth first from the nodes
  // nobody calls; what they do not reach starts again from the first node left). The
  // longest path would follow every retry chain and cycle and make the picture a line.
  const rank = new Int32Array(n).fill(-1);
  const order = [];
  const visit = (roots) => {
    const begin = order.length;
    for (const r of roots) {
      if (rank[r] >= 0) continue;
      rank[r] = 0;
      order.push(r);
    }
    for (let head = begin; head < order.length; head++) {
      const v = order[head];
      for (const w of out[v]) {
        if (rank[w] >= 0) continue;
        rank[w] = rank[v] + 1;
        order.push(w);
      }
    }
  };
  for (const targets of out) for (const w of targets) indegree[w]++;
  const entries = [];
  for (let v = 0; v < n; v++) if (indegree[v] === 0) entries.push(v);
  visit(entries);
  for (let v = 0; v < n; v++) if (rank[v] < 0) visit([v]);
  const forward = out.map((targets, v) => targets.filter((w) => rank[w] > rank[v]));
  const ranks = [];
  for (const v of order) (ranks[rank[v]] ||= []).push(v);

  // Order each rank by the mean row of its predecessors, then wrap tall ranks into columns.
  const predecessors = Array.from({length: n}, () => []);
  for (let v = 0; v < n; v++) for (const w of forward[v]) predecessors[w].push(v);
  const row = new Float64Array(n);
  const maxRows = Math.max(8, Math.ceil(Math.sqrt(n) * 1.5));
  const positions = new Map();
  let column = 0;
  for (const members of ranks) {
    if (!members) continue;
    const weight = (v) => {
      const p = predecessors[v];
      if (!p.length) return row[v];
      let sum = 0;
      for (const u of p) sum += row[u];
      return sum / p.length;
    };
    const sorted = members
      .map((v) => [weight(v), nodeIds[v], v])
      .sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1));
    const columns = Math.ceil(sorted.length / maxRows);
    const perColumn = Math.ceil(sorted.length / columns);
    sorted.forEach(([, id, v], i) => {
      const c = Math.floor(i / perColumn);
      const r = i % perColumn;
      row[v] = i;
      positions.set(id, {
        x: (column + c) * columnGap,
        y: (r - perColumn / 2) * rowGap + (c % 2) * (rowGap / 2),
      });
    });
    column += columns;
  }
  return positions;
}
