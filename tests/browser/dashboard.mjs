// Drives Debian's chromium through the dashboard for tests/browser_e2e.rs.
//
//   node dashboard.mjs <scenario> <dashboard url> <artefact dir>
//
// Scenarios: `shop` (graph, edge panel, loop, live update, SQL, trace view, escaping),
// `empty` (the "point your OTLP exporter at" page), `big` (2,000 nodes: time to interactive),
// `many` (3,000 nodes: the quietest folded into one node per kind), `health` (a degraded
// edge, an amplified edge's badge, edge labels and the overlapping ones hidden, detours round
// nodes), `city` (what the page drew of the server's own graph: crossings, labels, timings),
// `incident` (a latency incident on the plain graph and in the What's wrong box, focused by
// a click), `search` (trace search, the critical path, folding, events, multi-line
// attributes and linked traces), `alerts` (a webhook, a rule made and previewed on the alerts
// page, firing, silenced and expired there, deliveries with the receiver's answer, the rule's
// own link, the refresh stopping when the page is left), `groups` (a system folded by
// namespace: a group opened in place, a member found by search), `giant` (a 10,000-service
// system: opened folded by itself, time to interactive, a group opened, a node focused, its
// blast radius and a path to it drawn).
// It reports what the page itself holds (window.flowscope, the DOM), never pixels: lines
// `STEP <name>` as it goes, `WAIT <what>` when the Rust side must act (it answers a line on
// stdin), and one final `RESULT <json>` line that the Rust test asserts on. Screenshots of
// each view go to the artefact directory.

import {mkdirSync, rmSync} from 'node:fs';
import {join} from 'node:path';
import {createInterface} from 'node:readline';
import {launch} from './chromium.mjs';

const TIMEOUT = 20000;

const [scenario, baseUrl, artefacts] = process.argv.slice(2);
if (!scenario || !baseUrl || !artefacts) {
  console.error('usage: node dashboard.mjs <shop|empty|big> <dashboard url> <artefact dir>');
  process.exit(2);
}
mkdirSync(artefacts, {recursive: true});

const stdin = createInterface({input: process.stdin});
const lines = stdin[Symbol.asyncIterator]();

/** Asks the Rust side to do something and waits for its answer line. */
async function waitFor(what) {
  console.log(`WAIT ${what}`);
  const next = await lines.next();
  if (next.done) throw new Error(`stdin closed while waiting for ${what}`);
  return next.value.trim();
}

function step(name) {
  console.log(`STEP ${name}`);
}

const {context, profile} = await launch();
const result = {scenario, dialogs: [], page_errors: [], console_errors: []};
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on('dialog', async (dialog) => {
    result.dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => result.page_errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') result.console_errors.push(message.text());
  });
  if (scenario === 'shop') await shop(page);
  else if (scenario === 'empty') await empty(page);
  else if (scenario === 'big') await big(page);
  else if (scenario === 'many') await many(page);
  else if (scenario === 'health') await health(page);
  else if (scenario === 'city') await city(page);
  else if (scenario === 'login') await loginFlow(page);
  else if (scenario === 'incident') await incident(page);
  else if (scenario === 'search') await searchFlow(page);
  else if (scenario === 'alerts') await alertsFlow(page);
  else if (scenario === 'groups') await groupsFlow(page);
  else if (scenario === 'giant') await giantFlow(page);
  else throw new Error(`unknown scenario ${scenario}`);
} catch (error) {
  result.failure = String(error && error.stack ? error.stack : error);
} finally {
  await context.close();
  rmSync(profile, {recursive: true, force: true});
  stdin.close();
}
console.log(`RESULT ${JSON.stringify(result)}`);

async function graphReady(page) {
  await page.waitForFunction(() => window.flowscope?.state?.graph?.ready === true);
}

function graphState(page) {
  return page.evaluate(() => {
    const cy = window.flowscope.cy;
    return {
      nodes: cy.nodes().map((n) => ({id: n.id(), kind: n.data('kind'), loop: n.hasClass('loop')})),
      edges: cy.edges().map((e) => ({
        source: e.data('source'),
        target: e.data('target'),
        kind: e.data('kind'),
        calls: e.data('calls'),
        loop: e.hasClass('loop'),
      })),
      loops: window.flowscope.state.graph.loops.map((l) => l.nodes),
      loop_items: [...document.querySelectorAll('#loops .loop-item')].map((li) => li.textContent),
      loads: window.flowscope.state.graph.loads,
      layout: window.flowscope.state.graph.layout,
    };
  });
}

/** A real mouse click in the middle of an edge, found through the page's own state. */
async function clickEdge(page, source, target) {
  const point = await page.evaluate(
    ([s, t]) => {
      const cy = window.flowscope.cy;
      const edge = cy.edges().filter((e) => e.data('source') === s && e.data('target') === t)[0];
      if (!edge) return null;
      const box = cy.container().getBoundingClientRect();
      const p = edge.renderedMidpoint();
      return {x: box.left + p.x, y: box.top + p.y};
    },
    [source, target],
  );
  if (!point) throw new Error(`no edge ${source} -> ${target} to click`);
  await page.mouse.click(point.x, point.y);
}

