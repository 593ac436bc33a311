// The contact beside a chat, and the page of its possible duplicates, with merge.
import { api, fileUrl } from '../lib/api.js';
import { Link } from '../lib/router.js';
import { Alert, PLATFORMS } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useEffect, useState } from '../vendor/hooks.js';

// Every agent may read the channels' names: where a chat came from.
let channels = null;
function channelNames() {
  channels ??= api('/channels').then(
    (list) => new Map(list.map((channel) => [channel.id, channel])),
    () => {
      channels = null;
      return new Map();
    },
  );
  return channels;
}

function useContact(contactId) {
  const [contact, setContact] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setContact(null);
    api(`/contacts/${contactId}`).then(setContact, (failure) => setError(failure.message));
  }, [contactId]);
  return [contact, error];
}

export function ContactPanel({ chat, desk }) {
  const [contact, error] = useContact(chat.contact_id);
  const [channel, setChannel] = useState(null);
  const [found, setFound] = useState(null);
  useEffect(() => {
    channelNames().then((names) => setChannel(names.get(chat.channel_id) || null));
  }, [chat.channel_id]);
  useEffect(() => {
    api(`/contacts/${chat.contact_id}/duplicates`).then(
      (answer) => setFound(answer.count),
      () => setFound(null),
    );
  }, [chat.contact_id]);
  const duplicates = desk.duplicates.get(chat.contact_id) ?? found;
  return html`<aside class="contact-panel" aria-label="Contact">
    <${Alert} error=${error} />
    <div class="contact-head">
      <${Avatar} contact=${contact} name=${chat.contact_name} />
      <h3>${contact?.name || chat.contact_name}</h3>
    </div>
    <dl class="details">
      <dt>Source</dt><dd>${PLATFORMS[chat.platform] || chat.platform}</dd>
      <dt>Channel</dt><dd>${channel ? channel.name : '—'}</dd>
      ${contact && html`<${Details} contact=${contact} />`}
    </dl>
    ${duplicates > 0 &&
    html`<p><${Link} href=${`/contacts/${chat.contact_id}/duplicates`} class="duplicates-link">
      ${duplicates === 1 ? '1 possible duplicate' : `${duplicates} possible duplicates`}
    </${Link}></p>`}
    ${duplicates === 0 && html`<p class="muted">No duplicates found.</p>`}
  </aside>`;
}

function Details({ contact }) {
  const handles = contact.identities
    .filter((identity) => identity.username)
    .map((identity) => `@${identity.username}`);
  const unreachable = contact.identities.find((identity) => identity.unreachable);
  return html`
    <dt>Phones</dt><dd>${contact.phones.join(', ') || '—'}</dd>
    <dt>E-mails</dt><dd>${contact.emails.join(', ') || '—'}</dd>
    <dt>Account</dt><dd>${contact.account || '—'}</dd>
    ${handles.length > 0 && html`<dt>Username</dt><dd>${handles.join(', ')}</dd>`}
    ${unreachable && html`<dt>Reachable</dt><dd class="error">No: ${unreachable.unreachable_reason}</dd>`}
  `;
}

function Avatar({ contact, name }) {
  const [src, setSrc] = useState(null);
  const picture = contact?.picture_url;
  useEffect(() => {
    setSrc(null);
    if (picture) fileUrl(picture.replace(/^\/api/, '')).then(setSrc, () => setSrc(null));
  }, [picture]);
  if (src) return html`<img class="avatar" src=${src} alt=${`Picture of ${name}`} />`;
  const initials = name
    .split(/\s+/)
    .map((word) => word[0])
    .join('')
    .slice(0, 2)
    .toUpperCase();
  return html`<span class="avatar initials" aria-hidden="true">${initials}</span>`;
}

// "Possible duplicates" of a contact: the current one first, then the candidates to merge into it.
export function DuplicatesPage({ contactId }) {
  const [found, setFound] = useState(null);
  const [chosen, setChosen] = useState(new Set());
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);

  async function load() {
    try {
      setFound(await api(`/contacts/${contactId}/duplicates`));
    } catch (failure) {
      setError(failure.message);
    }
  }
  useEffect(() => {
    load();
  }, [contactId]);

  function toggle(id) {
    const next = new Set(chosen);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setChosen(next);
  }

  async function merge() {
    setError(null);
    try {
      const merged = await api(`/contacts/${contactId}/merge`, {
        method: 'POST',
        json: { duplicate_ids: [...chosen] },
      });
      setNotice(`Merged ${merged.merged_ids.length} into ${merged.survivor.name}.`);
      setChosen(new Set());
      await load();
    } catch (failure) {
      setError(failure.message);
    }
  }

  if (!found) return html`<main class="page"><${Alert} error=${error} /></main>`;
  const rows = [{ contact: found.current, current: true }, ...found.candidates];
  return html`<main class="page">
    <h1>Possible duplicates of ${found.current.name}</h1>
    <p class="muted">Merging keeps the current contact and moves the others' identities, chats
      and cases to it.</p>
    <table>
      <thead><tr><th scope="col">Merge</th><th scope="col">Name</th><th scope="col">Phones</th>
        <th scope="col">E-mails</th><th scope="col">Account</th><th scope="col">Match</th></tr></thead>
      <tbody>
        ${rows.map(
          (row) => html`<tr key=${row.contact.id}>
            <td>${row.current
              ? html`<strong>Current</strong>`
              : html`<input type="checkbox" aria-label=${`Merge ${row.contact.name}`}
                  checked=${chosen.has(row.contact.id)} onChange=${() => toggle(row.contact.id)} />`}</td>
            <td>${row.contact.name}</td>
            <td>${row.contact.phones.join(', ')}</td>
            <td>${row.contact.emails.join(', ')}</td>
            <td>${row.contact.account || ''}</td>
            <td>${row.current ? '' : `${row.rule_name} (${Math.round(row.score)})`}</td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${found.candidates.length === 0 && html`<p class="muted">No possible duplicates left.</p>`}
    <${Alert} error=${error} />
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    <p><button class="primary" disabled=${chosen.size === 0} onClick=${merge}>
      Merge into current</button>
    <button class="link" onClick=${() => history.back()}>Back to the chat</button></p>
  </main>`;
}
