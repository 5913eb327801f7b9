// The alerts page: alert rules (list, form, and a preview of the rows the SQL returns now),
// the current alerts and their history, silences, and webhooks with their deliveries. It
// refreshes itself every few seconds while it is shown, and stops when it is left.
//
//   #/alerts
//   #/alerts/rule/<id>   the rule shown and highlighted: notifications' generatorURL links here
//
// Writes need the admin role; a reader sees the lists and a note in place of each form.

import {ApiError, getJson, sendJson, sql} from './api.js';
import {h, parseAgo, replace} from './dom.js';

const REFRESH_MS = 3000;
const HISTORY = 50;
const DELIVERIES = 10;
const NEEDS_ADMIN = 'needs the admin role';
const DEFAULT_SILENCE = '2h';

/** The rule fields that are durations, with the server's defaults (shown as placeholders). */
const DURATIONS = [
  ['interval', '1m', 'how often the SQL runs (at least 1s)'],
  ['for', '0s', 'how long a row must keep coming back before it fires'],
  ['group_wait', '30s', 'how long a new group waits for more alerts before its first notification'],
  ['group_interval', '5m', 'how long a group waits after a notification before it notifies of changes'],
  ['repeat_interval', '4h', 'how long before a notification that changes nothing is sent again'],
  ['keep_firing_for', '0s', 'how long an alert stays firing after its row stopped coming back'],
];

/** How the evaluator reads a column of the answer (alert/src/evaluate.rs, `Column::of`). */
const LABEL_TYPE = /^(Utf8|LargeUtf8|Utf8View|Boolean)$|^Dictionary\(.*, (Utf8|LargeUtf8|Utf8View|Boolean)\)$/;
const VALUE_TYPE = /^(U?Int\d+|Float\d+|Decimal)/;

export function columnRole(column) {
  if (column.name === 'firing' && column.type === 'Boolean') return 'condition';
  if (LABEL_TYPE.test(column.type)) return 'label';
  if (VALUE_TYPE.test(column.type)) return 'value';
  return 'ignored';
}

/** The alert instances a SQL answer makes: one per distinct label set of its firing rows. */
export function instancesOf(result) {
  const roles = result.columns.map(columnRole);
  const condition = roles.indexOf('condition');
  const seen = new Set();
  for (const row of result.rows) {
    if (condition >= 0 && row[condition] !== true) continue;
    const labels = result.columns
      .map((c, i) => (roles[i] === 'label' && row[i] !== null ? [c.name, String(row[i])] : null))
      .filter(Boolean)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    seen.add(JSON.stringify(labels));
  }
  return seen.size;
}

/** `name="value"`, `name!~"regex"`: a matcher as Alertmanager writes it. */
export function matcherText(matcher) {
  const op = (matcher.isEqual === false ? '!' : '=') + (matcher.isRegex ? '~' : matcher.isEqual === false ? '=' : '');
  return `${matcher.name}${op}${JSON.stringify(matcher.value)}`;
}

/** What to show for a failed call: a 403 means a read-only token. */
function explain(error) {
  if (error instanceof ApiError && error.status === 403) return `This ${NEEDS_ADMIN} (the server said: ${error.message})`;
  return error.message;
}

function isForbidden(error) {
  return error instanceof ApiError && error.status === 403;
}

/** A time (RFC 3339 text or unix ms) as local time, with the date when not today. */
function when(value) {
  if (value === null || value === undefined || value === '') return h('span', {class: 'muted'}, '–');
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const iso = date.toISOString();
  const today = date.toDateString() === new Date().toDateString();
  const text = today ? date.toLocaleTimeString('en-GB') : date.toLocaleString('en-GB');
  return h('time', {datetime: iso, title: iso}, text);
}

function labelChips(labels, {skipAlertname = true} = {}) {
  return Object.entries(labels || {})
    .filter(([name]) => !(skipAlertname && name === 'alertname'))
    .map(([name, value]) => h('span', {class: 'label-chip'}, `${name}="${value}"`));
}

function valuesText(values) {
  const entries = Object.entries(values || {});
  if (!entries.length) return h('span', {class: 'muted'}, '–');
  return entries.map(([name, value]) => `${name}=${value}`).join(' ');
}

function field(text, input, hint) {
  return h('label', {class: 'form-field', title: hint}, h('span', {class: 'muted'}, text), input);
}