async function shop(page) {
  step('graph');
  await page.goto(`${baseUrl}/`);
  await graphReady(page);
  result.graph = await graphState(page);
  result.ready_ms = await page.evaluate(() => window.flowscope.state.graph.readyMs);
  await page.screenshot({path: join(artefacts, 'graph.png')});

  step('edge panel');
  await clickEdge(page, 'gateway', 'orders');
  await page.waitForSelector('#panel:not(.hidden) [data-field=calls]');
  await page.waitForFunction(() => window.flowscope.state.graph.panel?.loaded === true);
  result.panel = await page.evaluate(() => ({
    id: window.flowscope.state.graph.panel.id,
    title: document.querySelector('#panel h2').textContent,
    calls: document.querySelector('#panel [data-field=calls]').textContent,
    sparklines: document.querySelectorAll('#panel .spark canvas').length,
    example_links: [...document.querySelectorAll('#panel .example-list a')].map((a) => a.getAttribute('href')),
    timings: window.flowscope.state.graph.panel.timings,
  }));
  await page.screenshot({path: join(artefacts, 'graph-panel.png')});

  step('loop');
  await page.click('#loops .loop-item');
  result.loop_selected = await page.evaluate(() =>
    window.flowscope.cy.elements('.loop-selected').map((e) => (e.isNode() ? e.id() : `${e.data('source')}->${e.data('target')}`)),
  );
  await page.screenshot({path: join(artefacts, 'graph-loop.png')});

  step('escaping');
  // Open the panel of the service whose name is markup; it must show as text.
  const xssName = await page.evaluate(() => window.flowscope.cy.nodes().filter((n) => n.id().includes('<')).map((n) => n.id())[0] || null);
  result.xss = {name: xssName};
  if (xssName) {
    await page.fill('#search', xssName);
    await page.press('#search', 'Enter');
    await page.waitForFunction((name) => document.querySelector('#panel h2')?.textContent === name, xssName);
    result.xss.panel_title = await page.evaluate(() => document.querySelector('#panel h2').textContent);
    result.xss.visible = await page.isVisible('#panel h2');
  }
  await page.click('#clear-focus');

  step('live update');
  const before = await page.evaluate(() => {
    window.__noReload = 'still here';
    const positions = {};
    window.flowscope.cy.nodes().forEach((n) => {
      positions[n.id()] = {...n.position()};
    });
    return positions;
  });
  const newEdge = JSON.parse(await waitFor('live-edge'));
  await page.waitForFunction(
    ([s, t]) => window.flowscope.cy.edges().some((e) => e.data('source') === s && e.data('target') === t),
    [newEdge.source, newEdge.target],
  );
  result.live = await page.evaluate(
    ([positions, s, t]) => {
      const cy = window.flowscope.cy;
      let moved = 0;
      for (const [id, p] of Object.entries(positions)) {
        const node = cy.getElementById(id);
        if (node.nonempty() && (node.position().x !== p.x || node.position().y !== p.y)) moved++;
      }
      return {
        marker: window.__noReload,
        loads: window.flowscope.state.graph.loads,
        deltas: window.flowscope.state.graph.deltas,
        moved,
        edge: cy.edges().some((e) => e.data('source') === s && e.data('target') === t),
      };
    },
    [before, newEdge.source, newEdge.target],
  );
  await page.screenshot({path: join(artefacts, 'graph-live.png')});

  step('compare');
  // Everything was sent within the last minutes: compared with an hour earlier, every edge
  // appeared.
  await page.goto(`${baseUrl}/#/graph?from=15m&compare=1h`);
  await page.waitForFunction(() => window.flowscope.state.graph.ready && window.flowscope.state.graph.diff);
  result.compare = await page.evaluate(() => ({
    diff: window.flowscope.state.graph.diff,
    edges: window.flowscope.cy.edges().length,
    appeared: window.flowscope.cy.edges('.appeared').length,
    legend: !document.getElementById('compare-legend').classList.contains('hidden'),
  }));
  await page.screenshot({path: join(artefacts, 'graph-compare.png')});

  step('sql console');
  await page.click('nav a[data-view=sql]');
  await page.waitForSelector('#sql-examples .example');
  await page.click('#sql-examples .example >> nth=0');
  await page.waitForFunction(() => !window.flowscope.state.sql.running && window.flowscope.state.sql.runs > 0);
  result.sql_example = await page.evaluate(() => ({
    error: window.flowscope.state.sql.error,
    rows: window.flowscope.state.sql.rows.length,
    url_has_query: location.hash.startsWith('#/sql?q='),
  }));
  await page.fill('#sql-editor', '');
  await page.type(
    '#sql-editor',
    'SELECT start_time, duration_ns / 1e6 AS ms, trace_id FROM spans ORDER BY start_time LIMIT 50',
  );
  await page.press('#sql-editor', 'Control+Enter');
  await page.waitForFunction(() => !window.flowscope.state.sql.running && window.flowscope.state.sql.columns.length === 3);
  // The chart is drawn a frame later; a result without one is reported, not waited for forever.
  await page.waitForFunction(() => window.flowscope.state.sql.chart === true, null, {timeout: 5000}).catch(() => {});
  result.sql = await page.evaluate(() => ({
    error: window.flowscope.state.sql.error,
    columns: window.flowscope.state.sql.columns.map((c) => c.name),
    rows: window.flowscope.state.sql.rows.length,
    table_rows: document.querySelectorAll('#sql-result tbody tr').length,
    right_aligned: getComputedStyle(document.querySelector('#sql-result tbody td:nth-child(2)')).textAlign,
    chart: window.flowscope.state.sql.chart && document.querySelectorAll('#sql-chart canvas').length > 0,
    query_in_url: new URLSearchParams(location.hash.split('?')[1] || '').get('q'),
  }));
  await page.screenshot({path: join(artefacts, 'sql.png')});
  await page.fill('#sql-editor', 'SELECT no_such_column FROM spans');
  await page.press('#sql-editor', 'Control+Enter');
  await page.waitForFunction(() => window.flowscope.state.sql.error);
  result.sql_error = await page.textContent('#sql-error');
  // A shared URL runs its query when opened.
  await page.goto(`${baseUrl}/#/sql?q=${encodeURIComponent('SELECT count(*) AS n FROM spans')}`);
  await page.waitForFunction(() => window.flowscope?.state?.sql?.runs > 0 && !window.flowscope.state.sql.running);
  result.sql_from_url = await page.evaluate(() => window.flowscope.state.sql.rows);

  step('trace view');
  const traceId = await waitFor('trace-id');
  await page.goto(`${baseUrl}/#/trace/${traceId}`);
  await page.waitForFunction(() => window.flowscope?.state?.trace?.ready === true);
  await page.click('#waterfall .span-row.failed >> nth=0').catch(() => {});
  // Rows of this trace only: traces linked to it are drawn below it.
  result.trace = await page.evaluate((id) => ({
    spans: window.flowscope.state.trace.spans.length,
    rows: document.querySelectorAll(`#waterfall .span-row[data-trace="${id}"]`).length,
    failed_rows: document.querySelectorAll(`#waterfall .span-row.failed[data-trace="${id}"]`).length,
    services: [...new Set(window.flowscope.state.trace.spans.map((s) => s.service_name))].sort(),
    details_title: document.querySelector('#span-details h3')?.textContent,
    link_hrefs: [...document.querySelectorAll('#span-details a.trace-link')].map((a) => a.getAttribute('href')),
  }), traceId);
  await page.screenshot({path: join(artefacts, 'trace.png')});

  // The consumer's span links to its producer in another trace: following it opens that trace.
  const linkedTrace = await waitFor('linked-trace-id');
  await page.goto(`${baseUrl}/#/trace/${linkedTrace}`);
  await page.waitForFunction((id) => window.flowscope?.state?.trace?.ready === true && window.flowscope.state.trace.traceId === id, linkedTrace);
  const consumer = await page.evaluate(() => window.flowscope.state.trace.spans.find((s) => s.kind === 'CONSUMER')?.span_id);
  if (consumer) {
    await page.click(`#waterfall .span-row[data-span="${consumer}"]`);
    await page.click('#span-details a.trace-link');
    await page.waitForFunction((id) => window.flowscope.state.trace.ready && window.flowscope.state.trace.traceId !== id, linkedTrace);
    result.followed_link_to = await page.evaluate(() => window.flowscope.state.trace.traceId);
  }

  result.xss.img_elements = await page.evaluate(() => document.querySelectorAll('img').length);
  result.xss.fired = await page.evaluate(() => window.__xss === true);
}

