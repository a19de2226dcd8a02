/* headwise report, your own numbers: the walkthrough's inputs and weights in tables to edit, and every
   step recomputed in the page, in float64 as headwise computes it, whenever a number changes. */

// ------------------------------------------------------------------------------------------ playground

const EDITABLE = [ // what a learner edits: [data name, caption]
  ['inputs', 'x (num_tokens × d_in)'],
  ['w_query', 'W_query (d_in × d_out)'],
  ['w_key', 'W_key (d_in × d_out)'],
  ['w_value', 'W_value (d_in × d_out)'],
];
const playground = { example: 0, values: null, nodes: null, result: null };

function buildPlayground(report) {
  const section = viewSection('playground', 'Your own numbers');
  section.append(el('p', {
    className: 'note',
    text: 'Change any number of x, W_query, W_key or W_value: every step below is computed again here, ' +
      'in the page, in float64 as headwise computes it (out_proj and the biases stay as they are). ' +
      'Nothing is sent anywhere. "Reset" puts the example\'s numbers back; "Example" picks another.',
  }));
  const reset = el('button', { type: 'button', testid: 'playground-reset', text: 'Reset' });
  const choice = el('select', { id: 'playground-example', testid: 'playground-example' },
    report.playgrounds.map((one, i) => el('option', { value: i, text: one.name })));
  const editors = el('div', { className: 'matrices', testid: 'playground-editors' });
  const results = el('div', { className: 'playground-results', testid: 'playground-results' });
  playground.nodes = { editors: editors, results: results, section: section };
  const controls = report.playgrounds.length > 1
    ? [el('label', { for: 'playground-example', text: 'Example ' }), choice, reset] : [reset];
  section.append(el('div', { className: 'controls' }, controls), editors, results);
  const start = () => {
    const d = report.playgrounds[playground.example];
    playground.values = {};
    for (const [name] of EDITABLE) playground.values[name] = Float64Array.from(d[name].values);
    editors.replaceChildren(...EDITABLE.map(([name, caption]) => editor(report, name, caption)));
    recomputePlayground(report);
  };
  reset.addEventListener('click', start);
  choice.addEventListener('change', () => {
    playground.example = Number(choice.value);
    start();
  });
  if (window.headwise) window.headwise.playground = () => playground.result;
  start();
  return section;
}

/** The labels of an editable matrix's rows and columns. */
function editorLabels(report, name) {
  const d = report.playgrounds[playground.example];
  const [rows, cols] = d[name].shape;
  const dh = cols / d.heads;
  const columns = name === 'inputs' ? Array.from({ length: cols }, (_, j) => `${j}`)
    : Array.from({ length: cols }, (_, j) => `h${Math.floor(j / dh)}:${j % dh}`);
  const rowLabels = name === 'inputs' ? d.tokens : Array.from({ length: rows }, (_, i) => `${i}`);
  return [rowLabels, columns];
}

/** One matrix as a table of inputs; a change that reads as a number recomputes every step. */
function editor(report, name, caption) {
  const [rows, columns] = editorLabels(report, name);
  const values = playground.values[name];
  const head = el('tr', {}, [el('th', { scope: 'col' }), ...columns.map((c) => el('th', { scope: 'col', text: c }))]);
  const body = el('tbody');
  rows.forEach((label, i) => {
    const row = el('tr', {}, [el('th', { scope: 'row', text: short(label) })]);
    columns.forEach((column, j) => {
      const input = el('input', {
        type: 'text', inputmode: 'decimal', size: 7, testid: 'playground-input', 'data-name': name,
        'data-row': i, 'data-col': j, 'aria-label': `${caption}, row ${label}, column ${column}`,
        value: String(values[i * columns.length + j]),
      });
      input.addEventListener('input', () => {
        const text = input.value.trim();
        const v = Number(text);
        const ok = text !== '' && Number.isFinite(v);
        input.classList.toggle('invalid', !ok);
        if (!ok) return;
        values[i * columns.length + j] = v;
        recomputePlayground(report);
      });
      row.append(el('td', {}, [input]));
    });
    body.append(row);
  });
  return el('figure', { className: 'matrix', 'data-name': name }, [
    el('figcaption', {}, [caption]),
    el('table', { className: 'editor' }, [el('thead', {}, [head]), body]),
  ]);
}

/** x (n × a) @ w (a × b) + bias (b): n × b, each sum from k = 0 up, as one dot product after another. */
function affine(x, n, a, w, b, bias) {
  const out = new Float64Array(n * b);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < b; j++) {
      let s = 0;
      for (let k = 0; k < a; k++) s += x[i * a + k] * w[k * b + j];
      out[i * b + j] = s + bias[j];
    }
  }
  return out;
}

