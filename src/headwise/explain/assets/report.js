/*
 * headwise report: draws the report embedded as JSON in the page's script element #report-data.
 *
 *   walkthrough  every traced step in the order of the computation: name, formula, sentence, shape, and its
 *                matrices side by side (one per head) as heatmaps; small ones are tables with their numbers
 *   head view    the heads of one layer as lines from each query token (left) to the key tokens (right),
 *                opacity = weight; head buttons pick the heads, hovering or clicking a token focuses it
 *   model view   layers × heads of small maps, drawn lazily as they scroll into view; a click opens one
 *                large, with token labels and each weight on hover
 *
 * Every piece of text from the report reaches the page through textContent or setAttribute, never as HTML.
 * Plain ES2017, no libraries, no network. Tests hook onto the data-testid attributes, and onto
 * <body data-ready="true">, set once the first views are drawn.
 */
(function () {
  'use strict';

  // ------------------------------------------------------------------------------------------ settings

  const TABLE_MAX_ROWS = 32; // matrices up to 32 rows × 16 columns are tables with every number printed
  const TABLE_MAX_COLUMNS = 16;
  const STEP_CANVAS_PX = 420; // larger ones: a canvas heatmap about this wide, values on hover
  const THUMB_MAX = 64; // model-view thumbnails of longer maps are downsampled to at most 64 × 64
  const THUMB_PX = 76; // a thumbnail's size on screen
  const NUMBERS_MIN_CELL = 34; // the large view prints the weight in cells at least this wide (px)
  const LABEL_PX = 12; // labels are drawn for every k-th row or column so that they stay this far apart
  const LABEL_CHARS = 14; // longer labels are cut with …
  const LINE_MIN = 0.01; // head view: weights below this draw no line (at that opacity it is invisible)
  const LONG_TOKENS = 64; // head view: with more tokens, each query draws only its TOP_K strongest links
  const TOP_K = 3;
  const ROW_PX = 20; // head view: the height of one token; matches .tokens button in report.css
  const LINES_PX = 240; // head view: the width of the area between the two columns of tokens
  const ALPHA_LEVELS = 32; // head view: lines are batched by opacity, rounded to 1/32
  const FRAME_BUDGET_MS = 12; // lazy drawing: at most this much work per animation frame
  // Categorical colours for heads (head h gets HEAD_COLORS[h], then generated hues past 12).
  const HEAD_COLORS = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [57, 59, 121], [173, 73, 74],
  ];
  // Colour scales: white to blue for values of one sign, blue-white-red around 0 for signed values.
  const SEQUENTIAL = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const DIVERGING = [
    [33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247], [253, 219, 199], [239, 138, 98],
    [178, 24, 43],
  ];
  const MASKED = [200, 200, 200]; // -inf (masked scores) and nan
  const INK = '#1d2430';
  const MUTED = '#5b6474';
  const LABEL_FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
  const NUMBER_FONT = '11px ui-monospace, Menlo, Consolas, "Liberation Mono", monospace';

  // ------------------------------------------------------------------------------------------ the DOM

  /** A new element: props set as attributes (text as textContent, testid as data-testid), then children. */
  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const key of Object.keys(props)) {
        const value = props[key];
        if (value === undefined || value === null || value === false) continue;
        if (key === 'text') node.textContent = String(value);
        else if (key === 'className') node.className = value;
        else if (key === 'testid') node.setAttribute('data-testid', value);
        else node.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (const child of children || []) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /** "rgb(r, g, b)" or "rgba(r, g, b, a)" for a colour [r, g, b]. */
  function css(rgb, alpha) {
    return alpha === undefined ? `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`
      : `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, ${alpha})`;
  }

  /** A label cut to LABEL_CHARS characters. */
  function short(label) {
    const text = String(label);
    return text.length > LABEL_CHARS ? text.slice(0, LABEL_CHARS - 1) + '…' : text;
  }

  /** A section of the page with its heading, labelled by it. */
  function viewSection(id, title) {
    return el('section', { className: 'view', id: id, 'aria-labelledby': `${id}-title` }, [
      el('h2', { id: `${id}-title`, text: title }),
    ]);
  }

  /** Head h's colour [r, g, b]. */
  function headColor(h) {
    if (h < HEAD_COLORS.length) return HEAD_COLORS[h];
    const hue = (h * 137.508) % 360; // the golden angle keeps generated hues apart
    return hslToRgb(hue / 360, 0.6, 0.45);
  }

  function hslToRgb(h, s, l) {
    const f = (n) => {
      const k = (n + h * 12) % 12;
      const a = s * Math.min(l, 1 - l);
      return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
    };
    return [f(0), f(8), f(4)];
  }

  // ------------------------------------------------------------------------------------------ the data

  // Arrays travel as base64 (see html.py): "float64" exactly; "fixed4" (uint16 ten-thousandths),
  // "float16" and "float32" deflated after splitting their bytes into planes. Little-endian, as typed
  // arrays are on every platform browsers run on.
  const ITEM_SIZE = { float64: 8, float32: 4, float16: 2, fixed4: 2 };

  function base64Bytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /** Byte planes (every value's byte 0, then every byte 1, ...) back to whole values. */
  function joinPlanes(planes, size) {
    if (size === 1) return planes;
    const n = planes.length / size;
    const bytes = new Uint8Array(planes.length);
    for (let p = 0; p < size; p++) {
      const start = p * n;
      for (let i = 0; i < n; i++) bytes[i * size + p] = planes[start + i];
    }
    return bytes;
  }

  let halfTable = null; // float16 bit pattern -> its value, built on first use
  function halfValues() {
    if (halfTable) return halfTable;
    halfTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) {
      const sign = bits & 0x8000 ? -1 : 1;
      const exponent = (bits >> 10) & 0x1f;
      const fraction = bits & 0x3ff;
      if (exponent === 0) halfTable[bits] = sign * fraction * Math.pow(2, -24);
      else if (exponent === 31) halfTable[bits] = fraction ? NaN : sign * Infinity;
      else halfTable[bits] = sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
    }
    return halfTable;
  }

  /** An encoded array -> {shape, encoding, values: a flat typed array}. */
  async function decodeArray(encoded) {
    const n = encoded.shape.reduce((a, b) => a * b, 1);
    let bytes = base64Bytes(encoded.data);
    if (encoded.deflated) bytes = joinPlanes(await inflate(bytes), ITEM_SIZE[encoded.encoding]);
    let values;
    if (encoded.encoding === 'float64') values = new Float64Array(bytes.buffer, 0, n);
    else if (encoded.encoding === 'float32') values = new Float32Array(bytes.buffer, 0, n);
    else if (encoded.encoding === 'float16' || encoded.encoding === 'fixed4') {
      const stored = new Uint16Array(bytes.buffer, 0, n);
      values = new Float32Array(n);
      if (encoded.encoding === 'float16') {
        const table = halfValues();
        for (let i = 0; i < n; i++) values[i] = table[stored[i]];
      } else {
        for (let i = 0; i < n; i++) values[i] = stored[i] / 10000;
      }
    } else throw new Error(`unknown encoding ${encoded.encoding}`);
    return { shape: encoded.shape, encoding: encoded.encoding, values: values };
  }

  /** The embedded report with its arrays decoded. */
  async function readReport() {
    const data = JSON.parse(document.getElementById('report-data').textContent);
    for (const step of data.steps) {
      for (const matrix of step.matrices) matrix.values = await decodeArray(matrix.values);
    }
    data.maps = [];
    for (const maps of data.attention) {
      const weights = await decodeArray(maps.weights); // (L, H, Nq, Nk)
      data.maps.push({
        title: maps.title,
        queryTokens: maps.query_tokens,
        keyTokens: maps.key_tokens,
        layers: weights.shape[0],
        heads: weights.shape[1],
        nq: weights.shape[2],
        nk: weights.shape[3],
        encoding: weights.encoding,
        values: weights.values,
        maxima: new Map(), // "layer/head" -> the map's largest weight
        topK: new Map(), // "layer/head" -> each query's TOP_K strongest keys
      });
    }
    return data;
  }

  /** Where the map of (layer, head) starts in map.values: its Nq × Nk weights follow, row by row. */
  function mapOffset(map, layer, head) {
    return (layer * map.heads + head) * map.nq * map.nk;
  }

  function mapMaximum(map, layer, head) {
    const key = `${layer}/${head}`;
    if (!map.maxima.has(key)) {
      const start = mapOffset(map, layer, head);
      let high = 0;
      for (let i = start; i < start + map.nq * map.nk; i++) if (map.values[i] > high) high = map.values[i];
      map.maxima.set(key, high);
    }
    return map.maxima.get(key);
  }

  /** For each query, the indices of its TOP_K strongest keys (-1 where it has fewer): Int32Array(Nq·K). */
  function topKeys(map, layer, head) {
    const key = `${layer}/${head}`;
    if (!map.topK.has(key)) {
      const start = mapOffset(map, layer, head);
      const best = new Int32Array(map.nq * TOP_K).fill(-1);
      const bestWeights = new Float64Array(TOP_K);
      for (let i = 0; i < map.nq; i++) {
        bestWeights.fill(-1);
        const row = start + i * map.nk;
        for (let j = 0; j < map.nk; j++) {
          const w = map.values[row + j];
          if (!(w > bestWeights[TOP_K - 1])) continue;
          let k = TOP_K - 1; // insertion into the sorted few
          while (k > 0 && bestWeights[k - 1] < w) {
            bestWeights[k] = bestWeights[k - 1];
            best[i * TOP_K + k] = best[i * TOP_K + k - 1];
            k--;
          }
          bestWeights[k] = w;
          best[i * TOP_K + k] = j;
        }
      }
      map.topK.set(key, best);
    }
    return map.topK.get(key);
  }

  // ------------------------------------------------------------------------------------------ numbers

  /** A number as the terminal prints it: an integer as it is, else 4 decimals; -inf as −∞. */
  function cellText(v) {
    if (Number.isNaN(v)) return 'nan';
    if (!Number.isFinite(v)) return v < 0 ? '−∞' : '∞';
    if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
    if (Math.abs(v) >= 1e6) return v.toExponential(3);
    return v.toFixed(4);
  }

  /** A number with the digits its encoding keeps: all of float64's, 7 of float32's, 3 of float16's, or
   *  the 4 decimals of fixed4. */
  function preciseText(v, encoding) {
    if (!Number.isFinite(v)) return cellText(v);
    if (encoding === 'float64') return String(v);
    if (encoding === 'float32') return String(Number(v.toPrecision(7)));
    if (encoding === 'float16') return String(Number(v.toPrecision(3)));
    return v.toFixed(4);
  }

  // ------------------------------------------------------------------------------------------ colours

  /** A colour scale from low to high: sequential, or diverging around 0 when the values change sign.
   *  rgb(v) -> [r, g, b]; non-finite values get MASKED. A 256-entry table keeps painting fast. */
  function makeScale(low, high) {
    const diverging = low < 0 && high > 0;
    if (diverging) {
      const reach = Math.max(-low, high);
      low = -reach;
      high = reach;
    }
    if (!(high > low)) high = low + 1; // a constant matrix: any colour will do
    const stops = diverging ? DIVERGING : SEQUENTIAL;
    const table = new Uint8Array(256 * 3);
    for (let k = 0; k < 256; k++) {
      const t = (diverging || low >= 0 ? k : 255 - k) / 255; // all-negative: darker is more negative
      const c = interpolate(stops, t);
      table.set(c, k * 3);
    }
    const span = high - low;
    return {
      low: low,
      high: high,
      diverging: diverging,
      stops: stops,
      index(v) {
        const k = Math.round(((v - low) / span) * 255);
        return k < 0 ? 0 : k > 255 ? 255 : k;
      },
      rgb(v) {
        if (!Number.isFinite(v)) return MASKED;
        const k = this.index(v) * 3;
        return [table[k], table[k + 1], table[k + 2]];
      },
      table: table,
    };
  }

  function interpolate(stops, t) {
    const x = t * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  }

  /** The smallest and largest finite values of some arrays, and whether any value is not finite. */
  function extent(arrays) {
    let low = Infinity;
    let high = -Infinity;
    let masked = false;
    for (const values of arrays) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!Number.isFinite(v)) masked = true;
        else {
          if (v < low) low = v;
          if (v > high) high = v;
        }
      }
    }
    if (low === Infinity) low = high = 0;
    return { low: Math.min(low, 0), high: Math.max(high, 0), masked: masked };
  }

  /** Black or white, whichever reads better on a background [r, g, b]. */
  function textOn(rgb) {
    const luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255;
    return luminance < 0.55 ? '#ffffff' : INK;
  }

  /** A legend: the lowest value, a colour bar, the highest value (and the masked swatch when needed). */
  function legend(scale, masked, note) {
    const stops = [];
    for (let k = 0; k <= 8; k++) stops.push(css(scale.rgb(scale.low + ((scale.high - scale.low) * k) / 8)));
    const bar = el('span', { className: 'bar', 'aria-hidden': 'true' });
    bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
    const box = el('div', { className: 'legend', testid: 'legend' }, [
      el('span', { text: cellText(scale.low) }),
      bar,
      el('span', { text: cellText(scale.high) }),
      scale.diverging ? el('span', { text: '(white = 0)' }) : null,
    ]);
    if (masked) {
      const swatch = el('span', { className: 'swatch', 'aria-hidden': 'true' });
      box.append(swatch, el('span', { text: '−∞ (masked)' }));
    }
    if (note) box.append(el('span', { text: note }));
    return box;
  }

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

  // ------------------------------------------------------------------------------------------ walkthrough

  function buildWalkthrough(report) {
    const section = viewSection('walkthrough', 'Step by step');
    if (!report.steps.length) {
      section.append(el('p', { className: 'note', text: 'This report has no step-by-step walkthrough.' }));
      return section;
    }
    section.append(
      el('p', {
        className: 'note',
        text: `Every step of the computation in order, with its shape (${report.legend}). Matrices are ` +
          `rows × columns of the last two axes, one per head where there are heads. Small matrices print ` +
          `their numbers; larger ones are heatmaps: hover for each value.`,
      }),
    );
    const list = el('ol', { className: 'steps' });
    report.steps.forEach((step, index) => list.append(buildStep(report, step, index)));
    section.append(list);
    return section;
  }

  function buildStep(report, step, index) {
    const range = extent(step.matrices.map((m) => m.values.values));
    const scale = makeScale(range.low, range.high);
    const axes = step.axes.length ? ` = (${step.axes.join(', ')})` : '';
    const shape = `shape (${step.shape.join(', ')})${axes}`;
    const item = el('li', { className: 'step', testid: 'step', 'data-name': step.name }, [
      el('h3', {}, [el('span', { className: 'number', text: `${index + 1}.` }), step.name]),
      el('p', { className: 'formula' }, [el('code', { text: step.formula })]),
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
    return item;
  }

  /** One matrix as a captioned figure: a table of its numbers when small, else a heatmap canvas. */
  function buildMatrix(step, matrix, scale) {
    const rows = matrix.rows.length;
    const cols = matrix.columns.length;
    const figure = el('figure', { className: 'matrix', testid: 'matrix' }, [
      el('figcaption', {}, [
        matrix.caption || step.name,
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

  // ------------------------------------------------------------------------------------------ head view

  const headView = {
    map: 0,
    layer: 0,
    heads: new Set(),
    focus: null, // {side: 'query' | 'key', index} or null
    pinned: false,
    nodes: null,
  };

  function buildHeadView(report) {
    const section = viewSection('head-view', 'Head view');
    if (!report.maps.length) {
      section.append(el('p', { className: 'note', text: 'This report has no attention maps.' }));
      return section;
    }
    section.append(el('p', {
      className: 'note',
      text: 'Lines join each query token (left) to the key tokens it attends to (right); a line\'s opacity ' +
        'is the weight, its colour the head. Click a head to show it alone (click again for all; Shift- or ' +
        'Ctrl-click to add or remove one). Hover over a token to focus its lines; click it to keep the ' +
        'focus (Esc or a second click lets go).',
    }));
    const mapSelect = mapSelector(report, 'head-map-select', 'head-view-map');
    const layerSelect = el('select', { id: 'head-view-layer', testid: 'layer-select' });
    const nodes = {
      mapSelect: mapSelect,
      layerSelect: layerSelect,
      heads: el('div', { className: 'head-buttons', role: 'group', 'aria-label': 'Heads' }),
      note: el('p', { className: 'note', testid: 'head-view-note' }),
      empty: el('p', {
        className: 'note', testid: 'head-view-empty', hidden: true,
        text: `No weight of these heads reaches ${LINE_MIN}: their attention is spread thin over the keys.`,
      }),
      queries: el('div', { className: 'tokens queries', testid: 'query-tokens' }),
      keys: el('div', { className: 'tokens keys', testid: 'key-tokens' }),
      canvas: el('canvas', {
        className: 'lines', testid: 'head-lines', role: 'img', 'aria-label': 'lines from queries to keys',
      }),
    };
    const columns = [nodes.queries, nodes.canvas, nodes.keys];
    nodes.view = el('div', { className: 'head-view', testid: 'head-view' }, columns);
    headView.nodes = nodes;
    const controls = el('div', { className: 'controls' }, [
      report.maps.length > 1 ? el('label', { for: 'head-view-map', text: 'Attention ' }) : null,
      report.maps.length > 1 ? mapSelect : null,
      el('label', { for: 'head-view-layer', text: 'Layer ' }),
      layerSelect,
    ]);
    nodes.scroll = el('div', { className: 'head-scroll' }, [nodes.view]);
    section.append(controls, nodes.heads, nodes.note, nodes.empty, nodes.scroll);
    // Lines are drawn only where the scrolled box shows them (a long map's thousands of lines, drawn
    // whole, take seconds to rasterise without a GPU): redraw them as it scrolls, once per frame.
    let scrolling = false;
    nodes.scroll.addEventListener('scroll', () => {
      if (scrolling) return;
      scrolling = true;
      requestAnimationFrame(() => {
        scrolling = false;
        drawHeadView(report);
      });
    }, { passive: true });

    mapSelect.addEventListener('change', () => {
      headView.map = Number(mapSelect.value);
      headView.layer = 0;
      renderHeadMap(report);
    });
    layerSelect.addEventListener('change', () => {
      headView.layer = Number(layerSelect.value);
      unfocus();
      drawHeadView(report);
    });
    nodes.heads.addEventListener('click', (event) => {
      const button = event.target.closest('button');
      if (button) chooseHead(report, button, event);
    });
    for (const column of [nodes.queries, nodes.keys]) {
      column.addEventListener('mouseover', (event) => {
        const token = event.target.closest('button');
        if (token && !headView.pinned) focusToken(report, token);
      });
      column.addEventListener('mouseleave', () => {
        if (!headView.pinned && headView.focus) {
          unfocus();
          drawHeadView(report);
        }
      });
      column.addEventListener('click', (event) => {
        const token = event.target.closest('button');
        if (!token) return;
        const same = headView.pinned && headView.focus && headView.focus.side === token.dataset.side &&
          headView.focus.index === Number(token.dataset.index);
        if (same) unfocus();
        else {
          headView.pinned = true;
          headView.focus = { side: token.dataset.side, index: Number(token.dataset.index) };
        }
        drawHeadView(report);
      });
    }
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && headView.pinned) {
        unfocus();
        drawHeadView(report);
      }
    });
    renderHeadMap(report);
    return section;
  }

  function mapSelector(report, testid, id) {
    const select = el('select', { id: id, testid: testid });
    report.maps.forEach((map, m) => select.append(el('option', { value: m, text: map.title })));
    return select;
  }

  function unfocus() {
    headView.focus = null;
    headView.pinned = false;
  }

  function focusToken(report, token) {
    const focus = { side: token.dataset.side, index: Number(token.dataset.index) };
    if (headView.focus && headView.focus.side === focus.side && headView.focus.index === focus.index) return;
    headView.focus = focus;
    drawHeadView(report);
  }

  /** Head buttons: a click shows that head alone (or all again); Shift/Ctrl/Cmd-click adds or removes it. */
  function chooseHead(report, button, event) {
    const map = report.maps[headView.map];
    const all = () => new Set(Array.from({ length: map.heads }, (_, h) => h));
    if (button.dataset.head === undefined) headView.heads = all();
    else {
      const h = Number(button.dataset.head);
      const heads = headView.heads;
      if (event.shiftKey || event.ctrlKey || event.metaKey) {
        if (heads.has(h)) heads.delete(h);
        else heads.add(h);
        if (!heads.size) headView.heads = all();
      } else headView.heads = heads.size === 1 && heads.has(h) ? all() : new Set([h]);
    }
    drawHeadView(report);
  }

  /** A new map (or the first): layer options, head buttons and the two columns of tokens. */
  function renderHeadMap(report) {
    const map = report.maps[headView.map];
    const nodes = headView.nodes;
    nodes.mapSelect.value = String(headView.map);
    nodes.layerSelect.replaceChildren();
    for (let l = 0; l < map.layers; l++) nodes.layerSelect.append(el('option', { value: l, text: `${l}` }));
    nodes.layerSelect.value = String(headView.layer);
    nodes.heads.replaceChildren(
      el('button', { type: 'button', className: 'all', testid: 'head-all', text: 'All heads' }),
    );
    for (let h = 0; h < map.heads; h++) {
      const button = el('button', {
        type: 'button', testid: 'head-button', 'data-head': h, 'aria-pressed': 'true',
      }, [el('span', { className: 'dot', 'aria-hidden': 'true' }), `head ${h}`]);
      button.style.setProperty('--head', css(headColor(h)));
      nodes.heads.append(button);
    }
    headView.heads = new Set(Array.from({ length: map.heads }, (_, h) => h));
    unfocus();
    const column = (tokens, side, heading) => {
      const children = [el('div', { className: 'heading', 'aria-hidden': 'true', text: heading })];
      tokens.forEach((token, i) => {
        children.push(el('button', {
          type: 'button', testid: `${side}-token`, 'data-side': side, 'data-index': i,
          title: `${side} ${i}: ${token}`, 'aria-pressed': 'false', text: token,
        }));
      });
      return children;
    };
    nodes.queries.replaceChildren(...column(map.queryTokens, 'query', 'queries'));
    nodes.keys.replaceChildren(...column(map.keyTokens, 'key', 'keys'));
    const long = Math.max(map.nq, map.nk) > LONG_TOKENS;
    nodes.note.textContent = (long
      ? `${map.nq} × ${map.nk} tokens: to keep the view readable and fast, each query draws only its ` +
        `${TOP_K} strongest links per head; hover over or click a token to see all of its links. `
      : '') + `Weights below ${LINE_MIN} draw no line. Weights ${report.precision[map.encoding]}.`;
    drawHeadView(report);
  }

  /** Lines for the chosen layer, heads and focus, and the tokens' highlights. */
  function drawHeadView(report) {
    const map = report.maps[headView.map];
    const nodes = headView.nodes;
    const canvas = nodes.canvas;
    const rowsHigh = Math.max(map.nq, map.nk) * ROW_PX;
    const dpr = Math.min(window.devicePixelRatio || 1, 2, 30000 / Math.max(rowsHigh, 1));
    if (canvas.height !== Math.round(rowsHigh * dpr)) {
      canvas.width = Math.round(LINES_PX * dpr);
      canvas.height = Math.round(rowsHigh * dpr);
      canvas.style.width = `${LINES_PX}px`;
      canvas.style.height = `${rowsHigh}px`;
    }
    const context = canvas.getContext('2d');
    context.setTransform(dpr, 0, 0, dpr, 0, 0);
    context.clearRect(0, 0, LINES_PX, rowsHigh);
    context.lineWidth = 2;
    // The band of the canvas the scrolled box shows (the canvas starts below the headings' row), with a
    // margin; the box's height is unknown until it is on the page, so guess the window's then.
    const scroller = nodes.scroll;
    const seen = scroller.clientHeight || window.innerHeight;
    const bandTop = scroller.scrollTop - ROW_PX - 60;
    const bandBottom = scroller.scrollTop + seen + 60;
    context.save();
    context.beginPath();
    context.rect(0, Math.max(0, bandTop), LINES_PX, bandBottom - Math.max(0, bandTop));
    context.clip();
    const heads = Array.from(headView.heads).sort((a, b) => a - b);
    const focus = headView.focus;
    const long = Math.max(map.nq, map.nk) > LONG_TOKENS;
    const y = (i) => (i + 0.5) * ROW_PX;
    let lines = 0;
    for (const h of heads) {
      const start = mapOffset(map, headView.layer, h);
      const paths = new Array(ALPHA_LEVELS + 1); // one path per opacity level
      const add = (i, j) => {
        const w = map.values[start + i * map.nk + j];
        if (!(w >= LINE_MIN)) return;
        if (Math.max(y(i), y(j)) < bandTop || Math.min(y(i), y(j)) > bandBottom) return; // out of sight
        const level = Math.max(1, Math.min(ALPHA_LEVELS, Math.round(w * ALPHA_LEVELS)));
        if (!paths[level]) paths[level] = new Path2D();
        paths[level].moveTo(0, y(i));
        paths[level].lineTo(LINES_PX, y(j));
        lines++;
      };
      if (focus && focus.side === 'query') for (let j = 0; j < map.nk; j++) add(focus.index, j);
      else if (focus) for (let i = 0; i < map.nq; i++) add(i, focus.index);
      else if (long) {
        const best = topKeys(map, headView.layer, h);
        for (let i = 0; i < map.nq; i++) {
          for (let k = 0; k < TOP_K; k++) if (best[i * TOP_K + k] >= 0) add(i, best[i * TOP_K + k]);
        }
      } else for (let i = 0; i < map.nq; i++) for (let j = 0; j < map.nk; j++) add(i, j);
      context.strokeStyle = css(headColor(h));
      for (let level = 1; level <= ALPHA_LEVELS; level++) {
        if (!paths[level]) continue;
        context.globalAlpha = level / ALPHA_LEVELS;
        context.stroke(paths[level]);
      }
    }
    context.restore();
    highlightTokens(map, heads);
    for (const button of nodes.heads.querySelectorAll('button[data-head]')) {
      button.setAttribute('aria-pressed', String(headView.heads.has(Number(button.dataset.head))));
    }
    nodes.empty.hidden = heads.some((h) => mapMaximum(map, headView.layer, h) >= LINE_MIN);
    nodes.view.dataset.lines = String(lines);
    nodes.view.dataset.heads = heads.join(',');
    nodes.view.dataset.layer = String(headView.layer);
    nodes.view.dataset.focus = focus ? `${focus.side}:${focus.index}` : '';
  }

  /** The focused token framed; the other side's tokens shaded by their weight, in the colour of the head
   *  that gives them the most. */
  function highlightTokens(map, heads) {
    const nodes = headView.nodes;
    const focus = headView.focus;
    for (const column of [nodes.queries, nodes.keys]) {
      for (const token of column.querySelectorAll('button')) {
        token.style.backgroundColor = '';
        token.classList.remove('focused', 'pinned');
        token.setAttribute('aria-pressed', 'false');
      }
    }
    if (!focus) return;
    const own = (focus.side === 'query' ? nodes.queries : nodes.keys).querySelectorAll('button')[focus.index];
    own.classList.add('focused');
    if (headView.pinned) {
      own.classList.add('pinned');
      own.setAttribute('aria-pressed', 'true');
    }
    const others = (focus.side === 'query' ? nodes.keys : nodes.queries).querySelectorAll('button');
    others.forEach((token, other) => {
      let best = 0;
      let bestHead = heads[0];
      for (const h of heads) {
        const start = mapOffset(map, headView.layer, h);
        const w = focus.side === 'query'
          ? map.values[start + focus.index * map.nk + other]
          : map.values[start + other * map.nk + focus.index];
        if (w > best) {
          best = w;
          bestHead = h;
        }
      }
      if (best >= LINE_MIN) {
        token.style.backgroundColor = css(headColor(bestHead), Math.min(1, best).toFixed(3));
      }
    });
  }

  // ------------------------------------------------------------------------------------------ model view

  const modelView = { map: 0, grid: null, cells: [], dialog: null };

  function buildModelView(report) {
    const section = viewSection('model-view', 'Model view');
    if (!report.maps.length) {
      section.append(el('p', { className: 'note', text: 'This report has no attention maps.' }));
      return section;
    }
    const select = mapSelector(report, 'model-map-select', 'model-view-map');
    modelView.note = el('p', { className: 'note', testid: 'model-view-note' });
    modelView.grid = el('div', { className: 'model-grid', testid: 'model-grid' });
    if (report.maps.length > 1) {
      const label = el('label', { for: 'model-view-map', text: 'Attention ' });
      section.append(el('div', { className: 'controls' }, [label, select]));
    }
    section.append(modelView.note, modelView.grid);
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
    grid.style.gridTemplateColumns = `auto repeat(${map.heads}, ${THUMB_PX + 6}px)`;
    for (let h = 0; h < map.heads; h++) grid.append(el('div', { className: 'axis', text: `head ${h}` }));
    for (let l = 0; l < map.layers; l++) {
      grid.append(el('div', { className: 'axis layer', text: `layer ${l}` }));
      for (let h = 0; h < map.heads; h++) {
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
    modelView.note.textContent = `${map.layers} layers × ${map.heads} heads of ${map.title}, ` +
      `${map.nq} query × ${map.nk} key tokens; each map coloured from 0 (white) to its own largest ` +
      'weight (dark). ' +
      (longest > THUMB_MAX
        ? `Thumbnails of maps over ${THUMB_MAX} tokens are downsampled (each pixel the mean of a ` +
          `${Math.ceil(longest / THUMB_MAX)} × ${Math.ceil(longest / THUMB_MAX)} block) and drawn as they ` +
          'scroll into view. '
        : '') +
      'Click a map to open it large, with its tokens and every weight.';
  }

  function drawThumbnail(map, layer, head, canvas, cell) {
    const small = downsample(map.values, mapOffset(map, layer, head), map.nq, map.nk, THUMB_MAX);
    let high = 0;
    for (let i = 0; i < small.rows * small.cols; i++) high = Math.max(high, small.values[small.offset + i]);
    const size = THUMB_PX / Math.max(small.rows, small.cols);
    paintHeatmap(canvas, small, { scale: makeScale(0, high || 1), cell: size });
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

  // ------------------------------------------------------------------------------------------ the page

  function buildPage(report) {
    const main = el('main', {}, [
      el('header', { className: 'page' }, [
        el('h1', { testid: 'title', text: report.title }),
        el('p', { testid: 'description', text: report.description }),
        el('nav', { className: 'sections', 'aria-label': 'Sections' }, [
          el('a', { href: '#walkthrough', text: 'Step by step' }),
          el('a', { href: '#head-view', text: 'Head view' }),
          el('a', { href: '#model-view', text: 'Model view' }),
        ]),
      ]),
    ]);
    document.body.append(main, tooltip);
    main.append(buildWalkthrough(report), buildHeadView(report), buildModelView(report));
  }

  async function start() {
    try {
      const report = await readReport();
      // For tests and the curious: the decoded report, and one weight by its indices.
      window.headwise = {
        report: report,
        weight: (m, layer, head, i, j) => {
          const map = report.maps[m];
          return map.values[mapOffset(map, layer, head) + i * map.nk + j];
        },
      };
      buildPage(report);
      lazy.built = true;
      requestAnimationFrame(() => requestAnimationFrame(checkReady));
    } catch (error) {
      const text = `This report could not be drawn: ${error}`;
      document.body.append(el('p', { className: 'error', testid: 'error', text: text }));
      document.body.dataset.error = String(error);
    }
  }

  start();
})();
