/* chat.js: the c10k chat page's client. Plain JavaScript, no framework, no build step.
   Live updates over WebSocket, else Server-Sent Events, else long-poll (docs/protocol.md);
   reconnects with capped, jittered backoff and resumes after the last id seen; posts over
   the socket or the JSON API. The pure logic (the Chat object) is exported for Node tests;
   the page part runs only in a browser and builds every user string as text, never HTML. */
'use strict';

const Chat = (() => {
  const MAX_BODY = 4096;        // characters (code points), as the server counts them
  const KEEP = 1000;            // messages kept in a room's view (more once older pages are loaded)
  const PAGE = 50;              // messages per page of older history (the server allows up to 200)
  const OPEN_TIMEOUT = 20000;   // ms for a WebSocket/EventSource to open before falling back
  const POLL_WAIT = 25;         // s a long-poll may wait on the server
  const TRANSPORTS = ['WebSocket', 'SSE', 'long-poll'];

  const validRoom = s => typeof s === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(s);

  // '#dev' -> 'dev'; '' or '#' -> 'main'; not a valid room name -> null.
  function roomFromHash(hash) {
    let s = String(hash || '').replace(/^#/, '');
    try { s = decodeURIComponent(s); } catch { return null; }
    return s === '' ? 'main' : validRoom(s) ? s : null;
  }

  // Delay before reconnect attempt n (0, 1, ...): doubling from `base`, capped, with
  // "equal jitter" (between half and all of it) so clients do not come back in lockstep.
  function backoff(n, rand = Math.random, base = 500, cap = 30000) {
    const d = Math.min(cap, base * 2 ** Math.min(n, 20));
    return Math.round(d / 2 + rand() * d / 2);
  }

  // Why a body cannot be sent, or null. The server also rejects whitespace-only bodies.
  function bodyError(body) {
    if (typeof body !== 'string' || body.trim() === '') return 'Type a message first.';
    const n = [...body].length;
    return n > MAX_BODY ? `Too long: ${n} characters, at most ${MAX_BODY}.` : null;
  }

  const isMessage = m => !!m && Number.isSafeInteger(m.id) && m.id > 0 && typeof m.body === 'string';

  // What to tell a person when a request failed without an answer: fetch rejects with a
  // TypeError ("Failed to fetch", "NetworkError when attempting...", "Load failed").
  function humanError(e) {
    if (e instanceof TypeError || /fetch|network|load failed/i.test(String(e && e.message))) {
      return 'the server cannot be reached';
    }
    return (e && e.message) || 'unknown error';
  }

  // A new idempotency key: 128 random bits as hex (crypto.randomUUID needs a secure context).
  function newKey(crypto = globalThis.crypto) {
    const bytes = new Uint8Array(16);
    if (crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
    else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    return [...bytes].map(b => b.toString(16).padStart(2, '0')).join('');
  }

  // A room's view: messages sorted by id, each once, and lastId, the resume point: the
  // newest id seen on the live stream. Acks and 201s are shown at once but do not move
  // lastId, or a message still in flight on the stream could be skipped on resume. keep:
  // how many it holds at most; loading older pages raises it, so that the next live
  // message does not trim away what the reader scrolled back to.
  const emptyFeed = () => ({ msgs: [], lastId: 0, keep: KEEP });

  // Merges messages into a feed (a new feed; the old one is untouched). Returns
  // {feed, added, inOrder, dropped}: inOrder means every added message went after all
  // others (append to the page), dropped are the oldest, trimmed to `keep`.
  function merge(feed, incoming, stream, keep = feed.keep ?? KEEP) {
    const msgs = feed.msgs.slice(), added = [];
    let lastId = feed.lastId, inOrder = true;
    for (const m of incoming || []) {
      if (!isMessage(m)) continue;
      if (stream && m.id > lastId) lastId = m.id;
      let lo = 0, hi = msgs.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (msgs[mid].id < m.id) lo = mid + 1; else hi = mid; }
      if (lo < msgs.length && msgs[lo].id === m.id) continue;   // already there
      if (lo < msgs.length) inOrder = false;
      msgs.splice(lo, 0, m);
      added.push(m);
    }
    const dropped = msgs.length > keep ? msgs.splice(0, msgs.length - keep) : [];
    return { feed: { msgs, lastId, keep }, added, inOrder, dropped };
  }

  // Merges a page of older history (GET ...?before=ID, newest first) into a feed, keeping
  // it whole: the feed's bound grows by what the page added.
  function mergeOlder(feed, page) {
    const keep = Math.max(feed.keep ?? KEEP, feed.msgs.length + (page || []).length);
    return merge(feed, page, false, keep);
  }

  // The URL of the page of history before the oldest message of a feed, or null when
  // there is none to ask for (an empty feed waits for the live stream; id 1 is the first).
  function olderUrl(room, feed, limit = PAGE) {
    const oldest = feed.msgs.length ? feed.msgs[0].id : 0;
    if (oldest <= 1) return null;
    return `/api/rooms/${encodeURIComponent(room)}/messages?before=${oldest}&limit=${limit}`;
  }

  // Splits text into strings and {text, href} links, for http: and https: URLs only.
  // Trailing punctuation is left out of a link, and a ')' unless the link opened one.
  function linkify(text) {
    const out = [], count = (s, c) => s.split(c).length - 1;
    let at = 0;
    for (const m of String(text).matchAll(/\bhttps?:\/\/[^\s<>"'`]+/gi)) {
      let url = m[0];
      while (/[.,;:!?'")\]]$/.test(url) && !(url.endsWith(')') && count(url, '(') >= count(url, ')'))) {
        url = url.slice(0, -1);
      }
      let href = null;
      try {
        const u = new URL(url);
        if (u.protocol === 'http:' || u.protocol === 'https:') href = u.href;
      } catch { /* not a URL after all: stays text */ }
      if (!href) continue;
      if (m.index > at) out.push(text.slice(at, m.index));
      out.push({ text: url, href });
      at = m.index + url.length;
    }
    if (at < text.length) out.push(text.slice(at));
    return out;
  }

  // Keeps one room live over the first transport that opens: WebSocket, then SSE, then
  // long-poll. A transport that fails before opening hands over to the next one at once;
  // when all fail, or one that was open drops, it waits (backoff) and starts over from
  // WebSocket, resuming after cb.after().
  // env: {WebSocket, EventSource, fetch, AbortController, setTimeout, clearTimeout, now, wsOrigin}
  // cb: {after() -> id or 0, epoch() -> the store's epoch the cursor is in ('' if unknown),
  //      token() -> the access token for a private room ('' if none),
  //      nick() -> the name to be present under ('' for anonymous),
  //      presence(event) with each presence snapshot or diff (docs/protocol.md, "Presence"),
  //      messages(list), reset(lastId, epoch), ack(ref, msg), error(ref, text, retry),
  //      status({transport, state: 'connecting'|'live'|'retrying', delay, why}), dropped(transport)}
  function live(room, env, cb) {
    const path = `/api/rooms/${encodeURIComponent(room)}`;
    const parse = s => { try { return JSON.parse(s); } catch { return null; } };
    const query = (extra = {}) => {   // no `after` at first: the whole history, never a reset
      const q = new URLSearchParams(), a = cb.after(), e = cb.epoch ? cb.epoch() : '';
      if (a > 0) q.set('after', a);
      if (a > 0 && e) q.set('epoch', e);   // another epoch's cursor gets the explicit reset
      for (const [k, v] of Object.entries(extra)) q.set(k, v);
      // EventSource and WebSocket cannot send an Authorization header (RFC 6750 2.3).
      const t = cb.token ? cb.token() : '';
      if (t) q.set('access_token', t);
      const n = cb.nick ? cb.nick() : '';
      if (n) q.set('nick', n);
      return String(q) ? `?${q}` : '';
    };
    let level = 0, attempt = 0, gen = 0, openedAt = 0, stopped = false, waiting = false;
    let ws = null, es = null, ctl = null, openTimer = null, retryTimer = null;

    function teardown() {
      gen++;   // callbacks of anything opened before this are ignored from now on
      env.clearTimeout(openTimer); env.clearTimeout(retryTimer);
      if (ws) { ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null; try { ws.close(); } catch { /* closing anyway */ } }
      if (es) es.close();
      if (ctl) ctl.abort();
      ws = es = ctl = null;
    }

    function connect() {
      teardown();
      waiting = false;
      if (stopped) return;
      const g = gen;
      cb.status({ transport: TRANSPORTS[level], state: 'connecting' });
      if (level < 2) openTimer = env.setTimeout(() => fail(g, false, 'timed out'), OPEN_TIMEOUT);
      [openWS, openSSE, poll][level](g);
    }

    function opened(g) {
      if (g !== gen) return;
      env.clearTimeout(openTimer);
      openedAt = env.now();
      cb.status({ transport: TRANSPORTS[level], state: 'live' });
    }

    function fail(g, wasOpen, why) {
      if (g !== gen || stopped) return;
      const transport = TRANSPORTS[level];
      teardown();
      if (wasOpen) cb.dropped(transport);
      if (!wasOpen && level < TRANSPORTS.length - 1) { level++; connect(); return; }
      if (wasOpen && env.now() - openedAt > 10000) attempt = 0;   // it had been working
      const delay = backoff(attempt++);
      level = 0;
      waiting = true;
      cb.status({ transport, state: 'retrying', delay, why });
      retryTimer = env.setTimeout(connect, delay);
    }

    function openWS(g) {
      let open = false;
      try { ws = new env.WebSocket(`${env.wsOrigin}${path}/ws${query({ presence: 1 })}`); }
      catch (e) { fail(g, false, e.message); return; }
      ws.onopen = () => { open = true; opened(g); };
      ws.onclose = e => fail(g, open, e.reason || (open ? 'connection closed' : 'could not connect'));
      ws.onmessage = e => {
        const f = parse(e.data);
        if (!f || g !== gen) return;
        if (f.type === 'message') cb.messages([f.message]);
        else if (f.type === 'reset') cb.reset(f.last_id, f.epoch);
        else if (f.type === 'ack') cb.ack(f.ref, f.message);
        else if (f.type === 'error') cb.error(f.ref, f.error, f.retry === true);
        else if (f.type === 'presence' && cb.presence) cb.presence(f);
      };
    }

    function openSSE(g) {
      let open = false;
      try { es = new env.EventSource(`${path}/events${query({ presence: 1 })}`); }
      catch (e) { fail(g, false, e.message); return; }
      es.onopen = () => { open = true; opened(g); };
      es.addEventListener('message', e => { const m = parse(e.data); if (m && g === gen) cb.messages([m]); });
      es.addEventListener('reset', e => { const r = parse(e.data); if (g === gen) cb.reset(r && r.last_id, r && r.epoch); });
      es.addEventListener('presence', e => { const p = parse(e.data); if (p && g === gen && cb.presence) cb.presence(p); });
      // Both a lost connection and the server's `event: error` (which has data) land here.
      // We reconnect ourselves (with backoff and our own resume point), not EventSource.
      es.onerror = e => {
        const why = e && e.data ? (parse(e.data) || {}).error : null;
        fail(g, open, why || (open ? 'connection lost' : 'could not connect'));
      };
    }

    async function poll(g) {
      let open = false;
      while (g === gen) {
        const c = ctl = new env.AbortController();
        const wait = open ? POLL_WAIT : 0;   // the first poll answers at once: proves it works
        const t0 = env.now();
        const timer = env.setTimeout(() => c.abort(), (wait + 15) * 1000);
        let j = null, epoch = null;
        try {
          // Presence only for a page that shows it: `presence=VERSION` answers at once when
          // the room's presence is not VERSION.
          const extra = cb.presence && cb.presenceVersion ? { wait, presence: cb.presenceVersion() } : { wait };
          const r = await env.fetch(`${path}/messages${query(extra)}`, { signal: c.signal, cache: 'no-store' });
          epoch = r.headers && r.headers.get ? r.headers.get('X-C10k-Epoch') : null;
          j = await r.json().catch(() => null);
          if (!r.ok || !j || !Array.isArray(j.messages)) throw new Error((j && j.error) || `HTTP ${r.status}`);
        } catch (e) {
          fail(g, open, c.signal.aborted ? 'timed out' : humanError(e));
          return;
        } finally {
          env.clearTimeout(timer);
        }
        if (g !== gen) return;
        if (!open) { open = true; opened(g); }
        if (j.reset) cb.reset(j.last_id, epoch);
        if (j.presence && cb.presence) cb.presence(j.presence);
        if (j.messages.length) cb.messages(j.messages);
        else if (!j.presence && wait > 0 && env.now() - t0 < 1000) await new Promise(res => env.setTimeout(res, 1000));   // never spin
      }
    }

    connect();
    return {
      // Sends a frame if the WebSocket is open; false means: use HTTP instead.
      send(frame) {
        if (!ws || ws.readyState !== 1) return false;
        ws.send(JSON.stringify(frame));
        return true;
      },
      retryNow() { if (waiting) connect(); },
      stop() { stopped = true; teardown(); },
    };
  }

  // Who is in a room, from presence events: a snapshot (`members`) replaces the view, a
  // diff (`joined`, `left`) updates it; returns the new view. view: {version, names: Map
  // name -> since, users, connections, anonymous, more}.
  function applyPresence(view, p) {
    const next = { version: p.version, names: new Map(view.names), users: p.users, connections: p.connections,
      anonymous: p.anonymous || 0, more: view.more || 0 };
    if (Array.isArray(p.members)) {
      next.names = new Map(p.members.map(m => [m.name, m.since]));
      next.more = p.more || 0;
    } else {
      for (const j of p.joined || []) next.names.set(j.name, j.since);
      for (const n of p.left || []) next.names.delete(n);
      next.more = Math.max(0, p.users - next.names.size);
    }
    return next;
  }
  const emptyPresence = () => ({ version: 0, names: new Map(), users: 0, connections: 0, anonymous: 0, more: 0 });

  return {
    MAX_BODY, TRANSPORTS, validRoom, roomFromHash, backoff, bodyError, isMessage, humanError, newKey,
    emptyFeed, merge, mergeOlder, olderUrl, linkify, live, applyPresence, emptyPresence,
  };
})();

if (typeof module === 'object' && module.exports) module.exports = Chat;
if (typeof document === 'object') {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', startPage);
  else startPage();
}

function startPage() {
  const C = Chat;
  const $ = id => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  };
  const store = {
    get(k, d) { try { return JSON.parse(localStorage.getItem('c10k.' + k)) ?? d; } catch { return d; } },
    set(k, v) { try { localStorage.setItem('c10k.' + k, JSON.stringify(v)); } catch { /* private mode: fine */ } },
  };
  document.documentElement.classList.replace('no-js', 'js');

  const inbox = $('inbox'), pendingList = $('pending'), notice = $('notice');
  const composer = $('composer'), input = $('message-input'), nickInput = $('nick');
  const roomList = $('rooms'), roomForm = $('room-form'), roomInput = $('room-name'), roomError = $('room-error');
  const statusEl = $('status'), statusText = $('status-text'), retryBtn = $('retry-now'), roomTitle = $('room-title');
  const newBelow = $('new-below');
  const membersList = $('members'), membersMore = $('members-more');
  let presence = C.emptyPresence();
  function renderPresence() {
    const names = [...presence.names.entries()].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
    membersList.replaceChildren(...names.map(([name]) => {
      const li = el('li', name === nick() ? 'me' : null, name);
      li.dir = 'auto';
      return li;
    }));
    const extra = [];
    if (presence.more > 0) extra.push(`and ${presence.more} more`);
    if (presence.anonymous > 0) extra.push(`${presence.anonymous} anonymous`);
    membersMore.textContent = extra.join(', ');
  }

  const env = {
    WebSocket: window.WebSocket, EventSource: window.EventSource, AbortController: window.AbortController,
    fetch: (...a) => window.fetch(...a),
    setTimeout: (f, ms) => window.setTimeout(f, ms), clearTimeout: t => window.clearTimeout(t),
    now: () => Date.now(),
    wsOrigin: (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host,
  };

  let room = null, feed = C.emptyFeed(), conn = null, tookOver = false, refSeq = 0, isLive = false;
  // A token for private rooms (docs/protocol.md, "Tokens"): opened as /?access_token=T, kept
  // for this tab only, and taken out of the address bar so it is not bookmarked or shared.
  const token = (() => {
    const params = new URLSearchParams(location.search);
    let t = params.get('access_token');
    try {
      if (t) sessionStorage.setItem('c10k.token', t);
      else t = sessionStorage.getItem('c10k.token');
    } catch { /* private mode: this page load only */ }
    if (params.has('access_token')) {
      params.delete('access_token');
      const q = String(params);
      history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
    }
    return t || '';
  })();
  const authHeaders = h => (token ? { ...h, Authorization: `Bearer ${token}` } : h);
  // The store's epoch, from the page; ids are resumed in it (docs/protocol.md, "Epochs").
  let epoch = (document.querySelector('meta[name="c10k-epoch"]') || {}).content || '';
  // Your posts until confirmed: {ref, key, room, body, from, afterId, via, state, why, timer}.
  // Each has an idempotency key, so sending it again cannot store it twice (the server
  // answers a repeated key with the message it stored: docs/protocol.md).
  const pending = [];
  let rooms = [].concat(store.get('rooms', [])).filter(C.validRoom);
  if (!rooms.includes('main')) rooms.unshift('main');

  nickInput.value = String(store.get('nick', '')).slice(0, 64);
  nickInput.addEventListener('input', () => store.set('nick', nickInput.value.trim()));
  const nick = () => nickInput.value.trim();
  const say = text => { notice.textContent = text; };

  // ---- messages ----
  function fmtTime(d) {
    const today = d.toDateString() === new Date().toDateString();
    return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  }

  function messageEl(m) {
    const div = el('div', 'message'), meta = el('div', 'meta'), body = el('p', 'body');
    div.id = 'm' + m.id;
    if (m.from && m.from === nick()) div.classList.add('mine');
    const from = el('span', 'from', m.from || 'anonymous');
    from.dir = 'auto';
    meta.append(from);
    const d = new Date(m.time);
    if (Number.isFinite(m.time) && !isNaN(d)) {
      const t = el('time', null, fmtTime(d));
      t.dateTime = d.toISOString();
      t.title = d.toLocaleString();
      meta.append(t);
    }
    for (const part of C.linkify(m.body)) {
      if (typeof part === 'string') { body.append(document.createTextNode(part)); continue; }
      const a = el('a', null, part.text);
      a.href = part.href;
      a.rel = 'noopener noreferrer';
      a.target = '_blank';
      body.append(a);
    }
    body.dir = 'auto';   // right-to-left text is laid out right to left
    div.append(meta, body);
    return div;
  }

  // Replaces #inbox (at first the server-rendered messages of room main) with the view.
  function renderAll() {
    tookOver = true;
    inbox.setAttribute('aria-busy', 'true');
    inbox.replaceChildren(...feed.msgs.map(messageEl));
    inbox.removeAttribute('aria-busy');
  }

  const nearBottom = () => inbox.scrollHeight - inbox.scrollTop - inbox.clientHeight < 60;

  function show(res, forceScroll) {
    const stick = forceScroll || nearBottom();
    feed = res.feed;
    if (!tookOver || !res.inOrder) renderAll();
    else {
      for (const m of res.added) inbox.append(messageEl(m));
      for (let i = 0; i < res.dropped.length; i++) inbox.firstElementChild?.remove();
    }
    if (stick) inbox.scrollTop = inbox.scrollHeight;
    else if (res.added.length) newBelow.hidden = false;
  }

  function toBottom() {
    inbox.scrollTop = inbox.scrollHeight;
    newBelow.hidden = true;
  }
  newBelow.addEventListener('click', () => { toBottom(); inbox.focus(); });

  // ---- older history: a page from the store each time the reader reaches the top ----
  // The live stream brings what the server holds in memory (200 messages by default);
  // older ones come from GET /api/rooms/{room}/messages?before=ID, newest first.
  let older = { room: null, busy: false, done: false };
  async function loadOlder() {
    const r = room, url = C.olderUrl(r, feed);
    if (older.room !== r) older = { room: r, busy: false, done: false };
    if (older.busy || older.done || !tookOver) return;
    if (url === null) { if (feed.msgs.length) older.done = true; return; }
    older.busy = true;
    inbox.setAttribute('aria-busy', 'true');
    try {
      const res = await env.fetch(url, { headers: authHeaders({ Accept: 'application/json' }) });
      if (!res.ok) {
        const why = await res.json().then(j => j.error, () => null);
        throw new Error(why || `HTTP ${res.status}`);
      }
      const page = await res.json();
      if (r !== room) return;   // switched rooms meanwhile
      if (page.next_before === null) older.done = true;
      // Keep the reader's place: what was on screen stays where it was.
      const fromBottom = inbox.scrollHeight - inbox.scrollTop;
      feed = C.mergeOlder(feed, page.messages).feed;
      renderAll();
      inbox.scrollTop = inbox.scrollHeight - fromBottom;
    } catch (e) {
      say(`Could not load older messages (${C.humanError(e)}); scroll up again to retry.`);
    } finally {
      if (older.room === r) older.busy = false;
      inbox.removeAttribute('aria-busy');
    }
    fillScreen();
  }
  // A view too short to scroll gets no scroll events: fill it with older pages instead.
  function fillScreen() {
    if (!older.done && inbox.scrollHeight <= inbox.clientHeight) loadOlder();
  }
  inbox.addEventListener('scroll', () => {
    if (nearBottom()) newBelow.hidden = true;
    if (inbox.scrollTop < 40) loadOlder();
  });

  // ---- your posts: sending, failed, unconfirmed ----
  const byRef = ref => pending.find(p => p.ref === ref);

  function settle(p, state, why) {
    clearTimeout(p.timer);
    p.state = state;
    p.why = why;
    renderPending();
  }

  function delivered(p, m) {
    clearTimeout(p.timer);
    const i = pending.indexOf(p);
    if (i >= 0) pending.splice(i, 1);
    renderPending();
    if (p.room === room && C.isMessage(m)) show(C.merge(feed, [m], false), true);
  }

  // A post that may or may not have been stored waits for the connection and is sent
  // again with its key. If the stream shows a message with the same sender and body,
  // newer than when it was sent, that is its confirmation too.
  function confirmFromStream(r, added) {
    for (const m of added) {
      const p = pending.find(q => q.room === r && (q.state === 'unconfirmed' || q.state === 'queued') &&
        q.body === m.body &&
        q.from === (m.from || '') && m.id > q.afterId);
      if (p) delivered(p, null);
    }
  }

  // Not known to be stored: send it again (same key) once the room is live, or, if it is
  // live now (only the post's own request failed), after a moment.
  function queue(p, why) {
    settle(p, 'queued', why);
    if (p.room === room && isLive) p.timer = setTimeout(() => { if (p.state === 'queued') send(p); }, 2000);
  }

  function resendQueued() {
    for (const p of pending) {
      if (p.room === room && (p.state === 'queued' || p.state === 'unconfirmed')) send(p);
    }
  }

  function send(p) {
    clearTimeout(p.timer);
    p.state = 'sending';
    p.why = '';
    const frame = { type: 'post', body: p.body, ref: p.ref, key: p.key };
    if (p.from) frame.from = p.from;
    if (p.room === room && conn && conn.send(frame)) {
      p.via = 'ws';
      clearTimeout(p.timer);
      p.timer = setTimeout(() => {
        if (p.state === 'sending') settle(p, 'unconfirmed', 'No confirmation from the server yet.');
      }, 15000);
    } else {
      postHTTP(p);
    }
    renderPending();
  }

  async function postHTTP(p) {
    p.via = 'http';
    let r;
    try {
      r = await fetch(`/api/rooms/${encodeURIComponent(p.room)}/messages`, {
        method: 'POST',
        headers: authHeaders({ 'Content-Type': 'application/json', 'Idempotency-Key': p.key }),
        body: JSON.stringify(p.from ? { body: p.body, from: p.from } : { body: p.body }),
      });
    } catch {
      queue(p, 'The server cannot be reached; it will be sent when the connection is back.');
      return;
    }
    const j = await r.json().catch(() => null);
    if (r.status === 409) {   // the same key is being stored right now: ask again shortly
      settle(p, 'sending', '');
      p.timer = setTimeout(() => send(p), 1000);
    } else if (!r.ok) settle(p, 'failed', (j && j.error) || `The server answered ${r.status}.`);
    else delivered(p, j);
  }

  function unconfirmWsPosts(r) {
    for (const p of pending) {
      if (p.room === r && p.via === 'ws' && p.state === 'sending') {
        settle(p, 'queued', 'The connection closed before the server confirmed it; it will be sent again when it is back.');
      }
    }
  }

  function pendingEl(p) {
    const li = el('li', 'pending ' + p.state), meta = el('div', 'meta');
    if (p.room !== room) meta.append(el('span', 'room', 'to #' + p.room));
    meta.append(el('span', null, {
      sending: 'Sending…',
      failed: 'Not sent: ' + p.why,
      queued: p.why,
      unconfirmed: p.why + ' It will be sent again when the connection is back.',
    }[p.state]));
    li.append(meta, el('p', 'body', p.body));
    if (p.state !== 'sending') {
      const actions = el('div', 'actions');
      for (const [action, label] of [['retry', 'Retry'], ['edit', 'Edit'], ['discard', 'Discard']]) {
        const b = el('button', 'quiet', label);
        b.type = 'button';
        b.dataset.action = action;
        b.dataset.ref = p.ref;
        actions.append(b);
      }
      li.append(actions);
    }
    return li;
  }

  function renderPending() { pendingList.replaceChildren(...pending.map(pendingEl)); }

  pendingList.addEventListener('click', e => {
    const b = e.target.closest('button[data-action]');
    const p = b && byRef(Number(b.dataset.ref));
    if (!p) return;
    if (b.dataset.action === 'retry') send(p);
    else {
      clearTimeout(p.timer);
      pending.splice(pending.indexOf(p), 1);
      if (b.dataset.action === 'edit') input.value = input.value ? `${input.value} ${p.body}` : p.body;
      renderPending();
    }
    input.focus();
  });

  composer.addEventListener('submit', e => {
    e.preventDefault();
    const body = input.value, why = C.bodyError(body);
    say(why || '');
    if (why) { input.focus(); return; }
    const p = { ref: ++refSeq, key: C.newKey(), room, body, from: nick(), afterId: feed.lastId };
    pending.push(p);
    input.value = '';
    send(p);
    toBottom();
  });
  input.addEventListener('input', () => { if (notice.textContent) say(''); });

  // Unsent text would be lost on leaving: ask first.
  window.addEventListener('beforeunload', e => { if (pending.length) { e.preventDefault(); e.returnValue = ''; } });

  // ---- connection status ----
  function showStatus(s) {
    statusEl.dataset.state = s.state;
    statusText.textContent =
      s.state === 'live' ? `Live · ${s.transport}`
      : s.state === 'connecting' ? `Connecting · ${s.transport}…`
      : `Offline${s.why ? ` (${s.why})` : ''} · retrying in ${Math.ceil(s.delay / 1000)} s`;
    retryBtn.hidden = s.state !== 'retrying';
  }
  retryBtn.addEventListener('click', () => conn && conn.retryNow());
  window.addEventListener('online', () => conn && conn.retryNow());

  // ---- rooms ----
  function renderRooms() {
    roomList.replaceChildren(...rooms.map(r => {
      const li = el('li'), a = el('a', null, '#' + r);
      a.href = '#' + r;
      if (r === room) a.setAttribute('aria-current', 'page');
      li.append(a);
      if (r !== 'main') {
        const x = el('button', 'quiet', '×');
        x.type = 'button';
        x.dataset.room = r;
        x.title = `Leave #${r}`;
        x.setAttribute('aria-label', `Leave #${r}`);
        li.append(x);
      }
      return li;
    }));
  }

  roomList.addEventListener('click', e => {
    const b = e.target.closest('button[data-room]');
    if (!b) return;
    rooms = rooms.filter(r => r !== b.dataset.room);
    store.set('rooms', rooms);
    if (b.dataset.room === room) location.hash = 'main';
    renderRooms();
  });

  roomForm.addEventListener('submit', e => {
    e.preventDefault();
    const r = roomInput.value.trim();
    if (!C.validRoom(r)) {
      roomInput.setAttribute('aria-invalid', 'true');
      roomError.textContent = 'A room name is 1 to 64 letters, digits, _ or -.';
      roomInput.focus();
      return;
    }
    roomInput.removeAttribute('aria-invalid');
    roomError.textContent = '';
    roomInput.value = '';
    location.hash = r;   // hashchange switches
    input.focus();
  });
  roomInput.addEventListener('input', () => {
    const v = roomInput.value.trim();
    if (v === '' || C.validRoom(v)) { roomInput.removeAttribute('aria-invalid'); roomError.textContent = ''; }
  });

  function connectRoom(r) {
    presence = C.emptyPresence();
    renderPresence();
    conn = C.live(r, env, {
      after: () => feed.lastId,
      epoch: () => epoch,
      token: () => token,
      nick: () => nick(),
      presenceVersion: () => presence.version,
      presence: p => {
        // A snapshot always; a diff only on top of the version it follows.
        if (r !== room || !(Array.isArray(p.members) || p.previous === presence.version)) return;
        presence = C.applyPresence(presence, p);
        renderPresence();
      },
      // History follows; a new epoch (the database was replaced or restored) is adopted.
      reset: (lastId, newEpoch) => { if (newEpoch) epoch = newEpoch; feed = C.emptyFeed(); older.done = false; renderAll(); },
      messages: list => {
        const res = C.merge(feed, list, true);
        show(res);
        confirmFromStream(r, res.added);
        fillScreen();
      },
      ack: (ref, m) => {
        const p = byRef(ref);
        if (p) delivered(p, m);
        else if (C.isMessage(m)) show(C.merge(feed, [m], false));
      },
      error: (ref, why, retry) => {
        const p = byRef(ref);
        // retry: the same key is being stored right now (a resend overtook the first try).
        if (p && retry) { clearTimeout(p.timer); p.timer = setTimeout(() => send(p), 1000); }
        else if (p) settle(p, 'failed', why || 'the server refused it');
        else say(why || 'The server reported an error.');
      },
      status: s => {
        showStatus(s);
        isLive = s.state === 'live';
        if (isLive) {
          // Whatever it held is shown now: an empty box means an empty room.
          inbox.dataset.loaded = '';
          resendQueued();
          fillScreen();
        }
      },
      dropped: () => unconfirmWsPosts(r),
    });
  }

  function switchRoom() {
    let r = C.roomFromHash(location.hash);
    if (r === null) {
      say(`“${location.hash.slice(1, 80)}” is not a room name: use 1 to 64 letters, digits, _ or -.`);
      r = room || 'main';
      history.replaceState(null, '', '#' + r);
    }
    if (r === room) return;
    const first = room === null;
    if (conn) { unconfirmWsPosts(room); conn.stop(); }
    room = r;
    isLive = false;
    delete inbox.dataset.loaded;
    if (!rooms.includes(r)) { rooms.push(r); store.set('rooms', rooms); }
    feed = C.emptyFeed();
    // Room main's server-rendered messages stay until the live view has something to show.
    if (!(first && r === 'main')) renderAll();
    roomTitle.textContent = '#' + r;
    document.title = `#${r} · c10k chat`;
    input.placeholder = `Message #${r}`;
    renderRooms();
    renderPending();
    connectRoom(r);
  }

  // A new nickname is who this tab is present as: reconnect under it (resuming after the
  // last message, so nothing is missed or shown twice).
  nickInput.addEventListener('change', () => {
    if (!conn || room === null) return;
    unconfirmWsPosts(room);
    conn.stop();
    connectRoom(room);
  });

  window.addEventListener('hashchange', switchRoom);
  switchRoom();
  toBottom();
}
