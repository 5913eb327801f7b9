// The graph view: the live dependency graph drawn with cytoscape.js, kept up to date from the
// server-sent event stream without moving what is already on screen.
//
//   /api/graph?from&to ──> first picture + layout (dagre, or layout.js when big)
//   /api/graph/stream  ──> deltas merged in place; new nodes placed beside a neighbour
//   /api/graph/diff    ──> "compare with": appeared / vanished / grew / shrank classes
//   ?group_by&expand   ──> a big system opens folded by namespace; a group opens in place

import cytoscape from '../vendor/cytoscape/cytoscape.esm.min.mjs';
import {getJson} from './api.js';
import {
  formatCount,
  formatMs,
  formatPercent,
  formatRate,
  h,
  parseAgo,
  replace,
} from './dom.js';
import {crossingEdges, detours, layeredPositions, overlappingLabels} from './layout.js';
import {openPanel, closePanel, refreshPanel} from './panel.js';
import {IncidentsBox} from './incidents.js';

/** dagre is only needed for graphs small enough for it; big ones never load it. */
let dagreLoaded = null;
let dagreReady = false;
function loadDagre() {
  dagreLoaded ||= import('../vendor/cytoscape-dagre/cytoscape-dagre.min.mjs').then((module) => {
    cytoscape.use(module.default);
    dagreReady = true;
  });
  return dagreLoaded;
}

/** Above this many nodes dagre is too slow; the linear layered layout takes over. */
const DAGRE_LIMIT = 150;
/** Above this many nodes the quietest are collapsed into one node per kind. */
export const MAX_NODES = 2000;
/** Above this many nodes, drawing trades detail for speed while panning. */
const BIG_GRAPH = 400;
/** Edges past which a graph is drawn as a big one too (a 10,000-service system folded by
 * namespace is a few hundred groups with thousands of edges between them). */
const BIG_EDGES = 2000;
/** Edges added per task while a big graph loads (about 50 ms each on a busy 2-core machine). */
const EDGE_SLICE = 500;
/** The live stream describes this window (the server's live window). */
const LIVE_WINDOW = '15m';
/** Wider or narrower live windows are re-read at most this often while deltas arrive. */
const REFRESH_MS = 5000;
const COLLAPSED_PREFIX = '\u0000collapsed:';
/** Edge labels and detours round nodes only up to this many edges (measuring labels is slow). */
const EDGE_DETAIL_LIMIT = 400;

export const WINDOWS = ['5m', '15m', '1h', '24h'];
/** What the graph can be folded by: the resource attributes its nodes carry. */
const GROUPINGS = [
  ['none', 'not grouped'],
  ['service.namespace', 'group by namespace'],
  ['k8s.namespace.name', 'group by k8s namespace'],
  ['deployment.environment.name', 'group by environment'],
  ['cloud.availability_zone', 'group by zone'],
];

const STYLE = [
  {
    selector: 'node',
    style: {
      'font-size': 11,
      'font-family': 'system-ui, sans-serif',
      color: '#c9d1d9',
      'text-valign': 'bottom',
      'text-margin-y': 5,
      'min-zoomed-font-size': 7,
      width: 30,
      height: 30,
      'background-color': '#2f5d8a',
      'border-width': 2,
      'border-color': 'data(color)',
    },
  },
  // Labels only where they can be read: measuring 2,000 labels costs a second.
  {selector: 'node.lbl', style: {label: 'data(label)'}},
  {selector: 'node[kind = "service"]', style: {shape: 'round-rectangle', width: 38, height: 24}},
  {selector: 'node[kind = "database"]', style: {shape: 'barrel', 'background-color': '#5b4a8f'}},
  {
    selector: 'node[kind = "queue"]',
    style: {shape: 'rhomboid', width: 42, height: 20, 'background-color': '#23735a'},
  },
  {
    selector: 'node[kind = "external"]',
    style: {shape: 'hexagon', 'background-color': '#5c6370', 'border-style': 'dashed'},
  },
  {
    selector: 'node[kind = "group"]',
    style: {shape: 'round-rectangle', width: 64, height: 40, 'background-color': '#3b4f6b', 'border-style': 'double', 'border-width': 4},
  },
  {
    selector: 'node[?collapsed]',
    style: {shape: 'ellipse', 'background-color': '#30363d', width: 46, height: 46},
  },
  {
    selector: 'edge',
    style: {
      width: 'data(width)',
      'line-color': 'data(color)',
      'target-arrow-color': 'data(color)',
      'target-arrow-shape': 'triangle',
      'arrow-scale': 0.9,
      'curve-style': 'bezier',
      opacity: 0.9,
    },
  },
  {selector: 'edge[kind = "async"]', style: {'line-style': 'dashed', 'line-dash-pattern': [6, 3]}},
  // Rate, errors and p95 on the edge, where the label overlaps neither a node nor a busier
  // edge's label (\`lbl-off\`, decided after each layout).
  {
    selector: 'edge.elbl',
    style: {
      label: 'data(label)',
      'text-wrap': 'wrap',
      'font-size': 9,
      'font-family': 'system-ui, sans-serif',
      color: '#c9d1d9',
      'text-background-color': '#0d1117',
      'text-background-opacity': 0.8,
      'text-background-padding': 2,
      'min-zoomed-font-size': 6,
    },
  },
  {selector: 'edge.elbl.lbl-off', style: {label: ''}},
  // A retry storm or a new fan-out: the edge's calls per caller beyond its own baseline.
  {
    selector: 'edge[?amplified]',
    style: {
      'source-label': 'data(badge)',
      'source-text-offset': 36,
      'font-size': 10,
      'font-weight': 'bold',
      'font-family': 'system-ui, sans-serif',
      color: '#f0883e',
      'text-background-color': '#0d1117',
      'text-background-opacity': 0.9,
      'text-background-padding': 2,
      'line-style': 'dashed',
      'line-dash-pattern': [10, 3],
      'source-arrow-shape': 'tee',
      'source-arrow-color': '#f0883e',
    },
  },
  {selector: 'edge.fast', style: {'curve-style': 'haystack', 'haystack-radius': 0}},
  {
    selector: '.loop',
    style: {'underlay-color': '#c678dd', 'underlay-padding': 5, 'underlay-opacity': 0.35},
  },
  {selector: '.loop-selected', style: {'underlay-opacity': 0.85, 'underlay-padding': 7}},
  {
    selector: '.incident-cause',
    style: {'underlay-color': '#f85149', 'underlay-opacity': 0.6, 'underlay-padding': 8},
  },
  {selector: 'edge.appeared', style: {'line-color': '#3fb950', 'target-arrow-color': '#3fb950'}},
  {
    selector: 'edge.vanished',
    style: {
      'line-color': '#8b949e',
      'target-arrow-color': '#8b949e',
      'line-style': 'dotted',
      opacity: 0.6,
    },
  },
  {selector: 'edge.grew', style: {'line-color': '#58a6ff', 'target-arrow-color': '#58a6ff'}},
  {selector: 'edge.shrank', style: {'line-color': '#d29922', 'target-arrow-color': '#d29922'}},
  {selector: 'node.appeared', style: {'border-color': '#3fb950', 'border-width': 4}},
  {selector: 'node.vanished', style: {'border-style': 'dotted', opacity: 0.55}},
  // A blast radius or a path (reach.js): drawn over the faded rest.
  {
    selector: '.reach',
    style: {'underlay-color': '#f0883e', 'underlay-opacity': 0.55, 'underlay-padding': 6},
  },
  {selector: 'node.reach-start', style: {'underlay-color': '#f85149', 'underlay-opacity': 0.8, 'underlay-padding': 9}},
  {selector: '.faded', style: {opacity: 0.1, 'underlay-opacity': 0}},
  {selector: '.hidden', style: {display: 'none'}},
  {selector: 'node:selected', style: {'border-color': '#ffffff', 'border-width': 4}},
  {selector: 'edge:selected', style: {'overlay-color': '#ffffff', 'overlay-opacity': 0.2}},
];

