// Small charts with uPlot: the panel's sparklines and the SQL console's time series.
// uPlot is loaded on first use, so that the graph's first picture does not wait for it.

let loading = null;
function uPlotModule() {
  loading ||= import('../vendor/uplot/uPlot.esm.js').then((module) => module.default);
  return loading;
}

const PALETTE = ['#58a6ff', '#d29922', '#3fb950', '#e5484d', '#c678dd', '#56d4dd', '#f78166'];

/** A line without axes, `xs` in Unix seconds. */
export async function sparkline(container, xs, ys, colour) {
  const uPlot = await uPlotModule();
  const width = Math.max(120, container.clientWidth || 220);
  return new uPlot(
    {
      width,
      height: 36,
      legend: {show: false},
      cursor: {show: false},
      select: {show: false},
      axes: [{show: false}, {show: false}],
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(max, 1e-9)]}},
      series: [{}, {stroke: colour, fill: colour + '33', width: 1.5, spanGaps: false}],
    },
    [xs, ys],
    container,
  );
}

/** A time-series chart of every numeric column against the time column `x`. */
export async function timeSeries(container, xs, series) {
  const uPlot = await uPlotModule();
  const width = Math.max(300, container.clientWidth || 800);
  return new uPlot(
    {
      width,
      height: 260,
      scales: {x: {time: true}},
      axes: [
        {stroke: '#8b949e', grid: {stroke: '#21262d'}},
        {stroke: '#8b949e', grid: {stroke: '#21262d'}},
      ],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.name,
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          points: {show: xs.length < 60},
        })),
      ],
    },
    [xs, ...series.map((s) => s.values)],
    container,
  );
}
