// What every page shares: the session (its CSRF token), fetching with it, the header's logout, formatting.
let csrf = null;

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign('/console/login?next=' + encodeURIComponent(next));
}

export async function api(path, options = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, options.headers || {});
  if (options.method && options.method !== 'GET') {
    if (csrf === null) await session();
    if (csrf) headers['X-CSRF-Token'] = csrf;
  }
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: 'same-origin' }));
  if (response.status === 401) { toLogin(); throw new Error('not logged in'); }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || response.status + ' ' + response.statusText);
  return body;
}

export async function session() {
  const body = await api('/console/api/session');
  csrf = body.csrf;
  return body;
}

export function setupHeader() {
  const button = document.getElementById('logout');
  if (button) {
    button.addEventListener('click', async () => {
      try { await api('/console/logout', { method: 'POST' }); } finally { location.assign('/console/login'); }
    });
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(2) + ' MiB';
}

export function secs(s, digits = 1) {
  if (s === null || s === undefined) return '–';
  return Number(s).toFixed(digits) + ' s';
}

export function clock(s) {
  s = Math.max(0, s || 0);
  const m = Math.floor(s / 60);
  return m + ':' + (s - m * 60).toFixed(2).padStart(5, '0');
}

export function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}
