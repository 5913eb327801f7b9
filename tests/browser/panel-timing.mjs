// Times the dashboard's panel on a running server: from a tap on an element to its
// sparklines drawn (uPlot canvases in `.sparks`). For BENCHMARKS.md, run by hand:
//
//   node tests/browser/panel-timing.mjs <dashboard url> <element id>...
//
// An element id is a node id (`payments`) or an edge `source->target`. Prints one JSON line.

import {rmSync} from 'node:fs';
import {launch} from './chromium.mjs';

const [baseUrl, ...elements] = process.argv.slice(2);
if (!baseUrl || elements.length === 0) {
  console.error('usage: node panel-timing.mjs <dashboard url> <node id | source->target>...');
  process.exit(2);
}
const {context, profile} = await launch();
try {
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30000);
  await page.goto(`${baseUrl}/#/graph?from=15m`);
  await page.waitForFunction(() => window.flowscope?.cy && window.flowscope.cy.nodes().length > 0);
  const timings = [];
  for (const id of elements) {
    for (let round = 0; round < 3; round++) {
      const ms = await page.evaluate(async (id) => {
        const cy = window.flowscope.cy;
        const [source, target] = id.split('->');
        const element = target
          ? cy.edges().filter((e) => e.data('source') === source && e.data('target') === target)
          : cy.getElementById(id);
        if (element.empty()) throw new Error(`no element ${id} on the graph`);
        const start = performance.now();
        element.first().emit('tap');
        while (document.querySelectorAll('#panel .sparks canvas').length === 0) {
          if (performance.now() - start > 20000) throw new Error(`no sparklines for ${id}`);
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
        const ms = performance.now() - start;
        document.querySelector('#panel .close')?.click();
        return ms;
      }, id);
      timings.push({element: id, round, ms: Math.round(ms)});
      await page.waitForTimeout(300);
    }
  }
  console.log(JSON.stringify(timings));
} finally {
  await context.close();
  rmSync(profile, {recursive: true, force: true});
}
