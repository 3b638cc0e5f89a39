// The statekit dashboard's client: the API-key login, the view router, error banners and
// the live feed over /ws. htmx does the fetching and swapping; see docs/dashboard.md.
(() => {
  "use strict";

  const KEY_SLOT = "statekit.apiKey"; // sessionStorage: this tab only, gone when it closes
  const VIEWS = {
    overview: "/dashboard/overview",
    reconciliation: "/dashboard/reconciliation",
    keys: "/dashboard/keys",
    snapshots: "/dashboard/snapshots",
  };
  const MAX_SINCE_KEYS = 1000; // the server's default max_since_keys
  const MAX_FEED = 25;

  const body = document.body;
  const keyRequired = body.dataset.keyRequired === "true";
  const $ = (id) => document.getElementById(id);

  const live = {
    socket: null,
    versions: new Map(), // state_id -> last version received, oldest first
    replaying: false,
    reconnects: 0,
    retryMs: 500,
    refreshTimer: null,
    started: false,
  };

  const apiKey = () => sessionStorage.getItem(KEY_SLOT);

  // -- errors ------------------------------------------------------------------------------
  function showError(text) {
    const banner = $("error");
    banner.textContent = text;
    banner.hidden = !text;
  }

  function errorText(xhr) {
    try {
      const error = JSON.parse(xhr.responseText).error;
      return `${xhr.status} ${error.code}: ${error.message}`;
    } catch (_) {
      return `${xhr.status} ${xhr.statusText || "error"}`;
    }
  }

  // -- login -------------------------------------------------------------------------------
  function showLogin(message) {
    $("app").hidden = true;
    $("nav").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    const note = $("login-error");
    note.textContent = message || "";
    note.hidden = !message;
    $("api-key").focus();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY_SLOT);
    stopLive();
    showLogin(message);
  }

  async function login(event) {
    event.preventDefault();
    const key = $("api-key").value;
    const answer = await fetch(VIEWS.overview, { headers: { "X-API-Key": key } });
    if (answer.status === 401) {
      showLogin("That API key was refused.");
      return;
    }
    sessionStorage.setItem(KEY_SLOT, key);
    $("api-key").value = "";
    start();
  }

  // -- views -------------------------------------------------------------------------------
  function viewUrl() {
    const hash = location.hash.slice(1) || "overview";
    if (hash.startsWith("key=")) {
      return "/dashboard/key?state_id=" + encodeURIComponent(decodeURIComponent(hash.slice(4)));
    }
    return VIEWS[hash] || VIEWS.overview;
  }

  function showView() {
    const hash = location.hash.slice(1) || "overview";
    document.querySelectorAll("[data-nav]").forEach((a) => {
      a.classList.toggle("active", hash === a.dataset.nav);
    });
    showError("");
    htmx.ajax("GET", viewUrl(), { target: "#main", swap: "innerHTML" });
  }

  // A change re-fetches the view on screen (debounced): the key page only for its key
  // (stateId null: any view, after a reconnect); the snapshots page never (it may hold
  // a confirm step in progress).
  function refreshFor(stateId) {
    const view = document.querySelector("#main .view");
    if (!view || view.hasAttribute("data-manual") || !view.dataset.view) return;
    const other = view.dataset.key !== undefined && view.dataset.key !== stateId;
    if (stateId !== null && other) return;
    clearTimeout(live.refreshTimer);
    live.refreshTimer = setTimeout(() => {
      htmx.ajax("GET", view.dataset.view, { target: "#main", swap: "innerHTML" });
    }, 200);
  }

  // -- live feed ---------------------------------------------------------------------------
  function setLive(text, kind) {
    const badge = $("live");
    badge.textContent = text;
    badge.className = "badge " + kind;
  }

  function base64url(text) {
    let binary = "";
    new TextEncoder().encode(text).forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function since() {
    const entries = [...live.versions.entries()].slice(-MAX_SINCE_KEYS);
    return Object.fromEntries(entries);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket; the key rides in a subprotocol, not the URL.
    const protocols = ["statekit"];
    const key = apiKey();
    if (key) protocols.push("statekit.key." + base64url(key));
    const socket = new WebSocket(`${scheme}//${location.host}/ws`, protocols);
    live.socket = socket;
    setLive(live.reconnects ? "reconnecting" : "connecting", "off");
    socket.onopen = () => subscribe(socket, true);
    socket.onmessage = (event) => receive(socket, JSON.parse(event.data));
    socket.onclose = (event) => {
      if (live.socket !== socket) return; // replaced or stopped on purpose
      live.socket = null;
      if (event.code === 4401) {
        logout("The server refused the API key.");
        return;
      }
      setLive("offline, retrying", "off");
      live.reconnects += 1;
      setTimeout(() => { if (live.started && !live.socket) connect(); }, live.retryMs);
      live.retryMs = Math.min(live.retryMs * 2, 10000);
    };
  }

  function subscribe(socket, resume) {
    const message = { action: "subscribe", topic: "states:*" };
    if (resume && live.versions.size) {
      message.since = since();
      live.replaying = true;
    }
    socket.send(JSON.stringify(message));
  }

  function receive(socket, message) {
    switch (message.type) {
      case "subscribed":
        live.retryMs = 500;
        setLive(live.replaying ? "resuming" : "live", live.replaying ? "off" : "ok");
        if (live.reconnects) refreshFor(null); // keys we never saw may have changed meanwhile
        break;
      case "resumed":
        live.replaying = false;
        setLive("live", "ok");
        note(`resumed: ${message.replayed} missed change(s) replayed`);
        break;
      case "change":
        live.versions.delete(message.state_id);
        live.versions.set(message.state_id, message.version);
        addChange(message);
        refreshFor(message.state_id);
        break;
      case "error":
        if (message.code === "history_unavailable") {
          live.replaying = false;
          subscribe(socket, false);
        } else if (message.code === "watch_unavailable") {
          setLive("no live feed", "off");
        } else {
          showError(`live feed: ${message.code}: ${message.message}`);
        }
        break;
      default:
        break; // pong, unsubscribed, lagging (a close and a resume follow)
    }
  }

  function addChange(change) {
    const item = document.createElement("li");
    item.dataset.key = change.state_id;
    item.dataset.version = change.version;
    if (live.replaying) item.classList.add("replayed");
    const link = document.createElement("a");
    link.href = "#key=" + encodeURIComponent(change.state_id);
    link.textContent = `${change.state_id} v${change.version}`;
    const detail = document.createElement("span");
    detail.className = "small";
    const when = change.timestamp.slice(11, 19);
    detail.textContent = ` ${change.deleted ? "deleted" : change.state_type} ${when}` +
      (change.description ? ` · ${change.description}` : "") + (live.replaying ? " (replayed)" : "");
    item.append(link, detail);
    prepend(item);
  }

  function note(text) {
    const item = document.createElement("li");
    item.className = "note small";
    item.textContent = text;
    prepend(item);
  }

  function prepend(item) {
    const list = $("changes");
    list.prepend(item);
    while (list.children.length > MAX_FEED) list.lastElementChild.remove();
  }

  function stopLive() {
    live.started = false;
    const socket = live.socket;
    live.socket = null;
    if (socket) socket.close(1000, "logged out");
    setLive("offline", "off");
  }

  // -- wiring ------------------------------------------------------------------------------
  function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("nav").hidden = false;
    $("logout").hidden = !keyRequired;
    showView();
    if (!live.started) {
      live.started = true;
      connect();
    }
  }

  body.addEventListener("htmx:configRequest", (event) => {
    const key = apiKey();
    if (key) event.detail.headers["X-API-Key"] = key;
  });
  body.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    if (xhr.status === 401) logout("The API key was refused; sign in again.");
    else showError(errorText(xhr));
  });
  body.addEventListener("htmx:sendError", () => showError("The server cannot be reached."));
  body.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id === "main") showError("");
  });
  window.addEventListener("hashchange", () => { if (live.started) showView(); });
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));

  // For tests and the curious: the live connection, what it has seen, and a way to
  // drop it and come back (what a network outage does), resuming with `since`.
  window.statekitDashboard = {
    socket: () => live.socket,
    versions: live.versions,
    disconnect: stopLive,
    reconnect: () => {
      if (live.socket) return;
      live.started = true;
      live.reconnects += 1;
      connect();
    },
  };

  if (!keyRequired || apiKey()) start();
  else showLogin("");
})();
