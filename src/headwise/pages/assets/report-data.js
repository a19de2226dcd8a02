/* headwise report, reading it: the embedded JSON parsed, its arrays decoded (html.py encodes them). */

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
  if (data.neurons) {
    const neurons = data.neurons;
    for (const name of ['queries', 'keys', 'scores', 'weights']) neurons[name] = await decodeArray(neurons[name]);
    neurons.layers = neurons.queries.shape[0];
    neurons.heads = neurons.queries.shape[1];
    neurons.kvHeads = neurons.keys.shape[1];
    neurons.dh = neurons.queries.shape[3];
  }
  for (const playground of data.playgrounds) {
    for (const [name, value] of Object.entries(playground)) {
      if (value && value.encoding) playground[name] = await decodeArray(value);
    }
  }
  data.maps = [];
  for (const maps of data.attention) {
    const weights = await decodeArray(maps.weights); // (L, H, Nq, Nk)
    data.maps.push({
      title: maps.title,
      queryTokens: maps.query_tokens,
      keyTokens: maps.key_tokens,
      pairStart: maps.pair_start, // where sentence B starts, or null
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
