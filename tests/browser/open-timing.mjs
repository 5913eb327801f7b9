// Times the dashboard opening a running server's graph as a user would: a fresh page on
// `#/graph` (no grouping chosen, so a big system folds itself by namespace), until the page
// says it is ready (`navigationToReadyMs`: the nodes drawn, a click answered from then on),
// then a node's blast radius from its panel. For BENCHMARKS.md, run by hand:
//
//   node tests/browser/open-timing.mjs <dashboard url> [runs] [hash, #/graph by default]
//
// `#/graph?from=15m` asks the same question as `#/graph` but after the page's modules, not
// from early.js: the opening before early.js, for comparison.
//
// Prints one JSON line per run; `graph_bytes` is what `/api/graph` sent on the wire (gzipped).

import {rmSync} from 'node:fs';
import {launch} from './chromium.mjs';

const [baseUrl, runsText, hash = '#/graph'] = process.argv.slice(2);
if (!baseUrl) {
  console.error('usage: node open-timing.mjs <dashboard url> [runs] [hash]');
  process.exit(2);
}
const runs = Number(runsText || 3);
const {context, profile} = await launch();
try {
  for (let run = 0; run < runs; run++) {
    const page = await context.newPage();
    page.setDefaultTimeout(60000);
    const graphBytes = [];
    page.on('response', async (response) => {
      if (new URL(response.url()).pathname === '/api/graph') {
        await response.finished();
        graphBytes.push((await response.request().sizes()).responseBodySize);
      }
    });
    await page.goto(`${baseUrl}/${hash}`);
    await page.waitForFunction(() => {
      const graph = window.flowscope?.state?.graph;
      return graph?.ready === true && graph.navigationToReadyMs;
    });
    const opened = await page.evaluate(() => {
      const graph = window.flowscope.state.graph;
      return {
        hash: decodeURIComponent(location.hash),
        nodes: window.flowscope.cy.nodes().length,
        navigation_to_ready_ms: Math.round(graph.navigationToReadyMs),
        render_ms: Math.round(graph.timings?.done || 0),
      };
    });
    await page.waitForFunction(() => window.flowscope.state.graph.complete === true);
    opened.navigation_to_all_edges_ms = Math.round(await page.evaluate(() => performance.now()));
    opened.graph_requests = graphBytes.length;
    opened.graph_bytes = graphBytes.reduce((a, b) => a + b, 0);
    // A blast radius, where the page has the button: the service most called.
    const node = await page.evaluate(() => {
      const cy = window.flowscope.cy;
      const services = cy.nodes('[kind = "service"]').sort((a, b) => b.indegree(false) - a.indegree(false));
      return services.nonempty() ? services.first().id() : null;
    });
    if (node) {
      await page.evaluate((id) => window.flowscope.cy.getElementById(id).emit('tap'), node);
      await page.waitForFunction((id) => window.flowscope.state.graph.panel?.id === id, node);
      if (await page.$('#blast-radius')) {
        const started = await page.evaluate(() => performance.now());
        await page.click('#blast-radius');
        await page.waitForFunction(() => window.flowscope.state.graph.reach?.kind === 'blast_radius');
        const reach = await page.evaluate(() => ({callers: window.flowscope.state.graph.reach.nodes.length - 1, at: performance.now()}));
        opened.blast_radius = {node, callers: reach.callers, click_to_highlight_ms: Math.round(reach.at - started)};
      }
    }
    console.log(JSON.stringify(opened));
    await page.close();
  }
} finally {
  await context.close();
  rmSync(profile, {recursive: true, force: true});
}