export class AlertsView {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    const whoami = app.state.whoami;
    this.state = {
      ready: false,
      loads: 0,
      refreshing: false,
      admin: !whoami || whoami.open || whoami.role === 'admin',
      rules: [],
      alerts: [],
      history: [],
      silences: [],
      webhooks: [],
      deliveries: {},
      errors: {},
      // What a click on a list answered when it failed, shown until the next action.
      notices: {},
      focused: null,
      editing: null,
      preview: null,
      saved: null,
    };
    app.state.alerts = this.state;
    this.timer = null;
    this.loading = null;
    this.again = null;
    this.painted = {};
    this.confirmDelete = null;
    this.scrollPending = false;
    this.build();
  }

  build() {
    this.statusLine = h('span', {id: 'alerts-status', class: 'muted'});
    const jump = (target, text) => h('button', {type: 'button', class: 'link-button', onclick: () => target.scrollIntoView({block: 'start'})}, text);

    // Rules.
    this.rulesNote = h('div', {id: 'rules-note'});
    this.rulesList = h('div', {id: 'rules-list', class: 'table-wrap'});
    this.newRuleButton = h('button', {type: 'button', id: 'rule-new', onclick: () => this.openEditor(null)}, 'New rule');
    this.editor = h('div', {id: 'rule-editor', class: 'rule-editor hidden'});
    this.rulesSection = h(
      'section',
      {id: 'alerts-rules', class: 'alerts-section'},
      h('div', {class: 'section-head'}, h('h2', {}, 'Rules'), this.newRuleButton),
      this.editor,
      this.rulesNote,
      this.rulesList,
    );

    // Current alerts and history.
    this.firing = h('div', {id: 'alerts-firing', class: 'instances'});
    this.pending = h('div', {id: 'alerts-pending', class: 'instances'});
    this.firingCount = h('span', {class: 'count'});
    this.pendingCount = h('span', {class: 'count'});
    this.alertsNote = h('div', {id: 'alerts-note'});
    this.historyList = h('div', {id: 'alerts-history', class: 'table-wrap'});
    this.alertsSection = h(
      'section',
      {id: 'alerts-current', class: 'alerts-section'},
      h('div', {class: 'section-head'}, h('h2', {}, 'Alerts')),
      this.alertsNote,
      h('h3', {}, 'Firing ', this.firingCount),
      this.firing,
      h('h3', {}, 'Pending ', this.pendingCount),
      this.pending,
      h('h3', {}, 'History ', h('span', {class: 'muted'}, '(newest first)')),
      this.historyList,
    );

    // Silences.
    this.silenceForm = h('div', {id: 'silence-editor', class: 'silence-editor hidden'});
    this.silencesNote = h('div', {id: 'silences-note'});
    this.silencesList = h('div', {id: 'silences-list', class: 'table-wrap'});
    this.newSilenceButton = h('button', {type: 'button', id: 'silence-new', onclick: () => this.openSilence([])}, 'New silence');
    this.silencesSection = h(
      'section',
      {id: 'alerts-silences', class: 'alerts-section'},
      h('div', {class: 'section-head'}, h('h2', {}, 'Silences'), this.newSilenceButton),
      this.silenceForm,
      this.silencesNote,
      this.silencesList,
    );

    // Webhooks.
    this.webhookForm = h('div', {id: 'webhook-editor'});
    this.webhooksNote = h('div', {id: 'webhooks-note'});
    this.webhooksList = h('div', {id: 'webhooks-list'});
    this.webhooksSection = h(
      'section',
      {id: 'alerts-webhooks', class: 'alerts-section'},
      h('div', {class: 'section-head'}, h('h2', {}, 'Webhooks and deliveries')),
      this.webhooksNote,
      this.webhooksList,
      this.webhookForm,
    );

    replace(
      this.root,
      h(
        'div',
        {class: 'toolbar alerts-toolbar'},
        jump(this.rulesSection, 'Rules'),
        jump(this.alertsSection, 'Alerts'),
        jump(this.silencesSection, 'Silences'),
        jump(this.webhooksSection, 'Webhooks'),
        h('span', {class: 'grow'}),
        this.statusLine,
      ),
      h('div', {class: 'alerts-page'}, this.rulesSection, this.alertsSection, this.silencesSection, this.webhooksSection),
    );
    this.drawWebhookForm();
  }

  async show(params) {
    const focused = params.rule ? Number(params.rule) : null;
    this.state.focused = Number.isInteger(focused) ? focused : null;
    this.scrollPending = this.state.focused !== null;
    if (this.state.focused === null) this.root.scrollTop = 0;
    this.startTimer();
    await this.refresh();
  }

  hide() {
    this.stopTimer();
  }

  startTimer() {
    this.stopTimer();
    this.state.refreshing = true;
    this.timer = setInterval(() => {
      // A tab in the background asks for nothing; it catches up when shown again.
      if (!document.hidden) this.refresh();
    }, REFRESH_MS);
  }

  stopTimer() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.state.refreshing = false;
  }

  /** Loads everything; asked for while a load runs, it loads once more after that one, since
   * what changed (a rule just saved) may have missed the running one. */
  refresh() {
    if (this.loading) {
      this.again ||= this.loading.then(() => {
        this.again = null;
        return this.refresh();
      });
      return this.again;
    }
    this.loading = this.load().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  async load() {
    const [rules, alerts, silences, webhooks] = await Promise.allSettled([
      getJson('/api/alert-rules'),
      getJson('/api/alerts', {limit: HISTORY}),
      getJson('/api/silences'),
      getJson('/api/webhooks'),
    ]);
    const results = [rules, alerts, silences, webhooks];
    if (results.some((r) => r.status === 'rejected' && r.reason instanceof ApiError && r.reason.status === 401)) {
      // The session ended: the login form is shown, and nothing more is asked for.
      this.stopTimer();
      return;
    }
    const errors = {};
    const take = (result, name, pick) => {
      if (result.status === 'fulfilled') return pick(result.value);
      errors[name] = result.reason;
      return this.state[name];
    };
    this.state.rules = take(rules, 'rules', (v) => v.rules);
    this.state.alerts = take(alerts, 'alerts', (v) => v.alerts);
    this.state.history = take(alerts, 'history', (v) => v.history);
    this.state.silences = take(silences, 'silences', (v) => v.silences);
    this.state.webhooks = take(webhooks, 'webhooks', (v) => v.webhooks);
    if (isForbidden(errors.webhooks)) {
      // Webhooks are admin-only, to GET as well: this token cannot write anything here.
      this.state.webhooks = [];
      this.setAdmin(false);
    }
    this.state.deliveries = await this.loadDeliveries();
    this.state.errors = Object.fromEntries(Object.entries(errors).map(([k, e]) => [k, explain(e)]));
    this.state.loads += 1;
    this.draw();
    this.state.ready = true;
    const failed = Object.keys(errors).filter((k) => !(k === 'webhooks' && isForbidden(errors.webhooks)));
    this.statusLine.textContent = failed.length
      ? `could not load ${failed.join(', ')}; retrying every ${REFRESH_MS / 1000} s`
      : `updated ${new Date().toLocaleTimeString('en-GB')}, every ${REFRESH_MS / 1000} s`;
  }

  async loadDeliveries() {
    const pairs = await Promise.all(
      this.state.webhooks.map(async (hook) => {
        try {
          const answer = await getJson(`/api/webhooks/${hook.id}/deliveries`, {limit: DELIVERIES});
          return [hook.id, answer.deliveries];
        } catch (error) {
          return [hook.id, {error: explain(error)}];
        }
      }),
    );
    return Object.fromEntries(pairs);
  }

  setAdmin(admin) {
    if (this.state.admin === admin) return;
    this.state.admin = admin;
    this.painted = {};
    if (!admin) {
      this.closeEditor();
      this.silenceForm.classList.add('hidden');
    }
    this.drawWebhookForm();
  }

  /** Redraws `key` only when what it shows changed: a refresh does not disturb a click. */
  paint(key, data, draw) {
    const text = JSON.stringify(data);
    if (this.painted[key] === text) return;
    this.painted[key] = text;
    draw();
  }

  draw() {
    const s = this.state;
    this.newRuleButton.classList.toggle('hidden', !s.admin);
    this.newSilenceButton.classList.toggle('hidden', !s.admin);
    this.paint(
      'rules',
      [s.rules, s.alerts.map((a) => [a.rule_id, a.state]), s.focused, s.admin, this.confirmDelete, s.errors.rules, s.notices.rules, s.webhooks],
      () => this.drawRules(),
    );
    this.paint('alerts', [s.alerts, s.admin, s.errors.alerts], () => this.drawAlerts());
    this.paint('history', [s.history, s.errors.history], () => this.drawHistory());
    this.paint('silences', [s.silences, s.admin, s.errors.silences, s.notices.silences], () => this.drawSilences());
    this.paint('webhooks', [s.webhooks, s.deliveries, s.admin, s.errors.webhooks], () => this.drawWebhooks());
    if (s.editing) this.refreshPicker();
    if (this.scrollPending) this.scrollToFocused();
  }

  // ---- Rules --------------------------------------------------------------------------

  drawRules() {
    const s = this.state;
    const counts = {};
    for (const alert of s.alerts) {
      const count = (counts[alert.rule_id] ||= {firing: 0, pending: 0});
      count[alert.state] = (count[alert.state] || 0) + 1;
    }
    const notes = [];
    if (s.errors.rules) notes.push(h('pre', {class: 'error'}, s.errors.rules));
    if (s.notices.rules) notes.push(h('pre', {class: 'error', id: 'rules-notice'}, s.notices.rules));
    if (s.focused !== null && s.loads > 0 && !s.rules.some((r) => r.id === s.focused)) {
      notes.push(h('p', {class: 'notice-inline', id: 'rule-missing'}, `There is no rule ${s.focused} (any more): it may have been deleted.`));
    }
    if (!s.admin) notes.push(h('p', {class: 'muted'}, `Creating, changing and deleting rules ${NEEDS_ADMIN}.`));
    replace(this.rulesNote, notes);
    if (!s.rules.length) {
      replace(this.rulesList, h('p', {class: 'muted'}, 'No alert rules yet. A rule is SQL run every interval; each row it returns is an alert.'));
      return;
    }
    const hookNames = Object.fromEntries(s.webhooks.map((w) => [w.id, w.name]));
    const body = h('tbody');
    for (const rule of s.rules) {
      const count = counts[rule.id] || {firing: 0, pending: 0};
      const focused = rule.id === s.focused;
      body.append(
        h(
          'tr',
          {class: `rule-row${focused ? ' focused' : ''}`, dataset: {rule: rule.id}, tabindex: focused ? -1 : undefined},
          h('td', {}, h('a', {href: `#/alerts/rule/${rule.id}`, class: 'rule-name'}, rule.name)),
          h('td', {class: 'mono'}, rule.interval),
          h('td', {class: 'mono'}, rule.for),
          h('td', {class: `num${count.firing ? ' firing-count' : ''}`}, count.firing),
          h('td', {class: `num${count.pending ? ' pending-count' : ''}`}, count.pending),
          h('td', {class: 'rule-evaluated'}, rule.last_evaluation ? when(rule.last_evaluation) : h('span', {class: 'muted'}, 'not yet')),
          h('td', {class: 'rule-last-error'}, rule.last_error ? h('span', {class: 'err'}, rule.last_error) : h('span', {class: 'muted'}, 'none')),
          h('td', {class: 'actions'}, s.admin ? this.ruleActions(rule) : null),
        ),
      );
      if (focused) body.append(h('tr', {class: 'rule-detail focused', id: 'rule-detail'}, h('td', {colspan: 8}, this.ruleDetail(rule, hookNames))));
    }
    replace(
      this.rulesList,
      h(
        'table',
        {class: 'results rules'},
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ['name', 'interval', 'for', 'firing', 'pending', 'last evaluation', 'last error', ''].map((t, i) =>
              h('th', {class: i === 3 || i === 4 ? 'num' : undefined}, t),
            ),
          ),
        ),
        body,
      ),
    );
  }

  ruleActions(rule) {
    if (this.confirmDelete === rule.id) {
      return [
        h('span', {class: 'err'}, `Delete “${rule.name}”? Its firing alerts are resolved. `),
        h('button', {type: 'button', class: 'danger rule-delete-confirm', onclick: () => this.deleteRule(rule)}, 'Delete'),
        ' ',
        h('button', {type: 'button', onclick: () => this.askDelete(null)}, 'Keep'),
      ];
    }
    return [
      h('button', {type: 'button', class: 'rule-edit', onclick: () => this.openEditor(rule)}, 'Edit'),
      ' ',
      h('button', {type: 'button', class: 'rule-delete', onclick: () => this.askDelete(rule.id)}, 'Delete'),
    ];
  }

  ruleDetail(rule, hookNames) {
    const annotations = Object.entries(rule.annotations || {});
    return h(
      'div',
      {class: 'rule-detail-body'},
      h('pre', {class: 'mono rule-sql'}, rule.sql),
      h(
        'dl',
        {class: 'figures'},
        h('dt', {}, 'webhooks'),
        h('dd', {}, rule.webhooks.length ? rule.webhooks.map((id) => hookNames[id] || `#${id}`).join(', ') : 'none'),
        h('dt', {}, 'group by'),
        h('dd', {}, rule.group_by.length ? rule.group_by.join(', ') : 'alertname only'),
        h('dt', {}, 'timers'),
        h(
          'dd',
          {class: 'mono'},
          `group_wait ${rule.group_wait} · group_interval ${rule.group_interval} · repeat_interval ${rule.repeat_interval} · keep_firing_for ${rule.keep_firing_for}`,
        ),
        annotations.map(([k, v]) => [h('dt', {}, k), h('dd', {class: 'value'}, v)]),
        h('dt', {}, 'changed'),
        h('dd', {}, when(rule.updated_at)),
      ),
      h('a', {class: 'sql-link', href: `#/sql?q=${encodeURIComponent(rule.sql)}`}, 'open the SQL in the console'),
    );
  }

  scrollToFocused() {
    const row = this.rulesList.querySelector(`tr.rule-row[data-rule="${this.state.focused}"]`);
    if (!row && this.state.loads === 0) return;
    this.scrollPending = false;
    if (!row) {
      this.rulesNote.scrollIntoView({block: 'center'});
      return;
    }
    row.scrollIntoView({block: 'center'});
    row.focus({preventScroll: true});
  }

  askDelete(id) {
    this.confirmDelete = id;
    this.state.notices.rules = null;
    this.painted.rules = null;
    this.drawRules();
  }

  async deleteRule(rule) {
    try {
      await sendJson('DELETE', `/api/alert-rules/${rule.id}`);
      this.confirmDelete = null;
      if (this.state.editing?.id === rule.id) this.closeEditor();
    } catch (error) {
      this.confirmDelete = null;
      if (isForbidden(error)) this.setAdmin(false);
      this.state.notices.rules = explain(error);
      this.draw();
      return;
    }
    if (this.state.focused === rule.id) this.app.navigate('alerts', {});
    else await this.refresh();
  }

  openEditor(rule) {
    if (!this.state.admin) return;
    this.state.editing = rule ? {id: rule.id, name: rule.name} : {id: null};
    this.state.preview = null;
    this.state.saved = null;
    const value = (name) => (rule ? rule[name] : undefined);
    this.inputs = {
      name: h('input', {id: 'rule-name', size: 40, placeholder: 'checkout errors', value: value('name'), required: true}),
      sql: h('textarea', {
        id: 'rule-sql',
        rows: 6,
        spellcheck: 'false',
        placeholder:
          "SELECT service_name AS service, count(*) AS errors FROM spans WHERE status_code = 'ERROR' AND start_time > now() - INTERVAL '5 minutes' GROUP BY service_name HAVING count(*) > 10",
        value: value('sql'),
        onkeydown: (event) => {
          if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
            event.preventDefault();
            this.preview();
          }
        },
      }),
      group_by: h('input', {
        id: 'rule-group-by',
        size: 30,
        placeholder: 'alertname only; e.g. service, or ...',
        value: rule ? rule.group_by.join(', ') : undefined,
      }),
    };
    for (const [name, placeholder] of DURATIONS) {
      this.inputs[name] = h('input', {id: `rule-${name.replaceAll('_', '-')}`, size: 6, placeholder, value: value(name)});
    }
    this.annotations = pairsEditor('rule-annotations', 'annotation', rule ? Object.entries(rule.annotations || {}) : [], [
      'summary',
      'more than 10 failed spans in 5 minutes',
    ]);
    this.picker = h('div', {id: 'rule-webhooks', class: 'picker'});
    this.pickerFor = null;
    this.ruleError = h('pre', {id: 'rule-error', class: 'error hidden'});
    this.previewBox = h('div', {id: 'rule-preview-result', class: 'rule-preview'});
    const form = h(
      'form',
      {
        id: 'rule-form',
        class: 'rule-form',
        onsubmit: (event) => {
          event.preventDefault();
          this.saveRule();
        },
      },
      h('h3', {}, rule ? `Edit rule ${rule.id}` : 'New rule'),
      field('name', this.inputs.name),
      field('SQL: each row returned is an alert; string columns are its labels, numbers its values', this.inputs.sql),
      h(
        'div',
        {class: 'form-row'},
        DURATIONS.map(([name, placeholder, hint]) => field(name === 'for' ? 'for' : name.replaceAll('_', ' '), this.inputs[name], `${hint} (default ${placeholder})`)),
      ),
      field('group by (label names, comma-separated)', this.inputs.group_by),
      h('div', {class: 'form-field'}, h('span', {class: 'muted'}, 'webhooks'), this.picker),
      h('div', {class: 'form-field'}, h('span', {class: 'muted'}, 'annotations (copied into every notification)'), this.annotations.element),
      h(
        'div',
        {class: 'toolbar form-buttons'},
        h('button', {type: 'button', id: 'rule-preview', onclick: () => this.preview()}, 'Preview'),
        h('button', {type: 'submit', id: 'rule-save', class: 'primary'}, rule ? 'Save changes' : 'Create rule'),
        h('button', {type: 'button', id: 'rule-cancel', onclick: () => this.closeEditor()}, 'Cancel'),
      ),
    );
    replace(this.editor, form, h('aside', {class: 'rule-aside'}, this.ruleError, this.previewBox));
    this.editor.classList.remove('hidden');
    this.refreshPicker();
    this.editor.scrollIntoView({block: 'start'});
    this.inputs.name.focus();
  }

  closeEditor() {
    this.state.editing = null;
    this.state.preview = null;
    this.editor.classList.add('hidden');
    replace(this.editor);
  }

  /** The webhook checkboxes, redrawn when the webhooks change; what is ticked stays ticked. */
  refreshPicker() {
    if (!this.picker) return;
    const s = this.state;
    const key = JSON.stringify([s.webhooks.map((w) => [w.id, w.name]), s.errors.webhooks]);
    if (this.pickerFor === key) return;
    const ticked = this.pickerFor === null
      ? new Set((s.rules.find((r) => r.id === s.editing?.id)?.webhooks) || [])
      : new Set(this.checkedWebhooks());
    this.pickerFor = key;
    if (s.errors.webhooks) {
      replace(this.picker, h('span', {class: 'muted'}, s.errors.webhooks));
      return;
    }
    if (!s.webhooks.length) {
      replace(this.picker, h('span', {class: 'muted'}, 'no webhooks yet: add one under Webhooks below'));
      return;
    }
    replace(
      this.picker,
      s.webhooks.map((hook) =>
        h(
          'label',
          {class: 'pick', title: hook.url},
          h('input', {type: 'checkbox', name: 'webhook', value: hook.id, checked: ticked.has(hook.id)}),
          ` ${hook.name}`,
        ),
      ),
    );
  }

  checkedWebhooks() {
    return [...this.picker.querySelectorAll('input[name=webhook]:checked')].map((input) => Number(input.value));
  }

  ruleBody() {
    const body = {
      name: this.inputs.name.value.trim(),
      sql: this.inputs.sql.value.trim(),
      webhooks: this.picker ? this.checkedWebhooks() : [],
      annotations: Object.fromEntries(this.annotations.pairs()),
      group_by: this.inputs.group_by.value
        .split(',')
        .map((name) => name.trim())
        .filter(Boolean),
    };
    // Left empty, a duration takes the server's default (the placeholder).
    for (const [name] of DURATIONS) {
      const text = this.inputs[name].value.trim();
      if (text) body[name] = text;
    }
    return body;
  }

  async saveRule() {
    const editing = this.state.editing;
    if (!editing) return;
    const body = this.ruleBody();
    this.ruleError.classList.add('hidden');
    let id = editing.id;
    try {
      if (id === null) id = (await sendJson('POST', '/api/alert-rules', body)).id;
      else await sendJson('PUT', `/api/alert-rules/${id}`, body);
    } catch (error) {
      this.showRuleError(error);
      return;
    }
    this.state.saved = id;
    this.closeEditor();
    // The saved rule, shown and highlighted.
    this.app.navigate('alerts', {rule: id});
  }

  showRuleError(error) {
    if (isForbidden(error)) this.setAdmin(false);
    this.state.ruleError = explain(error);
    if (!this.state.admin) {
      // The form is gone (this token cannot write): the answer goes above the list.
      this.state.notices.rules = explain(error);
      this.draw();
      return;
    }
    this.ruleError.textContent = explain(error);
    this.ruleError.classList.remove('hidden');
  }

  /** Runs the rule's SQL now through /api/sql: the rows it returns are the alerts it makes. */
  async preview() {
    const text = this.inputs.sql.value.trim();
    if (!text) {
      this.state.preview = {error: 'write the SQL first'};
      replace(this.previewBox, h('pre', {class: 'error'}, 'Write the SQL first.'));
      return;
    }
    replace(this.previewBox, h('span', {class: 'muted'}, 'running…'));
    let result;
    try {
      result = await sql(text);
    } catch (error) {
      // The SQL console's errors are the server's words; a 403 here is the sandbox's refusal.
      this.state.preview = {error: error.message};
      replace(this.previewBox, h('h4', {}, 'Preview'), h('pre', {class: 'error', id: 'rule-preview-error'}, error.message));
      return;
    }
    const roles = result.columns.map(columnRole);
    const instances = instancesOf(result);
    this.state.preview = {columns: result.columns.map((c) => c.name), rows: result.rows, instances, roles};
    const n = result.rows.length;
    replace(
      this.previewBox,
      h('h4', {}, 'Preview'),
      h(
        'p',
        {id: 'rule-preview-summary'},
        n
          ? `Now: ${n} row${n === 1 ? '' : 's'}, ${instances} alert${instances === 1 ? '' : 's'} (one per distinct label set${roles.includes('condition') ? ' of the rows whose firing is true' : ''}).`
          : 'Now: no rows, so no alerts.',
        result.truncated ? ' The server truncated the answer.' : '',
      ),
      n
        ? h(
            'div',
            {class: 'table-wrap'},
            h(
              'table',
              {class: 'results', id: 'rule-preview-table'},
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  result.columns.map((c, i) => h('th', {title: c.type}, c.name, h('div', {class: `role ${roles[i]}`}, roles[i]))),
                ),
              ),
              h(
                'tbody',
                {},
                result.rows.slice(0, 100).map((row) =>
                  h(
                    'tr',
                    {},
                    row.map((value, i) => h('td', {class: roles[i] === 'value' ? 'num' : undefined}, value === null ? 'null' : typeof value === 'object' ? JSON.stringify(value) : String(value))),
                  ),
                ),
              ),
            ),
          )
        : null,
      n > 100 ? h('p', {class: 'muted'}, `showing the first 100 of ${n} rows`) : null,
    );
  }

  // ---- Alerts -------------------------------------------------------------------------

  drawAlerts() {
    const s = this.state;
    replace(this.alertsNote, s.errors.alerts ? h('pre', {class: 'error'}, s.errors.alerts) : null);
    const firing = s.alerts.filter((a) => a.state === 'firing');
    const pending = s.alerts.filter((a) => a.state === 'pending');
    this.firingCount.textContent = `(${firing.length})`;
    this.pendingCount.textContent = `(${pending.length})`;
    const list = (alerts, empty) => (alerts.length ? alerts.map((a) => this.instance(a)) : h('p', {class: 'muted'}, empty));
    replace(this.firing, list(firing, 'Nothing is firing.'));
    replace(this.pending, list(pending, 'Nothing is pending.'));
  }

  instance(alert) {
    const silenced = alert.silenced_by && alert.silenced_by.length;
    return h(
      'div',
      {class: `alert-instance ${alert.state}${silenced ? ' silenced' : ''}`, dataset: {fingerprint: alert.fingerprint, rule: alert.rule_id, state: alert.state}},
      h(
        'div',
        {class: 'alert-head'},
        h('span', {class: `state-badge ${alert.state}`}, alert.state),
        h('a', {href: `#/alerts/rule/${alert.rule_id}`, class: 'alert-rule'}, alert.rule),
        silenced
          ? h('span', {class: 'silenced-badge', title: 'no notifications while silenced'}, `silenced by ${alert.silenced_by.map((id) => `#${id}`).join(', ')}`)
          : null,
        h('span', {class: 'grow'}),
        this.state.admin
          ? h('button', {type: 'button', class: 'silence-action', onclick: () => this.silenceAlert(alert)}, 'Silence')
          : null,
      ),
      h('div', {class: 'alert-labels'}, labelChips(alert.labels)),
      h(
        'div',
        {class: 'alert-meta muted'},
        h('span', {class: 'alert-values mono'}, valuesText(alert.values)),
        ' · active since ',
        when(alert.activeSince),
        alert.firedAt ? [' · firing since ', when(alert.firedAt)] : null,
        ' · last seen ',
        when(alert.lastSeen),
      ),
    );
  }

  drawHistory() {
    const s = this.state;
    if (s.errors.history) {
      replace(this.historyList, h('pre', {class: 'error'}, s.errors.history));
      return;
    }
    if (!s.history.length) {
      replace(this.historyList, h('p', {class: 'muted'}, 'No transitions yet.'));
      return;
    }
    replace(
      this.historyList,
      h(
        'table',
        {class: 'results history'},
        h('thead', {}, h('tr', {}, ['at', 'rule', 'status', 'labels', 'values', 'started', 'ended'].map((t) => h('th', {}, t)))),
        h(
          'tbody',
          {},
          s.history.map((entry) =>
            h(
              'tr',
              {class: `history-row ${entry.status}`, dataset: {status: entry.status}},
              h('td', {}, when(entry.at)),
              h('td', {}, entry.rule_id ? h('a', {href: `#/alerts/rule/${entry.rule_id}`}, entry.rule) : entry.rule),
              h('td', {}, h('span', {class: `state-badge ${entry.status}`}, entry.status)),
              h('td', {}, labelChips(entry.labels)),
              h('td', {class: 'mono'}, valuesText(entry.values)),
              h('td', {}, when(entry.startsAt)),
              h('td', {}, when(entry.endsAt)),
            ),
          ),
        ),
      ),
    );
  }

  // ---- Silences -----------------------------------------------------------------------

  /** The silence form, filled with one equality matcher per label of the alert. */
  silenceAlert(alert) {
    if (!this.state.admin) return;
    const matchers = Object.entries(alert.labels).map(([name, value]) => ({name, value, isRegex: false, isEqual: true}));
    this.openSilence(matchers);
    this.silenceInputs.comment.focus();
  }

  openSilence(matchers) {
    if (!this.state.admin) return;
    let createdBy = '';
    try {
      createdBy = localStorage.getItem('flowscope.silence.createdBy') || '';
    } catch {
      // No storage (a private window): the field starts empty.
    }
    this.matchers = matchersEditor(matchers.length ? matchers : [{name: '', value: '', isRegex: false, isEqual: true}]);
    this.silenceInputs = {
      starts: h('input', {id: 'silence-starts', type: 'datetime-local', title: 'empty: now'}),
      duration: h('input', {id: 'silence-duration', size: 6, placeholder: DEFAULT_SILENCE, title: 'e.g. 30m, 2h, 1d; ignored when an end time is given'}),
      ends: h('input', {id: 'silence-ends', type: 'datetime-local'}),
      createdBy: h('input', {id: 'silence-created-by', size: 16, placeholder: 'who', value: createdBy}),
      comment: h('input', {id: 'silence-comment', size: 40, placeholder: 'why (required)'}),
    };
    this.silenceError = h('pre', {id: 'silence-error', class: 'error hidden'});
    const i = this.silenceInputs;
    replace(
      this.silenceForm,
      h(
        'form',
        {
          id: 'silence-form',
          class: 'silence-form',
          onsubmit: (event) => {
            event.preventDefault();
            this.createSilence();
          },
        },
        h('h3', {}, 'New silence'),
        h('div', {class: 'form-field'}, h('span', {class: 'muted'}, 'matchers (all must match)'), this.matchers.element),
        h(
          'div',
          {class: 'form-row'},
          field('starts', i.starts, 'empty: now'),
          field('for', i.duration, `a duration (default ${DEFAULT_SILENCE})`),
          field('or until', i.ends, 'an end time; wins over the duration'),
        ),
        h('div', {class: 'form-row'}, field('created by', i.createdBy), field('comment', i.comment)),
        h(
          'div',
          {class: 'toolbar form-buttons'},
          h('button', {type: 'submit', id: 'silence-create', class: 'primary'}, 'Create silence'),
          h('button', {type: 'button', onclick: () => this.silenceForm.classList.add('hidden')}, 'Cancel'),
        ),
      ),
      h('aside', {class: 'rule-aside'}, this.silenceError),
    );
    this.silenceForm.classList.remove('hidden');
    this.silenceForm.scrollIntoView({block: 'start'});
  }

  silenceBody() {
    const i = this.silenceInputs;
    const now = Date.now();
    const starts = i.starts.value ? new Date(i.starts.value).getTime() : null;
    let ends;
    if (i.ends.value) {
      ends = new Date(i.ends.value).getTime();
    } else {
      const duration = parseAgo(i.duration.value.trim() || DEFAULT_SILENCE);
      if (duration === null) throw new Error(`the duration \`${i.duration.value}\` is not understood; write e.g. 30m, 2h or 1d, or give an end time`);
      ends = (starts ?? now) + duration;
    }
    const body = {
      matchers: this.matchers.matchers(),
      endsAt: new Date(ends).toISOString(),
      createdBy: i.createdBy.value.trim(),
      comment: i.comment.value.trim(),
    };
    if (starts !== null) body.startsAt = new Date(starts).toISOString();
    return body;
  }

  async createSilence() {
    this.silenceError.classList.add('hidden');
    let body;
    try {
      body = this.silenceBody();
      await sendJson('POST', '/api/silences', body);
    } catch (error) {
      if (isForbidden(error)) this.setAdmin(false);
      this.silenceError.textContent = explain(error);
      this.silenceError.classList.remove('hidden');
      if (!this.state.admin) {
        this.state.notices.silences = explain(error);
        this.draw();
      }
      return;
    }
    try {
      localStorage.setItem('flowscope.silence.createdBy', body.createdBy);
    } catch {
      // Remembering the name is a convenience.
    }
    this.silenceForm.classList.add('hidden');
    replace(this.silenceForm);
    await this.refresh();
  }

  drawSilences() {
    const s = this.state;
    const notes = [];
    if (s.errors.silences) notes.push(h('pre', {class: 'error'}, s.errors.silences));
    if (s.notices.silences) notes.push(h('pre', {class: 'error', id: 'silences-notice'}, s.notices.silences));
    if (!s.admin) notes.push(h('p', {class: 'muted'}, `Creating and expiring silences ${NEEDS_ADMIN}.`));
    replace(this.silencesNote, notes);
    if (!s.silences.length) {
      replace(this.silencesList, h('p', {class: 'muted'}, 'No silences. A silence holds back the notifications of the alerts its matchers match.'));
      return;
    }
    const order = {active: 0, pending: 1, expired: 2};
    const sorted = [...s.silences].sort((a, b) => order[a.status.state] - order[b.status.state] || b.id - a.id);
    replace(
      this.silencesList,
      h(
        'table',
        {class: 'results silences'},
        h('thead', {}, h('tr', {}, ['id', 'state', 'matchers', 'starts', 'ends', 'created by', 'comment', ''].map((t) => h('th', {}, t)))),
        h(
          'tbody',
          {},
          sorted.map((silence) =>
            h(
              'tr',
              {class: `silence-row ${silence.status.state}`, dataset: {silence: silence.id, state: silence.status.state}},
              h('td', {class: 'num'}, `#${silence.id}`),
              h('td', {}, h('span', {class: `state-badge ${silence.status.state}`}, silence.status.state)),
              h('td', {class: 'matchers'}, h('div', {class: 'chips'}, silence.matchers.map((m) => h('span', {class: 'label-chip mono'}, matcherText(m))))),
              h('td', {}, when(silence.startsAt)),
              h('td', {}, when(silence.endsAt)),
              h('td', {}, silence.createdBy),
              h('td', {class: 'value'}, silence.comment),
              h(
                'td',
                {},
                s.admin && silence.status.state !== 'expired'
                  ? h('button', {type: 'button', class: 'silence-expire', onclick: () => this.expireSilence(silence.id)}, 'Expire')
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  async expireSilence(id) {
    this.state.notices.silences = null;
    try {
      await sendJson('DELETE', `/api/silences/${id}`);
    } catch (error) {
      if (isForbidden(error)) this.setAdmin(false);
      this.state.notices.silences = explain(error);
      this.draw();
      return;
    }
    await this.refresh();
  }

  // ---- Webhooks -----------------------------------------------------------------------

  drawWebhookForm() {
    if (!this.state.admin) {
      replace(this.webhookForm);
      return;
    }
    const name = h('input', {id: 'webhook-name', size: 16, placeholder: 'ops', required: true});
    const url = h('input', {id: 'webhook-url', size: 40, placeholder: 'https://hooks.example.com/flowscope', required: true});
    const secret = h('input', {id: 'webhook-secret', size: 30, placeholder: 'whsec_… (empty: one is generated)'});
    const out = h('div', {id: 'webhook-created'});
    replace(
      this.webhookForm,
      h(
        'form',
        {
          id: 'webhook-form',
          class: 'toolbar webhook-form',
          onsubmit: async (event) => {
            event.preventDefault();
            const body = {name: name.value.trim(), url: url.value.trim()};
            if (secret.value.trim()) body.secret = secret.value.trim();
            try {
              const created = await sendJson('POST', '/api/webhooks', body);
              replace(
                out,
                created.secret
                  ? h('p', {}, 'Created. Its signing secret, shown this once: ', h('code', {id: 'webhook-secret-shown'}, created.secret))
                  : h('p', {}, 'Created.'),
              );
              name.value = '';
              url.value = '';
              secret.value = '';
              await this.refresh();
            } catch (error) {
              if (isForbidden(error)) this.setAdmin(false);
              replace(out, h('pre', {class: 'error', id: 'webhook-error'}, explain(error)));
            }
          },
        },
        h('strong', {}, 'Add a webhook'),
        field('name', name),
        field('URL', url),
        field('secret', secret),
        h('button', {type: 'submit', id: 'webhook-add', class: 'primary'}, 'Add'),
      ),
      out,
    );
  }

  drawWebhooks() {
    const s = this.state;
    if (!s.admin) {
      replace(this.webhooksNote, h('p', {class: 'muted', id: 'webhooks-forbidden'}, `Webhooks and their deliveries: this ${NEEDS_ADMIN} (a webhook's URL is often a credential).`));
      replace(this.webhooksList);
      return;
    }
    replace(this.webhooksNote, s.errors.webhooks ? h('pre', {class: 'error'}, s.errors.webhooks) : null);
    if (!s.webhooks.length) {
      replace(this.webhooksList, h('p', {class: 'muted'}, 'No webhooks yet. Rules notify the webhooks they name.'));
      return;
    }
    replace(this.webhooksList, s.webhooks.map((hook) => this.webhook(hook)));
  }

  webhook(hook) {
    const deliveries = this.state.deliveries[hook.id];
    const answer = h('span', {class: 'muted webhook-test-answer'});
    return h(
      'div',
      {class: 'webhook', dataset: {webhook: hook.id}},
      h(
        'div',
        {class: 'section-head'},
        h('strong', {class: 'webhook-name'}, hook.name),
        h('span', {class: 'mono muted webhook-url'}, hook.url),
        hook.has_secret ? h('span', {class: 'badge on'}, 'signed') : null,
        h(
          'button',
          {
            type: 'button',
            class: 'webhook-test',
            onclick: async () => {
              answer.textContent = 'queueing…';
              try {
                const queued = await sendJson('POST', `/api/webhooks/${hook.id}/test`);
                answer.textContent = `queued ${queued.msg_id}`;
                await this.refresh();
              } catch (error) {
                answer.textContent = explain(error);
              }
            },
          },
          'Send test',
        ),
        answer,
      ),
      deliveriesTable(deliveries),
    );
  }
}

function deliveriesTable(deliveries) {
  if (!deliveries) return h('p', {class: 'muted'}, 'loading deliveries…');
  if (deliveries.error) return h('pre', {class: 'error'}, deliveries.error);
  if (!deliveries.length) return h('p', {class: 'muted deliveries-empty'}, 'No deliveries yet.');
  return h(
    'table',
    {class: 'results deliveries'},
    h(
      'thead',
      {},
      h('tr', {}, ['created', 'kind', 'state', 'attempts', 'HTTP answer', 'error', 'next attempt'].map((t) => h('th', {}, t))),
    ),
    h(
      'tbody',
      {},
      deliveries.map((d) =>
        h(
          'tr',
          {class: `delivery ${d.state}`, dataset: {msg: d.msg_id, state: d.state}},
          h('td', {}, when(d.created_at)),
          h('td', {}, d.kind),
          h('td', {}, h('span', {class: `state-badge ${d.state}`}, d.state)),
          h(
            'td',
            {class: 'attempts'},
            d.attempt_list && d.attempt_list.length
              ? h(
                  'details',
                  {},
                  h('summary', {}, String(d.attempts)),
                  h(
                    'ol',
                    {class: 'attempt-list'},
                    d.attempt_list.map((a) =>
                      h('li', {}, when(a.at), ' ', a.status !== null ? `HTTP ${a.status}` : 'no answer', a.error ? ` · ${a.error}` : '', ` · ${a.duration_ms} ms`),
                    ),
                  ),
                )
              : String(d.attempts),
          ),
          h('td', {class: 'http-answer num'}, d.last_status !== null && d.last_status !== undefined ? String(d.last_status) : h('span', {class: 'muted'}, '–')),
          h('td', {class: 'value'}, d.last_error ? h('span', {class: 'err'}, d.last_error) : ''),
          h('td', {}, d.state === 'pending' ? when(d.next_attempt_at) : ''),
        ),
      ),
    ),
  );
}

/** Rows of name/value inputs; `pairs()` reads the filled ones. */
function pairsEditor(id, noun, initial, [namePlaceholder, valuePlaceholder]) {
  const rows = h('div', {class: 'pairs'});
  const add = (name = '', value = '') => {
    const row = h(
      'div',
      {class: 'pair'},
      h('input', {class: 'pair-name', size: 14, placeholder: namePlaceholder, value: name}),
      h('input', {class: 'pair-value', size: 40, placeholder: valuePlaceholder, value: value}),
      h('button', {type: 'button', class: 'remove', title: `remove this ${noun}`, onclick: () => row.remove()}, '×'),
    );
    rows.append(row);
  };
  for (const [name, value] of initial) add(name, value);
  if (!initial.length) add();
  const element = h('div', {id}, rows, h('button', {type: 'button', class: 'add', onclick: () => add()}, `+ ${noun}`));
  return {
    element,
    pairs: () =>
      [...rows.querySelectorAll('.pair')]
        .map((row) => [row.querySelector('.pair-name').value.trim(), row.querySelector('.pair-value').value])
        .filter(([name]) => name),
  };
}

/** Rows of name, value, regex? and equal?; `matchers()` reads them in the API's shape. */
function matchersEditor(initial) {
  const rows = h('div', {class: 'pairs'});
  const add = (m = {name: '', value: '', isRegex: false, isEqual: true}) => {
    const row = h(
      'div',
      {class: 'pair matcher'},
      h('input', {class: 'matcher-name', size: 14, placeholder: 'label, e.g. service', value: m.name}),
      h('input', {class: 'matcher-value', size: 30, placeholder: 'value', value: m.value}),
      h('label', {title: 'the value is a regular expression (anchored)'}, h('input', {type: 'checkbox', class: 'matcher-regex', checked: m.isRegex}), ' regex'),
      h('label', {title: 'unticked: the label must not match'}, h('input', {type: 'checkbox', class: 'matcher-equal', checked: m.isEqual !== false}), ' equal'),
      h('button', {type: 'button', class: 'remove', title: 'remove this matcher', onclick: () => row.remove()}, '×'),
    );
    rows.append(row);
  };
  for (const m of initial) add(m);
  const element = h('div', {id: 'silence-matchers'}, rows, h('button', {type: 'button', class: 'add', onclick: () => add()}, '+ matcher'));
  return {
    element,
    matchers: () =>
      [...rows.querySelectorAll('.matcher')]
        .map((row) => ({
          name: row.querySelector('.matcher-name').value.trim(),
          value: row.querySelector('.matcher-value').value,
          isRegex: row.querySelector('.matcher-regex').checked,
          isEqual: row.querySelector('.matcher-equal').checked,
        }))
        .filter((m) => m.name),
  };
}