async function empty(page) {
  step('empty');
  await page.goto(`${baseUrl}/`);
  await graphReady(page);
  result.empty = await page.evaluate(() => ({
    visible: !document.getElementById('empty').classList.contains('hidden'),
    text: document.getElementById('empty').textContent,
    grpc: document.getElementById('endpoint-grpc')?.textContent,
    http: document.getElementById('endpoint-http')?.textContent,
  }));
  await page.screenshot({path: join(artefacts, 'empty.png')});

  // The empty page turns into the graph by itself when the first spans arrive.
  await waitFor('first-spans');
  await page.waitForFunction(() => window.flowscope.cy.nodes().length > 0 && document.getElementById('empty').classList.contains('hidden'));
  result.after_first_spans = await page.evaluate(() => ({
    nodes: window.flowscope.cy.nodes().map((n) => n.id()).sort(),
    loads: window.flowscope.state.graph.loads,
    layout: window.flowscope.state.graph.layout,
  }));
}

/** 2,000 services, each calling a few others: the graph answer is served by the page route. */
function bigGraph(count) {
  const nodes = [];
  const edges = [];
  for (let i = 0; i < count; i++) {
    nodes.push({id: `svc-${i}`, kind: i % 10 === 0 ? 'database' : 'service', calls: 100 + (i % 50), errors: i % 7, p50_ms: 3, p95_ms: 9, p99_ms: 20});
  }
  for (let i = 1; i < count; i++) {
    const targets = [Math.floor(i / 3), Math.floor(i / 7), (i * 37) % count];
    for (const t of new Set(targets)) {
      if (t === i) continue;
      edges.push({source: `svc-${t}`, target: `svc-${i}`, kind: 'sync', calls: 50 + (i % 90), errors: i % 5, error_rate: (i % 5) / (50 + (i % 90)), p50_ms: 2, p95_ms: 8, p99_ms: 15, bytes: 0, amplification: 1, trace_loops: 0});
    }
  }
  return {from: new Date(Date.now() - 900e3).toISOString(), to: new Date().toISOString(), nodes, edges, loops: []};
}

async function big(page) {
  step('big');
  const graph = JSON.stringify(bigGraph(2000));
  await page.route((url) => url.pathname === '/api/graph', (route) => route.fulfill({contentType: 'application/json', body: graph}));
  const started = Date.now();
  await page.goto(`${baseUrl}/#/graph?from=1h`);
  await graphReady(page);
  // Interactive: the main thread answers and a click on a node opens its panel.
  const readyAt = Date.now();
  await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 0)));
  const point = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    const node = cy.getElementById('svc-0');
    const box = cy.container().getBoundingClientRect();
    const p = node.renderedPosition();
    return {x: box.left + p.x, y: box.top + p.y};
  });
  await page.mouse.click(point.x, point.y);
  await page.waitForFunction(() => window.flowscope.state.graph.panel?.id === 'svc-0');
  const clickedAt = Date.now();
  await page.waitForFunction(() => window.flowscope.state.graph.complete === true);
  result.big = {
    nodes: await page.evaluate(() => window.flowscope.cy.nodes().length),
    edges: await page.evaluate(() => window.flowscope.cy.edges().length),
    layout: await page.evaluate(() => window.flowscope.state.graph.layout),
    navigation_to_ready_ms: readyAt - started,
    navigation_to_click_answered_ms: clickedAt - started,
    page_ready_ms: await page.evaluate(() => window.flowscope.state.graph.readyMs),
    page_navigation_to_ready_ms: await page.evaluate(() => window.flowscope.state.graph.navigationToReadyMs),
    page_navigation_to_all_edges_ms: await page.evaluate(() => window.flowscope.state.graph.navigationToCompleteMs),
    timings: await page.evaluate(() => ({fetch: window.flowscope.state.graph.fetchMs, ...window.flowscope.state.graph.timings})),
  };
  await page.screenshot({path: join(artefacts, 'graph-2000.png')});
}

async function many(page) {
  step('many');
  const graph = JSON.stringify(bigGraph(3000));
  await page.route((url) => url.pathname === '/api/graph', (route) => route.fulfill({contentType: 'application/json', body: graph}));
  await page.goto(`${baseUrl}/#/graph?from=1h`);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.state.graph.complete === true);
  result.many = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    const collapsed = [...window.flowscope.state.graph.collapsed.entries()];
    return {
      nodes: cy.nodes().length,
      collapsed_nodes: cy.nodes('[?collapsed]').map((n) => n.data('label')).sort(),
      collapsed_members: collapsed.reduce((sum, [, members]) => sum + members.length, 0),
      total: window.flowscope.state.graph.totalNodes,
    };
  });
  await page.screenshot({path: join(artefacts, 'graph-3000.png')});
}

/**
 * A graph as /api/graph gives it: a slow edge judged degraded, a retry storm judged
 * amplified, and a dense block of edges between two ranks whose labels cannot all fit.
 */
