// The agent console: login, then the Chats tab (and, for supervisors, the admin pages), with
// the agent's status switch always in the header.
import { api } from './lib/api.js';
import { Desk } from './lib/desk.js';
import { askOnce, notifyOffer } from './lib/notify.js';
import { Link, navigate, useLocation } from './lib/router.js';
import { session } from './lib/session.js';
import { Alert, useStore } from './lib/ui.js';
import { html, render } from './vendor/htm-preact.js';
import { useEffect, useMemo, useState } from './vendor/hooks.js';
import { AdminNav, AgentsPage, ChannelsPage, QueuesPage } from './views/admin.js';
import { ChatsPage } from './views/chats.js';
import { DuplicatesPage } from './views/contact.js';
import { Login } from './views/login.js';

function App() {
  useStore(session);
  useLocation();
  if (!session.token) {
    if (location.pathname !== '/login') navigate('/login', { replace: true });
    document.title = 'chatdesk';
    return html`<${Login} />`;
  }
  return html`<${Console} key=${session.token} />`;
}

function Console() {
  const desk = useMemo(
    () =>
      new Desk(session.me, {
        onOffer: (chat) => notifyOffer(chat, (id) => navigate(`/chats/${id}`)),
        onRefused: () => session.clear(),
      }),
    [],
  );
  useEffect(() => {
    desk.start(session.token);
    return () => desk.stop();
  }, [desk]);
  useStore(desk);
  const { path } = useLocation();

  const waiting = desk.newChats.length;
  useEffect(() => {
    document.title = waiting ? `(${waiting}) chatdesk` : 'chatdesk';
  }, [waiting]);

  return html`<div class="console">
    <${Header} desk=${desk} path=${path} />
    ${desk.connection === 'reconnecting' &&
    html`<p class="banner" role="status">Connection lost. Reconnecting…</p>`}
    <${Page} desk=${desk} path=${path} />
  </div>`;
}

function Page({ desk, path }) {
  const supervisor = session.me.role === 'supervisor';
  let match;
  if ((match = path.match(/^\/chats(?:\/([^/]+))?$/))) {
    return html`<${ChatsPage} desk=${desk} chatId=${match[1]} />`;
  }
  if ((match = path.match(/^\/contacts\/([^/]+)\/duplicates$/))) {
    return html`<${DuplicatesPage} contactId=${match[1]} />`;
  }
  const admin = { '/admin/agents': AgentsPage, '/admin/queues': QueuesPage, '/admin/channels': ChannelsPage };
  if (supervisor && admin[path]) {
    return html`<div><${AdminNav} path=${path} /><${admin[path]} /></div>`;
  }
  navigate('/chats', { replace: true });
  return null;
}

function Header({ desk, path }) {
  const me = session.me;
  const waiting = desk.newChats.length;
  return html`<header class="top">
    <span class="brand">chatdesk</span>
    <nav aria-label="Sections">
      <${Link} href="/chats" aria-current=${path.startsWith('/chats') ? 'page' : undefined}>
        Chats${waiting > 0 && html` <span class="count" aria-label=${`${waiting} waiting`}>${waiting}</span>`}
      </${Link}>
      ${me.role === 'supervisor' &&
      html`<${Link} href="/admin/agents" aria-current=${path.startsWith('/admin') ? 'page' : undefined}>
        Administration</${Link}>`}
    </nav>
    <${StatusSwitch} desk=${desk} />
    <span class="me">${me.display_name}</span>
    <button class="link" onClick=${logout}>Log out</button>
  </header>`;
}

function StatusSwitch({ desk }) {
  const [error, setError] = useState(null);
  const active = desk.status === 'active';
  async function toggle() {
    setError(null);
    if (!active) askOnce();
    try {
      session.update(await desk.setStatus(active ? 'inactive' : 'active'));
    } catch (failure) {
      setError(failure.message);
    }
  }
  return html`<span class="status">
    <button role="switch" aria-checked=${active} onClick=${toggle} class=${active ? 'on' : 'off'}
      aria-label="Active">
      <span class="dot" aria-hidden="true"></span>${active ? 'Active' : 'Inactive'}
    </button>
    <${Alert} error=${error} />
  </span>`;
}

async function logout() {
  try {
    await api('/auth/logout', { method: 'POST' });
  } finally {
    session.clear();
  }
}

render(html`<${App} />`, document.getElementById('app'));