/** Grey when healthy, then amber, orange and red as the error rate grows. */
export function errorColour(rate) {
  if (!(rate > 0)) return '#7d8ca0';
  if (rate < 0.01) return '#d4a72c';
  if (rate < 0.05) return '#e8702a';
  return '#e5484d';
}

/**
 * The colour of a node or edge: its health as the server judged it against its own baseline
 * and the objectives (degraded amber, failing red, ok grey), so a latency-only incident shows
 * on the plain graph; by error rate alone where no health came with it (a folded group).
 */
export function healthColour(health, rate) {
  if (health === 'failing') return '#e5484d';
  if (health === 'degraded') return '#e8a33d';
  if (health === 'ok') return '#7d8ca0';
  return errorColour(rate);
}

function edgeWidth(calls, seconds) {
  const rate = calls / Math.max(seconds, 1);
  return Math.min(12, 1.5 + 2.2 * Math.log10(1 + rate * 10));
}

/** The tooltip's health lines: the verdict and why, when it is not ok. */
function healthLines(d) {
  if (!d.health || d.health === 'ok') return [];
  return [d.health, ...d.health_reasons];
}

export function edgeId(source, target, kind) {
  return `${source}\u2192${target}\u00b7${kind}`;
}

/**
 * The answer early.js asked for while the modules loaded (the live graph folded by namespace),
 * once, if it is at most 10 s old and was accepted; null otherwise.
 */
async function takeEarlyGraph() {
  const early = window.flowscopeEarlyGraph;
  window.flowscopeEarlyGraph = null;
  if (!early || performance.now() - early.at > 10000) return null;
  return early.answer;
}

/** The window of the hash parameters as absolute milliseconds, and whether it follows now. */
export function resolveWindow(params, now = Date.now()) {
  const toText = params.to || 'now';
  const fromText = params.from || LIVE_WINDOW;
  const to = toText === 'now' ? now : Date.parse(toText);
  const ago = parseAgo(fromText);
  const from = ago !== null ? to - ago : Date.parse(fromText);
  return {from, to, live: toText === 'now', fromText, toText};
}

