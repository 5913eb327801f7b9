// The trace view: every span of one trace as a waterfall, read with SQL from `spans`.
// Services are coloured, errors marked; a click shows a span's attributes, events and
// links, and a link opens the linked trace.

import {records, sql} from './api.js';
import {colourFor, formatMs, h, replace, sqlString} from './dom.js';

const TRACE_ID = /^[0-9a-f]{32}$/;

export class TraceView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.state = {traceId: null, spans: [], ready: false, error: null, selected: null};
    app.state.trace = this.state;
    this.input = h('input', {
      id: 'trace-id',
      type: 'search',
      placeholder: 'trace id (32 hex digits)',
      spellcheck: 'false',
      onkeydown: (event) => {
        if (event.key === 'Enter') this.open(this.input.value);
      },
    });
    this.summary = h('div', {class: 'trace-summary'});
    this.waterfall = h('div', {id: 'waterfall', class: 'waterfall'});
    this.details = h('div', {id: 'span-details', class: 'span-details'});
    replace(
      root,
      h(
        'div',
        {class: 'toolbar'},
        this.input,
        h('button', {onclick: () => this.open(this.input.value)}, 'open'),
        h('button', {onclick: () => this.latest()}, 'latest trace'),
      ),
      this.summary,
      h('div', {class: 'trace-body'}, this.waterfall, this.details),
    );
  }

  open(text) {
    const id = String(text || '').trim().toLowerCase();
    this.app.navigate('trace', {id});
  }

  async latest() {
    try {
      const result = records(
        await sql("SELECT trace_id FROM spans WHERE start_time > now() - INTERVAL '1 hour' ORDER BY start_time DESC LIMIT 1"),
      );
      if (result.length) this.open(result[0].trace_id);
      else replace(this.summary, h('div', {class: 'muted'}, 'no spans in the last hour'));
    } catch (error) {
      replace(this.summary, h('pre', {class: 'error'}, error.message));
    }
  }

  async show(params) {
    const id = (params.id || '').toLowerCase();
    this.input.value = id;
    if (!id) {
      this.state.ready = false;
      replace(this.summary, h('div', {class: 'muted'}, 'Open a trace by id, from a panel, or from a SQL result.'));
      replace(this.waterfall);
      replace(this.details);
      return;
    }
    if (!TRACE_ID.test(id)) {
      replace(this.summary, h('pre', {class: 'error'}, `"${id}" is not a trace id: 32 hexadecimal digits`));
      return;
    }
    if (id === this.state.traceId && this.state.ready) {
      if (params.span) this.select(params.span);
      return;
    }
    this.state.ready = false;
    this.state.traceId = id;
    replace(this.summary, h('div', {class: 'muted'}, 'loading…'));
    let spans;
    try {
      spans = records(
        await sql(`SELECT span_id, parent_span_id, service_name, name, kind, status_code, status_message,
  start_time, duration_ns,
  CAST(start_time AS BIGINT) - min(CAST(start_time AS BIGINT)) OVER () AS offset_ns,
  attributes, resource_attributes, events, links, scope_name
FROM spans WHERE trace_id = ${sqlString(id)} ORDER BY start_time`),
      );
    } catch (error) {
      this.state.error = error.message;
      replace(this.summary, h('pre', {class: 'error'}, error.message));
      return;
    }
    if (this.state.traceId !== id) return;
    this.state.spans = spans;
    this.render(id, spans);
    this.state.ready = true;
    if (params.span) this.select(params.span);
  }

  render(id, spans) {
    if (!spans.length) {
      replace(this.summary, h('div', {class: 'muted'}, `no spans of trace ${id} are stored (yet)`));
      replace(this.waterfall);
      replace(this.details);
      return;
    }
    const ordered = treeOrder(spans);
    const total = Math.max(...spans.map((s) => s.offset_ns + s.duration_ns), 1);
    const services = [...new Set(spans.map((s) => s.service_name))];
    const errors = spans.filter((s) => s.status_code === 'ERROR').length;
    replace(
      this.summary,
      h('span', {class: 'mono'}, id),
      ` · ${spans.length} spans · ${formatMs(total / 1e6)} · `,
      services.map((s) => h('span', {class: 'chip', style: `--c: ${colourFor(s)}`}, s)),
      errors ? h('span', {class: 'err'}, ` · ${errors} failed`) : null,
    );
    replace(
      this.waterfall,
      ordered.map(({span, depth}) => {
        const left = (span.offset_ns / total) * 100;
        const width = Math.max((span.duration_ns / total) * 100, 0.2);
        const failed = span.status_code === 'ERROR';
        return h(
          'div',
          {
            class: `span-row${failed ? ' failed' : ''}`,
            dataset: {span: span.span_id},
            onclick: () => this.select(span.span_id),
          },
          h(
            'div',
            {class: 'span-label', style: `padding-left: ${depth * 14}px`},
            failed ? h('span', {class: 'err', title: 'error'}, '⚠ ') : null,
            h('span', {class: 'service', style: `color: ${colourFor(span.service_name)}`}, span.service_name),
            ' ',
            h('span', {}, span.name),
          ),
          h(
            'div',
            {class: 'span-track'},
            h('div', {
              class: 'span-bar',
              style: `left: ${left}%; width: ${width}%; background: ${colourFor(span.service_name)}`,
            }),
            // The duration goes after the bar, or before it when the bar reaches the end.
            h(
              'span',
              {
                class: 'span-ms',
                style: left + width > 85 ? `right: calc(${100 - left}% + 4px)` : `left: calc(${left + width}% + 4px)`,
              },
              formatMs(span.duration_ns / 1e6),
            ),
          ),
        );
      }),
    );
    this.select(ordered[0].span.span_id);
  }

  select(spanId) {
    const span = this.state.spans.find((s) => s.span_id === spanId);
    if (!span) return;
    this.state.selected = spanId;
    for (const row of this.waterfall.querySelectorAll('.span-row')) {
      row.classList.toggle('selected', row.dataset.span === spanId);
    }
    const table = (object) =>
      h(
        'table',
        {class: 'kv'},
        Object.entries(object || {})
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v === null ? 'null' : String(v)))),
      );
    replace(
      this.details,
      h('h3', {}, span.name),
      h(
        'dl',
        {class: 'figures'},
        h('dt', {}, 'service'),
        h('dd', {}, span.service_name),
        h('dt', {}, 'kind'),
        h('dd', {}, span.kind),
        h('dt', {}, 'status'),
        h('dd', {class: span.status_code === 'ERROR' ? 'err' : ''}, span.status_code, span.status_message ? `: ${span.status_message}` : ''),
        h('dt', {}, 'duration'),
        h('dd', {}, formatMs(span.duration_ns / 1e6)),
        h('dt', {}, 'start'),
        h('dd', {}, span.start_time),
        h('dt', {}, 'span id'),
        h('dd', {class: 'mono'}, span.span_id),
        h('dt', {}, 'parent'),
        h('dd', {class: 'mono'}, span.parent_span_id || '–'),
        h('dt', {}, 'scope'),
        h('dd', {}, span.scope_name || '–'),
      ),
      h('h4', {}, 'Attributes'),
      table(span.attributes),
      h('h4', {}, `Events (${(span.events || []).length})`),
      (span.events || []).map((event) =>
        h('div', {class: 'event'}, h('div', {}, h('b', {}, event.name), ' ', h('span', {class: 'muted'}, event.time)), table(event.attributes)),
      ),
      h('h4', {}, `Links (${(span.links || []).length})`),
      (span.links || []).map((link) =>
        h(
          'div',
          {class: 'link'},
          h('a', {href: `#/trace/${link.trace_id}?span=${link.span_id}`, class: 'mono trace-link'}, `${link.trace_id} / ${link.span_id}`),
          table(link.attributes),
        ),
      ),
      h('h4', {}, 'Resource'),
      table(span.resource_attributes),
    );
  }
}

/** Spans depth-first from the roots, children by start time; orphans count as roots. */
function treeOrder(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && ids.has(span.parent_span_id) && span.parent_span_id !== span.span_id) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const out = [];
  const seen = new Set();
  const stack = roots.reverse().map((span) => ({span, depth: 0}));
  while (stack.length) {
    const item = stack.pop();
    if (seen.has(item.span.span_id)) continue;
    seen.add(item.span.span_id);
    out.push(item);
    const kids = children.get(item.span.span_id) || [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push({span: kids[i], depth: item.depth + 1});
  }
  return out;
}
