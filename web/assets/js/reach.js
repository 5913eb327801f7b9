// "What breaks if this fails" and "the way to another node", in a node's panel. The server
// answers over the graph's own window (`/api/graph/blast_radius`, `/api/graph/paths`); the
// graph highlights the answer and fades the rest. A node inside a folded group is shown by
// its group, and one folded into a "quieter nodes" bubble by that bubble, so the answer is
// visible at any size; the panel lists every node by name.

import {getJson} from './api.js';
import {formatCount, formatMs, formatRate, h, replace} from './dom.js';

/** How far the blast radius looks by default, and the choices offered. */
const BLAST_HOPS = [1, 2, 3, 5, 8];
const DEFAULT_BLAST_HOPS = 3;
/** The longest path looked for. */
const PATH_HOPS = 6;
/** Rows listed in the panel (the highlight shows them all). */
const LISTED = 12;

/** The panel's section for node `d` (nothing for groups and folded bubbles). */
export function reachSection(view, d) {
  if (d.collapsed || d.kind === 'group') return null;
  const hops = h(
    'select',
    {id: 'blast-hops', title: 'how many calls away'},
    BLAST_HOPS.map((n) => h('option', {value: n}, `${n} hop${n > 1 ? 's' : ''}`)),
  );
  hops.value = String(DEFAULT_BLAST_HOPS);
  const blastOut = h('div', {class: 'reach-out'});
  const target = h('input', {
    id: 'path-to',
    type: 'search',
    placeholder: 'another node…',
    list: 'node-names',
    autocomplete: 'off',
    onkeydown: (event) => {
      if (event.key === 'Enter') showPaths(view, d.id, target.value.trim(), pathOut);
    },
  });
  const pathOut = h('div', {class: 'reach-out'});
  return h(
    'section',
    {class: 'reach'},
    h('h3', {}, 'What breaks if this fails'),
    h(
      'div',
      {class: 'reach-row'},
      h('button', {id: 'blast-radius', onclick: () => showBlastRadius(view, d.id, Number(hops.value), blastOut)}, 'show who depends on it'),
      hops,
    ),
    blastOut,
    h('h3', {}, 'Paths to another node'),
    h(
      'div',
      {class: 'reach-row'},
      target,
      h('button', {id: 'draw-path', onclick: () => showPaths(view, d.id, target.value.trim(), pathOut)}, 'draw'),
    ),
    pathOut,
  );
}

/** Asks who calls `node` within `hops`, highlights them with the calls between, lists them. */
export async function showBlastRadius(view, node, hops, out) {
  const token = startAsking(view, out);
  let answer;
  try {
    answer = await getJson('/api/graph/blast_radius', {node, hops, ...windowOf(view)});
  } catch (error) {
    if (token === view.reachToken) replace(out, h('pre', {class: 'error'}, error.message));
    return;
  }
  if (token !== view.reachToken) return;
  const callers = answer.callers || [];
  const nodes = [node, ...callers.map((c) => c.node)];
  // Each caller reaches the node through `via`: the call that carries the failure to it.
  const edges = callers.map((c) => [c.node, c.via]);
  const drawn = view.highlightReach(nodes, edges, node);
  const direct = callers.filter((c) => c.hops === 1);
  const atStake = direct.reduce((sum, c) => sum + c.calls, 0);
  view.state.reach = {kind: 'blast_radius', node, hops, nodes, edges, callers: callers.map((c) => ({node: c.node, hops: c.hops})), ...drawn};
  replace(
    out,
    callers.length
      ? [
          h(
            'div',
            {class: 'reach-summary'},
            `${formatCount(callers.length)} node${callers.length > 1 ? 's' : ''} depend on it (${formatCount(direct.length)} directly); `,
            h('span', {class: 'num'}, `${formatRate(atStake / view.seconds())}`),
            ' of calls into it at stake',
          ),
          h(
            'ol',
            {class: 'reach-list'},
            callers
              .slice(0, LISTED)
              .map((c) =>
                h(
                  'li',
                  {onclick: () => view.focus(c.node), title: `through ${c.via}`},
                  h('span', {class: 'name'}, c.node),
                  ' ',
                  h('span', {class: 'muted'}, `${c.hops} hop${c.hops > 1 ? 's' : ''} · ${formatCount(c.calls)} calls${c.errors ? ` · ${formatCount(c.errors)} errors` : ''}`),
                ),
              ),
          ),
          callers.length > LISTED ? h('div', {class: 'muted'}, `and ${formatCount(callers.length - LISTED)} more, all highlighted`) : null,
          drawn.hidden_in_groups ? h('div', {class: 'muted'}, `${formatCount(drawn.hidden_in_groups)} of them are shown by their folded group`) : null,
        ]
      : h('div', {class: 'muted'}, `nothing calls it within ${hops} hop${hops > 1 ? 's' : ''} in this window`),
  );
}

/** Asks for the paths from `from` to `to`, highlights the busiest, lists them all. */
export async function showPaths(view, from, to, out) {
  if (!to) {
    replace(out, h('div', {class: 'muted'}, 'name the other node, e.g. one from the search list'));
    return;
  }
  const token = startAsking(view, out);
  let answer;
  try {
    answer = await getJson('/api/graph/paths', {from_node: from, to_node: to, max_hops: PATH_HOPS, ...windowOf(view)});
  } catch (error) {
    if (token === view.reachToken) replace(out, h('pre', {class: 'error'}, error.message));
    return;
  }
  if (token !== view.reachToken) return;
  const paths = answer.paths || [];
  if (!paths.length) {
    view.clearReach();
    view.state.reach = {kind: 'paths', from, to, paths: 0, nodes: [], edges: []};
    replace(out, h('div', {class: 'muted'}, `no path from ${from} to ${to} within ${PATH_HOPS} hops in this window`));
    return;
  }
  const items = paths.map((path, i) =>
    h(
      'li',
      {class: 'path-item', onclick: () => draw(i)},
      h('div', {class: 'loop-path'}, path.nodes.join(' → ')),
      h('div', {class: 'muted'}, `${formatCount(path.calls)} calls · ${formatCount(path.errors)} errors · p99 ${formatMs(path.p99_ms)}`),
    ),
  );
  const draw = (i) => {
    const nodes = paths[i].nodes;
    const edges = nodes.slice(1).map((n, k) => [nodes[k], n]);
    const drawn = view.highlightReach(nodes, edges, from);
    view.state.reach = {kind: 'paths', from, to, paths: paths.length, shown: i, nodes, edges, ...drawn};
    items.forEach((item, k) => item.classList.toggle('selected', k === i));
  };
  replace(
    out,
    h('div', {class: 'reach-summary'}, `${paths.length} path${paths.length > 1 ? 's' : ''}, busiest first; click one to draw it`),
    h('ol', {class: 'reach-list paths'}, items),
  );
  draw(0);
}

function startAsking(view, out) {
  view.reachToken = (view.reachToken || 0) + 1;
  replace(out, h('div', {class: 'muted'}, 'asking…'));
  return view.reachToken;
}

function windowOf(view) {
  return view.graphWindow();
}