export class GraphView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.state = {
      ready: false,
      loads: 0,
      deltas: 0,
      nodes: 0,
      edges: 0,
      loops: [],
      window: null,
      diff: null,
      collapsed: new Map(),
      services: new Map(),
      readyMs: null,
      layout: null,
    };
    app.state.graph = this.state;
    this.cy = null;
    this.params = {};
    this.source = null;
    this.refreshTimer = null;
    this.build();
  }

  build() {
    const windowSelect = h(
      'select',
      {id: 'window', title: 'time window', onchange: () => this.onWindowChange()},
      WINDOWS.map((w) => h('option', {value: w}, `last ${w}`)),
      h('option', {value: 'custom'}, 'custom…'),
    );
    this.customFrom = h('input', {type: 'datetime-local', id: 'custom-from', step: 1});
    this.customTo = h('input', {type: 'datetime-local', id: 'custom-to', step: 1});
    this.customBox = h(
      'span',
      {class: 'custom hidden'},
      this.customFrom,
      ' to ',
      this.customTo,
      h('button', {onclick: () => this.applyCustom()}, 'apply'),
    );
    const compareSelect = h(
      'select',
      {id: 'compare', title: 'compare with', onchange: () => this.navigate({compare: compareSelect.value})},
      h('option', {value: ''}, 'no comparison'),
      h('option', {value: 'previous'}, 'compare: window before'),
      h('option', {value: '1h'}, 'compare: 1 hour earlier'),
      h('option', {value: '24h'}, 'compare: 1 day earlier'),
    );
    this.searchInput = h('input', {
      id: 'search',
      type: 'search',
      placeholder: 'find a service…',
      list: 'node-names',
      autocomplete: 'off',
      onkeydown: (event) => {
        if (event.key === 'Enter') this.focus(this.searchInput.value.trim());
      },
      // Leaving the box fires `change` after Enter already focused the name: focusing it
      // again would redraw the panel under a click on its buttons, and lose the click.
      onchange: () => {
        const name = this.searchInput.value.trim();
        if (name !== this.state.focus) this.focus(name);
      },
    });
    this.datalist = h('datalist', {id: 'node-names'});
    this.hopsSelect = h(
      'select',
      {id: 'hops', title: 'hops up and downstream', onchange: () => this.focus(this.state.focus)},
      [1, 2, 3].map((n) => h('option', {value: n}, `${n} hop${n > 1 ? 's' : ''}`)),
    );
    this.environmentSelect = h('select', {id: 'environment', class: 'hidden', onchange: () => this.applyFilter()});
    this.namespaceSelect = h('select', {id: 'namespace', class: 'hidden', onchange: () => this.applyFilter()});
    this.groupSelect = h(
      'select',
      {id: 'group', title: 'fold nodes into groups by a resource attribute', onchange: () => this.navigate({group: this.groupSelect.value, expand: undefined})},
      GROUPINGS.map(([value, label]) => h('option', {value}, label)),
    );
    this.liveBadge = h('span', {id: 'live', class: 'badge'}, '');
    this.notice = h('div', {id: 'graph-notice', class: 'notice hidden'});
    this.tooltip = h('div', {id: 'tooltip', class: 'tooltip hidden'});
    this.canvas = h('div', {id: 'cy'});
    this.empty = h('div', {id: 'empty', class: 'empty hidden'});
    this.loopList = h('ol', {id: 'loops'});
    this.panel = h('div', {id: 'panel', class: 'panel hidden'});
    this.incidents = new IncidentsBox(this);
    const legend = h(
      'div',
      {class: 'legend'},
      h('span', {}, '▭ service'),
      h('span', {}, '⛁ database'),
      h('span', {}, '▱ queue'),
      h('span', {}, '⬡ external'),
      h('span', {}, '┅ async'),
      h('span', {class: 'swatch loop'}, 'loop'),
      h('span', {class: 'swatch err'}, 'errors'),
    );
    this.compareLegend = h(
      'div',
      {class: 'legend hidden', id: 'compare-legend'},
      h('span', {class: 'swatch appeared'}, 'appeared'),
      h('span', {class: 'swatch vanished'}, 'vanished'),
      h('span', {class: 'swatch grew'}, 'grew'),
      h('span', {class: 'swatch shrank'}, 'shrank'),
    );
    this.windowSelect = windowSelect;
    this.compareSelect = compareSelect;
    replace(
      this.root,
      h(
        'div',
        {class: 'toolbar'},
        windowSelect,
        this.customBox,
        compareSelect,
        h('span', {class: 'sep'}),
        this.searchInput,
        this.datalist,
        this.hopsSelect,
        h('button', {id: 'clear-focus', onclick: () => this.clearFocus()}, 'show all'),
        this.environmentSelect,
        this.namespaceSelect,
        this.groupSelect,
        h('span', {class: 'grow'}),
        this.liveBadge,
      ),
      h(
        'div',
        {class: 'graph-body'},
        h('div', {class: 'graph-main'}, this.canvas, this.empty, this.tooltip, this.notice, legend, this.compareLegend),
        h(
          'aside',
          {class: 'sidebar'},
          this.incidents.element(),
          this.panel,
          h('section', {class: 'loops-box'}, h('h3', {}, 'Feedback loops'), this.loopList),
        ),
      ),
    );
  }

  /** Shows the view for the hash parameters; reloads only when the window changed. */
  async show(params) {
    const previous = this.params;
    this.params = params;
    const key = `${params.from || ''}|${params.to || ''}|${params.compare || ''}|${params.group || ''}|${params.expand || ''}`;
    const previousKey = `${previous.from || ''}|${previous.to || ''}|${previous.compare || ''}|${previous.group || ''}|${previous.expand || ''}`;
    this.syncControls();
    if (this.cy && key === previousKey) {
      if ((params.focus || '') !== (this.state.focus || '')) this.focus(params.focus || '');
      return;
    }
    await this.load();
  }

  hide() {
    this.tooltip.classList.add('hidden');
  }

  syncControls() {
    const p = this.params;
    const from = p.from || LIVE_WINDOW;
    const custom = !WINDOWS.includes(from) || (p.to && p.to !== 'now');
    this.windowSelect.value = custom ? 'custom' : from;
    this.customBox.classList.toggle('hidden', !custom);
    if (custom) {
      const w = resolveWindow(p);
      this.customFrom.value = toLocalInput(w.from);
      this.customTo.value = toLocalInput(w.to);
    }
    this.compareSelect.value = p.compare || '';
    this.groupSelect.value = this.grouping() || 'none';
  }

  /** The attribute the graph is folded by, or null (hash `group`: a key, or `none`). */
  grouping() {
    const group = this.params.group;
    return group && group !== 'none' ? group : null;
  }

  /** `group_by` and `expand` for the graph's requests, when folded. */
  groupQuery() {
    const group = this.grouping();
    if (!group) return {};
    return this.params.expand ? {group_by: group, expand: this.params.expand} : {group_by: group};
  }

  /** Opens group `value` in place: its members are drawn instead of it. */
  expandGroup(value) {
    const open = (this.params.expand || '').split(',').filter((v) => v);
    if (!open.includes(value)) open.push(value);
    this.navigate({expand: open.join(',')});
  }

  navigate(change) {
    this.app.navigate('graph', {...this.params, ...change});
  }

  onWindowChange() {
    const value = this.windowSelect.value;
    if (value === 'custom') {
      const w = resolveWindow(this.params);
      this.customFrom.value = toLocalInput(w.from);
      this.customTo.value = toLocalInput(w.to);
      this.customBox.classList.remove('hidden');
      return;
    }
    this.navigate({from: value, to: undefined});
  }

  applyCustom() {
    const from = new Date(this.customFrom.value);
    const to = new Date(this.customTo.value);
    if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || to <= from) {
      this.showNotice('the custom window needs a start before its end');
      return;
    }
    this.navigate({from: from.toISOString(), to: to.toISOString()});
  }

  showNotice(text) {
    replace(this.notice, text);
    this.notice.classList.toggle('hidden', !text);
  }

  /**
   * The window as the graph's own requests give it: nothing for the live 15 minutes, which the
   * server shares among the questions of the same half second (the page's graph, its blast
   * radius, the event stream), `from`/`to` otherwise.
   */
  graphWindow() {
    const {from, to, live} = this.apiWindow();
    return live && from === LIVE_WINDOW ? {} : {from, to};
  }

  apiWindow() {
    const w = resolveWindow(this.params);
    if (w.live) return {from: w.fromText, to: 'now', live: true, window: w};
    return {from: String(Math.floor(w.from)), to: String(Math.ceil(w.to)), live: false, window: w};
  }

  async load() {
    const loadId = ++this.state.loads;
    this.state.ready = false;
    this.stopLive();
    closePanel(this);
    const started = performance.now();
    const {from, to, live, window: w} = this.apiWindow();
    // A system too big to draw node by node opens folded by namespace, when its services
    // say theirs (choose "not grouped" to see every node). So when the grouping is not
    // chosen, the first question is the folded one: at 10,000 services the unfolded answer
    // is megabytes the page would throw away. A system without namespaces gets the same
    // answer either way; a small one with namespaces asks again, unfolded (the server shares
    // the window's snapshot between the two questions).
    const probing = this.params.group === undefined;
    const prefetched = this.prefetched;
    this.prefetched = null;
    let snapshot;
    try {
      if (prefetched && prefetched.key === `${from}|${to}|${JSON.stringify(this.groupQuery())}` && performance.now() - prefetched.at < 2000) {
        snapshot = prefetched.snapshot;
      } else {
        snapshot = probing && Object.keys(this.graphWindow()).length === 0 ? await takeEarlyGraph() : null;
        snapshot ??= await getJson('/api/graph', {...this.graphWindow(), ...(probing ? {group_by: 'service.namespace'} : this.groupQuery())});
      }
      if (probing && snapshot.nodes.some((n) => n.kind === 'group')) {
        if ((snapshot.totals?.nodes || 0) > MAX_NODES) {
          if (loadId === this.state.loads) {
            this.prefetched = {key: `${from}|${to}|${JSON.stringify({group_by: 'service.namespace'})}`, at: performance.now(), snapshot};
            this.navigate({group: 'service.namespace'});
          }
          return;
        }
        snapshot = await getJson('/api/graph', this.graphWindow());
      }
    } catch (error) {
      this.showNotice(`cannot load the graph: ${error.message}`);
      return;
    }
    if (snapshot.nodes.length && snapshot.nodes.length <= DAGRE_LIMIT) await loadDagre();
    if (loadId !== this.state.loads) return;
    this.state.fetchMs = performance.now() - started;
    this.state.window = w;
    this.render(snapshot);
    await this.applyCompare();
    await this.app.infoReady;
    this.horizonNotice(w);
    this.showEmptyIfNeeded();
    this.state.timings.compare = performance.now() - started;
    await nextFrame();
    this.state.ready = true;
    this.state.readyMs = performance.now() - started;
    this.state.navigationToReadyMs = performance.now();
    this.startPendingEdges();
    if (live) this.startLive();
    else this.liveBadge.textContent = 'fixed window';
    this.incidents.refresh();
    if (live) this.incidents.start();
    else this.incidents.stop();
    if (this.params.focus) this.focus(this.params.focus);
    this.loadServiceLabels(snapshot);
  }

  horizonNotice(w) {
    const horizonMs = (this.app.info?.graph_horizon_s || 0) * 1000;
    const compareFrom = this.compareWindow(w)?.before_from_ms;
    const oldest = Math.min(w.from, compareFrom ?? w.from);
    if (horizonMs && oldest < Date.now() - horizonMs - 60000) {
      const hours = horizonMs / 3600e3;
      this.showNotice(
        `The live graph keeps the last ${hours >= 1 ? hours + ' h' : horizonMs / 60e3 + ' min'} (--graph-horizon); ` +
          'this window reaches further back, so it is rebuilt from the stored spans, which takes longer.',
      );
    } else {
      this.showNotice('');
    }
  }

  seconds() {
    const w = this.state.window;
    return w ? Math.max(1, (w.to - w.from) / 1000) : 900;
  }

  // ---- drawing -------------------------------------------------------------------------

  /** Replaces the whole picture and lays it out. */
  render(snapshot) {
    const t0 = performance.now();
    const timings = {};
    this.state.timings = timings;
    const {nodes, edges} = this.collapse(snapshot.nodes, snapshot.edges);
    // Labels on every node while there are few; edges in slices, plain, while there are many.
    const manyNodes = nodes.length > BIG_GRAPH;
    const big = manyNodes || edges.length > BIG_EDGES;
    const nodeElements = nodes.map((n) => ({group: 'nodes', data: this.nodeData(n), classes: manyNodes ? '' : 'lbl'}));
    const edgeElements = edges.map((e) => ({group: 'edges', data: this.edgeData(e), classes: big ? 'fast' : ''}));
    // A big graph draws its nodes first and adds its edges in slices between frames, so the
    // page answers clicks while they arrive instead of freezing until all are in.
    const elements = big ? nodeElements : [...nodeElements, ...edgeElements];
    let positions = null;
    if (nodes.length > DAGRE_LIMIT || !dagreReady) {
      positions = layeredPositions(
        nodes.map((n) => n.id),
        edges.map((e) => [e.source, e.target]),
      );
      for (const element of nodeElements) element.position = positions.get(element.data.id);
    }
    timings.layout = performance.now() - t0;
    if (this.cy) this.cy.destroy();
    this.cy = cytoscape({
      container: this.canvas,
      elements,
      style: STYLE,
      layout: {name: 'preset'},
      minZoom: 0.05,
      maxZoom: 4,
      boxSelectionEnabled: false,
      textureOnViewport: big,
      hideEdgesOnViewport: big,
      pixelRatio: big ? 1 : 'auto',
    });
    this.app.cy = this.cy;
    this.big = big;
    this.manyNodes = manyNodes;
    timings.cytoscape = performance.now() - t0;
    if (!positions && nodes.length) {
      this.cy
        .layout({
          name: 'dagre',
          rankDir: 'LR',
          nodeSep: 40,
          // Room between ranks for an edge's two-line label beside the nodes.
          rankSep: 190,
          edgeSep: 10,
          animate: false,
          fit: false,
        })
        .run();
    }
    this.state.layout = positions ? 'layered' : 'dagre';
    this.routeAndLabel();
    timings.detail = performance.now() - t0;
    this.fitAll();
    timings.fit = performance.now() - t0;
    this.setLoops(snapshot.loops || []);
    this.bindEvents();
    this.afterChange();
    timings.done = performance.now() - t0;
    this.pendingEdges = big ? {edgeElements, loops: snapshot.loops || [], t0} : null;
    this.state.complete = !big;
  }

  /** After the nodes' first frame: the edges of a big graph, in slices. */
  startPendingEdges() {
    if (!this.pendingEdges) return;
    const {edgeElements, loops, t0} = this.pendingEdges;
    this.pendingEdges = null;
    this.addEdgesInSlices(edgeElements, loops, t0);
  }

  addEdgesInSlices(edgeElements, loops, t0) {
    const token = (this.edgeLoad = (this.edgeLoad || 0) + 1);
    this.state.complete = false;
    let next = 0;
    // One batch across the slices: cytoscape draws once at the end instead of after each.
    this.cy.startBatch();
    const slice = () => {
      const cy = this.cy;
      if (token !== this.edgeLoad || !cy) return;
      const batch = edgeElements
        .slice(next, next + EDGE_SLICE)
        .filter(
          (e) =>
            cy.getElementById(e.data.id).empty() &&
            cy.getElementById(e.data.source).nonempty() &&
            cy.getElementById(e.data.target).nonempty(),
        );
      cy.add(batch);
      next += EDGE_SLICE;
      if (next < edgeElements.length) {
        setTimeout(slice, 0);
        return;
      }
      cy.endBatch();
      this.setLoops(loops);
      this.afterChange();
      this.state.complete = true;
      this.state.timings.complete = performance.now() - t0;
      this.state.navigationToCompleteMs = performance.now();
    };
    setTimeout(slice, 0);
  }

  /** Keeps the busiest `MAX_NODES` and folds the rest into one node per kind. */
  collapse(nodes, edges) {
    this.state.collapsed = new Map();
    this.state.totalNodes = nodes.length;
    if (nodes.length <= MAX_NODES) return {nodes, edges};
    const traffic = new Map(nodes.map((n) => [n.id, n.calls || 0]));
    for (const e of edges) traffic.set(e.source, (traffic.get(e.source) || 0) + e.calls);
    const ranked = [...nodes].sort((a, b) => traffic.get(b.id) - traffic.get(a.id) || (a.id < b.id ? -1 : 1));
    const keep = new Set(ranked.slice(0, MAX_NODES - 4).map((n) => n.id));
    const owner = new Map();
    const groups = new Map();
    for (const n of ranked.slice(MAX_NODES - 4)) {
      const id = COLLAPSED_PREFIX + n.kind;
      owner.set(n.id, id);
      const group = groups.get(id) || {id, kind: n.kind, calls: 0, errors: 0, members: [], collapsed: true};
      group.calls += n.calls || 0;
      group.errors += n.errors || 0;
      group.members.push(n.id);
      groups.set(id, group);
    }
    const merged = new Map();
    for (const e of edges) {
      const source = owner.get(e.source) || e.source;
      const target = owner.get(e.target) || e.target;
      if (source === target && source.startsWith(COLLAPSED_PREFIX)) continue;
      const key = edgeId(source, target, e.kind);
      const m = merged.get(key);
      if (!m) {
        merged.set(key, {...e, source, target});
      } else {
        m.calls += e.calls;
        m.errors += e.errors;
        m.p99_ms = Math.max(m.p99_ms, e.p99_ms);
        m.p95_ms = Math.max(m.p95_ms, e.p95_ms);
        m.p50_ms = Math.max(m.p50_ms, e.p50_ms);
        m.error_rate = m.calls ? m.errors / m.calls : 0;
      }
    }
    for (const [id, group] of groups) this.state.collapsed.set(id, group.members);
    return {
      nodes: [...nodes.filter((n) => keep.has(n.id)), ...groups.values()],
      edges: [...merged.values()],
    };
  }

  nodeData(n) {
    const collapsed = n.collapsed || false;
    const errorRate = n.calls ? n.errors / n.calls : 0;
    return {
      id: n.id,
      label: collapsed
        ? `${formatCount(n.members.length)} quieter ${n.kind} nodes`
        : n.group
          ? `${n.group.value} (${formatCount(n.group.members.length)})`
          : shortLabel(n.id),
      group_value: n.group ? n.group.value : null,
      members: n.group ? n.group.members : null,
      kind: n.kind,
      calls: n.calls || 0,
      errors: n.errors || 0,
      error_rate: errorRate,
      p50_ms: n.p50_ms || 0,
      p95_ms: n.p95_ms || 0,
      p99_ms: n.p99_ms || 0,
      health: n.health || '',
      health_reasons: n.health_reasons || [],
      color: healthColour(n.health, errorRate),
      collapsed,
    };
  }

  edgeData(e) {
    const rate = e.error_rate ?? (e.calls ? e.errors / e.calls : 0);
    return {
      id: edgeId(e.source, e.target, e.kind),
      source: e.source,
      target: e.target,
      kind: e.kind,
      calls: e.calls,
      errors: e.errors,
      error_rate: rate,
      p50_ms: e.p50_ms,
      p95_ms: e.p95_ms,
      p99_ms: e.p99_ms,
      bytes: e.bytes || 0,
      amplification: e.amplification || 0,
      trace_loops: e.trace_loops || 0,
      width: edgeWidth(e.calls, this.seconds()),
      health: e.health || '',
      health_reasons: e.health_reasons || [],
      color: healthColour(e.health, rate),
      label: `${formatRate(e.calls / this.seconds())} · ${formatPercent(rate)} err\np95 ${formatMs(e.p95_ms)}`,
      amplified: e.amplified === true,
      badge: e.amplified ? `×${(e.amplification || 0).toFixed(1)} retries` : '',
    };
  }

  bindEvents() {
    const cy = this.cy;
    cy.on('tap', 'node, edge', (event) => {
      const group = event.target.data('group_value');
      if (group) this.expandGroup(group);
      else openPanel(this, event.target);
    });
    cy.on('tap', (event) => {
      if (event.target === cy) closePanel(this);
    });
    cy.on('mouseover', 'node, edge', (event) => this.showTooltip(event));
    cy.on('mouseout', 'node, edge', () => this.tooltip.classList.add('hidden'));
    cy.on('viewport', () => {
      this.tooltip.classList.add('hidden');
      if (this.manyNodes) this.labelVisibleSoon();
    });
  }

  /** Big graphs: label the nodes on screen once zoomed in far enough to read them. */
  labelVisibleSoon() {
    clearTimeout(this.labelTimer);
    this.labelTimer = setTimeout(() => {
      const cy = this.cy;
      if (!cy || cy.zoom() < 0.5) return;
      const box = cy.extent();
      cy.nodes()
        .not('.lbl')
        .filter((n) => {
          const p = n.position();
          return p.x >= box.x1 && p.x <= box.x2 && p.y >= box.y1 && p.y <= box.y2;
        })
        .addClass('lbl');
    }, 120);
  }

  showTooltip(event) {
    const d = event.target.data();
    const lines = [];
    if (event.target.isEdge()) {
      lines.push(`${d.source} → ${d.target} (${d.kind})`);
      lines.push(
        `${formatCount(d.calls)} calls · ${formatRate(d.calls / this.seconds())} · ${formatPercent(d.error_rate)} errors`,
      );
      lines.push(`p50 ${formatMs(d.p50_ms)} · p95 ${formatMs(d.p95_ms)} · p99 ${formatMs(d.p99_ms)}`);
      if (d.amplification > 1) lines.push(`calls per caller ×${d.amplification.toFixed(2)}`);
      lines.push(...healthLines(d));
      if (d.diff) lines.push(`compared: ${d.diff}`);
    } else {
      lines.push(`${d.collapsed ? d.label : d.id} (${d.kind})`);
      lines.push(`${formatCount(d.calls)} calls in · ${formatPercent(d.error_rate)} errors`);
      if (d.kind === 'service' && !d.collapsed) {
        lines.push(`p50 ${formatMs(d.p50_ms)} · p95 ${formatMs(d.p95_ms)} · p99 ${formatMs(d.p99_ms)}`);
      }
      lines.push(...healthLines(d));
      if (d.diff) lines.push(`compared: ${d.diff}`);
    }
    replace(this.tooltip, ...lines.map((line) => h('div', {}, line)));
    const p = event.renderedPosition || event.target.renderedMidpoint?.() || {x: 0, y: 0};
    this.tooltip.style.left = `${p.x + 14}px`;
    this.tooltip.style.top = `${p.y + 14}px`;
    this.tooltip.classList.remove('hidden');
  }

  setLoops(loops) {
    this.state.loops = loops;
    const cy = this.cy;
    cy.elements('.loop').removeClass('loop');
    for (const loop of loops) {
      for (const id of loop.nodes) cy.getElementById(id).addClass('loop');
      for (const [source, target] of loop.edges) {
        cy.getElementById(source)
          .edgesTo(cy.getElementById(target))
          .addClass('loop');
      }
    }
    replace(
      this.loopList,
      loops.length
        ? loops.map((loop) =>
            h(
              'li',
              {class: 'loop-item', dataset: {loop: loop.id}, onclick: () => this.selectLoop(loop)},
              h('div', {class: 'loop-path'}, [...loop.nodes, loop.nodes[0]].join(' → ')),
              h(
                'div',
                {class: 'muted'},
                `${formatCount(loop.calls)} calls round it · ${cameBack(loop.trace_loops)}`,
              ),
            ),
          )
        : h('li', {class: 'muted'}, 'none in this window'),
    );
  }

  loopElements(loop) {
    const cy = this.cy;
    let elements = cy.collection();
    for (const id of loop.nodes) elements = elements.union(cy.getElementById(id));
    for (const [source, target] of loop.edges) {
      elements = elements.union(cy.getElementById(source).edgesTo(cy.getElementById(target)));
    }
    return elements;
  }

  selectLoop(loop) {
    this.cy.elements('.loop-selected').removeClass('loop-selected');
    const elements = this.loopElements(loop);
    elements.addClass('loop-selected');
    this.fitTo(elements, 60);
    for (const item of this.loopList.querySelectorAll('.loop-item')) {
      item.classList.toggle('selected', item.dataset.loop === loop.id);
    }
  }

  /**
   * Small graphs: detours round the nodes an edge would cross, then the edge labels that fit.
   * Both are in model coordinates, so they hold at every zoom; they are redone after each
   * layout and change. `state.crossings` counts the edges crossing an unrelated node, drawn
   * straight (`straight`) and as drawn (`drawn`); `state.edgeLabels` the labels shown and
   * hidden; `state.amplified` the edges with a retries badge.
   */
  routeAndLabel() {
    const cy = this.cy;
    const edges = cy.edges();
    this.state.amplified = edges.filter('[?amplified]').length;
    if (this.big || edges.length > EDGE_DETAIL_LIMIT) {
      edges.removeClass('elbl');
      this.state.crossings = null;
      this.state.edgeLabels = {shown: 0, hidden: 0};
      this.detailFresh = true;
      return;
    }
    const boxes = new Map();
    const centres = new Map();
    for (const node of cy.nodes()) {
      boxes.set(node.id(), node.boundingBox({includeLabels: false, includeOverlays: false}));
      centres.set(node.id(), node.position());
    }
    const straight = edges.map((e) => ({
      id: e.id(),
      source: e.data('source'),
      target: e.data('target'),
      points: [e.source().position(), e.target().position()],
    }));
    const before = crossingEdges(boxes, straight);
    const routes = detours(boxes, centres, straight.filter((e) => before.includes(e.id)));
    edges.removeStyle('curve-style segment-weights segment-distances edge-distances');
    for (const [id, route] of routes) {
      const edge = cy.getElementById(id);
      const drawn = (distances) => {
        edge.style({
          'curve-style': 'segments',
          'edge-distances': 'node-position',
          'segment-weights': route.weights.join(' '),
          'segment-distances': distances.join(' '),
        });
        return crossingEdges(boxes, [this.drawnEdge(edge)]).length === 0;
      };
      // Which side is "right" depends on how cytoscape pairs the edge's ends: the drawn
      // points decide, and a detour that helps neither way is left straight.
      if (drawn(route.distances)) continue;
      if (drawn(route.distances.map((d) => -d))) continue;
      edge.removeStyle('curve-style segment-weights segment-distances edge-distances');
    }
    const after = crossingEdges(boxes, edges.map((e) => this.drawnEdge(e)));
    this.state.crossings = {straight: before.length, drawn: after.length, detoured: routes.size};

    edges.addClass('elbl').removeClass('lbl-off');
    const obstacles = cy.nodes().map((n) => n.boundingBox({includeOverlays: false}));
    const labels = edges
      .sort((a, b) => b.data('calls') - a.data('calls'))
      .map((e) => ({
        id: e.id(),
        box: e.boundingBox({
          includeNodes: false,
          includeEdges: false,
          includeLabels: true,
          includeMainLabels: true,
          includeSourceLabels: false,
          includeTargetLabels: false,
          includeOverlays: false,
        }),
      }))
      .filter((l) => l.box.w > 0);
    const hidden = overlappingLabels(labels, obstacles);
    for (const id of hidden) cy.getElementById(id).addClass('lbl-off');
    this.state.edgeLabels = {shown: labels.length - hidden.size, hidden: hidden.size};
    this.detailFresh = true;
  }

  /** An edge as the polyline drawn: its segment points when it has any, else straight. */
  drawnEdge(edge) {
    const points = [edge.source().position()];
    if (edge.style('curve-style') === 'segments') points.push(...(edge.segmentPoints() || []));
    points.push(edge.target().position());
    return {id: edge.id(), source: edge.data('source'), target: edge.data('target'), points};
  }

  /** Bookkeeping after any change: counts, search names, empty page, open panel. */
  afterChange() {
    const cy = this.cy;
    // A change after the render (a delta, a merge): labels and detours again, once settled.
    if (!this.detailFresh) this.routeAndLabelSoon();
    this.detailFresh = false;
    this.state.nodes = cy.nodes().not('.vanished').length;
    this.state.edges = cy.edges().not('.vanished').length;
    const names = cy.nodes().map((n) => n.id()).filter((id) => !id.startsWith(COLLAPSED_PREFIX) && !id.startsWith('group:'));
    for (const members of this.state.collapsed.values()) names.push(...members);
    for (const group of cy.nodes('[kind = "group"]')) names.push(...(group.data('members') || []));
    names.sort();
    replace(this.datalist, ...names.slice(0, 5000).map((name) => h('option', {value: name})));
    this.showEmptyIfNeeded();
    refreshPanel(this);
  }

  showEmptyIfNeeded() {
    const empty = this.cy && this.cy.nodes().length === 0;
    this.empty.classList.toggle('hidden', !empty);
    if (empty) this.app.renderEmpty(this.empty, this.state.window?.live);
  }

  // ---- live updates --------------------------------------------------------------------

  startLive() {
    this.stopLive();
    const query = new URLSearchParams(this.groupQuery()).toString();
    const source = new EventSource(query ? `/api/graph/stream?${query}` : '/api/graph/stream');
    this.source = source;
    const followsLiveWindow = (this.params.from || LIVE_WINDOW) === LIVE_WINDOW && !this.params.compare;
    source.addEventListener('snapshot', (event) => {
      const snapshot = JSON.parse(event.data);
      if (followsLiveWindow) this.merge(snapshot.nodes, snapshot.edges, snapshot.loops, true);
      else this.scheduleRefresh();
    });
    source.addEventListener('delta', (event) => {
      const delta = JSON.parse(event.data);
      this.state.deltas++;
      this.applyDelta(delta, followsLiveWindow);
    });
    source.addEventListener('open', () => {
      this.liveBadge.textContent = '● live';
      this.liveBadge.classList.add('on');
    });
    source.addEventListener('error', () => {
      this.liveBadge.textContent = '○ reconnecting';
      this.liveBadge.classList.remove('on');
    });
  }

  stopLive() {
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.liveBadge.classList.remove('on');
  }

  applyDelta(delta, exact) {
    if (!this.cy) return;
    if (this.cy.nodes().length === 0) {
      // The first spans of an empty system: lay the whole picture out once.
      this.refreshNow();
      return;
    }
    if (exact) {
      this.mergeDelta(delta);
      return;
    }
    // Another window: show what appeared at once, re-read the figures soon.
    this.mergeDelta({
      nodes_added: delta.nodes_added,
      edges_added: delta.edges_added,
      edges_changed: [],
      edges_removed: [],
      nodes_removed: [],
      loops: null,
    });
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refreshNow();
    }, REFRESH_MS);
  }

  /** Re-reads the window and merges it in place. */
  async refreshNow() {
    try {
      const snapshot = await getJson('/api/graph', {...this.graphWindow(), ...this.groupQuery()});
      this.state.window = resolveWindow(this.params);
      this.merge(snapshot.nodes, snapshot.edges, snapshot.loops, true);
      if (this.params.compare) await this.applyCompare();
    } catch (error) {
      this.showNotice(`cannot refresh the graph: ${error.message}`);
    }
  }

  mergeDelta(delta) {
    const cy = this.cy;
    cy.startBatch();
    const added = [];
    for (const n of delta.nodes_added || []) {
      if (cy.getElementById(n.id).empty()) added.push(this.addNode(this.nodeData(n)));
    }
    for (const e of [...(delta.edges_added || []), ...(delta.edges_changed || [])]) {
      this.upsertEdge(e, added);
    }
    for (const e of delta.edges_removed || []) cy.getElementById(edgeId(e.source, e.target, e.kind)).remove();
    for (const id of delta.nodes_removed || []) cy.getElementById(id).remove();
    cy.endBatch();
    this.placeNew(added);
    if (delta.loops) this.setLoops(delta.loops);
    this.afterChange();
  }

  upsertEdge(e, added) {
    const cy = this.cy;
    for (const end of [e.source, e.target]) {
      if (cy.getElementById(end).empty()) {
        added.push(this.addNode(this.nodeData({id: end, kind: 'service', calls: 0, errors: 0})));
      }
    }
    const id = edgeId(e.source, e.target, e.kind);
    const existing = cy.getElementById(id);
    if (existing.empty()) {
      cy.add({group: 'edges', data: this.edgeData(e), classes: this.big ? 'fast' : ''});
    } else {
      existing.data(this.edgeData(e));
    }
  }

  /** Merges a whole snapshot in place; `removeMissing` drops what it no longer has. */
  merge(nodes, edges, loops, removeMissing) {
    const cy = this.cy;
    if (!cy) return;
    if (cy.nodes().length === 0 && nodes.length) {
      // Nothing on screen yet: a first layout moves nothing under the user.
      if (nodes.length <= DAGRE_LIMIT && !dagreReady) {
        loadDagre().then(() => this.merge(nodes, edges, loops, removeMissing));
        return;
      }
      this.render({nodes, edges, loops});
      this.startPendingEdges();
      return;
    }
    const collapsed = this.collapse(nodes, edges);
    cy.startBatch();
    cy.elements('.vanished').remove();
    const added = [];
    const nodeIds = new Set();
    for (const n of collapsed.nodes) {
      nodeIds.add(n.id);
      const existing = cy.getElementById(n.id);
      if (existing.empty()) added.push(this.addNode(this.nodeData(n)));
      else existing.data(this.nodeData(n));
    }
    const edgeIds = new Set();
    for (const e of collapsed.edges) {
      edgeIds.add(edgeId(e.source, e.target, e.kind));
      this.upsertEdge(e, added);
    }
    if (removeMissing) {
      cy.edges().filter((e) => !edgeIds.has(e.id())).remove();
      cy.nodes().filter((n) => !nodeIds.has(n.id())).remove();
    }
    cy.endBatch();
    this.placeNew(added);
    this.setLoops(loops || []);
    this.afterChange();
  }

  addNode(data, classes = '') {
    return this.cy.add({group: 'nodes', data, classes: `${classes} ${this.manyNodes ? '' : 'lbl'}`.trim()});
  }

  /** Puts new nodes beside a neighbour already on screen; nothing else moves. */
  placeNew(added) {
    if (!added.length) return;
    const cy = this.cy;
    const fresh = new Set(added.map((n) => n.id()));
    const box = cy.nodes().filter((n) => !fresh.has(n.id())).boundingBox();
    let spare = 0;
    const taken = new Map();
    for (const node of added) {
      if (node.removed()) continue;
      let anchor = null;
      let dx = 180;
      for (const edge of node.connectedEdges()) {
        const other = edge.source().id() === node.id() ? edge.target() : edge.source();
        if (!fresh.has(other.id())) {
          anchor = other;
          dx = edge.source().id() === node.id() ? -180 : 180;
          break;
        }
      }
      let position;
      if (anchor) {
        const key = anchor.id() + dx;
        const n = taken.get(key) || 0;
        taken.set(key, n + 1);
        const p = anchor.position();
        position = {x: p.x + dx, y: p.y + 70 + n * 50};
      } else if (Number.isFinite(box.x2)) {
        position = {x: box.x2 + 160, y: box.y1 + spare++ * 60};
      } else {
        position = {x: spare++ * 160, y: 0};
      }
      node.position(position);
    }
  }

  /** After a delta: new edges and changed labels, once the changes settle. */
  routeAndLabelSoon() {
    clearTimeout(this.detailTimer);
    this.detailTimer = setTimeout(() => {
      if (this.cy) this.routeAndLabel();
    }, 150);
  }

  /** Fits everything, without blowing a handful of nodes up to poster size. */
  fitAll() {
    this.fitTo(this.cy.elements(), 40);
  }

  fitTo(elements, padding) {
    const cy = this.cy;
    cy.fit(elements, padding);
    if (cy.zoom() > 1.3) {
      cy.zoom(1.3);
      cy.center(elements);
    }
  }

  // ---- compare -------------------------------------------------------------------------

  compareWindow(w) {
    const compare = this.params.compare;
    if (!compare || !w) return null;
    const length = w.to - w.from;
    const shift = compare === 'previous' ? length : parseAgo(compare);
    if (!shift) return null;
    return {before_from_ms: w.from - shift, before_to_ms: w.to - shift};
  }

  async applyCompare() {
    const cy = this.cy;
    this.compareLegend.classList.toggle('hidden', !this.params.compare);
    if (!this.params.compare && !this.state.diff) return;
    cy.elements('.vanished').remove();
    cy.elements('.appeared, .grew, .shrank').removeClass('appeared grew shrank');
    this.state.diff = null;
    const w = this.state.window;
    const before = this.compareWindow(w);
    if (!before) return;
    let diff;
    try {
      diff = await getJson('/api/graph/diff', {
        after_from: String(Math.floor(w.from)),
        after_to: String(Math.ceil(w.to)),
        before_from: String(Math.floor(before.before_from_ms)),
        before_to: String(Math.ceil(before.before_to_ms)),
      });
    } catch (error) {
      this.showNotice(`cannot compare: ${error.message}`);
      return;
    }
    this.state.diff = {
      appeared: diff.edges_appeared.length,
      vanished: diff.edges_vanished.length,
      changed: diff.edges_changed.length,
    };
    cy.startBatch();
    const added = [];
    for (const id of diff.nodes_appeared) cy.getElementById(id).addClass('appeared').data('diff', 'appeared');
    for (const e of diff.edges_appeared) {
      cy.getElementById(edgeId(e.source, e.target, e.kind)).addClass('appeared').data('diff', 'appeared');
    }
    for (const e of diff.edges_vanished) {
      for (const end of [e.source, e.target]) {
        if (cy.getElementById(end).empty()) {
          const ghost = this.addNode(
            {...this.nodeData({id: end, kind: 'service', calls: 0, errors: 0}), diff: 'vanished'},
            'vanished',
          );
          added.push(ghost);
        }
      }
      const id = edgeId(e.source, e.target, e.kind);
      if (cy.getElementById(id).empty()) {
        cy.add({group: 'edges', data: {...this.edgeData(e), diff: 'vanished'}, classes: this.big ? 'vanished fast' : 'vanished'});
      }
    }
    for (const change of diff.edges_changed) {
      const e = change.after;
      const grew = changeGrew(change);
      cy.getElementById(edgeId(e.source, e.target, e.kind))
        .addClass(grew ? 'grew' : 'shrank')
        .data('diff', change.reasons.join(', '));
    }
    cy.endBatch();
    this.placeNew(added);
  }

  // ---- search, focus, filter -----------------------------------------------------------

  focus(name) {
    const cy = this.cy;
    if (!cy) return;
    this.state.focus = name || '';
    // The focus goes into the URL, so that a focused view can be shared.
    if ((this.params.focus || '') !== this.state.focus) {
      this.params = {...this.params, focus: this.state.focus || undefined};
      this.app.replaceParams('graph', this.params);
    }
    cy.elements().removeClass('faded');
    this.clearReach();
    if (!name) return;
    const start = cy.getElementById(name);
    if (start.empty()) {
      // A member of a folded group: the group opens in place, and the focus follows it.
      const folded = cy.nodes('[kind = "group"]').filter((n) => (n.data('members') || []).includes(name));
      if (folded.nonempty()) {
        this.expandGroup(folded.first().data('group_value'));
        return;
      }
      const group = [...this.state.collapsed.entries()].find(([, members]) => members.includes(name));
      this.showNotice(
        group
          ? `${name} is one of the quieter nodes collapsed into "${cy.getElementById(group[0]).data('label')}"; narrow the window or query it in SQL`
          : `no node named ${name} in this window`,
      );
      return;
    }
    const hops = Number(this.hopsSelect.value) || 1;
    let keep = start;
    let down = start;
    let up = start;
    for (let i = 0; i < hops; i++) {
      const outEdges = down.outgoers('edge');
      const inEdges = up.incomers('edge');
      down = outEdges.targets();
      up = inEdges.sources();
      keep = keep.union(outEdges).union(inEdges).union(down).union(up);
    }
    cy.elements().not(keep).addClass('faded');
    start.select();
    this.fitTo(keep, 60);
    this.searchInput.value = name;
    openPanel(this, start);
  }

  /** Fades all but `path` (node ids, top down) and marks the incident's cause on it. */
  focusPath(path, cause) {
    const cy = this.cy;
    if (!cy) return;
    cy.elements().removeClass('faded incident-cause loop-selected');
    let keep = cy.collection();
    for (const id of path) keep = keep.union(cy.getElementById(id));
    for (let i = 0; i + 1 < path.length; i++) {
      keep = keep.union(cy.getElementById(path[i]).edgesTo(cy.getElementById(path[i + 1])));
    }
    if (keep.empty()) {
      this.showNotice("this incident's path is not on the graph of this window");
      return;
    }
    cy.elements().not(keep).addClass('faded');
    const marked =
      cause.kind === 'edge'
        ? cy.getElementById(cause.source).edgesTo(cy.getElementById(cause.target))
        : cy.getElementById(cause.id);
    marked.addClass('incident-cause');
    this.state.focusedPath = {
      nodes: keep.nodes().map((n) => n.id()),
      edges: keep.edges().map((e) => [e.source().id(), e.target().id()]),
      cause: marked.map((e) => e.id()),
    };
    this.fitTo(keep, 60);
  }

  /**
   * Highlights nodes (ids) and the calls between them (`[source, target]` pairs), the rest
   * faded; `start` is marked. An id not drawn is shown by the group or the bubble it is
   * folded into. Returns what was drawn, for the page's state.
   */
  highlightReach(ids, pairs, start) {
    const cy = this.cy;
    if (!cy) return {drawn_nodes: 0, drawn_edges: 0, hidden_in_groups: 0};
    this.clearReach();
    const folded = new Map();
    cy.nodes('[kind = "group"]').forEach((g) => {
      for (const member of g.data('members') || []) folded.set(member, g);
    });
    for (const [bubble, members] of this.state.collapsed.entries()) {
      for (const member of members) folded.set(member, cy.getElementById(bubble));
    }
    let hidden = 0;
    const drawnOf = (id) => {
      const node = cy.getElementById(id);
      if (node.nonempty()) return node;
      const holder = folded.get(id);
      if (holder && holder.nonempty()) {
        hidden += 1;
        return holder;
      }
      return cy.collection();
    };
    let keep = cy.collection();
    for (const id of ids) keep = keep.union(drawnOf(id));
    for (const [source, target] of pairs) {
      const a = cy.getElementById(source).nonempty() ? cy.getElementById(source) : folded.get(source);
      const b = cy.getElementById(target).nonempty() ? cy.getElementById(target) : folded.get(target);
      if (a && b && a.nonempty() && b.nonempty() && a.id() !== b.id()) keep = keep.union(a.edgesTo(b));
    }
    cy.elements().removeClass('faded');
    cy.elements().not(keep).addClass('faded');
    keep.addClass('reach');
    drawnOf(start).addClass('reach-start');
    if (keep.nonempty()) this.fitTo(keep, 60);
    return {drawn_nodes: keep.nodes().length, drawn_edges: keep.edges().length, hidden_in_groups: hidden};
  }

  clearReach() {
    this.state.reach = null;
    if (this.cy) this.cy.elements('.reach, .reach-start').removeClass('reach reach-start');
  }

  clearFocus() {
    this.state.focus = '';
    this.params = {...this.params, focus: undefined};
    this.app.replaceParams('graph', this.params);
    this.searchInput.value = '';
    if (!this.cy) return;
    this.clearReach();
    this.cy.elements().removeClass('faded loop-selected incident-cause');
    this.state.focusedPath = null;
    for (const item of this.loopList.querySelectorAll('.loop-item')) item.classList.remove('selected');
    this.fitAll();
  }

  /**
   * Environment and namespace of each service: the graph's nodes carry their resources'
   * most frequent values (`attributes`), so no query of the spans is needed.
   */
  loadServiceLabels(snapshot) {
    const rows = (snapshot.nodes || [])
      .filter((n) => n.kind === 'service' && n.attributes)
      .map((n) => ({
        service_name: n.id,
        environment: n.attributes['deployment.environment.name'] || n.attributes['deployment.environment'] || null,
        namespace: n.attributes['service.namespace'] || n.attributes['k8s.namespace.name'] || null,
      }));
    this.state.services = new Map(rows.map((r) => [r.service_name, r]));
    const fill = (select, field, label) => {
      const values = [...new Set(rows.map((r) => r[field]).filter((v) => v))].sort();
      const current = select.value;
      replace(select, h('option', {value: ''}, `all ${label}s`), values.map((v) => h('option', {value: v}, v)));
      select.value = values.includes(current) ? current : '';
      select.classList.toggle('hidden', values.length === 0);
    };
    fill(this.environmentSelect, 'environment', 'environment');
    fill(this.namespaceSelect, 'namespace', 'namespace');
  }

  applyFilter() {
    const cy = this.cy;
    const environment = this.environmentSelect.value;
    const namespace = this.namespaceSelect.value;
    cy.elements().removeClass('hidden');
    if (!environment && !namespace) return;
    const matches = (id) => {
      const s = this.state.services.get(id);
      return s && (!environment || s.environment === environment) && (!namespace || s.namespace === namespace);
    };
    const kept = cy.nodes().filter((n) => n.data('kind') === 'service' && matches(n.id()));
    // Databases, queues and external peers send no spans: they stay when a kept service uses them.
    const peers = kept.neighborhood('node').filter((n) => n.data('kind') !== 'service');
    const visible = kept.union(peers);
    cy.nodes().not(visible).addClass('hidden');
  }
}

// A flow is one trace, continued across queues by the consumer's link to its producer: a
// loop no flow went round is only a loop of the graph (its calls happen in different flows).
function cameBack(flows) {
  if (!flows) return 'no flow went all the way round';
  return `${formatCount(flows)} ${flows === 1 ? 'flow' : 'flows'} came back`;
}

/** Long names are cut here: cytoscape's own ellipsis measures text per character, slowly. */
function shortLabel(id) {
  return id.length > 32 ? id.slice(0, 31) + '…' : id;
}

function changeGrew(change) {
  const calls = change.reasons.find((r) => r.startsWith('calls x'));
  if (calls) return Number(calls.slice('calls x'.length)) >= 1;
  return change.after.error_rate >= change.before.error_rate && change.after.p95_ms >= change.before.p95_ms;
}

function toLocalInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}
