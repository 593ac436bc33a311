// The login form.
import { api } from '../lib/api.js';
import { askOnce } from '../lib/notify.js';
import { session } from '../lib/session.js';
import { Alert } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useState } from '../vendor/hooks.js';

export function Login() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function submit(event) {
    event.preventDefault();
    const form = new FormData(event.target);
    setBusy(true);
    setError(null);
    try {
      const answer = await api('/auth/login', {
        method: 'POST',
        json: { username: form.get('username'), password: form.get('password') },
      });
      if (answer.agent.status === 'active') askOnce(); // the login click lets the browser ask
      session.set(answer.access_token, answer.agent);
    } catch (failure) {
      setError(failure.status === 422 ? 'Enter your username and password.' : failure.message);
      setBusy(false);
    }
  }

  return html`<main class="login">
    <form onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title">chatdesk</h1>
      <p class="muted">Sign in to answer your customers.</p>
      <label for="username">Username</label>
      <input id="username" name="username" autocomplete="username" required autofocus />
      <label for="password">Password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required />
      <${Alert} error=${error} />
      <button type="submit" class="primary" disabled=${busy}>Log in</button>
    </form>
  </main>`;
}
