// Who is logged in: the access token and the agent, kept for the tab (sessionStorage), so a
// reload stays logged in and each tab logs in on its own.
const KEY = 'chatdesk.session';

class Session {
  constructor() {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    this.token = saved?.token ?? null;
    this.me = saved?.me ?? null;
    this.listeners = new Set();
  }

  set(token, me) {
    this.token = token;
    this.me = me;
    sessionStorage.setItem(KEY, JSON.stringify({ token, me }));
    this.listeners.forEach((listener) => listener());
  }

  update(me) {
    this.set(this.token, { ...this.me, ...me });
  }

  clear() {
    this.token = null;
    this.me = null;
    sessionStorage.removeItem(KEY);
    // The next login starts the event stream afresh: what happened meanwhile is in the lists.
    for (const key of Object.keys(sessionStorage)) {
      if (key.startsWith('chatdesk.last-event.')) sessionStorage.removeItem(key);
    }
    this.listeners.forEach((listener) => listener());
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

export const session = new Session();
