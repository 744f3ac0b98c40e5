// The EarthGPT-X web map: scene imagery (titiler through the API) and footprints, results coloured by level and
// label (Martin's vector tiles through the API), click for a result's answer, draw a point, box or polygon and ask
// a question, areas of interest listed and drawable. Everything comes from this API's origin.
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import "./style.css";

const origin = window.location.origin;
const LEVEL_COLOURS = ["match", ["get", "level"], 1, "#4e79a7", 2, "#e15759", 3, "#f28e2b", 4, "#59a14f", "#888888"];
// Labels seen often get their own outline colour; others take their level's.
const LABEL_COLOURS = [
  "match", ["get", "label"],
  "ship", "#b40000", "airplane", "#6f00b4", "vehicle", "#b46f00", "storage tank", "#006fb4", "bridge", "#3c3c3c",
  LEVEL_COLOURS,
];
const EMPTY = { type: "FeatureCollection", features: [] };

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = window.localStorage.getItem("egx-api-key") || "";
keyInput.addEventListener("change", () => window.localStorage.setItem("egx-api-key", keyInput.value.trim()));

function headers(json = false) {
  const h = {};
  const key = keyInput.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(`${origin}${path}`, { ...options, headers: { ...headers(!!options.body), ...(options.headers || {}) } });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.reason || `${response.status} ${response.statusText}`);
  return body;
}

const map = new maplibregl.Map({
  container: "map",
  style: {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#dde3ea" } }],
  },
  center: [0, 20],
  zoom: 2,
  transformRequest: (url) => (url.startsWith(origin) ? { url, headers: headers() } : { url }),
});
window.egxMap = map; // for the browser test and the console
map.addControl(new maplibregl.NavigationControl(), "top-right");
map.addControl(new maplibregl.ScaleControl(), "bottom-right");

const vector = (layer) => ({ type: "vector", tiles: [`${origin}/tiles/${layer}/{z}/{x}/{y}`], minzoom: 0, maxzoom: 16 });

map.on("load", async () => {
  map.addSource("scenes", vector("scenes"));
  map.addSource("results", vector("results"));
  map.addSource("result_points", vector("result_points"));
  map.addSource("aois", vector("aois"));
  map.addSource("drawn", { type: "geojson", data: EMPTY });
  map.addSource("answers", { type: "geojson", data: EMPTY });
  map.addLayer({ id: "scene-footprints", type: "line", source: "scenes", "source-layer": "scenes", paint: { "line-color": "#1f3b73", "line-width": 2 } });
  map.addLayer({ id: "aoi-fill", type: "fill", source: "aois", "source-layer": "aois", filter: ["==", ["get", "active"], true], paint: { "fill-color": "#ffd400", "fill-opacity": 0.12 } });
  map.addLayer({ id: "aoi-outline", type: "line", source: "aois", "source-layer": "aois", paint: { "line-color": "#c9a600", "line-dasharray": [2, 2] } });
  map.addLayer({ id: "result-fill", type: "fill", source: "results", "source-layer": "results", filter: ["==", ["geometry-type"], "Polygon"], paint: { "fill-color": LEVEL_COLOURS, "fill-opacity": 0.35 } });
  map.addLayer({ id: "result-outline", type: "line", source: "results", "source-layer": "results", paint: { "line-color": LABEL_COLOURS, "line-width": 2 } });
  // Below zoom 13 small objects are points (a tile drops polygons smaller than one of its units).
  map.addLayer({ id: "result-points", type: "circle", source: "result_points", "source-layer": "result_points", maxzoom: 13, paint: { "circle-color": LEVEL_COLOURS, "circle-radius": 4, "circle-stroke-color": LABEL_COLOURS, "circle-stroke-width": 1.5 } });
  map.addLayer({ id: "answer-outline", type: "line", source: "answers", paint: { "line-color": "#00a0a0", "line-width": 3 } });
  map.addLayer({ id: "drawn-fill", type: "fill", source: "drawn", filter: ["==", ["geometry-type"], "Polygon"], paint: { "fill-color": "#00a0a0", "fill-opacity": 0.15 } });
  map.addLayer({ id: "drawn-line", type: "line", source: "drawn", paint: { "line-color": "#00a0a0", "line-width": 2 } });
  map.addLayer({ id: "drawn-point", type: "circle", source: "drawn", filter: ["==", ["geometry-type"], "Point"], paint: { "circle-color": "#00a0a0", "circle-radius": 6 } });
  await fitToScenes();
  await refreshAois();
  document.body.dataset.ready = "true";
});

// --- scenes: footprints come from the tiles; imagery as one raster layer per scene in view ---------------------
const imagery = new Set();

