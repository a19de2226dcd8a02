/* headwise report, the neuron view: one head's query for one token against every key, element by element,
   with the layer, the head and the query token picked in the page. */

// ------------------------------------------------------------------------------------------ neuron view

const neuronView = { layer: 0, head: 0, query: 0, nodes: null };

function buildNeuronView(report) {
  const data = report.neurons;
  const section = viewSection('neuron-view', 'Neuron view');
  section.append(el('p', {
    className: 'note',
    text: 'Pick a layer, a head and a query token: its query q_i, every key k_j, their products ' +
      'q_i ⊙ k_j element by element (each row sums to q_i · k_j), the scores (that sum scaled, -inf where ' +
      'the query may not look) and the weights, the softmax of the scores over the keys.' +
      (data.heads > data.kvHeads ? ` ${data.heads / data.kvHeads} query heads share each key head.` : ''),
  }));
  const options = (count, label) => Array.from({ length: count }, (_, i) => el('option', {
    value: i, text: label(i),
  }));
  const nodes = {
    layer: el('select', { id: 'neuron-layer', testid: 'neuron-layer' },
      options(data.layers, (l) => `${data.layer_numbers[l]}`)),
    head: el('select', { id: 'neuron-head', testid: 'neuron-head' }, options(data.heads, (h) => `${h}`)),
    query: el('select', { id: 'neuron-query', testid: 'neuron-query' },
      options(data.tokens.length, (i) => `${i}: ${data.tokens[i]}`)),
    tables: el('div', { className: 'matrices neuron-tables', testid: 'neuron-tables' }),
  };
  [neuronView.layer, neuronView.head, neuronView.query] = data.selected;
  neuronView.nodes = nodes;
  section.append(el('div', { className: 'controls' }, [
    el('label', { for: 'neuron-layer', text: 'Layer ' }), nodes.layer,
    el('label', { for: 'neuron-head', text: 'Head ' }), nodes.head,
    el('label', { for: 'neuron-query', text: 'Query ' }), nodes.query,
  ]), nodes.tables);
  for (const name of ['layer', 'head', 'query']) {
    nodes[name].value = String(neuronView[name]);
    nodes[name].addEventListener('change', () => {
      neuronView[name] = Number(nodes[name].value);
      renderNeurons(report);
    });
  }
  neuronView.section = section;
  renderNeurons(report);
  return section;
}

/** The tables of the chosen layer, head and query. */
function renderNeurons(report) {
  const d = report.neurons;
  const { layer, head, query } = neuronView;
  const n = d.tokens.length;
  const dh = d.dh;
  const keyHead = Math.floor(head / (d.heads / d.kvHeads));
  const q = d.queries.values.subarray(((layer * d.heads + head) * n + query) * dh, ((layer * d.heads + head) * n + query + 1) * dh);
  const keyStart = (layer * d.kvHeads + keyHead) * n * dh;
  const keys = d.keys.values.subarray(keyStart, keyStart + n * dh);
  const products = new Float64Array(n * dh);
  for (let j = 0; j < n; j++) for (let k = 0; k < dh; k++) products[j * dh + k] = q[k] * keys[j * dh + k];
  const row = ((layer * d.heads + head) * n + query) * n;
  const scores = d.scores.values.subarray(row, row + n);
  const weights = d.weights.values.subarray(row, row + n);
  const features = Array.from({ length: dh }, (_, k) => `${k}`);
  const token = d.tokens[query];
  const tables = [
    [`query q of ${token}`, [token], features, q, d.queries.encoding],
    ['keys k_j', d.tokens, features, keys, d.keys.encoding],
    ['q ⊙ k_j', d.tokens, features, products, 'float64'],
    ['scores', d.tokens, ['score'], scores, d.scores.encoding],
    ['weights', d.tokens, ['weight'], weights, d.weights.encoding],
  ];
  neuronView.nodes.tables.replaceChildren(...tables.map(([caption, rows, columns, values, encoding]) => {
    const matrix = { rows: rows, columns: columns, cells: null, values: { values: values, encoding: encoding } };
    const range = extent([values]);
    const scale = makeScale(range.low, range.high);
    const describe = (i, j) => `row ${rows[i]}, column ${columns[j]}: ` +
      preciseText(values[i * columns.length + j], encoding);
    return el('figure', { className: 'matrix', testid: 'neuron-matrix', 'data-name': caption.split(' ')[0] }, [
      el('figcaption', {}, [caption, el('span', { className: 'dims', text: `${rows.length} × ${columns.length}` })]),
      matrixTable(matrix, scale, describe),
    ]);
  }));
  Object.assign(neuronView.section.dataset, {
    layer: String(d.layer_numbers[layer]), head: String(head), query: String(query),
  });
}
