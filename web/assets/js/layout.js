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

// ---- edges that cross nodes ---------------------------------------------------------------
//
// A straight edge drawn through a node it does not touch reads as a call to that node. After
// the layout, each such edge gets waypoints beside the nodes in its way (cytoscape's
// `segments` edges go exactly through them), and the count before and after is kept so that
// the tests and the benchmark can see it.

/** Clearance between a detoured edge and the side of the node it goes round. */
const DETOUR_MARGIN = 14;

/** Whether the segment p-q passes through the box {x1, y1, x2, y2} (Liang–Barsky clipping). */
export function segmentCrossesBox(p, q, box) {
  let t0 = 0;
  let t1 = 1;
  const dx = q.x - p.x;
  const dy = q.y - p.y;
  const sides = [
    [-dx, p.x - box.x1],
    [dx, box.x2 - p.x],
    [-dy, p.y - box.y1],
    [dy, box.y2 - p.y],
  ];
  for (const [along, room] of sides) {
    if (along === 0) {
      if (room < 0) return false;
      continue;
    }
    const t = room / along;
    if (along < 0) t0 = Math.max(t0, t);
    else t1 = Math.min(t1, t);
    if (t0 > t1) return false;
  }
  return true;
}

/**
 * Edges whose drawn polyline passes through a node other than their own two.
 * @param {Map<string, {x1:number, y1:number, x2:number, y2:number}>} boxes node boxes by id
 * @param {Array<{id: string, source: string, target: string, points: Array<{x:number, y:number}>}>} edges
 * @returns {string[]} the ids of the crossing edges
 */
export function crossingEdges(boxes, edges) {
  const grid = new BoxGrid(boxes);
  const crossing = [];
  for (const edge of edges) {
    if (edgeCrosses(grid, edge)) crossing.push(edge.id);
  }
  return crossing;
}

function edgeCrosses(grid, {source, target, points}) {
  for (let i = 1; i < points.length; i++) {
    for (const [id, box] of grid.near(points[i - 1], points[i])) {
      if (id === source || id === target) continue;
      if (segmentCrossesBox(points[i - 1], points[i], box)) return true;
    }
  }
  return false;
}

/**
 * Waypoints that take each crossing edge round the nodes in its way: for every node the
 * straight line passes through, a point beside it on the side that needs the smaller step,
 * as `segments` style values (weights along source→target, distances perpendicular to it).
 * @returns {Map<string, {weights: number[], distances: number[]}>}
 */
export function detours(boxes, centres, edges) {
  const grid = new BoxGrid(boxes);
  const result = new Map();
  for (const edge of edges) {
    const p = centres.get(edge.source);
    const q = centres.get(edge.target);
    if (!p || !q || edge.source === edge.target) continue;
    const dx = q.x - p.x;
    const dy = q.y - p.y;
    const length = Math.hypot(dx, dy);
    if (length < 1) continue;
    const blockers = [];
    for (const [id, box] of grid.near(p, q)) {
      if (id === edge.source || id === edge.target || !segmentCrossesBox(p, q, box)) continue;
      const cx = (box.x1 + box.x2) / 2;
      const cy = (box.y1 + box.y2) / 2;
      // Where along the line the node sits, and how far to its side (positive: right of
      // source→target in screen coordinates, where y grows downwards).
      const along = ((cx - p.x) * dx + (cy - p.y) * dy) / (length * length);
      const side = ((cx - p.x) * -dy + (cy - p.y) * dx) / length;
      const reach = Math.hypot(box.x2 - box.x1, box.y2 - box.y1) / 2 + DETOUR_MARGIN;
      blockers.push({along, side, reach});
    }
    if (!blockers.length) continue;
    // One side for the whole edge, so that it does not zigzag between the nodes it avoids.
    const right = Math.max(...blockers.map((b) => b.side + b.reach));
    const left = Math.max(...blockers.map((b) => b.reach - b.side));
    blockers.sort((a, b) => a.along - b.along);
    result.set(edge.id, {
      weights: blockers.map((b) => Math.min(0.95, Math.max(0.05, b.along))),
      distances: blockers.map((b) => (right <= left ? b.side + b.reach : b.side - b.reach)),
    });
  }
  return result;
}

/** Node boxes bucketed on a coarse grid, so an edge is checked against the nodes near it. */
class BoxGrid {
  constructor(boxes, cell = 200) {
    this.cell = cell;
    this.cells = new Map();
    for (const entry of boxes) {
      const [, box] = entry;
      for (let gx = Math.floor(box.x1 / cell); gx <= Math.floor(box.x2 / cell); gx++) {
        for (let gy = Math.floor(box.y1 / cell); gy <= Math.floor(box.y2 / cell); gy++) {
          const key = `${gx},${gy}`;
          if (!this.cells.has(key)) this.cells.set(key, []);
          this.cells.get(key).push(entry);
        }
      }
    }
  }

  /** The boxes in the cells the segment's bounding rectangle touches, each once. */
  near(p, q) {
    const found = new Map();
    const cell = this.cell;
    const gx1 = Math.floor(Math.min(p.x, q.x) / cell);
    const gx2 = Math.floor(Math.max(p.x, q.x) / cell);
    const gy1 = Math.floor(Math.min(p.y, q.y) / cell);
    const gy2 = Math.floor(Math.max(p.y, q.y) / cell);
    for (let gx = gx1; gx <= gx2; gx++) {
      for (let gy = gy1; gy <= gy2; gy++) {
        for (const [id, box] of this.cells.get(`${gx},${gy}`) || []) found.set(id, box);
      }
    }
    return found;
  }
}

/**
 * Which labels to show: boxes in order of priority (the busiest edge first); a label is
 * hidden when it overlaps a node or a label already kept.
 * @param {Array<{id: string, box: object}>} labels
 * @param {Array<object>} obstacles node boxes (with their own labels)
 * @returns {Set<string>} the ids of the labels to hide
 */
export function overlappingLabels(labels, obstacles) {
  const hidden = new Set();
  const kept = [];
  const overlaps = (a, b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
  for (const {id, box} of labels) {
    if (obstacles.some((o) => overlaps(box, o)) || kept.some((k) => overlaps(box, k))) {
      hidden.add(id);
    } else {
      kept.push(box);
    }
  }
  return hidden;
}
