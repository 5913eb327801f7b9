// The dashboard's entry point: a hash router over five views (graph, SQL, search, trace,
// alerts) and the page state that the browser tests read (`window.flowscope`).
//
//   #/graph?from=15m&to=now&compare=previous&focus=orders
//   #/sql?q=SELECT+...
//   #/search?from=1h&service=checkout&attributes=http.status_code%3E%3D500&min_duration=100ms
//   #/trace/<trace id>?span=<span id>
//   #/alerts, #/alerts/rule/<rule id>   (the link in alert notifications, `generatorURL`)

import {AlertsView} from './alerts.js';
import {getJson, login, logout, onUnauthorized} from './api.js';
import {GraphView} from './graph.js';
import {h, replace} from './dom.js';
import {SearchView} from './search.js';
import {SqlView} from './sql.js';
import {TraceView} from './trace.js';

const VIEWS = ['graph', 'sql', 'search', 'trace', 'alerts'];

class App {
  constructor() {
    this.state = {view: null, info: null, started: performance.now()};
    this.info = null;
    this.cy = null;
    this.sections = Object.fromEntries(VIEWS.map((v) => [v, document.getElementById(`view-${v}`)]));
    this.views = {};
    window.addEventListener('hashchange', () => this.route());
  }

  async start() {
    onUnauthorized(() => this.showLogin());
    // Who this is: a server with tokens asks for one before showing anything.
    let whoami;
    try {
      whoami = await getJson('/api/whoami');
    } catch {
      return; // 401 showed the login form; other errors leave the views to report.
    }
    this.state.whoami = whoami;
    if (whoami && !whoami.open) this.renderUser(whoami);
    // Asked for alongside the first view's data, not before it.
    this.infoReady = getJson('/api/info').then(
      (info) => {
        this.info = info;
        this.state.info = info;
      },
      () => {
        this.info = null;
      },
    );
    this.views.graph = new GraphView(this.sections.graph, this);
    this.views.sql = new SqlView(this.sections.sql, this);
    this.views.search = new SearchView(this.sections.search, this);
    this.views.trace = new TraceView(this.sections.trace, this);
    this.views.alerts = new AlertsView(this.sections.alerts, this);
    await this.route();
  }

  parseHash() {
    const hash = location.hash.replace(/^#\/?/, '');
    const [path, query = ''] = hash.split('?');
    const parts = path.split('/').filter(Boolean);
    const view = VIEWS.includes(parts[0]) ? parts[0] : 'graph';
    const params = Object.fromEntries(new URLSearchParams(query));
    if (view === 'trace' && parts[1]) params.id = decodeURIComponent(parts[1]);
    if (view === 'alerts' && parts[1] === 'rule' && parts[2]) params.rule = decodeURIComponent(parts[2]);
    return {view, params};
  }

  hashFor(view, params) {
    const rest = {...params};
    let path = `#/${view}`;
    if (view === 'trace' && rest.id) {
      path += `/${encodeURIComponent(rest.id)}`;
      delete rest.id;
    }
    if (view === 'alerts' && rest.rule !== undefined && rest.rule !== null) {
      path += `/rule/${encodeURIComponent(rest.rule)}`;
      delete rest.rule;
    }
    const query = new URLSearchParams(
      Object.entries(rest).filter(([, v]) => v !== undefined && v !== null && v !== ''),
    ).toString();
    return query ? `${path}?${query}` : path;
  }

  navigate(view, params = {}) {
    const hash = this.hashFor(view, params);
    if (location.hash === hash) this.route();
    else location.hash = hash;
  }

  /** Changes the URL without a new history entry or a re-route (the SQL text as typed). */
  replaceParams(view, params) {
    history.replaceState(null, '', this.hashFor(view, params));
  }

  async route() {
    const {view, params} = this.parseHash();
    // A hash changed before start() has made the views (its /api/whoami still under way,
    // on a slow server): start() routes to the hash as it is then.
    if (!this.views[view]) return;
    if (this.state.view && this.state.view !== view) this.views[this.state.view].hide?.();
    this.state.view = view;
    for (const [name, section] of Object.entries(this.sections)) {
      section.classList.toggle('hidden', name !== view);
    }
    for (const link of document.querySelectorAll('nav a')) {
      link.classList.toggle('active', link.dataset.view === view);
    }
    await this.views[view].show(params);
    if (view === 'graph' && this.cy) this.cy.resize();
  }

  /** The login form, in place of every view: this server checks tokens. */
  showLogin() {
    if (document.getElementById('login')) return;
    for (const section of Object.values(this.sections)) section.classList.add('hidden');
    const error = h('p', {class: 'error', id: 'login-error'});
    const input = h('input', {
      type: 'password',
      id: 'login-token',
      autocomplete: 'current-password',
      placeholder: 'token',
      required: true,
    });
    const form = h(
      'form',
      {
        id: 'login',
        class: 'login',
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await login(input.value);
            location.reload();
          } catch (failure) {
            replace(error, failure.message);
          }
        },
      },
      h('h2', {}, 'Log in'),
      h('p', {class: 'muted'}, 'This flowscope checks tokens. Paste a read or admin token; it is kept in a cookie this page cannot read.'),
      input,
      h('button', {type: 'submit'}, 'Log in'),
      error,
    );
    document.querySelector('main').prepend(form);
    this.state.login = true;
    input.focus();
  }

  renderUser(whoami) {
    const out = h('button', {type: 'button', id: 'logout', onclick: async () => {
      await logout();
      location.reload();
    }}, 'Log out');
    document.querySelector('header').append(
      h('span', {class: 'user muted', id: 'user'}, `${whoami.tenant} · ${whoami.role}`, ' ', out),
    );
  }

  /** Where to send traces, with an unspecified listen address shown as this page's host. */
  endpoints() {
    const host = (addr) => {
      if (!addr) return null;
      const match = /^(.*):(\d+)$/.exec(addr);
      if (!match) return addr;
      const ip = match[1];
      const shown = ip === '0.0.0.0' || ip === '[::]' ? location.hostname : ip;
      return `${shown}:${match[2]}`;
    };
    const info = this.info || {};
    return {
      grpc: host(info.otlp_grpc_addr),
      http: host(info.otlp_http_addr),
      path: info.otlp_http_path || '/v1/traces',
    };
  }

  renderEmpty(container, live) {
    const {grpc, http, path} = this.endpoints();
    replace(
      container,
      h('h2', {}, live ? 'No traces yet' : 'No traffic in this window'),
      h('p', {}, 'Point your OTLP exporter at this server:'),
      h(
        'table',
        {class: 'endpoints'},
        h('tr', {}, h('th', {}, 'OTLP/gRPC'), h('td', {class: 'mono', id: 'endpoint-grpc'}, grpc ? `http://${grpc}` : 'unknown')),
        h('tr', {}, h('th', {}, 'OTLP/HTTP'), h('td', {class: 'mono', id: 'endpoint-http'}, http ? `http://${http}${path}` : 'unknown')),
      ),
      h('p', {}, 'With any OpenTelemetry SDK, through the standard environment variables:'),
      h(
        'pre',
        {class: 'mono'},
        `export OTEL_EXPORTER_OTLP_ENDPOINT=http://${grpc || 'localhost:4317'}\n` +
          `# or: OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT=http://${http || 'localhost:4318'}`,
      ),
      h('p', {class: 'muted'}, 'The graph appears here as soon as spans arrive; this page updates itself.'),
    );
  }
}

const app = new App();
window.flowscope = app;
app.start();
