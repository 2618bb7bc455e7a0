// siamcli search page: plain JavaScript, no build step, no third party, works offline.
// Talks to the JSON API under /api/v1; text from the server is only ever set as textContent.
"use strict";

const API = "/api/v1";
const THUMB_SIZE = 256;
const PAGE = 60; // items per page when browsing a label

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("siamcli-token"),
  info: null, // GET /api/v1/index
  last: null, // the last search: {file} or {id}, re-run when k changes
  browse: null, // {label, offset} while browsing a label
  urls: [], // object URLs of the shown thumbnails, revoked on the next render
  previewUrl: null, // object URL of the query's preview, revoked when the preview changes
  asking: null, // the token prompt open now: every request refused meanwhile waits for that one answer
  rerunTimer: null, // the search again with a new k, once the slider rests
  generation: 0, // bumps on each render, so late answers of an older one are dropped
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// ---------------------------------------------------------------- talking to the API

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    await askForToken(Boolean(state.token));
    return api(path, options);
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, describe(body.detail, response));
  return body;
}

function describe(detail, response) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  if (response.status === 503) return `${detail || "The server is busy"} — retrying may help.`;
  return detail || `${response.status} ${response.statusText}`;
}

function askForToken(refused) {
  if (state.asking) return state.asking; // one dialog, however many requests were refused
  const dialog = $("token-dialog");
  $("token-error").hidden = !refused;
  $("token-input").value = "";
  dialog.showModal();
  state.asking = new Promise((resolve) => {
    const done = () => {
      state.token = $("token-input").value.trim();
      sessionStorage.setItem("siamcli-token", state.token);
      dialog.close();
      state.asking = null;
      resolve();
    };
    $("token-ok").onclick = done;
    $("token-input").onkeydown = (event) => event.key === "Enter" && done();
    dialog.oncancel = (event) => event.preventDefault(); // Escape: nothing works without the token
  });
  return state.asking;
}

// ---------------------------------------------------------------- index summary and labels

async function loadIndex() {
  try {
    state.info = await apiJson(`${API}/index`);
  } catch (error) {
    setStatus("error", error.message);
    return;
  }
  const info = state.info;
  const parts = [`${info.count.toLocaleString()} images`, `${info.labels.length} labels`, info.index_type];
  if (info.recall_at_10 !== null && info.index_type !== "flat") parts.push(`recall@10 ${info.recall_at_10.toFixed(3)}`);
  parts.push(info.similarity_threshold === null ? "no match threshold" : `match ≥ ${info.similarity_threshold.toFixed(3)}`);
  $("summary").textContent = parts.join(" · ");
  $("summary").title = `model ${info.model_fingerprint.slice(0, 12)}… · updated ${info.updated || "?"}`;
  showProblem(info.problem);
  renderLabels();
  setStatus("ok", "ready");
}

function renderLabels() {
  if (!state.info) return; // not loaded yet (a search can start first): loadIndex renders them
  const filter = $("label-filter").value.trim().toLowerCase();
  const list = $("labels");
  list.replaceChildren();
  const labels = [...state.info.labels].sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
  for (const { label, count } of labels) {
    if (filter && !label.toLowerCase().includes(filter)) continue;
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "label-button";
    button.classList.toggle("active", state.browse !== null && state.browse.label === label);
    const name = document.createElement("span");
    name.textContent = label || "(no label)";
    const number = document.createElement("span");
    number.className = "count";
    number.textContent = count;
    button.append(name, number);
    button.onclick = () => browse(label);
    item.append(button);
    list.append(item);
  }
}

async function pollReady() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    setStatus(response.ok ? "ok" : "error", response.ok ? "ready" : "not ready");
    if (state.info && body.items !== state.info.count) loadIndex(); // the index was swapped
    showProblem(body.problem);
  } catch {
    setStatus("error", "the server does not answer");
  }
}

function setStatus(kind, text) {
  $("status").className = `status ${kind}`;
  $("status").title = text;
}

function showProblem(problem) {
  $("problem").hidden = !problem;
  $("problem").textContent = problem || "";
}

// ---------------------------------------------------------------- searching

async function searchFile(file) {
  state.last = { file };
  state.browse = null;
  showPreview(URL.createObjectURL(file), file.name || "pasted image");
  const form = new FormData();
  form.append("images", file, file.name || "pasted.png");
  form.append("k", $("k").value);
  await search({ body: form }, file.name || "pasted image");
}

async function searchItem(id, label) {
  const last = { id, label };
  state.last = last;
  state.browse = null;
  const hidden = $("exclude-self").checked;
  const body = JSON.stringify({ id: Number(id), k: Number($("k").value), exclude_self: hidden });
  showPreview(null, `gallery item ${id}${label ? ` · ${label}` : ""}`);
  thumbnail(id).then((url) => {
    if (url && state.last === last) showPreview(url, $("query-caption").textContent);
    else if (url) URL.revokeObjectURL(url);
  });
  await search({ body, headers: { "Content-Type": "application/json" } }, `item ${id}`, hidden);
}

async function search(request, name, hidden = false) {
  clearTimeout(state.rerunTimer); // this search already has the k just set
  renderLabels();
  setMessage(null);
  $("title").textContent = "Searching…";
  $("subtitle").textContent = "";
  $("grid").classList.add("busy");
  try {
    const [answer] = await apiJson(`${API}/query`, { method: "POST", ...request });
    renderNeighbours(answer, name, hidden);
  } catch (error) {
    $("title").textContent = "No answer";
    setMessage(error.message);
  } finally {
    $("grid").classList.remove("busy");
  }
}

function rerun() {
  const last = state.last;
  if (!last) return;
  if (last.file) searchFile(last.file);
  else searchItem(last.id, last.label);
}

