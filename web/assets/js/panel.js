// The detail panel of a node or an edge: RED figures from the live graph, sparklines from
// the graph's own buckets (`/api/graph/series`), example traces from SQL over `spans` for the
// same window, and the loops it belongs to. The sparklines and the examples are drawn each
// as soon as it arrives: a slow span query never holds up the series.

import {getJson, records, sql} from './api.js';
import {sparkline} from './chart.js';
import {reachSection} from './reach.js';
import {
  formatCount,
  formatMs,
  formatPercent,
  formatRate,
  h,
  replace,
  sqlString,
  sqlTime,
} from './dom.js';

export function openPanel(view, element) {
  view.cy.elements(':selected').unselect();
  element.select();
  // Answers to an earlier panel's queries must not land in this one.
  view.panelToken = (view.panelToken || 0) + 1;
  view.state.panel = {group: element.isEdge() ? 'edge' : 'node', id: element.id(), token: view.panelToken};
  view.panel.classList.remove('hidden');
  draw(view, element, true);
}

export function closePanel(view) {
  view.state.panel = null;
  view.panel.classList.add('hidden');
  replace(view.panel);
}

/** Redraws the figures of the open panel after a live update (no new SQL). */
export function refreshPanel(view) {
  const open = view.state.panel;
  if (!open || !view.cy) return;
  const element = view.cy.getElementById(open.id);
  if (element.empty()) {
    closePanel(view);
    return;
  }
  const figures = view.panel.querySelector('.figures');
  if (figures) figures.replaceWith(figuresOf(view, element.data(), open.group));
}

function draw(view, element, withQueries) {
  const d = element.data();
  const group = element.isEdge() ? 'edge' : 'node';
  const title =
    group === 'edge'
      ? h('h2', {}, h('span', {class: 'name'}, d.source), ' → ', h('span', {class: 'name'}, d.target))
      : h('h2', {}, h('span', {class: 'name'}, d.collapsed ? d.label : d.id));
  const loops = loopsOf(view, element);
  const series = h('div', {class: 'sparks'}, h('div', {class: 'muted'}, 'loading…'));
  const examples = h('div', {class: 'examples'}, h('div', {class: 'muted'}, 'loading…'));
  replace(
    view.panel,
    h('button', {class: 'close', title: 'close', onclick: () => closePanel(view)}, '×'),
    title,
    h('div', {class: 'muted kind'}, `${d.kind}${group === 'edge' ? ' call' : ''}`),
    figuresOf(view, d, group),
    d.diff ? h('div', {class: 'diff'}, `compared with the other window: ${d.diff}`) : null,
    group === 'node' ? reachSection(view, d) : null,
    h('h3', {}, 'Over the window'),
    series,
    h('h3', {}, 'Feedback loops'),
    loops.length
      ? h(
          'ul',
          {class: 'panel-loops'},
          loops.map((loop) =>
            h('li', {onclick: () => view.selectLoop(loop)}, [...loop.nodes, loop.nodes[0]].join(' → ')),
          ),
        )
      : h('div', {class: 'muted'}, 'in none'),
    h('h3', {}, 'Example traces'),
    examples,
    d.collapsed ? collapsedList(view, d.id) : null,
  );
  if (withQueries && !d.collapsed) loadQueries(view, d, group, series, examples);
  if (d.collapsed) {
    replace(series, h('div', {class: 'muted'}, 'not for collapsed nodes'));
    replace(examples, h('div', {class: 'muted'}, 'not for collapsed nodes'));
  }
}

