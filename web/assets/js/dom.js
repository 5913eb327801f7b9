// Building DOM safely, and formatting numbers and times.
//
// Every piece of text that comes from spans (service names, span names, attributes, SQL
// results) goes into the page through `h()` as a text node, never as markup: a service
// named `<img src=x onerror=alert(1)>` shows as those characters. Nothing in the dashboard
// assigns `innerHTML`.

/** Creates an element: `h('td', {class: 'num', title: t}, child, 'text', ...)`. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (name === 'value') {
      element.value = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.appendChild(child);
    else element.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `element`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function formatCount(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', {maximumFractionDigits: 0});
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  if (ms >= 10000) return (ms / 1000).toFixed(1) + ' s';
  if (ms >= 100) return ms.toFixed(0) + ' ms';
  if (ms >= 1) return ms.toFixed(1) + ' ms';
  return ms.toFixed(2) + ' ms';
}

export function formatPercent(rate) {
  if (rate === null || rate === undefined || Number.isNaN(rate)) return '–';
  if (rate === 0) return '0%';
  if (rate < 0.001) return '<0.1%';
  return (rate * 100).toFixed(rate < 0.1 ? 1 : 0) + '%';
}

export function formatRate(perSecond) {
  if (perSecond >= 100) return perSecond.toFixed(0) + '/s';
  if (perSecond >= 1) return perSecond.toFixed(1) + '/s';
  return (perSecond * 60).toFixed(1) + '/min';
}

/** A SQL string literal: single quotes doubled. */
export function sqlString(text) {
  return "'" + String(text).replaceAll("'", "''") + "'";
}

/** A SQL timestamp literal for a time in milliseconds. */
export function sqlTime(ms) {
  return `TIMESTAMP '${new Date(ms).toISOString()}'`;
}

/** Durations such as `15m`, `1h`, `24h` in milliseconds; null when not understood. */
export function parseAgo(text) {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(String(text).trim());
  if (!match) return null;
  const unit = {ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3}[match[2]];
  return Number(match[1]) * unit;
}

/** A stable colour per service name, for the trace view. */
export function colourFor(name) {
  let hash = 2166136261;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  const hue = (hash >>> 0) % 360;
  return `hsl(${hue} 55% 55%)`;
}
