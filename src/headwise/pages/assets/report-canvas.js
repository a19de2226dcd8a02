/* headwise report, canvases: heatmaps, the tooltip over them, and lazy drawing (<body data-ready>). */

// ------------------------------------------------------------------------------------------ heatmaps

/**
 * Paints a heatmap of `grid` (rows × cols values, row-major from grid.offset) on a canvas: cells of
 * options.cell CSS pixels (or cellX wide and cellY high; fractions are fine: one pixel per value is
 * scaled), labels along both axes when given (every k-th where they would overlap), and the numbers
 * when cells are wide enough. Returns the geometry the tooltip needs:
 * {left, top, cellX, cellY, rows, cols}.
 */
function paintHeatmap(canvas, grid, options) {
  const cellX = options.cellX || options.cell;
  const cellY = options.cellY || options.cell;
  const context = canvas.getContext('2d');
  context.font = LABEL_FONT;
  const rowLabels = options.rowLabels;
  const colLabels = options.colLabels;
  const rowStride = Math.max(1, Math.ceil(LABEL_PX / cellY));
  const colStride = Math.max(1, Math.ceil(LABEL_PX / cellX));
  const widest = (labels, stride) => {
    let width = 0;
    for (let i = 0; labels && i < labels.length; i += stride) {
      width = Math.max(width, context.measureText(short(labels[i])).width);
    }
    return Math.ceil(width);
  };
  const left = rowLabels ? Math.min(120, widest(rowLabels, rowStride) + 8) : 0;
  const top = colLabels ? Math.min(100, widest(colLabels, colStride) + 8) : 0;
  const width = Math.ceil(left + grid.cols * cellX + (colLabels ? 8 : 0));
  const height = Math.ceil(top + grid.rows * cellY + (rowLabels ? 6 : 0)); // room for the last label
  const dpr = Math.min(window.devicePixelRatio || 1, 2, 16000 / Math.max(width, height, 1));
  canvas.width = Math.max(1, Math.round(width * dpr));
  canvas.height = Math.max(1, Math.round(height * dpr));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  context.setTransform(dpr, 0, 0, dpr, 0, 0);
  context.clearRect(0, 0, width, height);

  // One pixel per value on a scratch canvas, then scaled into place.
  const scratch = document.createElement('canvas');
  scratch.width = grid.cols;
  scratch.height = grid.rows;
  const scratchContext = scratch.getContext('2d');
  const image = scratchContext.createImageData(grid.cols, grid.rows);
  const pixels = image.data;
  const scale = options.scale;
  const table = scale.table;
  for (let i = 0, p = 0; i < grid.rows; i++) {
    const row = grid.offset + i * grid.cols;
    for (let j = 0; j < grid.cols; j++, p += 4) {
      const v = grid.values[row + j];
      if (Number.isFinite(v)) {
        const k = scale.index(v) * 3;
        pixels[p] = table[k];
        pixels[p + 1] = table[k + 1];
        pixels[p + 2] = table[k + 2];
      } else {
        pixels[p] = MASKED[0];
        pixels[p + 1] = MASKED[1];
        pixels[p + 2] = MASKED[2];
      }
      pixels[p + 3] = 255;
    }
  }
  scratchContext.putImageData(image, 0, 0);
  context.imageSmoothingEnabled = Math.min(cellX, cellY) < 1; // blocks when enlarging, smooth shrinking
  context.drawImage(scratch, left, top, grid.cols * cellX, grid.rows * cellY);

  // Labels: rows right-aligned on the left, columns upright above.
  context.fillStyle = MUTED;
  context.textBaseline = 'middle';
  if (rowLabels) {
    context.textAlign = 'right';
    for (let i = 0; i < grid.rows; i += rowStride) {
      context.fillText(short(rowLabels[i]), left - 4, top + (i + 0.5) * cellY, left - 6);
    }
  }
  if (colLabels) {
    context.textAlign = 'left';
    for (let j = 0; j < grid.cols; j += colStride) {
      context.save();
      context.translate(left + (j + 0.5) * cellX, top - 4);
      context.rotate(-Math.PI / 2);
      context.fillText(short(colLabels[j]), 0, 0, top - 6);
      context.restore();
    }
  }
  // Numbers in cells wide enough to hold them.
  if (options.format && cellX >= NUMBERS_MIN_CELL && cellY >= LABEL_PX + 2) {
    context.font = NUMBER_FONT;
    context.textAlign = 'center';
    for (let i = 0; i < grid.rows; i++) {
      for (let j = 0; j < grid.cols; j++) {
        const v = grid.values[grid.offset + i * grid.cols + j];
        context.fillStyle = textOn(scale.rgb(v));
        context.fillText(options.format(v), left + (j + 0.5) * cellX, top + (i + 0.5) * cellY, cellX - 4);
      }
    }
  }
  // The geometry, also on the canvas for tests: where cell (i, j) is, in CSS pixels from its corner.
  Object.assign(canvas.dataset, { left: left, top: top, cellX: cellX, cellY: cellY });
  return { left: left, top: top, cellX: cellX, cellY: cellY, rows: grid.rows, cols: grid.cols };
}

