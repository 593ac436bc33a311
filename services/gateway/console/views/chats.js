// The Chats tab: New (offers awaiting acceptance) and Active (in progress), and the open chat.
import { Link, navigate } from '../lib/router.js';
import { Alert, Countdown, PLATFORMS, shortTime } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useState } from '../vendor/hooks.js';
import { Conversation } from './conversation.js';

export function ChatsPage({ desk, chatId }) {
  const fresh = desk.newChats;
  const active = desk.activeChats;
  return html`<div class="chats-page">
    <nav class="chat-lists" aria-label="Chats">
      <${ChatList} title="New" id="new" chats=${fresh} desk=${desk} chatId=${chatId}
        empty=${desk.status === 'active' ? 'No chats waiting.' : 'Go Active to receive chats.'} />
      <${ChatList} title="Active" id="active" chats=${active} desk=${desk} chatId=${chatId}
        empty="No chats in progress." />
    </nav>
    ${chatId
      ? html`<${Conversation} key=${chatId} desk=${desk} chatId=${chatId} />`
      : html`<section class="placeholder"><p class="muted">Select a chat.</p></section>`}
  </div>`;
}

function ChatList({ title, id, chats, desk, chatId, empty }) {
  return html`<section class="chat-list" aria-labelledby=${`${id}-title`}>
    <h2 id=${`${id}-title`}>${title} <span class="count">${chats.length}</span></h2>
    ${chats.length === 0
      ? html`<p class="muted empty">${empty}</p>`
      : html`<ul aria-label=${`${title} chats`}>
          ${chats.map(
            (chat) => html`<${ChatItem} key=${chat.id} chat=${chat} desk=${desk}
              selected=${chat.id === chatId} />`,
          )}
        </ul>`}
  </section>`;
}

function ChatItem({ chat, desk, selected }) {
  const overdue = desk.overdue.has(chat.id);
  const unread = desk.unread.has(chat.id);
  const classes = ['chat-item', selected && 'selected', overdue && 'overdue', unread && 'unread'];
  return html`<li class=${classes.filter(Boolean).join(' ')} aria-current=${selected ? 'true' : undefined}>
    <${Link} href=${`/chats/${chat.id}`} class="chat-link">
      <span class="name">${chat.contact_name}</span>
      <span class="when">${shortTime(chat.last_message_at)}</span>
      <span class="preview">${chat.last_message_preview}</span>
      <span class="source">${PLATFORMS[chat.platform] || chat.platform}</span>
      ${overdue && html`<span class="flag">Reply overdue</span>`}
    </${Link}>
    ${chat.status === 'new' && html`<${OfferControls} chat=${chat} desk=${desk} />`}
  </li>`;
}

function OfferControls({ chat, desk }) {
  const [error, setError] = useState(null);
  async function accept() {
    setError(null);
    try {
      await desk.accept(chat.id);
      navigate(`/chats/${chat.id}`);
    } catch (failure) {
      setError(failure.message);
    }
  }
  return html`<div class="offer">
    <${Countdown} until=${chat.offer_expires_at} />
    <button class="primary" onClick=${accept} aria-label=${`Accept chat with ${chat.contact_name}`}>
      Accept chat
    </button>
    <${Alert} error=${error} />
  </div>`;
}
