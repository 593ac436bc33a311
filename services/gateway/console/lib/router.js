// Client-side pages: the path of the address bar, changed without a reload. The gateway answers
// index.html for any of them, so a reload or a shared link lands on the same page.
import { html } from '../vendor/htm-preact.js';
import { useEffect, useState } from '../vendor/hooks.js';

const listeners = new Set();

export function navigate(path, { replace = false } = {}) {
  if (path === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', path);
  listeners.forEach((listener) => listener());
}

addEventListener('popstate', () => listeners.forEach((listener) => listener()));

export function useLocation() {
  const [, setVersion] = useState(0);
  useEffect(() => {
    const listener = () => setVersion((v) => v + 1);
    listeners.add(listener);
    return () => listeners.delete(listener);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

// A link that changes the page in place (a modified click still opens a new tab).
export function Link({ href, children, ...rest }) {
  function click(event) {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    navigate(href);
  }
  return html`<a href=${href} onClick=${click} ...${rest}>${children}</a>`;
}
