/* webapi-gateway chat widget. Embed with one line:
 *   <script src="https://YOUR-GATEWAY/widget/widget.js" async></script>
 * It finds the gateway from its own URL, reads config.json beside it, and talks to the
 * gateway's Web API (chats, e-mails) and, for files, to its GMS routes. No build step, no
 * dependencies. Every text from the network is shown with textContent, never as HTML.
 * docs/widget.md describes the configuration and the behaviour. */
(function () {
  "use strict";

  if (window.gatewayChatWidget) return; // loaded twice: the first one stays
  var script = document.currentScript;
  if (!script || !script.src) return;
  var BASE = new URL(".", script.src).href;
  var API = script.getAttribute("data-api") || new URL(script.src).origin;
  var STORE = "gwc:" + API + ":chat";
  var UI_STORE = "gwc:" + API + ":ui";
  var CHANNEL = "gwc:" + API;
  var TYPING_IDLE_MS = 4000;
  var BACKOFF = [500, 1000, 2000, 4000, 8000, 15000];

  var config = null;
  var ui = {}; // elements
  var chat = null; // {chatId, userId, secureKey, alias, tenantName, nickname, streamToken}
  var position = 1; // the next transcript index to show
  var shownIndexes = Object.create(null);
  var ended = false;
  var leader = false;
  var transport = "none"; // what the leader reads with: "push" | "poll" | "none"
  var stream = null;
  var streamFailures = 0;
  var unread = 0;
  var seenIndex = 0; // the last event the customer had the window open for
  var typingSent = false;
  var typingTimer = null;
  var agentTypingTimer = null;
  var limits = null;
  var files = "off"; // file transfer on this chat: "loading" | "on" | "off" (the backend has none)
  var generation = 0; // bumps when a chat ends or a new one starts: stale loops stop
  var channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;
  var stats = { streamsOpened: 0, polls: 0, typingStarts: 0, reconnects: 0 };

  // ---- small helpers -------------------------------------------------------------------

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === "text") node.textContent = String(v);
        else if (k === "className") node.className = v;
        else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  var ids = 0;
  function uid(name) {
    ids += 1;
    return "gwc-" + name + "-" + ids;
  }

  function field(label, input, hint) {
    input.id = input.id || uid("f");
    var wrap = el("div", { className: "field" }, el("label", { for: input.id, text: label }), input);
    if (hint) {
      var h = el("p", { className: "hint", id: uid("hint"), text: hint });
      input.setAttribute("aria-describedby", h.id);
      wrap.appendChild(h);
    }
    return wrap;
  }

  /** A small inline icon (static path data; no text from the network). */
  function icon(d) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "currentColor");
    svg.appendChild(path);
    return svg;
  }
  var CHAT_ICON = "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z";
  var CLIP_ICON = "M16.5 6.5 8.6 14.4a1.5 1.5 0 0 0 2.1 2.1l7.4-7.4a3 3 0 0 0-4.2-4.2L6.4 12.4a4.5 4.5 0 0 0 6.4 6.4l6.7-6.7 1.4 1.4-6.7 6.7a6.5 6.5 0 0 1-9.2-9.2l7.5-7.5a5 5 0 0 1 7.1 7.1l-7.4 7.4a3.5 3.5 0 0 1-5-5l7.9-7.9z";

  function sleep(ms) {
    return new Promise(function (done) { setTimeout(done, ms); });
  }

  function jitter(ms) {
    return Math.round(ms * (0.75 + Math.random() * 0.5));
  }

  /** An absolute http(s) URL, or null: only these become links. */
  function safeLink(text) {
    if (typeof text !== "string") return null;
    var t = text.trim();
    if (!t || /\s/.test(t)) return null;
    try {
      var u = new URL(t);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function sizeText(bytes) {
    var n = Number(bytes);
    if (!isFinite(n)) return "";
    if (n >= 1048576) return (n / 1048576).toFixed(n % 1048576 ? 1 : 0) + " MB";
    if (n >= 1024) return Math.round(n / 1024) + " KB";
    return n + " bytes";
  }

  function timeText(ms) {
    var d = new Date(Number(ms));
    if (isNaN(d.getTime())) return "";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function save() {
    try {
      if (chat && !ended) sessionStorage.setItem(STORE, JSON.stringify(chat));
      else sessionStorage.removeItem(STORE);
    } catch (e) { /* storage off: the chat lives as long as the page */ }
  }

  function saveUi() {
    try {
      sessionStorage.setItem(UI_STORE, JSON.stringify({ open: !ui.panel.hidden, seen: seenIndex }));
    } catch (e) { /* ignored */ }
  }

  function loadJson(key) {
    try {
      return JSON.parse(sessionStorage.getItem(key) || "null");
    } catch (e) {
      return null;
    }
  }

  function post(channelMessage) {
    if (channel) channel.postMessage(channelMessage);
  }

  // ---- the network ---------------------------------------------------------------------

  /** One request. Resolves {http, reply}; rejects only when the network failed. */
  function request(path, body, form) {
    var init = { method: "POST", mode: "cors", credentials: "omit" };
    if (form) init.body = form;
    else {
      init.headers = { "content-type": "application/json" };
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var reply = null;
        try { reply = JSON.parse(text); } catch (e) { reply = null; }
        if (!reply || typeof reply !== "object") {
          // A proxy's error page, or an overload answer without a body: retry later.
          reply = { statusCode: resp.status >= 500 || resp.status === 429 ? 1 : 2, errors: [{ code: 0, message: "HTTP " + resp.status }] };
        }
        return { http: resp.status, reply: reply };
      });
    });
  }

  function errorText(reply) {
    var e = reply && reply.errors && reply.errors[0];
    return e && e.message ? String(e.message) : "Something went wrong.";
  }

  /** Runs `attempt` until it answers statusCode 0 or 2, backing off while the network or
   * the gateway fails (statusCode 1). `gen` stops the retries of a chat that is gone. */
  function retrying(attempt, gen) {
    var tries = 0;
    function next() {
      if (gen !== undefined && gen !== generation) return Promise.reject(new Error("stale"));
      return attempt().then(function (r) {
        if (r.reply.statusCode === 1) throw r;
        if (tries > 0) setStatus("");
        return r;
      }).catch(function (failure) {
        if (failure && failure.message === "stale") throw failure;
        var wait = jitter(BACKOFF[Math.min(tries, BACKOFF.length - 1)]);
        tries += 1;
        stats.reconnects += 1;
        setStatus("Reconnecting…");
        return sleep(wait).then(next);
      });
    }
    return next();
  }

  function creds() {
    return { userId: chat.userId, secureKey: chat.secureKey, alias: chat.alias, tenantName: chat.tenantName };
  }

  /** Takes what a reply says about the chat's credentials: the alias (it changes when the
   * chat moves to another chat server), the key, the stream token. */
  function follow(reply) {
    if (!chat || !reply) return;
    var changed = false;
    ["alias", "secureKey", "streamToken"].forEach(function (k) {
      if (typeof reply[k] === "string" && reply[k] && reply[k] !== chat[k]) {
        chat[k] = reply[k];
        changed = true;
      }
    });
    if (typeof reply.alias === "number") {
      chat.alias = String(reply.alias);
      changed = true;
    }
    if (changed) {
      save();
      post({ type: "creds", chatId: chat.chatId, creds: chat });
    }
  }

  function onChat(operationName, extra, gen) {
    var body = Object.assign(creds(), { operationName: operationName }, extra || {});
    return retrying(function () {
      return request("/api/v2/chats/" + encodeURIComponent(chat.chatId), Object.assign(body, { alias: chat.alias, secureKey: chat.secureKey }));
    }, gen).then(function (r) {
      follow(r.reply);
      return r.reply;
    });
  }

  function getMessages(from, gen) {
    stats.polls += 1;
    return retrying(function () {
      return request("/api/v2/chats/" + encodeURIComponent(chat.chatId) + "/messages",
        Object.assign(creds(), { transcriptPosition: from }));
    }, gen).then(function (r) {
      follow(r.reply);
      return r.reply;
    });
  }

  // ---- the transcript ------------------------------------------------------------------

  function roleOf(from) {
    var t = from && from.type;
    if (t === "Client") return "customer";
    if (t === "Agent" || t === "Supervisor") return "agent";
    return "system";
  }

  function isMine(from) {
    return roleOf(from) === "customer";
  }

  function meta(who, utc) {
    var t = timeText(utc);
    return el("p", { className: "meta" }, el("span", { className: "who", text: who }),
      t ? el("time", { datetime: new Date(Number(utc)).toISOString(), text: t }) : null);
  }

  function notice(text, utc, extra) {
    return el("li", { className: "notice" + (extra ? " " + extra : "") },
      el("span", { text: text }), utc ? el("time", { className: "meta", datetime: new Date(Number(utc)).toISOString(), text: " " + timeText(utc) }) : null);
  }

  /** The element an event is shown as, or null for events that show nothing. */
  function render(e) {
    var from = e.from || {};
    var nick = from.nickname ? String(from.nickname) : "";
    var role = roleOf(from);
    var data = e.userData || {};
    switch (e.type) {
      case "Message": {
        var who = role === "customer" ? "You" : nick || (role === "agent" ? "Agent" : "System");
        var item = el("li", { className: "msg " + role, "data-index": e.index },
          meta(who, e.utcTime), el("p", { className: "text", text: e.text || "" }));
        return item;
      }
      case "ParticipantJoined":
        return notice(role === "customer" ? "You joined the chat" : (nick || "Someone") + " joined the chat", e.utcTime);
      case "ParticipantLeft":
        return notice(role === "customer" ? "You left the chat" : (nick || "Someone") + " left the chat", e.utcTime);
      case "PushUrl":
      case "Notice": {
        var url = safeLink(e.text);
        if (url) {
          var who2 = role === "customer" ? "You" : nick || "Agent";
          return el("li", { className: "msg link " + role, "data-index": e.index }, meta(who2 + " shared a link", e.utcTime),
            el("p", { className: "text" }, el("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: url })));
        }
        return e.text ? notice(e.text, e.utcTime) : null;
      }
      case "CustomNotice":
      case "IdleAlert":
      case "IdleClose":
        return e.text ? notice(e.text, e.utcTime) : (e.type === "IdleAlert" ? notice("Are you still there?", e.utcTime) : null);
      case "FileUploaded": {
        var name = data["file-name"] || e.text || "file";
        var who3 = role === "customer" ? "You" : nick || "Agent";
        var line = el("p", { className: "text file" }, el("span", { className: "file-name", text: name }),
          data["file-size"] ? el("span", { className: "file-size", text: " (" + sizeText(data["file-size"]) + ")" }) : null);
        if (data["file-id"] && config.fileService) {
          line.appendChild(el("button", { type: "button", className: "link-button download", "aria-label": "Download " + name,
            onclick: function () { download(data["file-id"], name); }, text: "Download" }));
        }
        return el("li", { className: "msg file " + role, "data-index": e.index }, meta(who3 + " sent a file", e.utcTime), line);
      }
      case "FileDeleted":
        return notice((data["file-name"] || e.text || "A file") + " was deleted", e.utcTime);
      default:
        return null;
    }
  }

  function agentTyping(e) {
    if (isMine(e.from)) return;
    if (e.type === "TypingStarted") {
      var age = Date.now() - Number(e.utcTime || 0);
      if (age > 30000) return;
      ui.typing.textContent = ((e.from && e.from.nickname) || "The agent") + " is typing…";
      ui.typing.hidden = false;
      clearTimeout(agentTypingTimer);
      agentTypingTimer = setTimeout(function () { ui.typing.hidden = true; }, 30000 - Math.max(age, 0));
    } else if (e.type === "TypingStopped" || e.type === "Message" || e.type === "ParticipantLeft") {
      ui.typing.hidden = true;
    }
  }

  /** Shows events in index order, each once, whichever way they came. The position moves
   * only past events shown: a reply's nextPosition alone never skips anything. */
  function show(events) {
    var list = events || [];
    for (var i = 0; i < list.length; i++) {
      var e = list[i];
      if (typeof e.index !== "number" || e.index < position || shownIndexes[e.index]) continue;
      shownIndexes[e.index] = true;
      position = e.index + 1;
      agentTyping(e);
      var item = render(e);
      if (!item) continue;
      item.setAttribute("data-index", String(e.index));
      ui.transcript.appendChild(item);
      if (ui.panel.hidden && e.type === "Message" && !isMine(e.from) && e.index > seenIndex) {
        unread += 1;
        showUnread();
      }
    }
    if (!ui.panel.hidden && position - 1 > seenIndex) {
      seenIndex = position - 1;
      saveUi();
    }
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function resetTranscript() {
    position = 1;
    unread = 0;
    if (ui.badge) showUnread();
    shownIndexes = Object.create(null);
    ui.transcript.textContent = "";
  }

  function showUnread() {
    ui.badge.textContent = unread > 0 ? String(unread > 99 ? "99+" : unread) : "";
    ui.badge.hidden = unread === 0;
    ui.launcher.setAttribute("aria-label", unread > 0 ? "Open chat, " + unread + " unread message" + (unread === 1 ? "" : "s") : "Open chat");
  }

  // ---- reading events: one reader per chat across tabs ---------------------------------

  /** A reply (poll or stream) that carries events and the chat's state. */
  function received(reply, fromLeader) {
    follow(reply);
    show(reply.messages);
    var events = reply.messages || [];
    if (fromLeader && (events.length || reply.chatEnded)) post({ type: "events", chatId: chat.chatId, messages: events, chatEnded: !!reply.chatEnded });
    if (reply.chatEnded) chatEnded("The chat has ended.");
  }

  function wantsStream() {
    if (config.transport === "poll" || !("EventSource" in window) || !chat.streamToken) return false;
    if (config.transport === "auto" && streamFailures >= 3) return false;
    return true;
  }

  /** Reads with the event stream until it ends or fails. Resolves "ended" | "failed" | "stale". */
  function runStream(gen) {
    return new Promise(function (resolve) {
      var url = API + "/api/v2/chats/" + encodeURIComponent(chat.chatId) + "/events?streamToken=" +
        encodeURIComponent(chat.streamToken) + "&transcriptPosition=" + position;
      var source = new EventSource(url);
      stream = source;
      stats.streamsOpened += 1;
      transport = "push";
      var opened = false;
      var settled = false;
      function finish(how) {
        if (settled) return;
        settled = true;
        source.close();
        if (stream === source) stream = null;
        resolve(how);
      }
      source.onopen = function () {
        opened = true;
        streamFailures = 0;
        setStatus("");
      };
      source.onmessage = function (m) {
        if (gen !== generation) return finish("stale");
        var reply;
        try { reply = JSON.parse(m.data); } catch (e) { return; }
        received(reply, true);
        if (reply.chatEnded) finish("ended");
      };
      source.addEventListener("reset", function () {
        resetTranscript();
        post({ type: "reset", chatId: chat.chatId });
      });
      source.addEventListener("error", function (ev) {
        if (gen !== generation) return finish("stale");
        if (ev && typeof ev.data === "string") {
          // The gateway's `event: error`: this stream is given up; polling takes over.
          streamFailures = 3;
          return finish("failed");
        }
        if (source.readyState === EventSource.CLOSED) {
          // Refused (401: the token expired), 204 (the chat ended) or not a stream: a poll
          // tells which, and brings a fresh token.
          if (!opened) streamFailures += 1;
          return finish("failed");
        }
        // CONNECTING: the browser reconnects by itself with Last-Event-ID.
        setStatus("Reconnecting…");
      });
    });
  }

  function leaderLoop(gen) {
    function step() {
      if (gen !== generation || ended) return Promise.resolve();
      if (wantsStream()) {
        return runStream(gen).then(function (how) {
          if (how === "stale" || how === "ended") return;
          // One poll after a stream failure: new events, a fresh token, the chat's state.
          return getMessages(position, gen).then(function (reply) {
            if (reply.statusCode === 2) return lost(reply);
            received(reply, true);
            if (config.transport === "push" && streamFailures >= 3) {
              // Poll while the stream fails, then try it again.
              streamFailures = 0;
              return pollFor(30000, gen).then(step);
            }
            return step();
          });
        });
      }
      transport = "poll";
      return getMessages(position, gen).then(function (reply) {
        if (gen !== generation) return;
        if (reply.statusCode === 2) return lost(reply);
        var had = (reply.messages || []).length;
        received(reply, true);
        if (ended) return;
        return sleep(had ? 0 : config.pollIntervalMs).then(step);
      });
    }
    return step().catch(function () { /* a stale loop */ });
  }

  function pollFor(ms, gen) {
    var until = Date.now() + ms;
    transport = "poll";
    function again() {
      if (gen !== generation || ended || Date.now() > until) return Promise.resolve();
      return getMessages(position, gen).then(function (reply) {
        if (reply.statusCode === 2) return lost(reply);
        received(reply, true);
        return sleep(config.pollIntervalMs).then(again);
      });
    }
    return again();
  }

  function lost(reply) {
    chatEnded("The chat is no longer available: " + errorText(reply));
  }

  /** Becomes this chat's reader when no other tab is (Web Locks), for as long as the chat
   * lasts; the other tabs receive the events on the BroadcastChannel. */
  function startReading() {
    var gen = generation;
    var id = chat.chatId;
    function lead() {
      if (gen !== generation) return Promise.resolve();
      leader = true;
      // What happened while another tab was reading.
      return getMessages(position, gen).then(function (reply) {
        if (reply.statusCode === 2) return lost(reply);
        received(reply, true);
        return leaderLoop(gen);
      }).catch(function () { /* stale */ }).then(function () { leader = false; });
    }
    if (navigator.locks && channel) {
      // A follower catches up, then listens; the lock passes on when the reader's tab closes.
      catchUp();
      navigator.locks.request(CHANNEL + ":reader:" + id, function () { return lead(); });
    } else {
      lead();
    }
  }

  var catchingUp = false;
  var catchUpAgain = false;

  /** A follower reads what it has not shown yet, until a read brings nothing new; one read
   * at a time (a call during a read makes it read once more after). */
  function catchUp() {
    if (catchingUp) {
      catchUpAgain = true;
      return;
    }
    catchingUp = true;
    catchUpAgain = false;
    var gen = generation;
    getMessages(position, gen).then(function (r) {
      catchingUp = false;
      if (gen !== generation || r.statusCode !== 0) return;
      received(r, false);
      if (catchUpAgain || (r.messages || []).length) catchUp();
    }).catch(function () { catchingUp = false; });
  }

  if (channel) {
    channel.onmessage = function (m) {
      var msg = m.data || {};
      if (msg.type === "hello" && chat && !ended) {
        post({ type: "chat", creds: chat });
        return;
      }
      if (msg.type === "chat" && !chat && msg.creds && config) {
        resume(msg.creds);
        return;
      }
      if (!chat || msg.chatId !== chat.chatId) return;
      if (msg.type === "creds" && msg.creds) {
        ["alias", "secureKey", "streamToken"].forEach(function (k) { if (msg.creds[k]) chat[k] = msg.creds[k]; });
        save();
      } else if (msg.type === "reset") {
        resetTranscript();
      } else if (msg.type === "events" && !leader) {
        var first = msg.messages[0];
        // Missed some (this tab started late, or is still catching up): a read fills the
        // gap, these events included.
        if (first && first.index > position) catchUp();
        else show(msg.messages);
        if (msg.chatEnded) chatEnded("The chat has ended.");
      } else if (msg.type === "ended") {
        chatEnded("The chat has ended.");
      }
    };
  }

  // ---- actions ---------------------------------------------------------------------------

  function setStatus(text) {
    if (ui.status && ui.status.textContent !== text) ui.status.textContent = text;
  }

  function startChat(form) {
    var fields = {
      tenantName: config.tenant,
      nickname: form.nickname.value.trim(),
    };
    if (config.endpoint) fields.endpoint = config.endpoint;
    ["firstName", "lastName", "emailAddress", "subject"].forEach(function (k) {
      if (form[k] && form[k].value.trim()) fields[k] = form[k].value.trim();
    });
    ui.startButton.disabled = true;
    ui.prechatError.textContent = "";
    return request("/api/v2/chats", fields).then(function (r) {
      ui.startButton.disabled = false;
      var reply = r.reply;
      if (reply.statusCode !== 0) {
        var retry = reply.statusCode === 1;
        ui.prechatError.textContent = retry
          ? "No agent can take a chat right now. " + (config.leaveMessage ? "You can leave us a message instead." : "Please try again later.")
          : errorText(reply);
        if (retry && config.leaveMessage) ui.prechatLeave.focus();
        return;
      }
      generation += 1;
      ended = false;
      chat = {
        chatId: reply.chatId, userId: reply.userId, secureKey: reply.secureKey, alias: String(reply.alias),
        tenantName: reply.tenantName || config.tenant, nickname: fields.nickname, streamToken: reply.streamToken || null,
      };
      save();
      resetTranscript();
      seenIndex = 0;
      saveUi();
      view("chat");
      show(reply.messages);
      loadLimits();
      startReading();
      ui.input.focus();
    }).catch(function () {
      ui.startButton.disabled = false;
      ui.prechatError.textContent = "The chat service cannot be reached. Check your connection and try again.";
    });
  }

  function resume(saved) {
    generation += 1;
    ended = false;
    chat = saved;
    save();
    resetTranscript();
    view("chat");
    loadLimits();
    startReading();
  }

  function sendMessage() {
    var text = ui.input.value;
    if (!text.trim() || !chat || ended) return;
    ui.input.value = "";
    stopTyping(false);
    var pending = el("li", { className: "msg customer pending" }, meta("You · sending…", null), el("p", { className: "text", text: text }));
    ui.pending.appendChild(pending);
    var gen = generation;
    // Retried until the gateway answers: a retry of a message that did arrive is shown
    // once (the chat server acknowledges a repeat within its duplicate window).
    onChat("SendMessage", { text: text }, gen).then(function (reply) {
      pending.remove();
      if (reply.statusCode !== 0) {
        ui.composerError.textContent = "Not sent: " + errorText(reply);
        ui.input.value = ui.input.value || text;
      }
    }).catch(function () { pending.remove(); });
  }

  function stopTyping(send) {
    clearTimeout(typingTimer);
    typingTimer = null;
    if (typingSent && send) onChat("SendStopTypingNotification", {}, generation).catch(function () {});
    typingSent = false;
  }

  function typed() {
    if (!chat || ended) return;
    if (!typingSent && ui.input.value.trim()) {
      typingSent = true;
      stats.typingStarts += 1;
      onChat("SendStartTypingNotification", {}, generation).catch(function () {});
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(function () { stopTyping(true); }, TYPING_IDLE_MS);
  }

  var endedByCustomer = false;

  function endChat() {
    var gen = generation;
    ui.confirmEnd.disabled = true;
    // The chat's own events may say it ended before the Complete reply does.
    endedByCustomer = true;
    onChat("Complete", {}, gen).then(function () {
      ui.confirmEnd.disabled = false;
      post({ type: "ended", chatId: chat.chatId });
      chatEnded("You ended the chat.");
    }).catch(function () {
      ui.confirmEnd.disabled = false;
      endedByCustomer = false;
    });
  }

  function chatEnded(why) {
    if (ended) return;
    if (endedByCustomer) why = "You ended the chat.";
    endedByCustomer = false;
    ended = true;
    generation += 1;
    if (stream) stream.close();
    stream = null;
    transport = "none";
    stopTyping(false);
    ui.typing.hidden = true;
    ui.endedText.textContent = why;
    save();
    view(ui.currentView === "confirm" ? "chat" : ui.currentView);
    ui.composer.hidden = true;
    ui.endedBox.hidden = false;
    ui.endButton.hidden = true;
  }

  function newChat() {
    chat = null;
    ended = false;
    generation += 1;
    resetTranscript();
    ui.endedBox.hidden = true;
    ui.composer.hidden = false;
    ui.endButton.hidden = false;
    view("prechat");
  }

  // ---- files (the GMS dialect's file operations on the same chat) -------------------------

  function gmsForm() {
    var form = new FormData();
    form.append("userId", chat.userId);
    form.append("secureKey", chat.secureKey);
    form.append("alias", chat.alias);
    return form;
  }

  function gmsPath(tail) {
    return "/genesys/2/chat/" + encodeURIComponent(config.fileService) + "/" + encodeURIComponent(chat.chatId) + "/" + tail;
  }

  function loadLimits() {
    ui.fileRow.hidden = true;
    files = "off";
    if (!config.fileService || !chat) return;
    files = "loading";
    var gen = generation;
    var form = new URLSearchParams({ userId: chat.userId, secureKey: chat.secureKey, alias: chat.alias });
    request(gmsPath("file/limits"), null, form).then(function (r) {
      if (gen !== generation) return;
      files = "off";
      // Refused: this chat's backend transfers no files (or not now): no file button.
      if (r.reply.statusCode !== 0) return;
      follow(r.reply);
      var d = r.reply.userData || {};
      limits = {
        maxFiles: Number(d["upload-max-files"] || 0),
        maxSize: Number(d["upload-max-file-size"] || 0),
        maxTotal: Number(d["upload-max-total-size"] || 0),
        types: String(d["upload-file-types"] || "").split(":").filter(Boolean),
        usedFiles: Number(d["used-upload-max-files"] || 0),
        usedTotal: Number(d["used-upload-max-total-size"] || 0),
        needAgent: d["upload-need-agent"] === "true",
      };
      if (limits.maxFiles <= 0) return;
      var parts = ["Up to " + limits.maxFiles + " file" + (limits.maxFiles === 1 ? "" : "s") + ", " + sizeText(limits.maxSize) + " each"];
      if (limits.types.length) parts.push(limits.types.join(", "));
      ui.fileLimits.textContent = parts.join(" · ");
      if (limits.types.length) ui.fileInput.setAttribute("accept", limits.types.map(function (t) { return "." + t; }).join(","));
      ui.fileRow.hidden = false;
      files = "on";
    }).catch(function () { files = "off"; });
  }

  function upload(file) {
    if (!file || !chat || !limits) return;
    ui.fileError.textContent = "";
    var ext = (file.name.split(".").pop() || "").toLowerCase();
    if (limits.types.length && limits.types.indexOf(ext) < 0) {
      ui.fileError.textContent = "Files of this type cannot be sent (allowed: " + limits.types.join(", ") + ").";
      return;
    }
    if (limits.maxSize && file.size > limits.maxSize) {
      ui.fileError.textContent = file.name + " is larger than " + sizeText(limits.maxSize) + ".";
      return;
    }
    if (limits.usedFiles >= limits.maxFiles) {
      ui.fileError.textContent = "No more files can be sent in this chat.";
      return;
    }
    var form = gmsForm();
    form.append("file", file, file.name);
    ui.fileStatus.textContent = "Sending " + file.name + "…";
    request(gmsPath("file"), null, form).then(function (r) {
      ui.fileStatus.textContent = "";
      ui.fileInput.value = "";
      if (r.reply.statusCode !== 0) {
        ui.fileError.textContent = file.name + " was not sent: " + errorText(r.reply);
        return;
      }
      follow(r.reply);
      loadLimits();
    }).catch(function () {
      ui.fileStatus.textContent = "";
      ui.fileError.textContent = file.name + " was not sent: the connection failed. Try again.";
    });
  }

  function download(fileId, name) {
    if (!chat) return;
    var form = new URLSearchParams({ userId: chat.userId, secureKey: chat.secureKey, alias: chat.alias });
    fetch(API + gmsPath("file/" + encodeURIComponent(fileId) + "/download"), { method: "POST", mode: "cors", credentials: "omit", body: form })
      .then(function (resp) {
        if (!resp.ok || (resp.headers.get("content-type") || "").indexOf("application/json") === 0) throw new Error("refused");
        return resp.blob();
      }).then(function (blob) {
        var url = URL.createObjectURL(blob);
        var a = el("a", { href: url, download: name });
        a.hidden = true;
        ui.root.appendChild(a);
        a.click();
        a.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
      }).catch(function () {
        ui.fileError.textContent = name + " could not be downloaded.";
      });
  }

  // ---- leave a message (POST /api/v2/emails) --------------------------------------------------

  function sendEmail(form) {
    var data = new FormData();
    data.append("tenantName", config.tenant);
    data.append("firstName", form.firstName.value.trim());
    data.append("lastName", form.lastName.value.trim());
    data.append("fromAddress", form.fromAddress.value.trim());
    data.append("subject", form.subject.value.trim());
    data.append("text", form.text.value);
    if (config.mailbox) data.append("mailbox", config.mailbox);
    var files = form.attachment.files;
    for (var i = 0; i < files.length; i++) data.append("files", files[i], files[i].name);
    ui.emailSend.disabled = true;
    ui.emailError.textContent = "";
    request("/api/v2/emails", null, data).then(function (r) {
      ui.emailSend.disabled = false;
      if (r.reply.interactionId) {
        form.reset();
        ui.emailDone.textContent = "Thank you. We have your message and will answer by e-mail (reference " + r.reply.interactionId + ").";
        ui.emailDone.setAttribute("data-interaction-id", r.reply.interactionId);
        view("sent");
      } else {
        ui.emailError.textContent = r.reply.statusCode === 1 ? "Your message could not be sent right now. Please try again in a moment." : errorText(r.reply);
      }
    }).catch(function () {
      ui.emailSend.disabled = false;
      ui.emailError.textContent = "The service cannot be reached. Check your connection and try again.";
    });
  }

  // ---- opening hours ---------------------------------------------------------------------------

  var DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

  /** Whether a chat is offered now: within one of config.hours in config.timeZone (the
   * browser applies the zone's rules), or always when there are no hours. */
  function openNow() {
    var hours = config.hours || [];
    if (!hours.length) return true;
    var parts;
    try {
      parts = new Intl.DateTimeFormat("en-US", { timeZone: config.timeZone || "UTC", weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" })
        .formatToParts(new Date());
    } catch (e) {
      return true; // a zone this browser does not know: the gateway decides, as without hours
    }
    var get = function (type) {
      var p = parts.filter(function (x) { return x.type === type; })[0];
      return p ? p.value : "";
    };
    var day = DAY_NAMES.indexOf(get("weekday")) + 1;
    var minute = (Number(get("hour")) % 24) * 60 + Number(get("minute"));
    return hours.some(function (h) { return h.days.indexOf(day) >= 0 && minute >= h.from && minute < h.to; });
  }

  function hoursText() {
    var hm = function (m) { return String(Math.floor(m / 60)).padStart(2, "0") + ":" + String(m % 60).padStart(2, "0"); };
    return (config.hours || []).map(function (h) {
      var days = h.days.map(function (d) { return DAY_NAMES[d - 1]; });
      return days.join(", ") + " " + hm(h.from) + "–" + hm(h.to);
    }).join("; ") + " (" + (config.timeZone || "UTC") + ")";
  }

  // ---- the interface -------------------------------------------------------------------------

  function view(name) {
    if (name === "prechat") {
      var open = openNow();
      ui.prechatForm.hidden = !open;
      ui.closed.hidden = open;
    }
    ui.currentView = name;
    Object.keys(ui.views).forEach(function (k) { ui.views[k].hidden = k !== name; });
    ui.endButton.hidden = !(name === "chat" && chat && !ended);
    var focus = { prechat: ui.prechatForm.hidden ? ui.closedFocus : ui.nickname, message: ui.emailFirst, sent: ui.sentClose, confirm: ui.confirmKeep }[name];
    if (focus && !ui.panel.hidden) focus.focus();
  }

  function open() {
    ui.panel.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "true");
    ui.host.classList.add("open");
    unread = 0;
    showUnread();
    seenIndex = Math.max(seenIndex, position - 1);
    saveUi();
    var target = ui.currentView === "chat" && !ended ? ui.input
      : ui.currentView === "prechat" ? (ui.prechatForm.hidden ? ui.closedFocus : ui.nickname)
        : ui.views[ui.currentView].querySelector("input, textarea, button");
    if (target) target.focus();
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function minimise() {
    ui.panel.hidden = true;
    ui.launcher.setAttribute("aria-expanded", "false");
    ui.host.classList.remove("open");
    saveUi();
    ui.launcher.focus();
  }

  function prechatForm() {
    var form = el("form", { className: "form", novalidate: true, "aria-describedby": uid("intro") });
    var intro = el("p", { className: "intro", id: form.getAttribute("aria-describedby"), text: config.intro });
    form.appendChild(intro);
    ui.nickname = el("input", { name: "nickname", required: true, autocomplete: "nickname", maxlength: 100, "aria-required": "true" });
    form.appendChild(field("Nickname (required)", ui.nickname));
    var fields = config.prechatFields || [];
    if (fields.indexOf("name") >= 0) {
      form.appendChild(field("First name", el("input", { name: "firstName", autocomplete: "given-name", maxlength: 100 })));
      form.appendChild(field("Last name", el("input", { name: "lastName", autocomplete: "family-name", maxlength: 100 })));
    }
    if (fields.indexOf("email") >= 0) form.appendChild(field("E-mail", el("input", { name: "emailAddress", type: "email", autocomplete: "email", maxlength: 200 })));
    if (fields.indexOf("subject") >= 0) form.appendChild(field("Subject", el("input", { name: "subject", maxlength: 200 })));
    ui.prechatError = el("p", { className: "error", role: "alert" });
    form.appendChild(ui.prechatError);
    ui.startButton = el("button", { type: "submit", className: "primary", text: "Start chat" });
    form.appendChild(ui.startButton);
    ui.prechatLeave = el("button", { type: "button", className: "link-button", text: "Leave a message instead", onclick: function () { view("message"); } });
    if (config.leaveMessage) form.appendChild(el("p", { className: "alt" }, ui.prechatLeave));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (!ui.nickname.value.trim()) {
        ui.nickname.setAttribute("aria-invalid", "true");
        ui.prechatError.textContent = "Please enter a nickname.";
        ui.nickname.focus();
        return;
      }
      ui.nickname.removeAttribute("aria-invalid");
      var email = form.emailAddress;
      if (email && email.value.trim() && !email.checkValidity()) {
        ui.prechatError.textContent = "Please enter a valid e-mail address, or leave it empty.";
        email.focus();
        return;
      }
      startChat(form);
    });
    return form;
  }

  function chatView() {
    var box = el("div", { className: "chat" });
    ui.transcript = el("ol", { className: "transcript", role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Conversation", tabindex: "0" });
    ui.pending = el("ol", { className: "transcript pending-list", "aria-live": "polite", "aria-label": "Messages being sent" });
    ui.typing = el("p", { className: "typing", "aria-live": "polite", hidden: true });
    box.appendChild(ui.transcript);
    box.appendChild(ui.pending);
    box.appendChild(ui.typing);

    ui.endedText = el("p", { className: "ended-text", role: "status" });
    ui.endedBox = el("div", { className: "ended", hidden: true }, ui.endedText,
      el("div", { className: "row" },
        el("button", { type: "button", className: "primary", text: "Start a new chat", onclick: newChat }),
        config.leaveMessage ? el("button", { type: "button", className: "secondary", text: "Leave a message", onclick: function () { view("message"); } }) : null));
    box.appendChild(ui.endedBox);

    ui.composer = el("form", { className: "composer" });
    ui.input = el("textarea", { name: "message", rows: "2", maxlength: 4000, placeholder: "Type your message", enterkeyhint: "send" });
    ui.input.id = uid("msg");
    var label = el("label", { for: ui.input.id, className: "visually-hidden", text: "Message (Enter sends, Shift+Enter makes a new line)" });
    ui.input.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sendMessage();
      }
    });
    ui.input.addEventListener("input", typed);
    ui.composerError = el("p", { className: "error", role: "alert" });
    ui.fileInput = el("input", { type: "file", className: "visually-hidden", tabindex: "-1", "aria-hidden": "true" });
    ui.fileInput.addEventListener("change", function () { upload(ui.fileInput.files[0]); });
    var attach = el("button", { type: "button", className: "icon attach", "aria-label": "Send a file", title: "Send a file",
      onclick: function () { ui.fileInput.click(); } }, icon(CLIP_ICON));
    ui.fileLimits = el("span", { className: "hint file-limits" });
    ui.fileStatus = el("span", { className: "hint", role: "status" });
    ui.fileError = el("p", { className: "error", role: "alert" });
    ui.fileRow = el("div", { className: "files", hidden: true }, attach, ui.fileInput, ui.fileLimits, ui.fileStatus);
    ui.composer.appendChild(label);
    ui.composer.appendChild(el("div", { className: "row" }, ui.input, el("button", { type: "submit", className: "primary send", text: "Send" })));
    ui.composer.appendChild(ui.fileRow);
    ui.composer.appendChild(ui.fileError);
    ui.composer.appendChild(ui.composerError);
    ui.composer.addEventListener("submit", function (ev) { ev.preventDefault(); sendMessage(); });
    box.appendChild(ui.composer);
    return box;
  }

  function confirmView() {
    var heading = el("h3", { id: uid("confirm"), text: "End this chat?" });
    ui.confirmEnd = el("button", { type: "button", className: "danger", text: "End chat", onclick: endChat });
    ui.confirmKeep = el("button", { type: "button", className: "secondary", text: "Keep chatting", onclick: function () { view("chat"); ui.input.focus(); } });
    return el("div", { className: "confirm", role: "alertdialog", "aria-labelledby": heading.id },
      heading, el("p", { text: "The agent will see that you left, and you will not be able to send more messages in this chat." }),
      el("div", { className: "row" }, ui.confirmEnd, ui.confirmKeep));
  }

  function messageView() {
    var form = el("form", { className: "form", novalidate: true });
    form.appendChild(el("p", { className: "intro", text: "Leave us a message and we will answer by e-mail." }));
    ui.emailFirst = el("input", { name: "firstName", required: true, autocomplete: "given-name", maxlength: 100, "aria-required": "true" });
    form.appendChild(field("First name (required)", ui.emailFirst));
    form.appendChild(field("Last name (required)", el("input", { name: "lastName", required: true, autocomplete: "family-name", maxlength: 100, "aria-required": "true" })));
    form.appendChild(field("E-mail (required)", el("input", { name: "fromAddress", type: "email", required: true, autocomplete: "email", maxlength: 200, "aria-required": "true" })));
    form.appendChild(field("Subject (required)", el("input", { name: "subject", required: true, maxlength: 200, "aria-required": "true" })));
    form.appendChild(field("Message (required)", el("textarea", { name: "text", required: true, rows: "4", maxlength: 20000, "aria-required": "true" })));
    form.appendChild(field("Attachment (optional)", el("input", { name: "attachment", type: "file", multiple: true })));
    ui.emailError = el("p", { className: "error", role: "alert" });
    form.appendChild(ui.emailError);
    ui.emailSend = el("button", { type: "submit", className: "primary", text: "Send message" });
    form.appendChild(el("div", { className: "row" }, ui.emailSend,
      el("button", { type: "button", className: "secondary", text: "Back", onclick: function () { view(chat && !ended ? "chat" : (chat ? "chat" : "prechat")); } })));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var bad = Array.prototype.filter.call(form.elements, function (x) { return x.willValidate && !x.checkValidity(); });
      Array.prototype.forEach.call(form.elements, function (x) { if (x.removeAttribute) x.removeAttribute("aria-invalid"); });
      if (bad.length) {
        bad.forEach(function (x) { x.setAttribute("aria-invalid", "true"); });
        ui.emailError.textContent = "Please fill in every required field with a valid value.";
        bad[0].focus();
        return;
      }
      sendEmail(form);
    });
    return form;
  }

  function sentView() {
    ui.emailDone = el("p", { className: "done", role: "status" });
    ui.sentClose = el("button", { type: "button", className: "secondary", text: "Close", onclick: function () { view(chat && !ended ? "chat" : "prechat"); minimise(); } });
    return el("div", { className: "sent" }, ui.emailDone, ui.sentClose);
  }

  function build() {
    var host = el("div", { className: "gwc-host", "data-gateway-chat": "" });
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var colors = config.colors || {};
    [["accent", "--gwc-accent"], ["accentText", "--gwc-accent-text"], ["background", "--gwc-bg"], ["text", "--gwc-text"], ["agent", "--gwc-agent"]]
      .forEach(function (p) {
        var v = colors[p[0]] || colors[p[0].replace(/[A-Z]/g, function (c) { return "_" + c.toLowerCase(); })];
        if (typeof v === "string" && /^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$/.test(v)) host.style.setProperty(p[1], v);
      });
    root.appendChild(el("link", { rel: "stylesheet", href: BASE + "widget.css" }));
    ui.host = host;
    ui.root = root;
    ui.badge = el("span", { className: "badge", "aria-hidden": "true", hidden: true });
    var panelId = uid("panel");
    ui.launcher = el("button", { type: "button", className: "launcher", "aria-label": "Open chat", "aria-expanded": "false", "aria-controls": panelId, onclick: function () { if (ui.panel.hidden) open(); else minimise(); } },
      el("span", { className: "launcher-icon", "aria-hidden": "true" }, icon(CHAT_ICON)), el("span", { className: "launcher-text", text: "Chat" }), ui.badge);
    var title = el("h2", { id: uid("title"), text: config.title });
    ui.status = el("p", { className: "status", role: "status", "aria-live": "polite" });
    ui.endButton = el("button", { type: "button", className: "header-button", text: "End chat", hidden: true, onclick: function () { view("confirm"); } });
    var minButton = el("button", { type: "button", className: "header-button", "aria-label": "Minimise chat", title: "Minimise", text: "—", onclick: minimise });
    ui.prechatForm = prechatForm();
    ui.closedFocus = config.leaveMessage
      ? el("button", { type: "button", className: "primary", text: "Leave a message", onclick: function () { view("message"); } })
      : null;
    ui.closed = el("div", { className: "closed", hidden: true },
      el("p", { className: "intro", text: "We are closed right now. A chat is open " + hoursText() + "." }),
      config.leaveMessage ? el("p", { text: "Leave us a message and we will answer by e-mail." }) : null,
      ui.closedFocus);
    ui.views = { prechat: el("div", { className: "prechat" }, ui.prechatForm, ui.closed), chat: chatView(), confirm: confirmView(), message: messageView(), sent: sentView() };
    var body = el("div", { className: "body" });
    Object.keys(ui.views).forEach(function (k) { body.appendChild(ui.views[k]); });
    ui.panel = el("section", { id: panelId, className: "panel", role: "dialog", "aria-modal": "false", "aria-labelledby": title.id, hidden: true },
      el("header", {}, el("div", { className: "titles" }, title, ui.status), el("div", { className: "header-buttons" }, ui.endButton, minButton)),
      body);
    ui.panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") minimise(); });
    root.appendChild(ui.panel);
    root.appendChild(ui.launcher);
    document.body.appendChild(host);
  }

  function start() {
    build();
    view("prechat");
    var uiState = loadJson(UI_STORE) || {};
    seenIndex = Number(uiState.seen) || 0;
    if (uiState.open) open();
    var saved = loadJson(STORE);
    if (saved && saved.chatId) resume(saved);
    else if (channel) post({ type: "hello" }); // a chat open in another tab comes to this one
  }

  window.gatewayChatWidget = {
    /** What the widget is doing, for tests and for a page's own diagnostics. */
    state: function () {
      return { chatId: chat && chat.chatId, alias: chat && chat.alias, ended: ended, leader: leader, transport: leader ? transport : "follower",
        position: position, files: files, view: ui.currentView, open: ui.panel ? !ui.panel.hidden : false, unread: unread, stats: Object.assign({}, stats) };
    },
    safeLink: safeLink,
    open: function () { if (ui.panel) open(); },
  };

  fetch(BASE + "config.json", { mode: "cors", credentials: "omit" }).then(function (r) {
    if (!r.ok) throw new Error("config.json: HTTP " + r.status);
    return r.json();
  }).then(function (c) {
    config = c;
    if (document.body) start();
    else document.addEventListener("DOMContentLoaded", start);
  }).catch(function (e) {
    if (window.console) console.warn("chat widget not started: " + e.message);
  });
})();
