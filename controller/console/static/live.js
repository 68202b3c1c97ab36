// Live: the calls being streamed, from the listener's Server-Sent Events (a few times a second), and the health.
import { api, bytes, el, secs, session, setupHeader, toLogin } from './common.js';

setupHeader();
const tbody = document.querySelector('#calls tbody');
const none = document.getElementById('none');
const count = document.getElementById('count');
const streamState = document.getElementById('stream-state');

function agentCell(agent) {
  if (!agent) return el('span', { class: 'muted', text: '–' });
  const s = agent.stats || {};
  return el('span', {},
    el('span', { class: 'pill ' + (agent.connected ? 'ok' : 'bad'), text: agent.connected ? 'connected' : 'not connected' }),
    ' ', el('span', { class: 'muted', title: agent.url,
      text: `sent ${secs((s.sent_ms || 0) / 1000)} · heard ${secs((s.agent_ms || 0) / 1000)}` +
            (s.last_error ? ' · ' + s.last_error : '') }));
}

function levelCell(levels) {
  // dBFS per channel, -60 dB and below shown empty.
  if (!levels) return el('span', { class: 'muted', text: '–' });
  return el('span', { title: levels.map((db) => db.toFixed(1) + ' dBFS').join(' / ') }, ...levels.map((db) => {
    const bar = el('span');
    bar.style.width = Math.max(0, Math.min(100, (db + 60) / 60 * 100)) + '%';
    return el('span', { class: 'meter', role: 'meter', 'aria-valuemin': '-60', 'aria-valuemax': '0',
      'aria-valuenow': String(db), 'aria-label': 'level, dBFS', 'data-db': String(db) }, bar);
  }));
}

function row(call) {
  const tr = el('tr', { 'data-uuid': call.uuid });
  const cells = [
    el('td', { class: 'mono', title: call.uuid, text: call.uuid }),
    el('td', { text: call.caller || '–' }), el('td', { text: call.destination || '–' }), el('td', { text: call.rule }),
    el('td', { text: `${call.mix} / ${call.rate}` }), el('td', { 'data-field': 'phase', text: call.phase }),
    el('td', { class: 'num', 'data-field': 'seconds', text: secs(call.seconds) }),
    el('td', { class: 'num', 'data-field': 'bytes', 'data-bytes': String(call.bytes), text: bytes(call.bytes) }),
    el('td', { class: 'num', 'data-field': 'age', text: call.last_frame_age_s === null ? '–' : secs(call.last_frame_age_s, 2) }),
    el('td', { class: 'num', 'data-field': 'gaps', text: call.gaps ? `${call.gaps} (${secs(call.gap_seconds)})` : '0' }),
    el('td', { 'data-field': 'level' }, levelCell(call.level_db)),
    el('td', { 'data-field': 'agent' }, agentCell(call.agent)),
  ];
  tr.append(...cells);
  if (call.no_audio_warning) tr.title = call.no_audio_warning;
  return tr;
}

function showCalls(calls) {
  const seen = new Set();
  for (const call of calls) {
    seen.add(call.uuid);
    const fresh = row(call);
    const old = tbody.querySelector(`tr[data-uuid="${CSS.escape(call.uuid)}"]`);
    if (old) old.replaceWith(fresh); else tbody.append(fresh);
  }
  for (const tr of [...tbody.children]) if (!seen.has(tr.dataset.uuid)) tr.remove();
  none.hidden = calls.length > 0;
  count.textContent = `(${calls.length})`;
}

function showHealth(health) {
  const box = document.getElementById('health');
  box.className = 'health ' + (health.healthy ? 'ok' : 'bad');
  box.replaceChildren(el('span', { class: 'state', text: health.healthy ? 'Healthy' : 'Unhealthy' }),
    el('span', { class: 'muted', text: ` · Event Socket ${health.esl.host}:${health.esl.port} ` +
      (health.esl.connected ? 'connected' : 'not connected') + ` · recorder port ${health.recorder.port ?? '–'}` }));
  if (health.reasons.length) box.append(el('ul', {}, ...health.reasons.map((r) => el('li', { text: r }))));
}

function connect() {
  const source = new EventSource('/console/api/events');
  source.addEventListener('open', () => { streamState.textContent = 'Updating live.'; });
  source.addEventListener('live', (event) => {
    const data = JSON.parse(event.data);
    showCalls(data.calls);
    if (data.health) showHealth(data.health);
    document.body.dataset.updated = String(data.at);
  });
  source.addEventListener('logout', () => { source.close(); toLogin(); });
  source.addEventListener('error', async () => {
    streamState.textContent = 'Reconnecting…';
    if (source.readyState === EventSource.CLOSED) {
      try { await session(); setTimeout(connect, 1000); } catch (e) { /* api() went to the login */ }
    }
  });
}

document.getElementById('doctor').addEventListener('click', async (event) => {
  const button = event.currentTarget;
  const steps = document.getElementById('steps');
  button.disabled = true;
  steps.replaceChildren(el('li', { text: 'Running…' }));
  try {
    const result = await api('/doctor/chain', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"seconds": 1}' });
    steps.replaceChildren(...(result.steps || []).map((s) =>
      el('li', { class: s.ok ? 'ok' : 'bad', text: `${s.ok ? '✓' : '✗'} ${s.name}: ${s.detail || ''}` })));
  } catch (e) {
    steps.replaceChildren(el('li', { class: 'bad error', text: e.message }));
  } finally {
    button.disabled = false;
  }
});

session().then(connect).catch(() => {});