function healthGraph() {
  const node = (id) => ({id, kind: 'service', calls: 600, errors: 0, p50_ms: 3, p95_ms: 9, p99_ms: 20, health: 'ok', health_reasons: []});
  const edge = (source, target, extra = {}) => ({
    source, target, kind: 'sync', calls: 600, errors: 0, error_rate: 0, p50_ms: 2, p95_ms: 8, p99_ms: 15,
    bytes: 0, amplification: 1, trace_loops: 0, health: 'ok', health_reasons: [], amplified: false, ...extra,
  });
  const ids = ['gateway', 'orders', 'payments', 'card-processor', 'inventory', 'a1', 'a2', 'a3', 'a4', 'b1', 'b2', 'b3', 'b4'];
  const edges = [
    edge('gateway', 'orders', {calls: 3000}),
    edge('orders', 'inventory', {p95_ms: 412, p99_ms: 600, health: 'degraded', health_reasons: ['p95 412 ms above its limit 30 ms (baseline 8.0 ms)']}),
    edge('orders', 'payments', {calls: 900}),
    edge('payments', 'card-processor', {
      calls: 1890, amplification: 2.1, amplified: true, health: 'degraded',
      health_reasons: ['calls per caller ×2.1 above its limit ×1.3 (baseline ×1.1)'],
    }),
    edge('gateway', 'a1'), edge('gateway', 'a2'), edge('gateway', 'a3'), edge('gateway', 'a4'),
  ];
  // Every a calls every b, with different traffic: their labels meet in the middle.
  for (const [i, a] of ['a1', 'a2', 'a3', 'a4'].entries()) {
    for (const [j, b] of ['b1', 'b2', 'b3', 'b4'].entries()) edges.push(edge(a, b, {calls: 100 + 10 * i + j}));
  }
  return {from: new Date(Date.now() - 900e3).toISOString(), to: new Date().toISOString(), nodes: ids.map(node), edges, loops: []};
}

async function health(page) {
  step('health');
  const graph = JSON.stringify(healthGraph());
  await page.route((url) => url.pathname === '/api/graph', (route) => route.fulfill({contentType: 'application/json', body: graph}));
  await page.goto(`${baseUrl}/#/graph?from=1h`);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.state.graph.edgeLabels !== undefined);
  result.health = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    const state = window.flowscope.state.graph;
    const edge = (s, t) => cy.edges().filter((e) => e.data('source') === s && e.data('target') === t)[0];
    const drawn = (e) => ({
      colour: e.style('line-color'),
      label: e.hasClass('elbl') && !e.hasClass('lbl-off') ? e.pstyle('label').strValue : '',
      badge: e.pstyle('source-label').strValue,
      width: e.numericStyle('width'),
    });
    return {
      layout: state.layout,
      slow: drawn(edge('orders', 'inventory')),
      steady: drawn(edge('orders', 'payments')),
      storm: drawn(edge('payments', 'card-processor')),
      busiest: drawn(edge('gateway', 'orders')),
      quietest: drawn(edge('a1', 'b1')),
      edge_labels: state.edgeLabels,
      amplified: state.amplified,
      crossings: state.crossings,
      hidden_dense: cy.edges('.lbl-off').map((e) => `${e.data('source')}>${e.data('target')}`).sort(),
      // Any two labels still shown that overlap (there should be none).
      overlapping_shown: (() => {
        const shown = cy.edges('.elbl').not('.lbl-off').map((e) => e.boundingBox({includeNodes: false, includeEdges: false, includeLabels: true, includeMainLabels: true, includeSourceLabels: false, includeTargetLabels: false, includeOverlays: false}));
        let count = 0;
        for (let i = 0; i < shown.length; i++) {
          for (let j = i + 1; j < shown.length; j++) {
            const a = shown[i];
            const b = shown[j];
            if (a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2) count++;
          }
        }
        return count;
      })(),
    };
  });
  await page.screenshot({path: join(artefacts, 'graph-health.png')});
}

/** The server's own graph (a demo running against it): what the page drew and how fast. */
async function city(page) {
  step('city');
  await page.goto(`${baseUrl}/#/graph?from=15m`);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.state.graph.edgeLabels !== undefined);
  result.city = await page.evaluate(() => ({
    nodes: window.flowscope.cy.nodes().length,
    edges: window.flowscope.cy.edges().length,
    layout: window.flowscope.state.graph.layout,
    crossings: window.flowscope.state.graph.crossings,
    edge_labels: window.flowscope.state.graph.edgeLabels,
    amplified: window.flowscope.state.graph.amplified,
    timings: window.flowscope.state.graph.timings,
  }));
  await page.screenshot({path: join(artefacts, 'graph-city.png')});
}

/** A server with tokens: the login form first, a wrong token refused, a read token in. */
async function loginFlow(page) {
  step('login');
  await page.goto(`${baseUrl}/`);
  await page.waitForSelector('#login');
  result.before = await page.evaluate(() => ({
    graph_hidden: document.getElementById('view-graph').classList.contains('hidden'),
    cy: Boolean(window.flowscope.cy),
  }));
  await page.fill('#login-token', await waitFor('wrong-token'));
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.length > 0);
  result.wrong_error = await page.textContent('#login-error');
  await page.fill('#login-token', await waitFor('read-token'));
  await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.cy.nodes().length > 0);
  result.after = await page.evaluate(() => ({
    user: document.getElementById('user')?.textContent,
    nodes: window.flowscope.cy.nodes().map((n) => n.id()).sort(),
    login_shown: Boolean(document.getElementById('login')),
    // The session cookie is HttpOnly: the page's scripts cannot read it.
    cookie_seen_by_script: document.cookie.includes('flowscope_session'),
  }));
  await page.screenshot({path: join(artefacts, 'logged-in.png')});
  // A read token sees the alerts page's lists, and a note where the forms would be.
  await page.goto(`${baseUrl}/#/alerts`);
  await page.waitForFunction(() => window.flowscope.state.alerts?.ready === true);
  result.alerts_read_only = await page.evaluate(() => ({
    admin: window.flowscope.state.alerts.admin,
    webhooks_note: document.getElementById('webhooks-forbidden')?.textContent ?? null,
    rules_note: document.getElementById('rules-note').textContent,
    new_rule_shown: !document.getElementById('rule-new').classList.contains('hidden'),
    new_silence_shown: !document.getElementById('silence-new').classList.contains('hidden'),
    webhook_form: Boolean(document.getElementById('webhook-form')),
    page_error_shown: [...document.querySelectorAll('#view-alerts pre.error')].map((e) => e.textContent),
  }));
  await page.screenshot({path: join(artefacts, 'alerts-read-only.png')});
  await Promise.all([page.waitForNavigation(), page.click('#logout')]);
  await page.waitForSelector('#login');
  result.logged_out = true;
}

