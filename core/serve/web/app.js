// capsearch's search page: a client of the service's own API (/readyz, /v1/search, /v1/thumbnails,
// /v1/images). Every text from the service (paths, captions, messages) is set with textContent, never
// parsed as HTML. Images are fetched with the bearer token (when the service has one) and shown from blob
// URLs, which are revoked when the results are replaced.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "capsearch-token";
let served = null; // /readyz's answer once ready
let folders = []; // a library's folders: hits are named by their path under one
let blobs = [];

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("this service needs its token");
  }
  return response;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function connect() {
  try {
    const response = await api("/readyz");
    const body = await response.json();
    if (!body.ready) {
      $("status").textContent = body.reason || "loading…";
      setTimeout(connect, 1000);
      return;
    }
    served = body;
    if (body.library) folders = (await (await api("/v1/libraries")).json()).flatMap((lib) => lib.folders);
    const what = body.library ? `library ${body.library}` : `${body.dataset} / ${body.split}`;
    $("status").textContent = `${what} · ${body.model_id}`;
    $("library-filters").hidden = !body.library;
    $("direction-field").hidden = Boolean(body.library);
    showError("");
    const asked = new URLSearchParams(location.hash.slice(1));
    if (asked.get("q")) {
      $("q").value = asked.get("q");
      searchJson({ text: asked.get("q"), ...parameters() });
    } else if (asked.get("image")) {
      searchJson({ image_id: asked.get("image"), ...parameters(), direction: "images" });
    }
  } catch (err) {
    $("status").textContent = "not connected";
    showError(err.message);
  }
}

function parameters() {
  const params = { k: Number($("k").value) || 24, direction: served && served.library ? "images" : $("direction").value };
  if (served && served.library) {
    for (const name of ["after", "before", "camera", "folder"]) {
      const value = $(name).value.trim();
      if (value) params[name] = value;
    }
    params.sort = $("sort").value;
    params.dedup = $("dedup").checked;
  }
  return params;
}

async function search(request) {
  showError("");
  $("summary").textContent = "searching…";
  try {
    const response = await api("/v1/search", request);
    const body = await response.json();
    if (!response.ok) {
      $("summary").textContent = "";
      showError(body.hint ? `${body.message} (${body.hint})` : body.message);
      return;
    }
    render(body);
  } catch (err) {
    $("summary").textContent = "";
    showError(err.message);
  }
}

function searchJson(body) {
  return search({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

async function imageUrl(path) {
  const response = await api(path);
  if (!response.ok) return null;
  const url = URL.createObjectURL(await response.blob());
  blobs.push(url);
  return url;
}

function label(hit) {
  if (hit.caption) return hit.caption;
  if (!hit.path) return hit.id;
  const folder = folders.find((f) => hit.path.startsWith(`${f}/`));
  return folder ? hit.path.slice(folder.length + 1) : hit.path;
}

function details(hit) {
  const parts = [];
  if (hit.date != null) parts.push(new Date(hit.date * 1000).toISOString().slice(0, 10));
  if (hit.camera) parts.push(hit.camera);
  if (hit.width && hit.height) parts.push(`${hit.width}×${hit.height}`);
  return parts.join(" · ");
}

function card(hit) {
  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.alt = label(hit);
  img.loading = "lazy";
  imageUrl(hit.thumbnail_url.replace("size=256", "size=384")).then((url) => {
    if (url) img.src = url;
  });
  img.addEventListener("click", async () => {
    const url = await imageUrl(hit.image_url);
    if (url) window.open(url, "_blank", "noopener");
  });
  const caption = document.createElement("figcaption");
  const similar = document.createElement("button");
  similar.type = "button";
  similar.textContent = "similar";
  similar.title = "search with this image";
  similar.addEventListener("click", () => {
    $("q").value = "";
    history.replaceState(null, "", `#${new URLSearchParams({ image: hit.id })}`);
    searchJson({ image_id: hit.id, ...parameters(), direction: "images" });
  });
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `#${hit.rank} · ${hit.score.toFixed(3)}`;
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = label(hit);
  name.title = hit.path || hit.id;
  const more = document.createElement("div");
  more.textContent = details(hit);
  caption.append(similar, score, name, more);
  figure.append(img, caption);
  return figure;
}

function render(body) {
  for (const url of blobs) URL.revokeObjectURL(url);
  blobs = [];
  const hits = body.hits.length ? body.hits : body.caption_hits || [];
  const also = body.caption_hits && body.hits.length ? body.caption_hits : [];
  $("results").replaceChildren(...hits.map(card), ...also.map(card));
  const where = body.library ? `library ${body.library}` : `${body.dataset} / ${body.split}`;
  const timing = body.cached ? "cached" : `${body.timings.total_ms.toFixed(1)} ms`;
  $("summary").textContent = `${hits.length + also.length} hits in ${where} (${body.index} index, ${timing})`;
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("q").value.trim();
  if (!text) return;
  history.replaceState(null, "", `#${new URLSearchParams({ q: text })}`); // a link that asks it again
  searchJson({ text, ...parameters() });
});

$("photo").addEventListener("change", () => {
  const file = $("photo").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  for (const [name, value] of Object.entries(parameters())) form.append(name, String(value));
  $("photo").value = "";
  search({ method: "POST", body: form });
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  $("token-form").hidden = true;
  connect();
});

connect();