function showPreview(url, caption) {
  const preview = $("preview");
  if (state.previewUrl && state.previewUrl !== url) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = url;
  preview.hidden = !url;
  if (url) preview.src = url;
  else preview.removeAttribute("src");
  $("drop").classList.toggle("has-image", Boolean(url));
  $("query-caption").textContent = caption;
}

function previewFailed() {
  // Not a picture this browser can draw (not an image at all, or a format such as TIFF that
  // the server may still read): show the drop hint and say so, never a broken-image icon.
  const caption = $("query-caption").textContent;
  showPreview(null, caption ? `${caption} (no preview)` : "");
}

// ---------------------------------------------------------------- rendering

function renderNeighbours(answer, name, hidden) {
  const results = answer.results;
  $("title").textContent = `${results.length} nearest to ${name}`;
  const matches = results.filter((r) => r.match === true).length;
  const calibrated = results.some((r) => r.match !== undefined);
  const itself = hidden ? " The image itself is hidden." : "";
  $("subtitle").textContent = calibrated
    ? `${matches} of ${results.length} above the calibrated match threshold.${itself} Click a picture to search by it.`
    : `Ranked by cosine similarity.${itself} Click a picture to search by it.`;
  $("more").hidden = true;
  const cards = results.map((r) => card({ id: r.id, label: r.label, path: r.path, rank: r.rank, similarity: r.similarity, match: r.match }));
  replaceGrid(cards);
}

async function browse(label, offset = 0) {
  state.browse = { label, offset };
  state.last = null;
  showPreview(null, ""); // no query while browsing
  renderLabels();
  setMessage(null);
  try {
    const page = await apiJson(`${API}/items?${new URLSearchParams({ label, offset, limit: PAGE })}`);
    $("title").textContent = `${label || "(no label)"}`;
    $("subtitle").textContent = `${page.total} images with this label. Click one to find its look-alikes.`;
    const cards = page.items.map((item) => card({ id: item.id, label: item.label, path: item.path }));
    replaceGrid(cards, offset > 0);
    $("more").hidden = offset + page.items.length >= page.total;
  } catch (error) {
    setMessage(error.message);
  }
}

function card(item) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = item.id;
  node.title = item.path;
  node.querySelector(".label").textContent = item.label || "(no label)";
  node.querySelector(".label").title = item.label;
  node.querySelector(".rank").textContent = item.rank ? `#${item.rank}` : `id ${item.id}`;
  if (item.similarity !== undefined) {
    const sim = node.querySelector(".sim");
    sim.hidden = false;
    node.querySelector(".sim-bar").style.width = `${Math.max(0, Math.min(1, item.similarity)) * 100}%`;
    node.querySelector(".sim-value").textContent = item.similarity.toFixed(3);
  }
  if (item.match !== undefined) {
    const badge = node.querySelector(".badge");
    badge.hidden = false;
    badge.textContent = item.match ? "match" : "no match";
    badge.classList.add(item.match ? "yes" : "no");
  }
  node.onclick = () => searchItem(item.id, item.label);
  return node;
}

function replaceGrid(cards, append = false) {
  const generation = ++state.generation;
  if (!append) {
    state.urls.forEach((url) => URL.revokeObjectURL(url));
    state.urls = [];
    $("grid").replaceChildren();
  }
  $("grid").append(...cards);
  loadThumbnails(cards, generation);
}

async function loadThumbnails(cards, generation) {
  const queue = [...cards];
  const worker = async () => {
    while (queue.length && generation === state.generation) {
      const node = queue.shift();
      const url = await thumbnail(node.dataset.id);
      const img = node.querySelector("img");
      if (generation !== state.generation) {
        if (url) URL.revokeObjectURL(url); // a later render replaced this card
      } else if (url) {
        state.urls.push(url);
        img.onload = () => node.classList.add("loaded"); // what the browser test waits for
        img.onerror = () => node.classList.add("missing");
        img.src = url;
      } else node.classList.add("missing");
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]); // four at a time
}

async function thumbnail(id) {
  try {
    const response = await api(`${API}/items/${encodeURIComponent(id)}/image?size=${THUMB_SIZE}`);
    if (!response.ok) return null;
    return URL.createObjectURL(await response.blob()); // the caller revokes it
  } catch {
    return null;
  }
}

function setMessage(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

// ---------------------------------------------------------------- input: drop, paste, choose, k

function firstImage(files) {
  return [...(files || [])].find((f) => f.type.startsWith("image/") || /\.(jpe?g|png|gif|bmp|webp|tiff?|p[bgp]m)$/i.test(f.name));
}

function wireInputs() {
  const drop = $("drop");
  drop.onclick = () => $("file").click();
  drop.onkeydown = (event) => (event.key === "Enter" || event.key === " ") && $("file").click();
  $("file").onchange = () => $("file").files[0] && searchFile($("file").files[0]);
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => event.relatedTarget === null && drop.classList.remove("dragging"));
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = firstImage(event.dataTransfer.files);
    file ? searchFile(file) : setMessage("That was not an image file.");
  });
  window.addEventListener("paste", (event) => {
    const file = firstImage(event.clipboardData && event.clipboardData.files);
    if (file) searchFile(file);
  });
  $("k").oninput = () => {
    $("k-value").textContent = $("k").value;
    clearTimeout(state.rerunTimer);
    state.rerunTimer = setTimeout(rerun, 250);
  };
  $("label-filter").oninput = renderLabels;
  $("exclude-self").onchange = () => state.last && state.last.id !== undefined && rerun();
  $("preview").onerror = previewFailed;
  $("more").onclick = () => state.browse && browse(state.browse.label, state.browse.offset + PAGE);
}

wireInputs();
loadIndex();
setInterval(pollReady, 10000);
