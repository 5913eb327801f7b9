// The "What's wrong" box beside the graph: `/api/incidents` for the graph's window (the last
// five minutes when the graph is live), ranked, each with its likely cause, impact and start.
// Open by default while an incident goes on; clicking one focuses its path on the graph.

import {getJson} from './api.js';
import {formatMs, formatPercent, formatRate, h, replace} from './dom.js';

/** How often a live graph asks again. */
const REFRESH_MS = 10000;

export class IncidentsBox {
  constructor(view) {
    this.view = view;
    this.state = {loaded: false, loads: 0, incidents: [], open: false, focused: null, error: null};
    view.state.incidents = this.state;
    this.count = h('span', {class: 'incident-count muted'}, '');
    this.list = h('ol', {id: 'incidents'});
    this.box = h(
      'details',
      {id: 'whats-wrong', class: 'incidents-box'},
      h('summary', {}, h('h3', {}, "What's wrong"), this.count),
      this.list,
    );
    this.box.addEventListener('toggle', () => {
      this.state.open = this.box.open;
    });
    this.timer = null;
  }

  element() {
    return this.box;
  }

  /** The window to ask about: the graph's own, or the last five minutes of a live one. */
  window() {
    const api = this.view.apiWindow();
    if (api.live) return {from: '5m', to: 'now'};
    return {from: api.from, to: api.to};
  }

  async refresh() {
    const load = ++this.state.loads;
    let answer;
    try {
      answer = await getJson('/api/incidents', this.window());
    } catch (error) {
      if (load !== this.state.loads) return;
      this.state.error = error.message;
      replace(this.list, h('li', {class: 'error'}, `cannot load incidents: ${error.message}`));
      this.state.loaded = true;
      return;
    }
    if (load !== this.state.loads) return;
    this.state.error = null;
    this.render(answer.incidents);
    this.state.loaded = true;
  }

  render(incidents) {
    const wasEmpty = this.state.incidents.length === 0;
    this.state.incidents = incidents.map((i) => ({
      id: i.id,
      rank: i.rank,
      level: i.level,
      cause: i.cause.name,
      ongoing: i.ongoing,
      path: i.path,
    }));
    const active = incidents.some((i) => i.ongoing);
    // Opens by itself when something goes wrong; a user who closed it keeps it closed
    // until the next incident starts.
    if (active && wasEmpty) this.box.open = true;
    this.state.open = this.box.open;
    replace(
      this.count,
      incidents.length ? `${incidents.length} incident${incidents.length > 1 ? 's' : ''}` : 'nothing',
    );
    this.count.classList.toggle('alarm', active);
    replace(
      this.list,
      incidents.length
        ? incidents.map((incident) => this.item(incident))
        : h('li', {class: 'muted'}, 'no incident in this window: every node and edge is within its baseline'),
    );
  }

  item(incident) {
    const cause = incident.cause;
    const before = incident.before;
    const after = incident.after;
    const figures = [];
    if (before && after) {
      if (after.error_rate > before.error_rate + 0.005) {
        figures.push(`errors ${formatPercent(before.error_rate)} → ${formatPercent(after.error_rate)}`);
      }
      if (after.p95_ms && before.p95_ms && after.p95_ms > before.p95_ms * 1.2) {
        figures.push(`p95 ${formatMs(before.p95_ms)} → ${formatMs(after.p95_ms)}`);
      }
    }
    const upstream = incident.impact.upstream_services;
    const started = new Date(incident.started_ms).toLocaleTimeString();
    const examples = (incident.example_traces || []).slice(0, 3);
    return h(
      'li',
      {
        class: `incident-item ${incident.level}${this.state.focused === incident.id ? ' selected' : ''}`,
        dataset: {incident: incident.id},
        onclick: () => this.select(incident),
      },
      h(
        'div',
        {class: 'incident-cause'},
        h('span', {class: `level ${incident.level}`}, incident.level),
        ' ',
        cause.name,
      ),
      h('div', {class: 'muted'}, cause.reasons[0] || ''),
      figures.length ? h('div', {}, figures.join(' · ')) : null,
      h(
        'div',
        {class: 'muted'},
        `${incident.ongoing ? 'since' : 'from'} ${started}`,
        incident.ongoing ? ' · ongoing' : ` to ${new Date(incident.ended).toLocaleTimeString()}`,
        ` · ${formatRate(incident.impact.calls_per_second)} through it`,
      ),
      upstream.length
        ? h('div', {class: 'muted'}, `upstream affected: ${upstream.slice(0, 6).join(', ')}${upstream.length > 6 ? ', …' : ''}`)
        : null,
      h('ul', {class: 'evidence'}, cause.evidence.map((line) => h('li', {}, line))),
      examples.length
        ? h(
            'div',
            {class: 'examples'},
            'traces: ',
            examples.map((t) =>
              h(
                'a',
                {href: `#/trace/${t.trace_id}`, class: `mono${t.error ? ' err' : ''}`, onclick: (e) => e.stopPropagation()},
                t.trace_id.slice(0, 8) + '…',
                ' ',
              ),
            ),
          )
        : null,
    );
  }

  /** Focuses the graph on the incident's path, down to its cause. */
  select(incident) {
    this.state.focused = incident.id;
    for (const item of this.list.querySelectorAll('.incident-item')) {
      item.classList.toggle('selected', item.dataset.incident === incident.id);
    }
    this.view.focusPath(incident.path, incident.cause);
  }

  start() {
    this.stop();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