/** Every step again, from the edited numbers: the walkthrough's steps, as (nested) arrays of float64. */
function recomputePlayground(report) {
  const d = report.playgrounds[playground.example];
  const v = playground.values;
  const n = d.tokens.length;
  const din = d.inputs.shape[1];
  const dout = d.w_query.shape[1];
  const heads = d.heads;
  const dh = dout / heads;
  const out = d.w_out.shape[1];
  const queries = affine(v.inputs, n, din, v.w_query, dout, d.b_query.values);
  const keys = affine(v.inputs, n, din, v.w_key, dout, d.b_key.values);
  const values = affine(v.inputs, n, din, v.w_value, dout, d.b_value.values);
  const scale = 1 / Math.sqrt(dh);
  const scores = [];
  const scaled = [];
  const weights = [];
  const context = new Float64Array(n * dout);
  for (let h = 0; h < heads; h++) {
    const s = [];
    const m = [];
    const w = [];
    for (let i = 0; i < n; i++) {
      const row = [];
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let k = 0; k < dh; k++) dot += queries[i * dout + h * dh + k] * keys[j * dout + h * dh + k];
        row.push(dot);
      }
      s.push(row);
      const masked = row.map((x, j) => (d.causal && j > i ? -Infinity : x * scale));
      m.push(masked);
      const high = Math.max(...masked);
      const exps = masked.map((x) => Math.exp(x - high));
      const total = exps.reduce((a, b) => a + b, 0);
      const probabilities = exps.map((x) => x / total);
      w.push(probabilities);
      for (let k = 0; k < dh; k++) {
        let c = 0;
        for (let j = 0; j < n; j++) c += probabilities[j] * values[j * dout + h * dh + k];
        context[i * dout + h * dh + k] = c;
      }
    }
    scores.push(s);
    scaled.push(m);
    weights.push(w);
  }
  const output = affine(context, n, dout, d.w_out.values, out, d.b_out.values);
  const rows = (flat, cols) => Array.from({ length: n }, (_, i) => Array.from(flat.subarray(i * cols, (i + 1) * cols)));
  playground.result = {
    queries: rows(queries, dout), keys: rows(keys, dout), values: rows(values, dout),
    scores: scores, masked_scores: scaled, weights: weights,
    context: rows(context, dout), output: rows(output, out),
  };
  renderPlayground(report);
}

/** The recomputed steps as tables: the projections, each head's scores, masked and scaled scores and
 *  weights, the context and the output. */
function renderPlayground(report) {
  const d = report.playgrounds[playground.example];
  const r = playground.result;
  const dout = d.w_query.shape[1];
  const dh = dout / d.heads;
  const features = Array.from({ length: dout }, (_, j) => `h${Math.floor(j / dh)}:${j % dh}`);
  const outputs = Array.from({ length: d.w_out.shape[1] }, (_, j) => `${j}`);
  const figure = (name, caption, matrix, columns) => {
    const flat = Float64Array.from(matrix.flat());
    const m = { rows: d.tokens, columns: columns, cells: null, values: { values: flat, encoding: 'float64' } };
    const range = extent([flat]);
    const describe = (i, j) => `row ${d.tokens[i]}, column ${columns[j]}: ${String(flat[i * columns.length + j])}`;
    return el('figure', { className: 'matrix', testid: 'playground-step', 'data-name': name }, [
      el('figcaption', {}, [caption]), matrixTable(m, makeScale(range.low, range.high), describe),
    ]);
  };
  const perHead = (name, caption) => r[name].map((matrix, h) => figure(name, `${caption}, head ${h}`, matrix, d.tokens));
  const steps = [
    ['queries = x @ W_query', [figure('queries', 'queries', r.queries, features)]],
    ['keys = x @ W_key', [figure('keys', 'keys', r.keys, features)]],
    ['values = x @ W_value', [figure('values', 'values', r.values, features)]],
    ['scores = queries @ keysᵀ, per head', perHead('scores', 'scores')],
    [`masked and scaled by 1/√head_dim${d.causal ? ' (causal)' : ''}`, perHead('masked_scores', 'masked')],
    ['weights = softmax over the keys', perHead('weights', 'weights')],
    ['context = weights @ values, heads side by side', [figure('context', 'context', r.context, features)]],
    ['output = context @ out_proj + b_o', [figure('output', 'output', r.output, outputs)]],
  ];
  playground.nodes.results.replaceChildren(...steps.map(([title, figures]) => el('div', { className: 'step' }, [
    el('h3', { text: title }), el('div', { className: 'matrices' }, figures),
  ])));
}
