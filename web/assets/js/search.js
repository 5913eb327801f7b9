// Trace search: a form whose fields are `GET /api/traces/search`'s parameters and live in the
// URL (`#/search?service=…&attributes=…`), results listed as Jaeger lists them, a scatter of
// durations over time, and the SQL that ran with a link to continue in the console.
//
//   #/search?from=1h&to=now&service=checkout&operation=GET+%2Fcart&attributes=http.status_code%3E%3D500
//           &min_duration=100ms&max_duration=2s&status=error&order=recent&limit=20

import {getJson, sql} from './api.js';
import {colourFor, formatMs, h, replace} from './dom.js';

/** The form's fields, in the API's names and order. */
export const FIELDS = [
  'from',
  'to',
  'service',
  'operation',
  'attributes',
  'min_duration',
  'max_duration',
  'status',
  'order',
  'limit',
];

export class SearchView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.state = {params: {}, traces: [], sql: null, error: null, ready: false, runs: 0, limited: false};
    app.state.search = this.state;
    this.inputs = {
      from: h('input', {id: 'search-from', placeholder: '1h', title: 'from: 15m, 2h, RFC 3339 or Unix ms', size: 10}),
      to: h('input', {id: 'search-to', placeholder: 'now', size: 10}),
      service: h('input', {id: 'search-service', list: 'search-services', placeholder: 'any service', size: 16}),
      operation: h('input', {id: 'search-operation', list: 'search-operations', placeholder: 'any operation', size: 18}),
      attributes: h('input', {
        id: 'search-attributes',
        placeholder: 'http.status_code>=500 http.route~^/api "user.name"="Ann O\'Neil"',
        title: 'conditions one span must meet: key=value, key!=value, key~regex, key!~regex, key>5, key<=5, or key (present)',
        size: 48,
        spellcheck: 'false',
      }),
      min_duration: h('input', {id: 'search-min-duration', placeholder: 'min e.g. 100ms', size: 9}),
      max_duration: h('input', {id: 'search-max-duration', placeholder: 'max e.g. 2s', size: 9}),
      status: h(
        'select',
        {id: 'search-status'},
        h('option', {value: ''}, 'any status'),
        h('option', {value: 'error'}, 'error'),
        h('option', {value: 'ok'}, 'ok'),
        h('option', {value: 'unset'}, 'unset'),
      ),
      order: h(
        'select',
        {id: 'search-order'},
        h('option', {value: ''}, 'most recent'),
        h('option', {value: 'longest'}, 'longest first'),
        h('option', {value: 'shortest'}, 'shortest first'),
        h('option', {value: 'most_spans'}, 'most spans'),
      ),
      limit: h('input', {id: 'search-limit', type: 'number', min: 1, max: 1000, placeholder: '20', style: 'width: 5em'}),
    };
    this.services = h('datalist', {id: 'search-services'});
    this.operations = h('datalist', {id: 'search-operations'});
    this.inputs.service.addEventListener('change', () => this.loadOperations());
    const form = h(
      'form',
      {
        id: 'search-form',
        class: 'toolbar search-form',
        onsubmit: (event) => {
          event.preventDefault();
          this.submit();
        },
      },
      label('from', this.inputs.from),
      label('to', this.inputs.to),
      label('service', this.inputs.service),
      label('operation', this.inputs.operation),
      label('attributes', this.inputs.attributes),
      label('duration', this.inputs.min_duration, '–', this.inputs.max_duration),
      this.inputs.status,
      this.inputs.order,
      label('limit', this.inputs.limit),
      h('button', {type: 'submit', id: 'search-run', class: 'primary'}, 'Find traces'),
      this.services,
      this.operations,
    );
    this.status = h('div', {id: 'search-status-line', class: 'muted'});
    this.error = h('pre', {id: 'search-error', class: 'error hidden'});
    this.chart = h('div', {id: 'search-chart', class: 'chart search-chart'});
    this.list = h('div', {id: 'search-results', class: 'search-results'});
    this.sqlBox = h('div', {id: 'search-sql', class: 'search-sql hidden'});
    replace(root, form, this.status, this.error, this.chart, this.list, this.sqlBox);
    this.loadServices();
  }

  /** The form's values as URL parameters (empty ones left out). */
  formParams() {
    const params = {};
    for (const name of FIELDS) {
      const value = this.inputs[name].value.trim();
      if (value) params[name] = value;
    }
    return params;
  }

  submit() {
    // The URL is the search: a reload or the back button brings it back.
    this.app.navigate('search', this.formParams());
  }

  async loadServices() {
    try {
      const answer = await sql(
        "SELECT DISTINCT service_name FROM spans WHERE start_time > now() - INTERVAL '1 hour' ORDER BY service_name LIMIT 500",
      );
      replace(this.services, answer.rows.map(([name]) => h('option', {value: name})));
    } catch {
      // The list is a convenience; typing a name works without it.
    }
  }

  async loadOperations() {
    const service = this.inputs.service.value.trim();
    if (!service) {
      replace(this.operations);
      return;
    }
    try {
      const literal = "'" + service.replaceAll("'", "''") + "'";
      const answer = await sql(
        `SELECT DISTINCT name FROM spans WHERE start_time > now() - INTERVAL '1 hour' AND service_name = ${literal} ORDER BY name LIMIT 500`,
      );
      replace(this.operations, answer.rows.map(([name]) => h('option', {value: name})));
    } catch {
      // As above.
    }
  }

  async show(params) {
    for (const name of FIELDS) this.inputs[name].value = params[name] || '';
    this.loadOperations();
    const run = ++this.state.runs;
    Object.assign(this.state, {params: {...params}, ready: false, error: null});
    this.status.textContent = 'searching…';
    this.error.classList.add('hidden');
    let answer;
    try {
      answer = await getJson('/api/traces/search', params);
    } catch (error) {
      if (run !== this.state.runs) return;
      Object.assign(this.state, {error: error.message, traces: [], sql: null, ready: true});
      this.status.textContent = error.status ? `HTTP ${error.status}` : '';
      this.error.textContent = error.message;
      this.error.classList.remove('hidden');
      replace(this.list);
      replace(this.chart);
      this.sqlBox.classList.add('hidden');
      return;
    }
    if (run !== this.state.runs) return;
    Object.assign(this.state, {traces: answer.traces, sql: answer.sql, limited: answer.limited});
    const n = answer.traces.length;
    this.status.textContent =
      `${n} trace${n === 1 ? '' : 's'} from ${answer.from} to ${answer.to}` +
      (answer.limited ? ` (the limit, ${answer.limit}: there may be more)` : '');
    this.drawList(answer.traces);
    this.drawSql(answer.sql);
    await this.drawChart(answer.traces, run);
    if (run === this.state.runs) this.state.ready = true;
  }

  drawList(traces) {
    if (!traces.length) {
      replace(this.list, h('div', {class: 'muted'}, 'No trace matches this search. Widen the time range or drop a condition.'));
      return;
    }
    const longest = Math.max(...traces.map((t) => t.duration_ms), 1e-6);
    replace(
      this.list,
      traces.map((trace) =>
        h(
          'a',
          {class: `search-result${trace.errors ? ' failed' : ''}`, href: `#/trace/${trace.trace_id}`, dataset: {trace: trace.trace_id}},
          h(
            'div',
            {class: 'search-result-head'},
            h('span', {class: 'service', style: `color: ${colourFor(trace.root_service || '')}`}, trace.root_service ?? '?'),
            ': ',
            h('span', {class: 'operation'}, trace.root_operation ?? '?'),
            ' ',
            h('span', {class: 'mono muted'}, trace.trace_id.slice(0, 12)),
            h('span', {class: 'search-duration num'}, formatMs(trace.duration_ms)),
          ),
          h('div', {class: 'search-bar', style: `width: ${Math.max((trace.duration_ms / longest) * 100, 0.5)}%`}),
          h(
            'div',
            {class: 'search-result-meta'},
            h('span', {}, `${trace.spans} span${trace.spans === 1 ? '' : 's'}`),
            trace.errors ? h('span', {class: 'err'}, ` · ${trace.errors} error${trace.errors === 1 ? '' : 's'}`) : null,
            ' · ',
            trace.services.map((s) => h('span', {class: 'chip', style: `--c: ${colourFor(s)}`}, s)),
            h('span', {class: 'muted search-start'}, trace.start_time),
          ),
        ),
      ),
    );
  }

  drawSql(text) {
    replace(
      this.sqlBox,
      // The link stays visible while the SQL itself is folded away.
      h(
        'details',
        {},
        h('summary', {}, 'The SQL this search ran'),
        h('pre', {class: 'mono', id: 'search-sql-text'}, text),
      ),
      h('a', {id: 'search-sql-link', class: 'sql-link', href: `#/sql?q=${encodeURIComponent(text)}`}, 'continue in the SQL console'),
    );
    this.sqlBox.classList.remove('hidden');
  }

  /** Durations over time, one point per trace (errors in red); a click opens the trace. */
  async drawChart(traces, run) {
    replace(this.chart);
    if (!traces.length) return;
    const {default: uPlot} = await import('../vendor/uplot/uPlot.esm.js');
    if (run !== this.state.runs) return;
    const sorted = [...traces].sort((a, b) => a.start_ms - b.start_ms);
    const xs = sorted.map((t) => t.start_ms / 1000);
    const ok = sorted.map((t) => (t.errors ? null : t.duration_ms));
    const failed = sorted.map((t) => (t.errors ? t.duration_ms : null));
    const points = (stroke, fill) => ({
      stroke,
      fill,
      paths: () => null,
      points: {show: true, size: 7, stroke, fill},
    });
    const width = Math.max(this.chart.clientWidth || this.root.clientWidth - 24, 300);
    const plot = new uPlot(
      {
        width,
        height: 160,
        legend: {show: false},
        cursor: {drag: {x: false, y: false}, points: {show: false}},
        scales: {x: {time: true}, y: {range: (u, min, max) => [0, max * 1.1 || 1]}},
        axes: [
          {stroke: '#8b949e', grid: {stroke: '#21262d'}},
          {stroke: '#8b949e', grid: {stroke: '#21262d'}, values: (u, ticks) => ticks.map((v) => formatMs(v)), size: 60},
        ],
        series: [{}, {label: 'ok', ...points('#58a6ff', '#58a6ff')}, {label: 'errors', ...points('#e5484d', '#e5484d')}],
      },
      [xs, ok, failed],
      this.chart,
    );
    // The nearest point to a click opens its trace.
    plot.over.addEventListener('click', () => {
      const index = plot.cursor.idx;
      if (index !== null && index !== undefined && sorted[index]) location.hash = `#/trace/${sorted[index].trace_id}`;
    });
    this.state.chart = true;
  }
}

function label(text, ...inputs) {
  return h('label', {class: 'search-field'}, h('span', {class: 'muted'}, text), ...inputs);
}
