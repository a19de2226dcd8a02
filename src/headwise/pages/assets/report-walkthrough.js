/* headwise report, the walkthrough: every traced step and its matrices, as tables or heatmaps. */

// ------------------------------------------------------------------------------------------ walkthrough

const TABLE_MAX_ROWS = 32; // matrices up to 32 rows × 16 columns are tables with every number printed
const TABLE_MAX_COLUMNS = 16;
const STEP_CANVAS_PX = 420; // larger ones: a canvas heatmap about this wide, values on hover

/** The steps, in order (buildPage calls it only for a report that has some). */
function buildWalkthrough(report) {
  const section = viewSection('walkthrough', 'Step by step');
  section.append(
    el('p', {
      className: 'note',
      text: `Every step of the computation in order, with its shape (${report.legend}). Matrices are ` +
        `rows × columns of the last two axes, one per head where there are heads. Small matrices print ` +
        `their numbers; larger ones are heatmaps: hover for each value.`,
    }),
  );
  const list = el('ol', { className: 'steps' });
  let stage = '';
  report.steps.forEach((step, index) => {
    if (step.stage && step.stage !== stage) {
      // The lectures' step the next steps belong to ("8. Attention weights: ...").
      stage = step.stage;
      list.append(el('li', { className: 'stage', testid: 'stage', text: `Lecture step ${stage}` }));
    }
    list.append(buildStep(report, step, index));
  });
  section.append(list);
  return section;
}

function buildStep(report, step, index) {
  const range = extent(step.matrices.map((m) => m.values.values));
  const scale = makeScale(range.low, range.high);
  const lectureAxes = step.lecture_axes.length ? ` = (${step.lecture_axes.join(', ')})` : '';
  const axes = step.axes.length ? `${lectureAxes} = (${step.axes.join(', ')})` : '';
  const shape = step.shape.length ? `shape (${step.shape.join(', ')})${axes}` : '';
  const item = el('li', { className: 'step', testid: 'step', 'data-name': step.name }, [
    el('h3', {}, [el('span', { className: 'number', text: `${index + 1}.` }), step.name]),
    el('p', { className: 'formula' }, [el('code', { text: step.formula })]),
    step.lecture ? el('p', { className: 'lecture', testid: 'lecture' }, ['book: ', el('code', { text: step.lecture })]) : null,
    el('p', { className: 'sentence', text: step.sentence }),
    el('p', { className: 'shape', text: shape }),
    legend(scale, range.masked),
  ]);
  const inexact = step.matrices.find((m) => m.values.encoding !== 'float64');
  if (inexact) {
    const precision = report.precision[inexact.values.encoding];
    item.append(el('p', { className: 'note', text: `Values ${precision}.` }));
  }
  const row = el('div', { className: 'matrices' });
  for (const matrix of step.matrices) row.append(buildMatrix(step, matrix, scale));
  item.append(row);
  if (step.checks.length) {
    // What the step's numbers bear out, as the terminal prints it after the step.
    const checks = el('ul', { className: 'checks', testid: 'checks' });
    for (const check of step.checks) {
      const mark = check.passed ? '✓' : '✗';
      checks.append(el('li', { className: check.passed ? 'passed' : 'failed', text: `${mark} ${check.text}` }));
    }
    item.append(checks);
  }
  return item;
}

/** One matrix as a captioned figure: a table of its numbers when small, else a heatmap canvas. */
function buildMatrix(step, matrix, scale) {
  const rows = matrix.rows.length;
  const cols = matrix.columns.length;
  const figure = el('figure', { className: 'matrix', testid: 'matrix' }, [
    el('figcaption', {}, [
      matrix.caption, // a head's or a part's name; the step's own is the heading above
      el('span', { className: 'dims', text: `${rows} × ${cols}` }),
    ]),
  ]);
  const values = matrix.values.values;
  const encoding = matrix.values.encoding;
  const describe = (i, j) => {
    const value = preciseText(values[i * cols + j], encoding);
    const printed = matrix.cells ? ` (${matrix.cells[i][j]})` : '';
    return `row ${matrix.rows[i]}, column ${matrix.columns[j]}: ${value}${printed}`;
  };
  if (rows <= TABLE_MAX_ROWS && cols <= TABLE_MAX_COLUMNS) {
    figure.append(matrixTable(matrix, scale, describe));
    return figure;
  }
  const canvas = el('canvas', {
    className: 'heatmap', testid: 'heatmap', role: 'img',
    'aria-label': `${matrix.caption || step.name}: a ${rows} × ${cols} heatmap; hover for values`,
  });
  let geometry = null;
  drawLazily(canvas, () => {
    geometry = paintHeatmap(canvas, { values: values, offset: 0, rows: rows, cols: cols }, {
      scale: scale,
      cellX: Math.min(16, STEP_CANVAS_PX / cols),
      cellY: Math.min(16, STEP_CANVAS_PX / rows),
      rowLabels: matrix.rows,
      colLabels: matrix.columns,
    });
    canvas.dataset.drawn = 'true';
  });
  const nothing = { left: 0, top: 0, cellX: 1, cellY: 1, rows: 0, cols: 0 }; // until drawn
  attachTooltip(canvas, () => geometry || nothing, describe);
  figure.append(canvas);
  return figure;
}

function matrixTable(matrix, scale, describe) {
  const cols = matrix.columns.length;
  const values = matrix.values.values;
  const head = el('tr', {}, [el('th', { scope: 'col' })]);
  for (const label of matrix.columns) {
    head.append(el('th', { scope: 'col', title: label, text: short(label) }));
  }
  const body = el('tbody');
  matrix.rows.forEach((label, i) => {
    const row = el('tr', {}, [el('th', { scope: 'row', title: label, text: short(label) })]);
    for (let j = 0; j < cols; j++) {
      const v = values[i * cols + j];
      const text = matrix.cells ? matrix.cells[i][j] : cellText(v);
      const cell = el('td', { title: describe(i, j), text: text });
      const rgb = scale.rgb(v);
      cell.style.backgroundColor = css(rgb);
      cell.style.color = textOn(rgb);
      row.append(cell);
    }
    body.append(row);
  });
  return el('table', { className: 'matrix', testid: 'matrix-table' }, [el('thead', {}, [head]), body]);
}
