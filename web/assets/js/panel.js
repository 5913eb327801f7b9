// The detail panel of a node or an edge: RED figures from the live graph, sparklines and
// example traces from SQL over `spans` for the same window, and the loops it belongs to.

import {records, sql} from './api.js';
import {sparkline} from './chart.js';
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

/** Sparklines have about this many points whatever the window. */
const POINTS = 30;
const BUCKETS_S = [10, 30, 60, 300, 900, 1800, 3600];

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
  const examples = h('div', {class: 'examples'});
  replace(
    view.panel,
    h('button', {class: 'close', title: 'close', onclick: () => closePanel(view)}, '×'),
    title,
    h('div', {class: 'muted kind'}, `${d.kind}${group === 'edge' ? ' call' : ''}`),
    figuresOf(view, d, group),
    d.diff ? h('div', {class: 'diff'}, `compared with the other window: ${d.diff}`) : null,
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
  if (d.collapsed) replace(series, h('div', {class: 'muted'}, 'not for collapsed nodes'));
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

function bucketSeconds(seconds) {
  const wanted = seconds / POINTS;
  return BUCKETS_S.find((b) => b >= wanted) || BUCKETS_S[BUCKETS_S.length - 1];
}

async function loadQueries(view, d, group, series, examples) {
  const token = view.state.panel.token;
  const w = view.state.window;
  const windowSql = `start_time >= ${sqlTime(w.from)} AND start_time < ${sqlTime(w.to)}`;
  const kindOf = (id) => view.cy.getElementById(id).data('kind');
  const condition = spanCondition(d, group, kindOf).replaceAll('{window}', windowSql);
  const bucket = bucketSeconds((w.to - w.from) / 1000);
  // Buckets start at the Unix epoch (date_bin's default origin), as the chart's do.
  const seriesSql = `SELECT date_bin(INTERVAL '${bucket} seconds', start_time) AS t,
  count(*) AS calls,
  sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors,
  approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p95_ms
FROM spans WHERE ${windowSql} AND ${condition}
GROUP BY t ORDER BY t`;
  const exampleSql = (extra, order) => `SELECT trace_id, service_name, name, duration_ns / 1e6 AS ms, status_code
FROM spans WHERE ${windowSql} AND ${condition}${extra}
ORDER BY ${order} LIMIT 5`;
  const stale = () => view.state.panel?.token !== token;
  const [seriesResult, slowest, failed] = await Promise.allSettled([
    sql(seriesSql),
    sql(exampleSql('', 'duration_ns DESC')),
    sql(exampleSql(" AND status_code = 'ERROR'", 'start_time DESC')),
  ]);
  if (stale()) return;
  if (seriesResult.status === 'fulfilled') {
    await drawSeries(series, records(seriesResult.value), w, bucket);
    if (stale()) return;
  } else {
    replace(series, h('pre', {class: 'error'}, seriesResult.reason.message));
  }
  replace(
    examples,
    exampleList('slowest', slowest),
    exampleList('failed', failed),
    h(
      'a',
      {class: 'sql-link', href: `#/sql?q=${encodeURIComponent(exampleSql('', 'duration_ns DESC').replace(' LIMIT 5', ' LIMIT 100'))}`},
      'open these spans in the SQL console',
    ),
  );
  view.state.panel.loaded = true;
}

function drawSeries(container, rows, w, bucket) {
  // Missing buckets had no calls: fill them so the line drops to zero instead of skipping.
  const start = Math.floor(w.from / 1000 / bucket) * bucket;
  const byTime = new Map(rows.map((r) => [Math.round(Date.parse(r.t) / 1000), r]));
  const xs = [];
  const calls = [];
  const errors = [];
  const p95 = [];
  for (let t = start; t < w.to / 1000; t += bucket) {
    const r = byTime.get(t);
    xs.push(t);
    calls.push(r ? r.calls / bucket : 0);
    errors.push(r && r.calls ? r.errors / r.calls : 0);
    p95.push(r ? r.p95_ms : null);
  }
  const drawn = [];
  replace(
    container,
    spark('rate /s', xs, calls, '#58a6ff', drawn),
    spark('error rate', xs, errors, '#e5484d', drawn),
    spark('p95 ms', xs, p95, '#d29922', drawn),
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