function bounds(geometry) {
  const flat = JSON.stringify(geometry.coordinates).match(/-?[\d.e+-]+/g).map(Number);
  const xs = flat.filter((_, i) => i % 2 === 0), ys = flat.filter((_, i) => i % 2 === 1);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

async function scenesInView() {
  const b = map.getBounds();
  const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => Math.max(-180, Math.min(180, v)).toFixed(6));
  bbox[1] = Math.max(-90, bbox[1]); bbox[3] = Math.min(90, bbox[3]);
  const page = await api(`/ogc/collections/ogc.scenes/items?limit=50&bbox=${bbox.join(",")}`);
  return page.features;
}

function showImagery(scenes) {
  for (const scene of scenes) {
    if (imagery.has(scene.id) || !scene.geometry) continue;
    imagery.add(scene.id);
    const id = `imagery-${scene.id}`;
    const [west, , east] = bounds(scene.geometry);
    // The API refuses imagery tiles over 32 times as wide as the scene (services/api/routers/imagery.py,
    // MAX_TILE_OVER_SCENE): below that zoom the map shows the footprint only and asks for no imagery.
    const minzoom = Math.max(0, Math.min(22, Math.ceil(Math.log2(360 / (32 * Math.max(east - west, 1e-9))))));
    map.addSource(id, { type: "raster", tiles: [`${origin}/v1/scenes/${scene.id}/tiles/{z}/{x}/{y}.png`], tileSize: 256, bounds: bounds(scene.geometry), minzoom });
    map.addLayer({ id, type: "raster", source: id, paint: { "raster-opacity": 0.9 } }, "scene-footprints");
  }
}

async function fitToScenes() {
  try {
    const page = await api("/ogc/collections/ogc.scenes/items?limit=50");
    const boxes = page.features.filter((f) => f.geometry).map((f) => bounds(f.geometry));
    if (boxes.length) {
      const west = Math.min(...boxes.map((b) => b[0])), south = Math.min(...boxes.map((b) => b[1]));
      const east = Math.max(...boxes.map((b) => b[2])), north = Math.max(...boxes.map((b) => b[3]));
      map.fitBounds([[west, south], [east, north]], { padding: 40, animate: false });
    }
    $("status").textContent = `${page.numberMatched ?? page.features.length} scenes`;
    showImagery(await scenesInView());
  } catch (error) {
    $("status").textContent = `scenes: ${error.message}`;
  }
}

map.on("moveend", async () => {
  if (!map.isStyleLoaded()) return;
  try { showImagery(await scenesInView()); } catch { /* shown when asked again */ }
});

// --- click a result --------------------------------------------------------------------------------------------
for (const layer of ["result-fill", "result-outline", "result-points"]) {
  map.on("click", layer, (event) => {
    if (mode) return;
    const p = event.features[0].properties;
    $("details").innerHTML = "";
    const rows = [["Answer", p.answer_text], ["Label", p.label ?? "—"], ["Level", `L${p.level} (${p.task})`], ["Score", p.score ?? "—"], ["Scene", p.scene_id], ["Model", p.model_version]];
    const table = document.createElement("dl");
    for (const [name, value] of rows) {
      const dt = document.createElement("dt"); dt.textContent = name;
      const dd = document.createElement("dd"); dd.textContent = value; dd.dataset.field = name.toLowerCase();
      table.append(dt, dd);
    }
    $("details").append(table);
  });
  map.on("mouseenter", layer, () => { map.getCanvas().style.cursor = "pointer"; });
  map.on("mouseleave", layer, () => { map.getCanvas().style.cursor = ""; });
}

// --- drawing: point (click), box (drag), polygon (clicks, double-click to finish) ---------------------------------
let mode = null;
let drawn = null; // the finished GeoJSON geometry
let start = null;
let vertices = [];

function setDrawn(geometry) {
  drawn = geometry;
  map.getSource("drawn").setData(geometry ? { type: "Feature", geometry, properties: {} } : EMPTY);
  $("ask").disabled = !geometry;
  $("save-aoi").disabled = !geometry || geometry.type === "Point";
}

function setMode(next) {
  mode = mode === next ? null : next;
  for (const button of document.querySelectorAll(".tools button")) button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
  const hints = { point: "Click a place.", box: "Drag a box.", polygon: "Click the corners; double-click to finish." };
  $("hint").textContent = hints[mode] || "Choose a tool, then draw on the map.";
  if (mode === "box") map.dragPan.disable(); else map.dragPan.enable();
  if (mode === "polygon") map.doubleClickZoom.disable(); else map.doubleClickZoom.enable();
  vertices = [];
  start = null;
}
for (const button of document.querySelectorAll(".tools button")) button.addEventListener("click", () => setMode(button.dataset.mode));