/** The city with dispatch -> drivers slowed down in the last minute, on the plain graph. */
async function incident(page) {
  step('graph');
  await page.goto(`${baseUrl}/#/graph`);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.state.graph.incidents?.loaded === true);
  const edgeLook = (source, target) =>
    page.evaluate(
      ([s, t]) => {
        const cy = window.flowscope.cy;
        const edge = cy.edges().filter((e) => e.data('source') === s && e.data('target') === t)[0];
        if (!edge) return null;
        return {health: edge.data('health'), colour: edge.style('line-color'), faded: edge.hasClass('faded')};
      },
      [source, target],
    );
  result.slow_edge = await edgeLook('dispatch', 'drivers');
  result.steady_edge = await edgeLook('drivers', 'vehicles-db');
  result.box = await page.evaluate(() => ({
    open: document.querySelector('#whats-wrong').open,
    text: document.querySelector('#whats-wrong').textContent,
    items: [...document.querySelectorAll('#incidents .incident-item')].map((li) => li.textContent),
    state: window.flowscope.state.graph.incidents.incidents,
  }));
  await page.screenshot({path: join(artefacts, 'incident.png')});
  if (!result.box.items.length || !result.box.open) return;
  step('focus');
  await page.click('#incidents .incident-item');
  await page.waitForFunction(() => window.flowscope.state.graph.focusedPath);
  result.focused = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    return {
      path: window.flowscope.state.graph.focusedPath,
      shown: cy.nodes().not('.faded').map((n) => n.id()).sort(),
      faded_nodes: cy.nodes('.faded').length,
      all_nodes: cy.nodes().length,
    };
  });
  result.slow_edge_focused = await edgeLook('dispatch', 'drivers');
  await page.screenshot({path: join(artefacts, 'incident-focused.png')});
}

/** Resolves once the trace view shows trace `id` in full. */
async function traceShown(page, id) {
  await page.waitForFunction((t) => window.flowscope?.state?.trace?.ready === true && window.flowscope.state.trace.traceId === t, id);
}

function traceViewState(page) {
  return page.evaluate(() => {
    const st = window.flowscope.state.trace;
    const rowsByTrace = {};
    for (const row of document.querySelectorAll('#waterfall .span-row')) rowsByTrace[row.dataset.trace] = (rowsByTrace[row.dataset.trace] || 0) + 1;
    return {
      traces: st.traces,
      linked: st.linked,
      separators: document.querySelectorAll('#waterfall .trace-separator').length,
      rows_by_trace: rowsByTrace,
      link_badges: document.querySelectorAll('#waterfall .link-badge').length,
    };
  });
}

/** Trace search through its form, then the trace view's ruler, folds, critical path, events,
 * multi-line attributes and linked traces. */
async function searchFlow(page) {
  const ids = JSON.parse(await waitFor('ids'));
  step('search form');
  await page.goto(`${baseUrl}/#/search`);
  await page.waitForFunction(() => window.flowscope?.state?.search?.ready === true);
  await page.fill('#search-attributes', 'customer.tier=gold');
  await page.fill('#search-min-duration', '100ms');
  await page.click('#search-run');
  const searched = () =>
    page.waitForFunction(() => {
      const s = window.flowscope.state.search;
      return s.ready && s.params.attributes === 'customer.tier=gold' && s.params.min_duration === '100ms';
    });
  await searched();
  const searchState = () =>
    page.evaluate(() => ({
      traces: window.flowscope.state.search.traces.map((t) => t.trace_id),
      listed: [...document.querySelectorAll('#search-results .search-result')].map((a) => a.dataset.trace),
      hash: location.hash,
      inputs: {attributes: document.getElementById('search-attributes').value, min_duration: document.getElementById('search-min-duration').value},
      sql: document.getElementById('search-sql-text')?.textContent,
      sql_link: document.getElementById('search-sql-link')?.getAttribute('href'),
      chart: document.querySelectorAll('#search-chart canvas').length,
      error: window.flowscope.state.search.error,
    }));
  result.search = await searchState();
  await page.screenshot({path: join(artefacts, 'search.png')});

  step('search survives a reload and the back button');
  await page.reload();
  await searched();
  result.search_reloaded = await searchState();
  await page.goto(`${baseUrl}/#/search?status=failed`);
  await page.waitForFunction(() => window.flowscope.state.search.ready && window.flowscope.state.search.error);
  result.search_bad = await page.evaluate(() => document.getElementById('search-error').textContent);
  await page.goBack();
  await searched();
  result.search_back = await searchState();

  step('continue in the SQL console');
  await page.click('#search-sql-link');
  await page.waitForFunction(() => window.flowscope.state.view === 'sql' && window.flowscope.state.sql.runs > 0 && !window.flowscope.state.sql.running);
  result.search_console = await page.evaluate(() => ({
    error: window.flowscope.state.sql.error,
    trace_ids: window.flowscope.state.sql.rows.map((r) => r[0]),
  }));

  step('critical path');
  await page.goto(`${baseUrl}/#/trace/${ids.critical}`);
  await traceShown(page, ids.critical);
  const critical = () =>
    page.evaluate(() => {
      const st = window.flowscope.state.trace;
      const name = (id) => st.spans.find((s) => s.span_id === id)?.name;
      return {
        path: st.criticalPath.map(name),
        highlighted: [...document.querySelectorAll('#waterfall .span-row.critical')].map((r) => name(r.dataset.span)).sort(),
        ruler: st.ruler,
        ruler_ticks: document.querySelectorAll('#trace-ruler .tick').length,
        rows: document.querySelectorAll('#waterfall .span-row').length,
        collapsed: st.collapsed.map(name),
        events: [...document.querySelectorAll('#waterfall .event-marker')].map((m) => m.dataset.event),
      };
    });
  result.critical = await critical();
  await page.screenshot({path: join(artefacts, 'trace-critical.png')});
  const e = await page.evaluate(() => window.flowscope.state.trace.spans.find((s) => s.name === 'E').span_id);
  await page.click(`#waterfall [data-fold="${e}"]`);
  result.critical_folded = await critical();
  await page.click(`#waterfall [data-fold="${e}"]`);
  result.critical_unfolded = await critical();

  step('attributes as written');
  await page.goto(`${baseUrl}/#/trace/${ids.gold_failed}`);
  await traceShown(page, ids.gold_failed);
  result.multiline = await page.evaluate(() => {
    const th = [...document.querySelectorAll('#span-details table.kv th')].find((t) => t.textContent === 'exception.stacktrace');
    const td = th?.nextElementSibling;
    return {
      text: td?.textContent,
      white_space: td ? getComputedStyle(td).whiteSpace : null,
      lines_high: td ? Math.round(td.getBoundingClientRect().height / (parseFloat(getComputedStyle(td).lineHeight) || 15)) : 0,
      events: [...document.querySelectorAll('#waterfall .event-marker')].map((m) => m.dataset.event),
    };
  });
  await page.screenshot({path: join(artefacts, 'trace-multiline.png')});

  step('linked traces');
  await page.goto(`${baseUrl}/#/trace/${ids.consumer}`);
  await traceShown(page, ids.consumer);
  result.consumer_view = await traceViewState(page);
  await page.screenshot({path: join(artefacts, 'trace-linked.png')});
  await page.goto(`${baseUrl}/#/trace/${ids.producer}`);
  await traceShown(page, ids.producer);
  result.producer_view = await traceViewState(page);
}

