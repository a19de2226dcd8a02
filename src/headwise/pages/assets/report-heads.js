/* headwise report, the head view: the heads of one layer as lines from query tokens to key tokens. */

// ------------------------------------------------------------------------------------------ head view

const LINE_MIN = 0.01; // weights below this draw no line (at that opacity it is invisible)
const LONG_TOKENS = 64; // with more tokens, each query draws only its TOP_K strongest links
const TOP_K = 3;
const ROW_PX = 20; // the height of one token; matches .tokens button in report.css
const LINES_PX = 240; // the width of the area between the two columns of tokens
const ALPHA_LEVELS = 32; // lines are batched by opacity, rounded to 1/32
// Categorical colours for heads (head h gets HEAD_COLORS[h], then generated hues past 12).
const HEAD_COLORS = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
  [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [57, 59, 121], [173, 73, 74],
];

const headView = {
  map: 0,
  layer: 0,
  heads: new Set(),
  focus: null, // {side: 'query' | 'key', index} or null
  pinned: false,
  pair: 'all', // a sentence pair's links drawn: 'all', 'ab' (A's queries to B's keys) or 'ba'

  nodes: null,
};

function buildHeadView(report) {
  const section = viewSection('head-view', 'Head view');
  section.append(el('p', {
    className: 'note',
    text: 'Lines join each query token (left) to the key tokens it attends to (right); a line\'s opacity ' +
      'is the weight, its colour the head. Click a head to show it alone (click again for all; Shift- or ' +
      'Ctrl-click to add or remove one). Hover over a token to focus its lines; click it to keep the ' +
      'focus (Esc or a second click lets go).',
  }));
  const mapSelect = mapSelector(report, 'head-map-select', 'head-view-map');
  const layerSelect = el('select', { id: 'head-view-layer', testid: 'layer-select' });
  const pairSelect = el('select', { id: 'head-view-pair', testid: 'pair-select' }, [
    el('option', { value: 'all', text: 'all' }),
    el('option', { value: 'ab', text: 'A → B' }),
    el('option', { value: 'ba', text: 'B → A' }),
  ]);
  const nodes = {
    mapSelect: mapSelect,
    layerSelect: layerSelect,
    pairSelect: pairSelect,
    pairLabel: el('label', { for: 'head-view-pair', text: 'Sentences ' }),
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
    nodes.pairLabel,
    pairSelect,
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
  pairSelect.addEventListener('change', () => {
    headView.pair = pairSelect.value;
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
  // A sentence pair (sentence B from map.pairStart on): its filter, and B's tokens marked.
  const paired = map.pairStart !== null && map.pairStart !== undefined;
  nodes.pairSelect.hidden = nodes.pairLabel.hidden = !paired;
  headView.pair = 'all';
  nodes.pairSelect.value = 'all';
  const column = (tokens, side, heading) => {
    const children = [el('div', { className: 'heading', 'aria-hidden': 'true', text: heading })];
    tokens.forEach((token, i) => {
      const sentence = paired ? (i < map.pairStart ? ' (sentence A)' : ' (sentence B)') : '';
      children.push(el('button', {
        type: 'button', testid: `${side}-token`, 'data-side': side, 'data-index': i,
        className: paired && i >= map.pairStart ? 'sentence-b' : '',
        title: `${side} ${i}: ${token}${sentence}`, 'aria-pressed': 'false', text: token,
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
  // margin; the box's height is unknown until it is on the page, so guess the window's then, and the
  // whole canvas where the window has no height yet either (a notebook frame not laid out).
  const scroller = nodes.scroll;
  const seen = scroller.clientHeight || window.innerHeight || rowsHigh;
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
  const b = map.pairStart;
  const shown = headView.pair === 'ab' ? (i, j) => i < b && j >= b
    : headView.pair === 'ba' ? (i, j) => i >= b && j < b : () => true;
  let lines = 0;
  for (const h of heads) {
    const start = mapOffset(map, headView.layer, h);
    const paths = new Array(ALPHA_LEVELS + 1); // one path per opacity level
    const add = (i, j) => {
      const w = map.values[start + i * map.nk + j];
      if (!(w >= LINE_MIN) || !shown(i, j)) return;
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
  nodes.view.dataset.pair = headView.pair;
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
