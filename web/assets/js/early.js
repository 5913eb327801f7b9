// The graph's first question, asked while the page's modules load.
//
// A classic script, loaded async before the modules: when the page opens on the live graph
// with no grouping or window chosen, it asks the question the graph view asks first (the
// graph folded by namespace, see GraphView.load) at once, instead of after every module and
// /api/whoami have arrived. At 10,000 services the server's answer is most of the opening
// time, so the two now overlap. The view takes the answer if it is fresh and was accepted;
// otherwise (a login is needed, the server failed) it asks again as usual.
(function () {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = hash.split('?');
  const view = path.split('/')[0] || 'graph';
  const params = new URLSearchParams(query);
  if (view !== 'graph' || params.has('group') || params.has('from') || params.has('to')) return;
  const url = '/api/graph?group_by=service.namespace';
  window.flowscopeEarlyGraph = {
    at: performance.now(),
    answer: fetch(url, {headers: {accept: 'application/json'}})
      .then((response) => (response.ok ? response.json() : null))
      .catch(() => null),
  };
})();
