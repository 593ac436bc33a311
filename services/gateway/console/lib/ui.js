// Small shared pieces of the views: formatting, the store hook, the clock, form errors.
import { html } from '../vendor/htm-preact.js';
import { useEffect, useState } from '../vendor/hooks.js';

// Re-render when a store (the desk, the session) says it changed.
export function useStore(store) {
  const [, setVersion] = useState(0);
  useEffect(() => store.subscribe(() => setVersion((v) => v + 1)), [store]);
  return store;
}

// The current time, ticking every second (for countdowns).
export function useNow() {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  return now;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const day = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });

export function shortTime(value) {
  if (!value) return '';
  const date = new Date(value);
  const today = new Date().toDateString() === date.toDateString();
  return today ? clock.format(date) : `${day.format(date)} ${clock.format(date)}`;
}

export function fileSize(bytes) {
  if (bytes == null) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function seconds(total) {
  const s = Math.max(0, Math.round(total));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export const PLATFORMS = { telegram: 'Telegram', facebook: 'Facebook Messenger' };

// A form field with its label, and its error under it (tied to the input for screen readers).
export function Field({ label, name, error, children, hint }) {
  const id = `field-${name}`;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children(id, error ? `${id}-error` : undefined)}
    ${hint && html`<small class="hint">${hint}</small>`}
    ${error && html`<small class="error" id=${`${id}-error`}>${error}</small>`}
  </div>`;
}

export function Alert({ error }) {
  return error ? html`<p class="alert" role="alert">${error}</p>` : null;
}

// Time left to accept, when the queue limits it (routing gives `offer_expires_at`).
export function Countdown({ until }) {
  return until ? html`<${Ticking} until=${until} />` : null;
}

function Ticking({ until }) {
  const now = useNow();
  const left = (new Date(until).getTime() - now) / 1000;
  return html`<span class=${left < 15 ? 'countdown urgent' : 'countdown'} role="timer"
    aria-label="Time left to accept">
    ${left > 0 ? `${seconds(left)} to accept` : 'Time is up'}
  </span>`;
}