/** Averages f × f blocks of a rows × cols map so that its longer side is at most `most` values. */
function downsample(values, offset, rows, cols, most) {
  const f = Math.ceil(Math.max(rows, cols) / most);
  if (f <= 1) return { values: values, offset: offset, rows: rows, cols: cols, factor: 1 };
  const r = Math.ceil(rows / f);
  const c = Math.ceil(cols / f);
  const sums = new Float32Array(r * c);
  const blockOf = new Int32Array(cols);
  for (let j = 0; j < cols; j++) blockOf[j] = Math.floor(j / f);
  for (let i = 0; i < rows; i++) {
    const out = Math.floor(i / f) * c;
    const row = offset + i * cols;
    for (let j = 0; j < cols; j++) sums[out + blockOf[j]] += values[row + j];
  }
  for (let bi = 0; bi < r; bi++) {
    const height = Math.min(f, rows - bi * f);
    for (let bj = 0; bj < c; bj++) sums[bi * c + bj] /= height * Math.min(f, cols - bj * f);
  }
  return { values: sums, offset: 0, rows: r, cols: c, factor: f };
}

// The tooltip that follows the pointer over heatmaps: one for the page.
const tooltip = el('div', { className: 'tooltip', role: 'tooltip', testid: 'tooltip', hidden: true });

function showTooltip(text, x, y) {
  tooltip.textContent = text;
  tooltip.hidden = false;
  const room = window.innerWidth - tooltip.offsetWidth - 8;
  tooltip.style.left = `${Math.min(x + 14, room)}px`;
  tooltip.style.top = `${y + 16}px`;
}

function hideTooltip() {
  tooltip.hidden = true;
}

/** Tooltips over a heatmap canvas: geometry() gives its current geometry, describe(i, j) the text. */
function attachTooltip(canvas, geometry, describe) {
  canvas.addEventListener('mousemove', (event) => {
    const g = geometry();
    const box = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - box.left - g.left) / g.cellX);
    const i = Math.floor((event.clientY - box.top - g.top) / g.cellY);
    const inside = i >= 0 && j >= 0 && i < g.rows && j < g.cols;
    if (inside) showTooltip(describe(i, j), event.clientX, event.clientY);
    else hideTooltip();
  });
  canvas.addEventListener('mouseleave', hideTooltip);
}

// ------------------------------------------------------------------------------------------ lazy drawing

// Canvases are drawn when they come near the viewport, a few per animation frame, so that a report of
// many long maps opens at once. <body data-ready="true"> once the views are built, the observer has
// reported on every canvas observed at start, and those in view are drawn.
const lazy = {
  jobs: new Map(), // element -> function that draws it
  queue: [],
  running: false,
  reported: false, // the observer's first report has arrived
  built: false, // the views are on the page
  observer: null,
};

if ('IntersectionObserver' in window) {
  lazy.observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting && lazy.jobs.has(entry.target)) {
          lazy.queue.push(entry.target);
          lazy.observer.unobserve(entry.target);
        }
      }
      lazy.reported = true;
      schedule();
    },
    { rootMargin: '300px' },
  );
}

/** Draw `element` with draw() once it comes near the viewport. */
function drawLazily(element, draw) {
  lazy.jobs.set(element, draw);
  if (lazy.observer) lazy.observer.observe(element);
  else {
    lazy.queue.push(element);
    schedule();
  }
}

/** Forget elements that left the page before being drawn. */
function forget(elements) {
  for (const element of elements) {
    lazy.jobs.delete(element);
    if (lazy.observer) lazy.observer.unobserve(element);
  }
}

function schedule() {
  if (!lazy.running && lazy.queue.length) {
    lazy.running = true;
    requestAnimationFrame(drawSome);
  }
  checkReady();
}

function drawSome() {
  const start = performance.now();
  while (lazy.queue.length && performance.now() - start < FRAME_BUDGET_MS) {
    const element = lazy.queue.shift();
    const draw = lazy.jobs.get(element);
    lazy.jobs.delete(element);
    if (draw && element.isConnected) draw();
  }
  lazy.running = false;
  schedule();
}

function checkReady() {
  const waiting = lazy.observer && lazy.jobs.size && !lazy.reported;
  if (lazy.built && !waiting && !lazy.queue.length && !lazy.running && !document.body.dataset.ready) {
    document.body.dataset.ready = 'true';
  }
}