function figuresOf(view, d, group) {
  const seconds = view.seconds();
  const rows = [
    ['calls', formatCount(d.calls), group === 'edge' ? 'calls' : 'calls in'],
    ['rate', formatRate(d.calls / seconds), 'rate'],
    ['errors', `${formatCount(d.errors)} (${formatPercent(d.error_rate)})`, 'errors'],
  ];
  if (group === 'edge' || d.kind === 'service') {
    rows.push(['p50', formatMs(d.p50_ms), 'p50'], ['p95', formatMs(d.p95_ms), 'p95'], ['p99', formatMs(d.p99_ms), 'p99']);
  }
  if (group === 'edge') {
    if (d.amplification) rows.push(['amplification', `×${d.amplification.toFixed(2)}`, 'calls per caller']);
    if (d.bytes) rows.push(['bytes', formatCount(d.bytes), 'payload bytes']);
    if (d.trace_loops) rows.push(['trace_loops', formatCount(d.trace_loops), 'flows that went round a loop through it']);
  }
  return h(
    'dl',
    {class: 'figures'},
    rows.map(([field, value, label]) => [
      h('dt', {}, label),
      h('dd', {dataset: {field}, class: 'num'}, value),
    ]),
  );
}

function loopsOf(view, element) {
  const loops = view.state.loops || [];
  if (element.isNode()) return loops.filter((l) => l.nodes.includes(element.id()));
  const s = element.data('source');
  const t = element.data('target');
  return loops.filter((l) => l.edges.some(([a, b]) => a === s && b === t));
}

function collapsedList(view, id) {
  const members = view.state.collapsed.get(id) || [];
  return [
    h('h3', {}, `Collapsed here (${formatCount(members.length)})`),
    h('ul', {class: 'collapsed-list'}, members.slice(0, 200).map((m) => h('li', {}, m))),
  ];
}

function bareName(id) {
  const match = /^(queue|database|external|service):(.*)$/.exec(id);
  return match ? match[2] : id;
}

const PEER_NAME =
  "coalesce(attributes['peer.service'], attributes['server.address'], attributes['db.name'], attributes['db.namespace'], attributes['db.system'])";

/**
 * Which spans stand for this node or edge. The figures above come from the live graph; these
 * spans approximate it closely enough for a shape over time and for examples.
 */
export function spanCondition(d, group, kindOf) {
  if (group === 'node') {
    const name = sqlString(bareName(d.id));
    if (d.kind === 'service') return `service_name = ${name} AND kind IN ('SERVER', 'CONSUMER')`;
    if (d.kind === 'queue') return `kind = 'PRODUCER' AND attributes['messaging.destination.name'] = ${name}`;
    return `kind = 'CLIENT' AND ${PEER_NAME} = ${name}`;
  }
  const source = sqlString(bareName(d.source));
  const target = sqlString(bareName(d.target));
  const sourceKind = kindOf(d.source);
  const targetKind = kindOf(d.target);
  if (targetKind === 'queue') {
    return `service_name = ${source} AND kind = 'PRODUCER' AND attributes['messaging.destination.name'] = ${target}`;
  }
  if (sourceKind === 'queue') {
    return `service_name = ${target} AND kind = 'CONSUMER' AND coalesce(attributes['messaging.destination.name'], ${source}) = ${source}`;
  }
  if (targetKind === 'database' || targetKind === 'external') {
    return `service_name = ${source} AND kind = 'CLIENT' AND ${PEER_NAME} = ${target}`;
  }
  return `service_name = ${target} AND kind = 'SERVER' AND parent_span_id IN (SELECT span_id FROM spans WHERE service_name = ${source} AND {window})`;
}

/** The element as `/api/graph/series` names it: the ids the graph gave it. */
function seriesParams(d, group, w) {
  const span = {from: String(Math.floor(w.from)), to: String(Math.ceil(w.to))};
  if (group === 'node') return {node: d.id, ...span};
  return {source: d.source, target: d.target, kind: d.kind, ...span};
}

