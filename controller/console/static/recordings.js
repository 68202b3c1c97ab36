// Recordings: the catalog, newest first, filtered and paginated by the server. The filters live in the URL.
import { api, el, secs, session, setupHeader, when } from './common.js';

setupHeader();
const form = document.getElementById('filters');
const tbody = document.querySelector('#recordings tbody');
const FIELDS = ['caller', 'destination', 'rule', 'since', 'until', 'close_reason', 'gaps', 'relayed'];

function params() { return new URLSearchParams(location.search); }

function fill() {
  const p = params();
  for (const name of FIELDS) form.elements[name].value = p.get(name) || '';
}

async function load() {
  const p = params();
  const query = new URLSearchParams();
  for (const name of [...FIELDS, 'page']) if (p.get(name)) query.set(name, p.get(name));
  const error = document.getElementById('error');
  error.textContent = '';
  let body;
  try {
    body = await api('/console/api/recordings?' + query);
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  tbody.replaceChildren(...body.recordings.map((r) => el('tr', { 'data-id': r.recording_id },
    el('td', {}, el('a', { href: '/console/recording?id=' + encodeURIComponent(r.recording_id), text: when(r.start_time) })),
    el('td', { text: r.caller || '–' }), el('td', { text: r.destination || '–' }), el('td', { text: r.rule || '–' }),
    el('td', { class: 'num', text: secs(r.duration_s) }), el('td', { text: r.close_reason || '–' }),
    el('td', { class: 'num', text: r.gaps ? `${r.gaps} (${secs(r.gap_seconds)})` : '0' }),
    el('td', { text: r.relay ? 'yes' : 'no' }),
    el('td', { class: 'mono', text: r.recording_id }))));
  document.getElementById('none').hidden = body.recordings.length > 0;
  document.getElementById('total').textContent = `(${body.total})`;
  document.getElementById('page').textContent = `Page ${body.page} of ${body.pages}`;
  document.getElementById('prev').disabled = body.page <= 1;
  document.getElementById('next').disabled = body.page >= body.pages;
  document.body.dataset.loaded = 'yes';
}

function go(changes) {
  const p = params();
  for (const [k, v] of Object.entries(changes)) { if (v) p.set(k, v); else p.delete(k); }
  history.pushState(null, '', '?' + p);
  load();
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const changes = { page: '' };
  for (const name of FIELDS) changes[name] = form.elements[name].value.trim();
  go(changes);
});
form.addEventListener('reset', () => setTimeout(() => go(Object.fromEntries([...FIELDS, 'page'].map((n) => [n, '']))), 0));
document.getElementById('prev').addEventListener('click', () => go({ page: String(Math.max(1, Number(params().get('page') || 1) - 1)) }));
document.getElementById('next').addEventListener('click', () => go({ page: String(Number(params().get('page') || 1) + 1) }));
window.addEventListener('popstate', () => { fill(); load(); });

fill();
session().then(load).catch(() => {});
