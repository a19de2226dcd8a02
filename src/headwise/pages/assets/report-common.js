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
 *
 * The code comes in pieces, assets/report-*.js, that html.py joins in a fixed order (its SCRIPT) into the
 * page's one script, inside one strict-mode function: every piece sees the names of the others, none is
 * left on window. This first piece holds what all of them use: the shared settings, the DOM, numbers and
 * colours.
 */

// ------------------------------------------------------------------------------------------ settings

const NUMBERS_MIN_CELL = 34; // the large view prints the weight in cells at least this wide (px)
const LABEL_PX = 12; // labels are drawn for every k-th row or column so that they stay this far apart
const LABEL_CHARS = 14; // longer labels are cut with …
const FRAME_BUDGET_MS = 12; // lazy drawing: at most this much work per animation frame
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

/** A <select> of the report's attention maps, each option's value its index. */
function mapSelector(report, testid, id) {
  const select = el('select', { id: id, testid: testid });
  report.maps.forEach((map, m) => select.append(el('option', { value: m, text: map.title })));
  return select;
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
