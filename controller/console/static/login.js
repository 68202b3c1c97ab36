// Log in with the API token: the answer sets the session cookie (HttpOnly: no script here ever sees it).
const form = document.getElementById('login');
const error = document.getElementById('error');

function next() {
  const wanted = new URLSearchParams(location.search).get('next') || '';
  // Only a path on this listener: never a redirect elsewhere.
  return /^\/console\/[A-Za-z0-9/_?=&%.-]*$/.test(wanted) && !wanted.startsWith('/console/login') ? wanted : '/console/live';
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.textContent = '';
  const token = document.getElementById('token').value;
  let response;
  try {
    response = await fetch('/console/login', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
    });
  } catch (e) {
    error.textContent = 'The controller did not answer: ' + e.message;
    return;
  }
  if (response.ok) {
    location.assign(next());
    return;
  }
  let message = response.status + ' ' + response.statusText;
  try { message = (await response.json()).error || message; } catch (e) { /* keep the status */ }
  error.textContent = message;
  document.getElementById('token').select();
});