const lngLat = (e) => [Number(e.lngLat.lng.toFixed(7)), Number(e.lngLat.lat.toFixed(7))];
const boxPolygon = ([x1, y1], [x2, y2]) => ({
  type: "Polygon",
  coordinates: [[[Math.min(x1, x2), Math.min(y1, y2)], [Math.max(x1, x2), Math.min(y1, y2)], [Math.max(x1, x2), Math.max(y1, y2)], [Math.min(x1, x2), Math.max(y1, y2)], [Math.min(x1, x2), Math.min(y1, y2)]]],
});

map.on("mousedown", (e) => { if (mode === "box") { start = lngLat(e); e.preventDefault(); } });
map.on("mousemove", (e) => {
  if (mode === "box" && start) setDrawn(boxPolygon(start, lngLat(e)));
  if (mode === "polygon" && vertices.length) {
    map.getSource("drawn").setData({ type: "Feature", geometry: { type: "LineString", coordinates: [...vertices, lngLat(e)] }, properties: {} });
  }
});
map.on("mouseup", (e) => {
  if (mode !== "box" || !start) return;
  const end = lngLat(e);
  if (end[0] !== start[0] && end[1] !== start[1]) { setDrawn(boxPolygon(start, end)); drawnKind = "box"; }
  setMode(null);
});
let drawnKind = null;
map.on("click", (e) => {
  if (mode === "point") { setDrawn({ type: "Point", coordinates: lngLat(e) }); drawnKind = "point"; setMode(null); }
  else if (mode === "polygon") vertices.push(lngLat(e));
});
map.on("dblclick", (e) => {
  if (mode !== "polygon") return;
  e.preventDefault();
  const ring = vertices.filter((v, i) => i === 0 || v[0] !== vertices[i - 1][0] || v[1] !== vertices[i - 1][1]);
  if (ring.length >= 3) { setDrawn({ type: "Polygon", coordinates: [[...ring, ring[0]]] }); drawnKind = "polygon"; }
  setMode(null);
});

// --- asking -----------------------------------------------------------------------------------------------------
function prompt() {
  if (drawnKind === "box") {
    const ring = drawn.coordinates[0];
    return { bbox: [ring[0][0], ring[0][1], ring[2][0], ring[2][1]] };
  }
  return { geometry: drawn };
}

function showAnswer(query) {
  const box = $("answer");
  box.innerHTML = "";
  const head = document.createElement("p");
  head.textContent = `Query ${query.id}: ${query.status}${query.reason ? ` (${query.reason})` : ""}`;
  box.append(head);
  const features = query.answers?.features || [];
  for (const feature of features) {
    const p = feature.properties;
    const item = document.createElement("div");
    item.className = "answer";
    item.textContent = `L${p.level} ${p.task}: ${p.answer}${p.label ? ` [${p.label}]` : ""}`;
    box.append(item);
  }
  map.getSource("answers").setData({ type: "FeatureCollection", features: features.filter((f) => f.geometry) });
}

$("ask").addEventListener("click", async () => {
  $("ask").disabled = true;
  $("status").textContent = "asking…";
  try {
    const accepted = await api("/v1/queries", { method: "POST", body: JSON.stringify({ instruction: $("instruction").value, ...prompt() }) });
    let query = { id: accepted.id, status: accepted.status };
    showAnswer(query);
    for (let i = 0; i < 20 && !["answered", "no_coverage", "failed"].includes(query.status); i += 1) {
      query = await api(`/v1/queries/${accepted.id}?wait=15`);
      showAnswer(query);
    }
    $("status").textContent = query.status;
  } catch (error) {
    $("status").textContent = `error: ${error.message}`;
  } finally {
    $("ask").disabled = !drawn;
  }
});

// --- areas of interest ------------------------------------------------------------------------------------------
async function refreshAois() {
  try {
    const aois = await api("/v1/aois?limit=200");
    const list = $("aois");
    list.innerHTML = "";
    for (const aoi of aois) {
      const item = document.createElement("li");
      item.textContent = `${aoi.name || aoi.id.slice(0, 8)}: ${aoi.instruction}`;
      if (!aoi.active) item.className = "inactive";
      list.append(item);
    }
  } catch (error) {
    $("aois").textContent = `AOIs: ${error.message}`;
  }
}

$("save-aoi").addEventListener("click", async () => {
  const name = window.prompt("Name of the area of interest") || null;
  try {
    await api("/v1/aois", { method: "POST", body: JSON.stringify({ name, instruction: $("instruction").value, geometry: drawn }) });
    $("status").textContent = "AOI saved";
    await refreshAois();
    map.getSource("aois").setTiles(map.getSource("aois").tiles);
  } catch (error) {
    $("status").textContent = `error: ${error.message}`;
  }
});
