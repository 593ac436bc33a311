// One chat: its messages, the composer, the chat actions menu, and the contact beside it.
import { api, fileUrl } from '../lib/api.js';
import { navigate } from '../lib/router.js';
import { Alert, Countdown, fileSize, shortTime } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useEffect, useLayoutEffect, useRef, useState } from '../vendor/hooks.js';
import { ContactPanel } from './contact.js';
import { TransferDialog } from './transfer.js';

export function Conversation({ desk, chatId }) {
  const [error, setError] = useState(null);
  useEffect(() => {
    desk.open(chatId).then(
      (found) => found || setError('There is no such chat, or it is not yours to see.'),
      (failure) => setError(failure.message),
    );
    return () => desk.close(chatId);
  }, [chatId]);
  const chat = desk.chat(chatId);
  const messages = desk.messages(chatId);
  if (!chat) {
    return html`<section class="conversation"><${Alert} error=${error} />
      ${!error && html`<p class="muted">Loading…</p>`}</section>`;
  }
  const mine = chat.agent_id === desk.me.id;
  return html`<div class="conversation-page">
    <section class="conversation" aria-label=${`Conversation with ${chat.contact_name}`}>
      <${ChatHeader} chat=${chat} desk=${desk} mine=${mine} />
      <${Alert} error=${error} />
      <${Messages} messages=${messages} />
      ${chat.status === 'active' && mine
        ? html`<${Composer} desk=${desk} chatId=${chatId} />`
        : html`<p class="composer-note muted">${composerNote(chat)}</p>`}
    </section>
    <${ContactPanel} chat=${chat} desk=${desk} />
  </div>`;
}

function composerNote(chat) {
  if (chat.status === 'completed') return 'This chat is completed.';
  if (chat.status === 'new') return 'Accept the chat to reply.';
  return 'Another agent handles this chat.';
}

const STATUS_LABELS = { new: 'New', active: 'Active', completed: 'Completed' };

function ChatHeader({ chat, desk, mine }) {
  const [error, setError] = useState(null);
  async function accept() {
    setError(null);
    try {
      await desk.accept(chat.id);
    } catch (failure) {
      setError(failure.message);
    }
  }
  return html`<header class="chat-header">
    <div>
      <h2>${chat.contact_name}</h2>
      <span class=${`badge ${chat.status}`}>${STATUS_LABELS[chat.status]}</span>
      ${desk.overdue.has(chat.id) && html`<span class="badge overdue">Reply overdue</span>`}
    </div>
    <div class="header-actions">
      ${chat.status === 'new' && mine && html`<${Countdown} until=${chat.offer_expires_at} />
        <button class="primary" onClick=${accept}>Accept chat</button>`}
      ${chat.status !== 'completed' && html`<${ActionsMenu} chat=${chat} desk=${desk} />`}
    </div>
    <${Alert} error=${error} />
  </header>`;
}

// The chat actions menu (top right): the actions the API lists for the chat.
function ActionsMenu({ chat, desk }) {
  const [open, setOpen] = useState(false);
  const [actions, setActions] = useState(null);
  const [result, setResult] = useState(null);
  const [transfer, setTransfer] = useState(false);
  const menu = useRef(null);

  async function toggle() {
    setOpen(!open);
    setResult(null);
    if (!open && actions === null) {
      try {
        setActions(await api(`/chats/${chat.id}/actions`));
      } catch (failure) {
        setResult({ error: failure.message });
      }
    }
  }

  useEffect(() => {
    if (!open) return undefined;
    const away = (event) => menu.current?.contains(event.target) || setOpen(false);
    const escape = (event) => event.key === 'Escape' && setOpen(false);
    document.addEventListener('click', away);
    document.addEventListener('keydown', escape);
    return () => {
      document.removeEventListener('click', away);
      document.removeEventListener('keydown', escape);
    };
  }, [open]);

  async function run(action) {
    setOpen(false);
    try {
      if (action.code === 'complete') {
        await desk.complete(chat.id);
        setResult({ info: 'The chat is completed.' });
      } else if (action.code === 'transfer') {
        setTransfer(true);
      } else {
        const answer = await api(`/chats/${chat.id}/actions/${action.code}`, { method: 'POST' });
        setResult({ info: describeResult(action, answer) });
      }
    } catch (failure) {
      setResult({ error: failure.message });
    }
  }

  return html`<div class="menu" ref=${menu}>
    <button class="icon" aria-haspopup="menu" aria-expanded=${open} aria-label="Chat actions"
      onClick=${toggle}>⋯</button>
    ${open &&
    html`<ul role="menu" aria-label="Chat actions">
      ${actions === null && html`<li class="muted">Loading…</li>`}
      ${(actions || []).map(
        (action) => html`<li role="none">
          <button role="menuitem" onClick=${() => run(action)}>${action.title}</button>
        </li>`,
      )}
    </ul>`}
    ${result?.info && html`<p class="notice" role="status">${result.info}</p>`}
    <${Alert} error=${result?.error} />
    ${transfer &&
    html`<${TransferDialog} chat=${chat} onClose=${(done) => {
      setTransfer(false);
      if (done) navigate('/chats');
    }} />`}
  </div>`;
}

