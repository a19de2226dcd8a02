/* headwise report, the model view: layers × heads of small maps, and the large view of one. */

// ------------------------------------------------------------------------------------------ model view

const THUMB_MAX = 64; // model-view thumbnails of longer maps are downsampled to at most 64 × 64
const THUMB_PX = 76; // a thumbnail's size on screen

const modelView = { map: 0, grid: null, cells: [], dialog: null, absolute: false };

function buildModelView(report) {
  const section = viewSection('model-view', 'Model view');
  const select = mapSelector(report, 'model-map-select', 'model-view-map');
  modelView.note = el('p', { className: 'note', testid: 'model-view-note' });
  modelView.grid = el('div', { className: 'model-grid', testid: 'model-grid' });
  // One absolute scale (0 to 1) for every map, or each map to its own largest weight (the default, which
  // shows the pattern of a flat map too, but makes a uniform untrained map look as strong as a peaked one).
  const absolute = el('input', { type: 'checkbox', id: 'model-view-absolute', testid: 'model-view-absolute' });
  const controls = [el('label', {}, [absolute, ' one scale for every map: 0 to 1'])];
  if (report.maps.length > 1) {
    controls.unshift(el('label', { for: 'model-view-map', text: 'Attention ' }), select);
  }
  section.append(el('div', { className: 'controls' }, controls), modelView.note, modelView.grid);
  absolute.addEventListener('change', () => {
    modelView.absolute = absolute.checked;
    renderModelGrid(report);
  });
  select.addEventListener('change', () => {
    modelView.map = Number(select.value);
    renderModelGrid(report);
  });
  modelView.grid.addEventListener('click', (event) => {
    const cell = event.target.closest('button.model-cell');
    if (cell) openLarge(report, modelView.map, Number(cell.dataset.layer), Number(cell.dataset.head));
  });
  modelView.dialog = buildLargeView(report);
  section.append(modelView.dialog);
  renderModelGrid(report);
  return section;
}

/** The grid of layers × heads for the chosen map; thumbnails drawn as they come into view. */
function renderModelGrid(report) {
  const map = report.maps[modelView.map];
  const grid = modelView.grid;
  forget(modelView.cells);
  modelView.cells = [];
  grid.replaceChildren(el('div', { className: 'axis' }));
  // The layers and heads the report asks for (bertviz's include_layers, include_heads), or all of them.
  const chosen = (asked, count) => (asked || Array.from({ length: count }, (_, i) => i)).filter((i) => i < count);
  const layers = chosen(report.model_view.layers, map.layers);
  const heads = chosen(report.model_view.heads, map.heads);
  grid.style.gridTemplateColumns = `auto repeat(${heads.length}, ${THUMB_PX + 6}px)`;
  for (const h of heads) grid.append(el('div', { className: 'axis', text: `head ${h}` }));
  for (const l of layers) {
    grid.append(el('div', { className: 'axis layer', text: `layer ${l}` }));
    for (const h of heads) {
      const canvas = el('canvas', { width: THUMB_PX, height: THUMB_PX, 'aria-hidden': 'true' });
      canvas.style.width = canvas.style.height = `${THUMB_PX}px`;
      const cell = el('button', {
        type: 'button', className: 'model-cell', testid: 'model-cell', 'data-layer': l, 'data-head': h,
        'aria-label': `${map.title}, layer ${l}, head ${h}: open large`, title: `layer ${l}, head ${h}`,
      }, [canvas]);
      grid.append(cell);
      modelView.cells.push(cell);
      drawLazily(cell, () => drawThumbnail(map, l, h, canvas, cell));
    }
  }
  const longest = Math.max(map.nq, map.nk);
  const scale = modelView.absolute
    ? 'every map coloured on one scale, from 0 (white) to 1 (dark). '
    : 'each map coloured from 0 (white) to its own largest weight (dark), so that a uniform map looks as ' +
      'dark as a peaked one: tick "one scale" to compare them. ';
  const subset = layers.length < map.layers || heads.length < map.heads
    ? `layers ${layers.join(', ')} of ${map.layers} × heads ${heads.join(', ')} of ${map.heads}`
    : `${plural(map.layers, 'layer')} × ${plural(map.heads, 'head')}`;
  modelView.note.textContent = `${subset} of ` +
    `${map.title}, ${map.nq} query × ${map.nk} key tokens; ${scale}` +
    (longest > THUMB_MAX
      ? `Thumbnails of maps over ${THUMB_MAX} tokens are downsampled (each pixel the mean of a ` +
        `${Math.ceil(longest / THUMB_MAX)} × ${Math.ceil(longest / THUMB_MAX)} block) and drawn as they ` +
        'scroll into view. '
      : '') +
    'Click a map to open it large, with its tokens and every weight.';
}