function loadQueries(view, d, group, series, examples) {
  const token = view.state.panel.token;
  const w = view.state.window;
  const windowSql = `start_time >= ${sqlTime(w.from)} AND start_time < ${sqlTime(w.to)}`;
  const kindOf = (id) => view.cy.getElementById(id).data('kind');
  const condition = spanCondition(d, group, kindOf).replaceAll('{window}', windowSql);
  // One row per trace: a trace whose spans match more than once (a retried call, a service
  // called twice) was listed once per span, so the same trace showed twice.
  const exampleSql = (extra, order) => `SELECT trace_id,
  first_value(service_name ORDER BY duration_ns DESC) AS service_name,
  first_value(name ORDER BY duration_ns DESC) AS name,
  max(duration_ns) / 1e6 AS ms,
  min(status_code) AS status_code, -- ERROR < OK < UNSET: an error wins
  max(start_time) AS start_time
FROM spans WHERE ${windowSql} AND ${condition}${extra}
GROUP BY trace_id
ORDER BY ${order} LIMIT 5`;
  const stale = () => view.state.panel?.token !== token;
  const started = performance.now();
  const timings = {};
  view.state.panel.timings = timings;

  const sparks = getJson('/api/graph/series', seriesParams(d, group, w))
    .then(
      (answer) => (stale() ? null : drawSeries(series, answer)),
      (error) => {
        if (!stale()) replace(series, h('pre', {class: 'error'}, error.message));
      },
    )
    .then(() => {
      timings.series_ms = performance.now() - started;
    });
  const traces = Promise.allSettled([
    sql(exampleSql('', 'ms DESC, trace_id')),
    sql(exampleSql(" AND status_code = 'ERROR'", 'start_time DESC, trace_id')),
  ]).then(([slowest, failed]) => {
    if (stale()) return;
    timings.examples_ms = performance.now() - started;
    replace(
      examples,
      exampleList('slowest', slowest),
      exampleList('failed', failed),
      h(
        'a',
        {class: 'sql-link', href: `#/sql?q=${encodeURIComponent(exampleSql('', 'ms DESC, trace_id').replace(' LIMIT 5', ' LIMIT 100'))}`},
        'open these spans in the SQL console',
      ),
    );
  });
  // `loaded` (what the browser tests wait for) once both parts are on the page.
  Promise.all([sparks, traces]).then(() => {
    if (!stale()) view.state.panel.loaded = true;
  });
}

/** The series' columns as sparklines: calls per second, error rate and p95 per step. */
function drawSeries(container, answer) {
  const xs = answer.start_ms.map((ms) => ms / 1000);
  const step = answer.step_s;
  // A step whose graph was empty is no data (a gap), not a drop to zero.
  const calls = answer.calls.map((c) => (c === null ? null : c / step));
  const errors = answer.error_rate.map((r, i) => (r === null && answer.calls[i] !== null ? 0 : r));
  const drawn = [];
  replace(
    container,
    spark('rate /s', xs, calls, '#58a6ff', drawn),
    spark('error rate', xs, errors, '#e5484d', drawn),
    spark('p95 ms', xs, answer.p95_ms, '#d29922', drawn),
  );
  return Promise.all(drawn);
}

/** A labelled sparkline; the promise of its drawing (after layout gives it a width) goes to `drawn`. */
function spark(label, xs, ys, colour, drawn) {
  const box = h('div', {class: 'spark'});
  const holder = h('div', {class: 'spark-row'}, h('span', {class: 'spark-label'}, label), box);
  drawn.push(new Promise((resolve) => requestAnimationFrame(() => resolve(sparkline(box, xs, ys, colour)))));
  return holder;
}

function exampleList(label, settled) {
  if (settled.status === 'rejected') return h('pre', {class: 'error'}, settled.reason.message);
  const rows = records(settled.value);
  return h(
    'div',
    {class: 'example-list', dataset: {examples: label}},
    h('div', {class: 'muted'}, label),
    rows.length
      ? h(
          'ul',
          {},
          rows.map((r) =>
            h(
              'li',
              {},
              h('a', {href: `#/trace/${r.trace_id}`, class: 'mono'}, r.trace_id.slice(0, 16) + '…'),
              ' ',
              h('span', {}, `${r.service_name}: ${r.name}`),
              ' ',
              h('span', {class: r.status_code === 'ERROR' ? 'err num' : 'num'}, formatMs(r.ms)),
            ),
          ),
        )
      : h('div', {class: 'muted'}, 'none'),
  );
}