/** The alerts page end to end against a webhook receiver the Rust side runs on 127.0.0.1. */
async function alertsFlow(page) {
  const receiverUrl = await waitFor('receiver-url');
  const requests = [];
  page.on('request', (request) => requests.push({url: request.url(), at: Date.now()}));
  const alertsState = () => page.evaluate(() => window.flowscope.state.alerts);

  step('the page, from the navigation');
  await page.goto(`${baseUrl}/#/graph`);
  await page.click('nav a[data-view=alerts]');
  await page.waitForFunction(() => window.flowscope?.state?.alerts?.ready === true && location.hash === '#/alerts');
  result.nav = await page.evaluate(() => ({
    active: document.querySelector('nav a.active')?.dataset.view,
    visible: !document.getElementById('view-alerts').classList.contains('hidden'),
    admin: window.flowscope.state.alerts.admin,
  }));
  // Gone if anything below reloads the page: it must update itself.
  await page.evaluate(() => {
    window.marker = 'still here';
  });

  step('a webhook, and its test message delivered');
  await page.fill('#webhook-name', 'ops');
  await page.fill('#webhook-url', receiverUrl);
  await page.click('#webhook-add');
  await page.waitForSelector('#webhooks-list .webhook[data-webhook]');
  result.webhook_secret_shown = (await page.textContent('#webhook-secret-shown')).startsWith('whsec_');
  await page.click('#webhooks-list .webhook .webhook-test');
  await page.waitForSelector('#webhooks-list .delivery[data-state=delivered]', {timeout: 20000});

  step('a rule, previewed, then created');
  await page.click('#rule-new');
  await page.fill('#rule-name', 'checkout errors');
  await page.fill('#rule-sql', "SELECT 'checkout' AS service, 3 AS errors");
  await page.fill('#rule-interval', '1s');
  await page.fill('#rule-for', '0s');
  await page.fill('#rule-group-wait', '0s');
  await page.check('#rule-webhooks input[name=webhook]');
  await page.fill('#rule-annotations .pair-name', 'summary');
  await page.fill('#rule-annotations .pair-value', 'checkout fails');
  result.placeholders = await page.evaluate(() =>
    Object.fromEntries(
      ['interval', 'for', 'group-wait', 'group-interval', 'repeat-interval', 'keep-firing-for'].map((n) => [n, document.getElementById(`rule-${n}`).placeholder]),
    ),
  );
  await page.click('#rule-preview');
  await page.waitForSelector('#rule-preview-table, #rule-preview-error');
  result.preview = await page.evaluate(() => ({
    state: window.flowscope.state.alerts.preview,
    summary: document.getElementById('rule-preview-summary')?.textContent,
    cells: [...document.querySelectorAll('#rule-preview-table tbody td')].map((td) => td.textContent),
  }));
  await page.screenshot({path: join(artefacts, 'alerts-rule-form.png')});
  // A bad duration is refused by the server, whose words are shown beside the form.
  await page.fill('#rule-interval', 'soon');
  await page.click('#rule-save');
  await page.waitForSelector('#rule-error:not(.hidden)');
  result.refused = await page.textContent('#rule-error');
  await page.fill('#rule-interval', '1s');
  await page.click('#rule-save');
  await page.waitForFunction(() => /^#\/alerts\/rule\/\d+$/.test(location.hash) && document.querySelector('#rules-list tr.rule-row.focused'));
  result.created = await page.evaluate(() => ({
    hash: location.hash,
    rules: window.flowscope.state.alerts.rules.map((r) => ({id: r.id, name: r.name, interval: r.interval, for: r.for, group_wait: r.group_wait, webhooks: r.webhooks, annotations: r.annotations})),
    editor_closed: document.getElementById('rule-editor').classList.contains('hidden'),
  }));

  step('firing, without a reload');
  const firing = '#alerts-firing .alert-instance[data-state=firing]';
  await page.waitForSelector(firing, {timeout: 20000});
  await page.waitForFunction(() => document.querySelector('#rules-list tr.rule-row.focused td.firing-count')?.textContent === '1');
  result.firing = await page.evaluate((selector) => {
    const card = document.querySelector(selector);
    return {
      labels: [...card.querySelectorAll('.label-chip')].map((c) => c.textContent),
      values: card.querySelector('.alert-values').textContent,
      rule: card.querySelector('.alert-rule').textContent,
      silenced: Boolean(card.querySelector('.silenced-badge')),
      rule_row: [...document.querySelector('#rules-list tr.rule-row.focused').cells].map((td) => td.textContent),
      history: [...document.querySelectorAll('#alerts-history tr.history-row')].map((tr) => tr.dataset.status),
      marker: window.marker ?? null,
    };
  }, firing);
  await page.screenshot({path: join(artefacts, 'alerts-firing.png')});

  step('its notification delivered, with the receiver answer');
  await page.waitForFunction(
    () => [...document.querySelectorAll('#webhooks-list .delivery[data-state=delivered]')].length >= 2,
    null,
    {timeout: 20000},
  );
  result.deliveries = await page.evaluate(() =>
    [...document.querySelectorAll('#webhooks-list .delivery')].map((tr) => ({
      state: tr.dataset.state,
      kind: tr.cells[1].textContent,
      attempts: tr.cells[3].querySelector('summary')?.textContent ?? tr.cells[3].textContent,
      answer: tr.querySelector('.http-answer').textContent,
    })),
  );

  step('silenced from the page');
  await page.click(`${firing} .silence-action`);
  await page.waitForSelector('#silence-form');
  result.silence_prefill = await page.evaluate(() =>
    [...document.querySelectorAll('#silence-matchers .matcher')].map((row) => ({
      name: row.querySelector('.matcher-name').value,
      value: row.querySelector('.matcher-value').value,
      isRegex: row.querySelector('.matcher-regex').checked,
      isEqual: row.querySelector('.matcher-equal').checked,
    })),
  );
  await page.fill('#silence-created-by', 'ana');
  await page.fill('#silence-comment', 'deploying checkout');
  await page.fill('#silence-duration', '1h');
  await page.click('#silence-create');
  await page.waitForSelector(`${firing} .silenced-badge`);
  await page.waitForSelector('#silences-list .silence-row[data-state=active]');
  result.silenced = await page.evaluate((selector) => ({
    badge: document.querySelector(`${selector} .silenced-badge`).textContent,
    silences: [...document.querySelectorAll('#silences-list .silence-row')].map((tr) => ({
      state: tr.dataset.state,
      matchers: [...tr.querySelectorAll('.matchers .label-chip')].map((c) => c.textContent),
      text: tr.textContent,
    })),
    form_closed: document.getElementById('silence-editor').classList.contains('hidden'),
  }), firing);
  await page.screenshot({path: join(artefacts, 'alerts-silenced.png')});

  step('the silence expired');
  await page.click('#silences-list .silence-row[data-state=active] .silence-expire');
  await page.waitForSelector('#silences-list .silence-row[data-state=expired]');
  await page.waitForFunction((selector) => document.querySelector(selector) && !document.querySelector(`${selector} .silenced-badge`), firing);
  result.expired = true;

  step("the notification's link to the rule, opened afresh");
  const id = result.created.rules[0]?.id;
  const link = await waitFor('generator-url');
  await page.goto('about:blank');
  await page.goto(link);
  await page.waitForFunction((rule) => document.querySelector(`#rules-list tr.rule-row.focused[data-rule="${rule}"]`), id);
  result.link = await page.evaluate((rule) => {
    const row = document.querySelector(`#rules-list tr.rule-row[data-rule="${rule}"]`);
    const box = row.getBoundingClientRect();
    return {
      focused_rows: document.querySelectorAll('#rules-list tr.rule-row.focused').length,
      has_focus: document.activeElement === row,
      in_view: box.top >= 0 && box.bottom <= window.innerHeight,
      detail_sql: document.querySelector('#rule-detail .rule-sql')?.textContent,
      state_focused: window.flowscope.state.alerts.focused,
    };
  }, id);

  step('edit: the form holds the rule');
  await page.click(`#rules-list tr.rule-row[data-rule="${id}"] .rule-edit`);
  result.edit_form = await page.evaluate(() => ({
    name: document.getElementById('rule-name').value,
    interval: document.getElementById('rule-interval').value,
    group_wait: document.getElementById('rule-group-wait').value,
    ticked: [...document.querySelectorAll('#rule-webhooks input[name=webhook]:checked')].length,
    annotation: document.querySelector('#rule-annotations .pair-value').value,
  }));
  await page.click('#rule-cancel');

  step('the refresh stops when the page is left');
  await page.click('nav a[data-view=graph]');
  await page.waitForFunction(() => window.flowscope.state.view === 'graph');
  const left = Date.now();
  result.left = {refreshing: (await alertsState()).refreshing};
  // A load in flight when the page was left ends within the first second; a running timer
  // (every 3 s) would ask again in the next three.
  await page.waitForTimeout(4000);
  result.left.requests_after = requests.filter((r) => r.at > left + 1000 && /\/api\/(alerts|alert-rules|silences|webhooks)/.test(r.url)).length;

  step('deleted, after a confirmation');
  await page.goto(`${baseUrl}/#/alerts`);
  await page.waitForSelector(`#rules-list tr.rule-row[data-rule="${id}"] .rule-delete`);
  await page.click(`#rules-list tr.rule-row[data-rule="${id}"] .rule-delete`);
  result.delete_asked = await page.evaluate(() => ({
    still_listed: window.flowscope.state.alerts.rules.length,
    confirm_shown: Boolean(document.querySelector('#rules-list .rule-delete-confirm')),
  }));
  await page.click('#rules-list .rule-delete-confirm');
  await page.waitForFunction(() => window.flowscope.state.alerts.rules.length === 0);
  await page.waitForSelector('#alerts-history tr.history-row[data-status=resolved]');
  result.deleted = await page.evaluate(() => ({
    history: [...document.querySelectorAll('#alerts-history tr.history-row')].map((tr) => tr.dataset.status),
    firing: document.querySelectorAll('#alerts-firing .alert-instance').length,
  }));
  await page.screenshot({path: join(artefacts, 'alerts-deleted.png')});
}

/**
 * A system folded by namespace: group nodes drawn for the namespaces, one opened in place
 * by a click, and a service of another group found by the search box (its group opens).
 */
async function groupsFlow(page) {
  step('groups');
  await page.goto(`${baseUrl}/#/graph?group=service.namespace`);
  await graphReady(page);
  await page.waitForFunction(() => window.flowscope.cy.nodes('[kind = "group"]').length >= 3, null, {timeout: 60000});
  const groupsOf = () =>
    page.evaluate(() =>
      window.flowscope.cy
        .nodes('[kind = "group"]')
        .map((n) => ({id: n.id(), label: n.data('label'), members: n.data('members'), value: n.data('group_value')}))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
  const groups = await groupsOf();
  result.grouped = {
    groups,
    services: await page.evaluate(() => window.flowscope.cy.nodes('[kind = "service"]').length),
    select: await page.evaluate(() => document.getElementById('group').value),
  };
  await page.screenshot({path: join(artefacts, 'graph-groups.png')});
  const first = groups[0];
  await page.evaluate((id) => window.flowscope.cy.getElementById(id).emit('tap'), first.id);
  await page.waitForFunction(
    (id) => location.hash.includes('expand=') && window.flowscope.state.graph.ready === true && window.flowscope.cy.getElementById(id).empty(),
    first.id,
  );
  result.expanded = await page.evaluate(
    (members) => ({
      hash: decodeURIComponent(location.hash),
      members_shown: members.filter((m) => !window.flowscope.cy.getElementById(m).empty()).length,
      groups: window.flowscope.cy.nodes('[kind = "group"]').length,
    }),
    first.members,
  );
  const second = groups[1];
  const target = second.members[0];
  await page.fill('#search', target);
  await page.press('#search', 'Enter');
  await page.waitForFunction(
    (name) => window.flowscope.state.graph.ready === true && !window.flowscope.cy.getElementById(name).empty() && window.flowscope.state.graph.focus === name,
    target,
  );
  result.searched = await page.evaluate(
    ([name, id]) => ({
      target: name,
      hash: decodeURIComponent(location.hash),
      group_gone: window.flowscope.cy.getElementById(id).empty(),
      faded: window.flowscope.cy.nodes('.faded').length,
    }),
    [target, second.id],
  );
}


/**
 * A 10,000-service system as the server itself answers it: the page folds it by namespace by
 * itself, a click is answered, a group opens in place, a member is focused from the search
 * box, "who depends on it" highlights its blast radius, and a path from one of its callers to
 * it is drawn from the caller's panel.
 */
async function giantFlow(page) {
  step('giant');
  const started = Date.now();
  await page.goto(`${baseUrl}/#/graph`);
  await page.waitForFunction(() => window.flowscope?.state?.graph?.ready === true && location.hash.includes('group=service.namespace'), null, {timeout: 60000});
  const readyAt = Date.now();
  // Interactive: a click on a drawn node opens its panel.
  const clickable = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    const node = cy.nodes('[kind != "group"]').first();
    const box = cy.container().getBoundingClientRect();
    const p = node.renderedPosition();
    return {id: node.id(), x: box.left + p.x, y: box.top + p.y};
  });
  await page.mouse.click(clickable.x, clickable.y);
  await page.waitForFunction((id) => window.flowscope.state.graph.panel?.id === id, clickable.id);
  const clickedAt = Date.now();
  result.opened = await page.evaluate(() => {
    const cy = window.flowscope.cy;
    const graph = window.flowscope.state.graph;
    return {
      hash: decodeURIComponent(location.hash),
      groups: cy.nodes('[kind = "group"]').length,
      nodes: cy.nodes().length,
      edges_drawn_at_ready: cy.edges().length,
      page_navigation_to_ready_ms: graph.navigationToReadyMs,
      fetch_ms: graph.fetchMs,
      timings: graph.timings,
      // The page's first question to the server, as the browser timed it (ms since
      // navigation): the server's share of the opening, apart from the page's own work.
      graph_request: performance
        .getEntriesByType('resource')
        .filter((e) => e.name.includes('/api/graph?'))
        .slice(0, 1)
        .map((e) => ({started_ms: e.startTime, first_byte_ms: e.responseStart, answered_ms: e.responseEnd, bytes: e.transferSize}))[0],
    };
  });
  result.opened.navigation_to_ready_ms = readyAt - started;
  result.opened.navigation_to_click_answered_ms = clickedAt - started;
  await page.waitForFunction(() => window.flowscope.state.graph.complete === true, null, {timeout: 60000});
  await page.screenshot({path: join(artefacts, 'graph-10000-folded.png')});

  // Open the group most called from the rest of the system in place.
  const group = await page.evaluate(() =>
    window.flowscope.cy
      .nodes('[kind = "group"]')
      .map((n) => ({id: n.id(), members: n.data('members'), value: n.data('group_value'), callers: n.indegree(false)}))
      .sort((a, b) => b.callers - a.callers || (a.id < b.id ? -1 : 1))[0],
  );
  await page.evaluate((id) => window.flowscope.cy.getElementById(id).emit('tap'), group.id);
  await page.waitForFunction(
    (id) => location.hash.includes('expand=') && window.flowscope.state.graph.ready === true && window.flowscope.cy.getElementById(id).empty(),
    group.id,
    {timeout: 60000},
  );
  await page.waitForFunction(() => window.flowscope.state.graph.complete === true, null, {timeout: 60000});
  // The member most called from the rest of the system: the one whose failure matters.
  const target = await page.evaluate((members) => {
    const cy = window.flowscope.cy;
    const shown = members.filter((m) => cy.getElementById(m).nonempty());
    shown.sort((a, b) => cy.getElementById(b).indegree() - cy.getElementById(a).indegree() || (a < b ? -1 : 1));
    return {shown: shown.length, node: shown[0], callers_drawn: cy.getElementById(shown[0]).indegree()};
  }, group.members);
  result.expanded = {group: group.id, members: group.members.length, ...target};

  // Focus it from the search box, as a user would.
  await page.fill('#search', target.node);
  await page.press('#search', 'Enter');
  await page.waitForFunction(
    (name) => window.flowscope.state.graph.focus === name && window.flowscope.state.graph.panel?.id === name,
    target.node,
  );
  result.focused = await page.evaluate(() => ({
    hash: decodeURIComponent(location.hash),
    faded: window.flowscope.cy.elements('.faded').length,
    panel: document.querySelector('#panel h2')?.textContent,
  }));

  // What breaks if it fails.
  await page.click('#blast-radius');
  await page.waitForFunction(() => window.flowscope.state.graph.reach?.kind === 'blast_radius', null, {timeout: 30000});
  result.blast = await page.evaluate(() => {
    const reach = window.flowscope.state.graph.reach;
    const cy = window.flowscope.cy;
    return {
      node: reach.node,
      hops: reach.hops,
      nodes: reach.nodes,
      edges: reach.edges,
      callers: reach.callers,
      drawn_nodes: reach.drawn_nodes,
      drawn_edges: reach.drawn_edges,
      hidden_in_groups: reach.hidden_in_groups,
      highlighted_nodes: cy.nodes('.reach').length,
      highlighted_edges: cy.edges('.reach').length,
      start_marked: cy.getElementById(reach.node).hasClass('reach-start'),
      faded_highlighted: cy.elements('.reach.faded').length,
      listed: document.querySelectorAll('#panel .reach-list li').length,
      summary: document.querySelector('#panel .reach-summary')?.textContent,
    };
  });
  await page.screenshot({path: join(artefacts, 'graph-10000-blast-radius.png')});

  // A path from a caller two calls away (or the farthest one) to the node, drawn from the
  // caller's panel.
  const callers = result.blast.callers;
  if (!callers.length) throw new Error(`no caller of ${result.blast.node} to draw a path from`);
  const from = (callers.find((c) => c.hops === 2) || callers[callers.length - 1]).node;
  await page.fill('#search', from);
  await page.press('#search', 'Enter');
  await page.waitForFunction(
    (name) => window.flowscope.state.graph.focus === name && window.flowscope.state.graph.panel?.id === name && window.flowscope.state.graph.ready === true,
    from,
    {timeout: 60000},
  );
  await page.fill('#path-to', result.blast.node);
  await page.press('#path-to', 'Enter');
  await page.waitForFunction(() => window.flowscope.state.graph.reach?.kind === 'paths', null, {timeout: 30000});
  result.path = await page.evaluate(() => {
    const reach = window.flowscope.state.graph.reach;
    const cy = window.flowscope.cy;
    return {
      from: reach.from,
      to: reach.to,
      paths: reach.paths,
      nodes: reach.nodes,
      drawn_nodes: reach.drawn_nodes,
      drawn_edges: reach.drawn_edges,
      highlighted_edges: cy.edges('.reach').length,
      listed: document.querySelectorAll('#panel .reach-list.paths li').length,
    };
  });
  await page.screenshot({path: join(artefacts, 'graph-10000-path.png')});
}
