// The trace view: every span of one trace as a waterfall, read with SQL from `spans`, under a
// time ruler; subtrees fold and unfold; the critical path is highlighted; span events are
// markers on their bars; and traces joined by span links (a consumer linking to its producer
// in another trace, both ways) are drawn in the same timeline, each under a separator, as one
// flow across the queue. A click shows a span's attributes (as written, new lines kept),
// events and links.

import {records, sql} from './api.js';
import {criticalPath} from './critical.js';
import {colourFor, formatMs, h, replace, sqlString} from './dom.js';

const TRACE_ID = /^[0-9a-f]{32}$/;
/** Traces drawn together at most: the opened one and those linked to it. */
const MAX_TRACES = 10;
/** Link hops followed from the opened trace, each way. */
const MAX_HOPS = 3;
/** How far from a trace its linked traces are looked for (a queue may hold a message a while). */
const LINK_WINDOW_US = 3600e6;

const SPAN_COLUMNS = `trace_id, span_id, parent_span_id, service_name, name, kind, status_code, status_message,
  start_time, duration_ns, CAST(start_time AS BIGINT) / 1000 AS start_us, CAST(end_time AS BIGINT) / 1000 AS end_us,
  attributes, resource_attributes, events, links, scope_name`;

export class TraceView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.state = {
      traceId: null,
      spans: [],
      ready: false,
      error: null,
      selected: null,
      collapsed: [],
      criticalPath: [],
      criticalPaths: {},
      traces: [],
      linked: [],
    };
    app.state.trace = this.state;
    this.collapsed = new Set();
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
    this.ruler = h('div', {id: 'trace-ruler', class: 'trace-ruler'});
    this.rows = h('div', {id: 'trace-rows'});
    this.waterfall = h('div', {id: 'waterfall', class: 'waterfall'}, this.ruler, this.rows);
    this.details = h('div', {id: 'span-details', class: 'span-details'});
    replace(
      root,
      h(
        'div',
        {class: 'toolbar'},
        this.input,
        h('button', {onclick: () => this.open(this.input.value)}, 'open'),
        h('button', {onclick: () => this.latest()}, 'latest trace'),
        h('a', {href: '#/search', class: 'button-link'}, 'search traces'),
        h('label', {class: 'muted', title: 'highlight the chain of spans that decided when the trace ended'},
          h('input', {type: 'checkbox', id: 'show-critical', checked: true, onchange: (e) => this.waterfall.classList.toggle('no-critical', !e.target.checked)}),
          ' critical path'),
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
      replace(this.summary, h('div', {class: 'muted'}, 'Open a trace by id, from a search, a panel, or a SQL result.'));
      replace(this.ruler);
      replace(this.rows);
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
    this.collapsed = new Set();
    replace(this.summary, h('div', {class: 'muted'}, 'loading…'));
    let loaded;
    try {
      loaded = await this.load(id);
    } catch (error) {
      if (this.state.traceId !== id) return;
      this.state.error = error.message;
      replace(this.summary, h('pre', {class: 'error'}, error.message));
      return;
    }
    if (this.state.traceId !== id) return;
    this.state.error = null;
    this.state.spans = loaded.byTrace.get(id) || [];
    this.loaded = loaded;
    this.render(id);
    this.state.ready = true;
    if (params.span) this.select(params.span);
  }

  /** The trace's spans, then the traces linked to it (both ways, a few hops) and theirs. */
  async load(id) {
    const byTrace = new Map();
    const add = (rows) => {
      for (const span of rows) {
        if (!byTrace.has(span.trace_id)) byTrace.set(span.trace_id, []);
        byTrace.get(span.trace_id).push(span);
      }
    };
    add(records(await sql(`SELECT ${SPAN_COLUMNS} FROM spans WHERE trace_id = ${sqlString(id)} ORDER BY start_time`)));
    const roles = new Map([[id, 'opened']]);
    if (!byTrace.has(id)) return {byTrace, roles};
    let frontier = [id];
    for (let hop = 0; hop < MAX_HOPS && frontier.length && roles.size < MAX_TRACES; hop++) {
      const found = new Map();
      const spans = frontier.flatMap((t) => byTrace.get(t) || []);
      // Outgoing: this trace's spans link to a span of another trace (a consumer to its producer).
      for (const span of spans) {
        for (const link of span.links || []) {
          if (TRACE_ID.test(link.trace_id) && !roles.has(link.trace_id)) found.set(link.trace_id, 'links to');
        }
      }
      // Incoming: spans of other traces link to this one (its messages' consumers).
      const from = Math.min(...spans.map((s) => s.start_us)) - LINK_WINDOW_US;
      const to = Math.max(...spans.map((s) => s.end_us)) + LINK_WINDOW_US;
      const incoming = records(
        await sql(`SELECT DISTINCT trace_id FROM (
  SELECT trace_id, unnest(links) AS link FROM spans
  WHERE start_time >= to_timestamp_micros(${Math.floor(from)}) AND start_time < to_timestamp_micros(${Math.ceil(to)})
    AND cardinality(links) > 0
) WHERE link['trace_id'] IN (${frontier.map(sqlString).join(', ')})
ORDER BY trace_id LIMIT ${MAX_TRACES}`),
      );
      for (const {trace_id: other} of incoming) {
        if (!roles.has(other) && !found.has(other)) found.set(other, 'linked from');
      }
      const next = [...found.keys()].slice(0, MAX_TRACES - roles.size);
      if (!next.length) break;
      for (const other of next) roles.set(other, found.get(other));
      add(records(await sql(`SELECT ${SPAN_COLUMNS} FROM spans WHERE trace_id IN (${next.map(sqlString).join(', ')}) ORDER BY start_time`)));
      frontier = next;
    }
    return {byTrace, roles};
  }

  render(id) {
    const {byTrace, roles} = this.loaded;
    const spans = byTrace.get(id) || [];
    if (!spans.length) {
      replace(this.summary, h('div', {class: 'muted'}, `no spans of trace ${id} are stored (yet)`));
      replace(this.ruler);
      replace(this.rows);
      replace(this.details);
      this.state.traces = [];
      this.state.linked = [];
      this.state.criticalPath = [];
      return;
    }
    // Traces in the order their flow ran: earliest first.
    const traceIds = [...byTrace.keys()].filter((t) => roles.has(t));
    const startOf = (t) => Math.min(...byTrace.get(t).map((s) => s.start_us));
    traceIds.sort((a, b) => startOf(a) - startOf(b));
    const all = traceIds.flatMap((t) => byTrace.get(t));
    const t0 = Math.min(...all.map((s) => s.start_us));
    const total = Math.max(Math.max(...all.map((s) => s.end_us)) - t0, 1);
    this.geometry = {t0, total};
    // Critical paths, per trace.
    const paths = {};
    this.critical = new Map();
    for (const t of traceIds) {
      const {sections, spanIds} = criticalPath(
        byTrace.get(t).map((s) => ({span_id: s.span_id, parent_span_id: s.parent_span_id, start: s.start_us, end: s.end_us})),
      );
      paths[t] = spanIds;
      for (const section of sections) {
        if (!this.critical.has(section.span_id)) this.critical.set(section.span_id, []);
        this.critical.get(section.span_id).push(section);
      }
    }
    // Links between shown spans, both ways, to mark and follow them.
    const shown = new Map(all.map((s) => [s.span_id, s]));
    this.linkedTo = new Map();
    this.linkedFrom = new Map();
    for (const span of all) {
      for (const link of span.links || []) {
        if (!shown.has(link.span_id)) continue;
        push(this.linkedTo, span.span_id, link.span_id);
        push(this.linkedFrom, link.span_id, span.span_id);
      }
    }
    this.allSpans = shown;
    this.traceIds = traceIds;
    Object.assign(this.state, {
      criticalPaths: paths,
      criticalPath: paths[id] || [],
      traces: traceIds.map((t) => ({trace_id: t, role: roles.get(t), spans: byTrace.get(t).length})),
      linked: traceIds.filter((t) => t !== id),
    });

    const services = [...new Set(spans.map((s) => s.service_name))];
    const errors = spans.filter((s) => s.status_code === 'ERROR').length;
    const ownTotal = Math.max(...spans.map((s) => s.end_us)) - Math.min(...spans.map((s) => s.start_us));
    replace(
      this.summary,
      h('span', {class: 'mono'}, id),
      ` · ${spans.length} spans · ${formatMs(ownTotal / 1e3)} · `,
      services.map((s) => h('span', {class: 'chip', style: `--c: ${colourFor(s)}`}, s)),
      errors ? h('span', {class: 'err'}, ` · ${errors} failed`) : null,
      traceIds.length > 1
        ? h('span', {class: 'muted', id: 'linked-summary'}, ` · drawn with ${traceIds.length - 1} linked trace${traceIds.length > 2 ? 's' : ''} (span links)`)
        : null,
    );
    this.drawRuler();
    this.drawRows();
    this.select(spans.find((s) => !s.parent_span_id)?.span_id || treeOrder(spans)[0].span.span_id);
  }

  /** Ticks at a round step (1, 2 or 5 × 10ⁿ) across the whole timeline. */
  drawRuler() {
    const {total} = this.geometry;
    const target = total / 8;
    const power = 10 ** Math.floor(Math.log10(target));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= target) || power * 10;
    const ticks = [];
    for (let at = 0; at <= total + 1e-9; at += step) ticks.push(at);
    this.state.ruler = ticks.map((t) => formatMs(t / 1e3));
    replace(
      this.ruler,
      h('div', {class: 'span-label muted'}, `${formatMs(total / 1e3)} in all`),
      h(
        'div',
        {class: 'ruler-track'},
        ticks.map((at) =>
          h('span', {class: 'tick', style: `left: ${(at / total) * 100}%`}, h('span', {class: 'tick-label'}, formatMs(at / 1e3))),
        ),
      ),
    );
  }

  drawRows() {
    const {byTrace, roles} = this.loaded;
    const rows = [];
    for (const t of this.traceIds) {
      const spans = byTrace.get(t);
      if (this.traceIds.length > 1) {
        const role = roles.get(t);
        rows.push(
          h(
            'div',
            {class: `trace-separator${t === this.state.traceId ? ' opened' : ''}`, dataset: {trace: t}},
            t === this.state.traceId ? 'this trace ' : h('a', {href: `#/trace/${t}`, class: 'mono'}, 'trace '),
            h('span', {class: 'mono'}, t),
            ` · ${spans.length} spans`,
            role === 'opened' ? '' : h('span', {class: 'muted'}, role === 'links to' ? ' · its spans are linked to from the flow' : ' · linked from the flow'),
          ),
        );
      }
      const ordered = treeOrder(spans);
      const hidden = new Set();
      for (const {span, depth, hasChildren} of ordered) {
        if (span.parent_span_id && (hidden.has(span.parent_span_id) || this.collapsed.has(span.parent_span_id))) {
          hidden.add(span.span_id);
          continue;
        }
        rows.push(this.row(span, depth, hasChildren));
      }
    }
    replace(this.rows, rows);
    this.state.collapsed = [...this.collapsed];
    this.state.rows = rows.filter((r) => r.classList.contains('span-row')).length;
    if (this.state.selected) this.markSelected(this.state.selected);
  }

  row(span, depth, hasChildren) {
    const {t0, total} = this.geometry;
    const offset = span.start_us - t0;
    const left = (offset / total) * 100;
    const width = Math.max(((span.end_us - span.start_us) / total) * 100, 0.2);
    const failed = span.status_code === 'ERROR';
    const onPath = this.critical.has(span.span_id) || this.state.criticalPaths[span.trace_id]?.includes(span.span_id);
    const folded = this.collapsed.has(span.span_id);
    const toggle = hasChildren
      ? h(
          'button',
          {
            class: 'fold',
            title: folded ? 'show the spans under this one' : 'hide the spans under this one',
            dataset: {fold: span.span_id},
            onclick: (event) => {
              event.stopPropagation();
              if (this.collapsed.has(span.span_id)) this.collapsed.delete(span.span_id);
              else this.collapsed.add(span.span_id);
              this.drawRows();
            },
          },
          folded ? '▸' : '▾',
        )
      : h('span', {class: 'fold-space'});
    const links = [
      ...(this.linkedTo.get(span.span_id) || []).map((other) => ['→', other, 'links to']),
      ...(this.linkedFrom.get(span.span_id) || []).map((other) => ['←', other, 'linked from']),
    ];
    const eventMarkers = (span.events || []).map((event) => {
      const at = timeUs(event.time);
      if (at === null) return null;
      const x = ((at - t0) / total) * 100;
      return h('span', {
        class: `event-marker${/exception/i.test(event.name) ? ' exception' : ''}`,
        style: `left: ${x}%`,
        title: `${event.name} at +${formatMs((at - span.start_us) / 1e3)}`,
        dataset: {event: event.name},
      });
    });
    const criticalSections = (this.critical.get(span.span_id) || []).map((section) =>
      h('div', {
        class: 'critical-section',
        style: `left: ${((section.start - t0) / total) * 100}%; width: ${Math.max(((section.end - section.start) / total) * 100, 0.1)}%`,
      }),
    );
    return h(
      'div',
      {
        class: `span-row${failed ? ' failed' : ''}${onPath ? ' critical' : ''}${folded ? ' folded' : ''}`,
        dataset: {span: span.span_id, trace: span.trace_id},
        onclick: () => this.select(span.span_id),
      },
      h(
        'div',
        {class: 'span-label', style: `padding-left: ${depth * 14}px`},
        toggle,
        failed ? h('span', {class: 'err', title: 'error'}, '⚠ ') : null,
        h('span', {class: 'service', style: `color: ${colourFor(span.service_name)}`}, span.service_name),
        ' ',
        h('span', {}, span.name),
        links.map(([arrow, other, how]) =>
          h(
            'button',
            {
              class: 'link-badge',
              title: `${how} ${this.allSpans.get(other)?.service_name}: ${this.allSpans.get(other)?.name} (trace ${this.allSpans.get(other)?.trace_id})`,
              dataset: {linkTo: other},
              onclick: (event) => {
                event.stopPropagation();
                this.select(other);
                this.rows.querySelector(`[data-span="${other}"]`)?.scrollIntoView({block: 'nearest'});
              },
            },
            arrow,
          ),
        ),
      ),
      h(
        'div',
        {class: 'span-track'},
        h('div', {
          class: 'span-bar',
          style: `left: ${left}%; width: ${width}%; background: ${colourFor(span.service_name)}`,
        }),
        criticalSections,
        eventMarkers,
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
  }

  markSelected(spanId) {
    for (const row of this.rows.querySelectorAll('.span-row')) {
      row.classList.toggle('selected', row.dataset.span === spanId);
    }
  }

  select(spanId) {
    const span = this.allSpans?.get(spanId);
    if (!span) return;
    this.state.selected = spanId;
    this.markSelected(spanId);
    // Values as written: multi-line ones (stack traces) keep their lines (`pre-wrap`).
    const table = (object) =>
      h(
        'table',
        {class: 'kv'},
        Object.entries(object || {})
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {class: 'value'}, v === null ? 'null' : String(v)))),
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
        h('dd', {class: `value${span.status_code === 'ERROR' ? ' err' : ''}`}, span.status_code, span.status_message ? `: ${span.status_message}` : ''),
        h('dt', {}, 'duration'),
        h('dd', {}, formatMs(span.duration_ns / 1e6)),
        h('dt', {}, 'start'),
        h('dd', {}, span.start_time),
        h('dt', {}, 'trace'),
        h('dd', {class: 'mono'}, span.trace_id),
        h('dt', {}, 'span id'),
        h('dd', {class: 'mono'}, span.span_id),
        h('dt', {}, 'parent'),
        h('dd', {class: 'mono'}, span.parent_span_id || '–'),
        h('dt', {}, 'scope'),
        h('dd', {}, span.scope_name || '–'),
        h('dt', {}, 'critical path'),
        h('dd', {}, this.critical.has(span.span_id)
          ? formatMs(this.critical.get(span.span_id).reduce((sum, s) => sum + s.end - s.start, 0) / 1e3) + ' of its own time'
          : 'no'),
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

function push(map, key, value) {
  if (!map.has(key)) map.set(key, []);
  map.get(key).push(value);
}

/** Microseconds since the epoch of an RFC 3339 time with up to nanosecond digits; null if not one. */
export function timeUs(text) {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$/.exec(String(text || ''));
  if (!match) return null;
  const seconds = Date.parse(`${match[1]}${match[3] || 'Z'}`);
  if (Number.isNaN(seconds)) return null;
  const fraction = Number(((match[2] || '') + '000000').slice(0, 6));
  return seconds * 1000 + fraction;
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
    const kids = children.get(item.span.span_id) || [];
    out.push({...item, hasChildren: kids.length > 0});
    for (let i = kids.length - 1; i >= 0; i--) stack.push({span: kids[i], depth: item.depth + 1});
  }
  return out;
}
