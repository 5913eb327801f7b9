// The SQL console: README's example queries one click away, Ctrl+Enter to run, results as a
// table (and a chart when there is a time column), the server's errors as it wrote them, and
// the query in the URL so that it can be shared.

import {sql} from './api.js';
import {timeSeries} from './chart.js';
import {h, replace} from './dom.js';

const NUMERIC = /^(U?Int\d+|Float\d+|Decimal)/;
const TIME = /^(Timestamp|Date)/;
const ID_COLUMNS = /(^|_)(trace_id|span_id|parent_span_id)$/;
/** Rows drawn into the table; the rest are counted, not drawn. */
const MAX_TABLE_ROWS = 2000;

/** `-- title` then the query, blocks separated by blank lines (web/assets/examples.sql). */
export function parseExamples(text) {
  return text
    .split(/\n\s*\n/)
    .map((block) => block.trim())
    .filter(Boolean)
    .map((block) => {
      const first = block.split('\n')[0];
      return {title: first.startsWith('--') ? first.replace(/^--\s*/, '') : first, sql: block};
    });
}

export class SqlView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.state = {running: false, columns: [], rows: [], error: null, runs: 0, truncated: false, chart: false};
    app.state.sql = this.state;
    this.editor = h('textarea', {
      id: 'sql-editor',
      spellcheck: 'false',
      rows: 10,
      placeholder: 'SELECT service_name, count(*) FROM spans GROUP BY service_name',
      onkeydown: (event) => {
        if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          this.run();
        }
      },
    });
    this.examples = h('div', {class: 'examples-bar', id: 'sql-examples'});
    this.status = h('span', {class: 'muted', id: 'sql-status'});
    this.error = h('pre', {class: 'error hidden', id: 'sql-error'});
    this.chart = h('div', {class: 'chart hidden', id: 'sql-chart'});
    this.table = h('div', {class: 'table-wrap', id: 'sql-result'});
    replace(
      root,
      this.examples,
      this.editor,
      h(
        'div',
        {class: 'toolbar'},
        h('button', {id: 'sql-run', class: 'primary', onclick: () => this.run()}, 'Run (Ctrl+Enter)'),
        this.status,
      ),
      this.error,
      this.chart,
      this.table,
    );
    this.loadExamples();
  }

  async loadExamples() {
    try {
      const response = await fetch('/assets/examples.sql');
      const examples = parseExamples(await response.text());
      replace(
        this.examples,
        examples.map((example) =>
          h(
            'button',
            {
              class: 'example',
              title: example.sql,
              onclick: () => {
                this.editor.value = example.sql;
                this.run();
              },
            },
            example.title,
          ),
        ),
      );
    } catch {
      // The console works without its examples.
    }
  }

  show(params) {
    const query = params.q || '';
    if (query && query !== this.editor.value) {
      this.editor.value = query;
      this.run({keepUrl: true});
    }
    this.editor.focus();
  }

  async run({keepUrl = false} = {}) {
    const text = this.editor.value.trim();
    if (!text) return;
    if (!keepUrl) this.app.replaceParams('sql', {q: text});
    const run = ++this.state.runs;
    this.state.running = true;
    this.state.error = null;
    this.status.textContent = 'running…';
    const started = performance.now();
    let result;
    try {
      result = await sql(text);
    } catch (error) {
      if (run !== this.state.runs) return;
      this.state.running = false;
      this.state.error = error.message;
      this.status.textContent = error.status ? `HTTP ${error.status}` : '';
      this.error.textContent = error.message;
      this.error.classList.remove('hidden');
      replace(this.table);
      this.chart.classList.add('hidden');
      return;
    }
    if (run !== this.state.runs) return;
    const ms = performance.now() - started;
    this.error.classList.add('hidden');
    Object.assign(this.state, {
      running: false,
      columns: result.columns,
      rows: result.rows,
      truncated: result.truncated,
    });
    this.status.textContent =
      `${result.rows.length.toLocaleString('en-US')} row${result.rows.length === 1 ? '' : 's'}` +
      `${result.truncated ? ' (truncated by the server)' : ''} in ${ms.toFixed(0)} ms`;
    this.drawChart(result);
    this.drawTable(result);
  }

  drawTable(result) {
    const numeric = result.columns.map((c) => NUMERIC.test(c.type));
    const ids = result.columns.map((c) => ID_COLUMNS.test(c.name));
    const traceColumn = result.columns.map((c) => /(^|_)trace_id$/.test(c.name));
    const body = h('tbody');
    const fragment = document.createDocumentFragment();
    for (const row of result.rows.slice(0, MAX_TABLE_ROWS)) {
      fragment.appendChild(
        h(
          'tr',
          {},
          row.map((value, i) => {
            const text = cellText(value);
            const cls = [numeric[i] ? 'num' : '', ids[i] ? 'mono' : '', value === null ? 'null' : ''].join(' ').trim();
            const content =
              traceColumn[i] && typeof value === 'string' && /^[0-9a-f]{32}$/.test(value)
                ? h('a', {href: `#/trace/${value}`}, text)
                : text;
            return h('td', {class: cls || undefined}, content);
          }),
        ),
      );
    }
    body.appendChild(fragment);
    replace(
      this.table,
      h(
        'table',
        {class: 'results'},
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            result.columns.map((c, i) => h('th', {title: c.type, class: numeric[i] ? 'num' : undefined}, c.name)),
          ),
        ),
        body,
      ),
      result.rows.length > MAX_TABLE_ROWS
        ? h('div', {class: 'muted'}, `showing the first ${MAX_TABLE_ROWS} of ${result.rows.length} rows`)
        : null,
    );
  }

  drawChart(result) {
    const timeIndex = result.columns.findIndex((c) => TIME.test(c.type));
    const numericIndexes = result.columns
      .map((c, i) => (NUMERIC.test(c.type) && !ID_COLUMNS.test(c.name) ? i : -1))
      .filter((i) => i >= 0);
    this.state.chart = false;
    this.chart.replaceChildren();
    if (timeIndex < 0 || !numericIndexes.length || result.rows.length < 2) {
      this.chart.classList.add('hidden');
      return;
    }
    const points = result.rows
      .map((row) => [Date.parse(row[timeIndex]) / 1000, row])
      .filter(([t]) => Number.isFinite(t))
      .sort((a, b) => a[0] - b[0]);
    const xs = points.map(([t]) => t);
    const series = numericIndexes.map((i) => ({
      name: result.columns[i].name,
      values: points.map(([, row]) => (row[i] === null ? null : Number(row[i]))),
    }));
    this.chart.classList.remove('hidden');
    const run = this.state.runs;
    requestAnimationFrame(async () => {
      await timeSeries(this.chart, xs, series);
      if (run === this.state.runs) this.state.chart = true;
    });
  }
}

function cellText(value) {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}