function describeResult(action, answer) {
  if (action.code === 'create_case' && answer?.id) {
    return `Case created${answer.number ? ` #${answer.number}` : ''}: ${answer.subject || ''}`;
  }
  return `${action.title}: done.`;
}

function Messages({ messages }) {
  const list = useRef(null);
  // Keep the newest message in view when one arrives, unless the agent scrolled up to read.
  const pinned = useRef(true);
  useLayoutEffect(() => {
    const element = list.current;
    if (element && pinned.current) element.scrollTop = element.scrollHeight;
  }, [messages]);
  function scrolled() {
    const element = list.current;
    pinned.current = element.scrollHeight - element.scrollTop - element.clientHeight < 40;
  }
  if (!messages) return html`<p class="muted messages-loading">Loading messages…</p>`;
  return html`<ol class="messages" aria-label="Messages" aria-live="polite" ref=${list}
    onScroll=${scrolled}>
    ${messages.map((message) => html`<${Message} key=${message.id} message=${message} />`)}
  </ol>`;
}

const DELIVERY = {
  sending: 'sending…',
  pending: 'sending…',
  sent: 'sent',
  delivered: 'delivered',
  read: 'read',
  failed: 'failed',
  not_sent: 'not sent',
};

function Message({ message }) {
  const out = message.direction === 'out';
  const status = message.delivery_status;
  return html`<li class=${`message ${out ? 'out' : 'in'}`} data-message-id=${message.id}>
    <span class="visually-hidden">${out ? 'You' : 'Customer'}:</span>
    ${message.text && html`<p class="text">${message.text}</p>`}
    ${message.attachments.map((file) => html`<${Attachment} key=${file.id || file.name} file=${file} />`)}
    <p class="meta">
      <time datetime=${message.sent_at || message.created_at}>
        ${shortTime(message.sent_at || message.created_at)}
      </time>
      ${message.edited_at && html` · edited`}
      ${out &&
      status &&
      html` · <span class=${`delivery ${status}`} data-status=${status}>${DELIVERY[status] || status}</span>`}
      ${out && message.delivery_error && html`<span class="delivery-error">: ${message.delivery_error}</span>`}
      ${message.retry && status === 'not_sent' && html` <button class="link" onClick=${message.retry}>Retry</button>`}
    </p>
  </li>`;
}

// A file of a message: pictures shown, other files downloaded on request.
function Attachment({ file }) {
  const path = file.id ? `/files/${file.id}` : null;
  const picture = file.kind === 'photo' || file.kind === 'sticker';
  const label = `${file.name || file.kind}${file.size ? ` (${fileSize(file.size)})` : ''}`;
  if (file.state === 'pending' || !path) {
    return html`<p class="file muted">${label} — ${path ? 'downloading…' : 'uploading…'}</p>`;
  }
  if (file.state === 'too_large') {
    return html`<p class="file muted">${label} — too large to download</p>`;
  }
  if (file.state === 'failed') {
    return html`<p class="file error">${label} — could not be downloaded: ${file.error}</p>`;
  }
  return picture
    ? html`<${Picture} path=${path} alt=${file.name || 'Picture'} />`
    : html`<p class="file"><button class="link" onClick=${() => download(path, file.name)}>
        Download ${label}
      </button></p>`;
}

function Picture({ path, alt }) {
  const [src, setSrc] = useState(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    fileUrl(path).then(setSrc, () => setFailed(true));
  }, [path]);
  if (failed) return html`<p class="file error">${alt}: cannot be shown</p>`;
  return src
    ? html`<img class="picture" src=${src} alt=${alt} />`
    : html`<p class="file muted">Loading picture…</p>`;
}

async function download(path, name) {
  const link = document.createElement('a');
  link.href = await fileUrl(path);
  link.download = name || 'file';
  link.click();
}

// Typing never waits for the network: a reply is sent in the background, shown as "sending…".
function Composer({ desk, chatId }) {
  const [text, setText] = useState('');
  const input = useRef(null);
  function send(event) {
    event?.preventDefault();
    const body = text.trim();
    if (!body) return;
    desk.reply(chatId, { text: body });
    setText('');
    input.current?.focus();
  }
  function key(event) {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) send(event);
  }
  function attach(event) {
    for (const file of event.target.files) desk.reply(chatId, { file });
    event.target.value = '';
  }
  return html`<form class="composer" onSubmit=${send}>
    <label for="composer-text" class="visually-hidden">Message</label>
    <textarea id="composer-text" ref=${input} rows="2" placeholder="Write a reply… (Enter sends)"
      value=${text} onInput=${(event) => setText(event.target.value)} onKeyDown=${key} />
    <label class="button attach">
      Attach file
      <input type="file" multiple onChange=${attach} class="visually-hidden" />
    </label>
    <button type="submit" class="primary">Send</button>
  </form>`;
}