/** "1 layer", "6 layers". */
function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function drawThumbnail(map, layer, head, canvas, cell) {
  const small = downsample(map.values, mapOffset(map, layer, head), map.nq, map.nk, THUMB_MAX);
  let high = 0;
  for (let i = 0; i < small.rows * small.cols; i++) high = Math.max(high, small.values[small.offset + i]);
  const size = THUMB_PX / Math.max(small.rows, small.cols);
  paintHeatmap(canvas, small, { scale: makeScale(0, modelView.absolute ? 1 : high || 1), cell: size });
  cell.dataset.drawn = 'true';
  if (small.factor > 1) cell.dataset.downsampled = String(small.factor);
}

// ------------------------------------------------------------------------------------------ large view

function buildLargeView(report) {
  const title = el('h2', { id: 'large-view-title', testid: 'large-view-title' });
  const toHead = el('button', {
    type: 'button', testid: 'large-view-to-head', text: 'Show in the head view',
  });
  const close = el('button', { type: 'button', testid: 'large-view-close', text: 'Close' });
  const canvas = el('canvas', { className: 'heatmap', testid: 'large-view-canvas', role: 'img' });
  const dialog = el('dialog', {
    className: 'large', testid: 'large-view', 'aria-labelledby': 'large-view-title',
  }, [el('header', {}, [title, el('div', { className: 'actions' }, [toHead, close])])]);
  const note = el('p', { className: 'note', testid: 'large-view-note' });
  const legendBox = el('div');
  dialog.append(note, legendBox, el('div', { className: 'large-canvas' }, [canvas]));
  const large = { dialog, title, note, legendBox, canvas, geometry: null, map: 0, layer: 0, head: 0 };
  modelView.large = large;
  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener('close', hideTooltip);
  toHead.addEventListener('click', () => {
    dialog.close();
    const nodes = headView.nodes;
    if (headView.map !== large.map) {
      headView.map = large.map;
      headView.layer = large.layer;
      renderHeadMap(report);
    }
    headView.layer = large.layer;
    nodes.layerSelect.value = String(large.layer);
    headView.heads = new Set([large.head]);
    unfocus();
    drawHeadView(report);
    document.getElementById('head-view').scrollIntoView();
  });
  attachTooltip(canvas, () => large.geometry, (i, j) => {
    const map = report.maps[large.map];
    const w = map.values[mapOffset(map, large.layer, large.head) + i * map.nk + j];
    const tokens = `query ${i} “${map.queryTokens[i]}” → key ${j} “${map.keyTokens[j]}”`;
    return `${tokens}\nweight ${preciseText(w, map.encoding)}`;
  });
  return dialog;
}

/** Opens the large view of one layer and head: token labels, a legend, every weight on hover. */
function openLarge(report, m, layer, head) {
  const large = modelView.large;
  const map = report.maps[m];
  Object.assign(large, { map: m, layer: layer, head: head });
  large.title.textContent = `${map.title} · layer ${layer} · head ${head}`;
  large.dialog.dataset.layer = String(layer);
  large.dialog.dataset.head = String(head);
  const room = Math.max(200, Math.min(window.innerWidth * 0.92 - 170, window.innerHeight * 0.94 - 250));
  const cell = Math.min(56, room / Math.max(map.nq, map.nk));
  const scale = makeScale(0, mapMaximum(map, layer, head) || 1);
  large.legendBox.replaceChildren(legend(scale, false, 'rows: queries · columns: keys'));
  const grid = { values: map.values, offset: mapOffset(map, layer, head), rows: map.nq, cols: map.nk };
  large.geometry = paintHeatmap(large.canvas, grid, {
    scale: scale, cell: cell, rowLabels: map.queryTokens, colLabels: map.keyTokens,
    format: cellText,
  });
  large.canvas.setAttribute('aria-label', `${large.title.textContent}: ${map.nq} × ${map.nk} heatmap`);
  const stride = Math.max(1, Math.ceil(LABEL_PX / cell));
  const labelled = stride > 1 ? `${map.nq} × ${map.nk} tokens: every ${stride}th token is labelled. ` : '';
  large.note.textContent = labelled +
    `Hover over a cell for its tokens and weight; weights ${report.precision[map.encoding]}.`;
  if (!large.dialog.open) large.dialog.showModal();
}
