// admin.js: the admin page's script. Asks for the admin token (kept in sessionStorage, for
// this tab only), reads GET /api/admin every 2 s with it, and shows the nodes, the rooms
// and the last errors. Everything shown is set as text, never as HTML.
'use strict';

(function () {
  const $ = id => document.getElementById(id);
  const status = $('admin-status'), form = $('token-form'), input = $('admin-token');
  const KEY = 'c10k.admin-token';
  let token = '';
  try { token = sessionStorage.getItem(KEY) || ''; } catch { /* private mode */ }
  let timer = null;

  function row(cells) {
    const tr = document.createElement('tr');
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c === null || c === undefined ? '' : String(c);
      tr.append(td);
    }
    return tr;
  }

  function render(view) {
    $('nodes').tBodies[0].replaceChildren(...view.nodes.map(n => row([
      n.node, n.pid, n.poller && n.poller !== 'none' ? `${n.model} (${n.poller})` : n.model, n.store,
      n.connections, n.subscribers.ws, n.subscribers.sse, n.subscribers.longpoll, n.rooms,
      n.bus.outage ? `down: ${n.bus.outage}` : (n.bus.connected ? 'connected' : 'none'), n.errors,
    ])));
    $('admin-rooms').tBodies[0].replaceChildren(...view.rooms.map(r => row([
      r.room, r.last_id, r.users, r.connections, r.messages_last_minute, r.private ? 'yes' : '',
    ])));
    $('errors').replaceChildren(...view.errors.map(e => {
      const li = document.createElement('li');
      li.textContent = `${new Date(e.time).toISOString()} ${e.level} ${e.target}: ${e.message}`;
      return li;
    }));
    status.textContent = `${view.nodes.length} node${view.nodes.length === 1 ? '' : 's'}, ` +
      `${view.rooms.length} room${view.rooms.length === 1 ? '' : 's'} · updated ${new Date(view.time).toLocaleTimeString()}`;
  }

  async function refresh() {
    clearTimeout(timer);
    if (!token) return;
    try {
      const r = await fetch('/api/admin', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
      const j = await r.json().catch(() => null);
      if (r.status === 401) {
        status.textContent = 'That is not the admin token: give the one the server was started with (--admin-token).';
        return;
      }
      if (!r.ok || !j) throw new Error((j && j.error) || `HTTP ${r.status}`);
      render(j);
    } catch (e) {
      status.textContent = `The server cannot be read (${e.message}); retrying.`;
    }
    timer = setTimeout(refresh, 2000);
  }

  form.addEventListener('submit', e => {
    e.preventDefault();
    token = input.value.trim();
    try { sessionStorage.setItem(KEY, token); } catch { /* private mode */ }
    input.value = '';
    refresh();
  });
  refresh();
})();
