// The agent's desk: their New and Active chats and the conversations they opened, kept current
// by the event stream.
//
// Subscribe first, then load, then apply (as Zulip's clients do): every (re)connection reloads
// the lists, and each event is applied after whatever was asked before it, one at a time, so a
// reload that started earlier cannot undo an event that came later. Messages are kept by id,
// so an event that repeats what a reload already brought changes nothing.
import { api } from './api.js';
import { Stream } from './stream.js';

const MESSAGE_EVENTS = new Set([
  'chat.message_received',
  'chat.message_edited',
  'chat.message_updated',
  'chat.reply_posted',
  'chat.message_status_changed',
]);

let localIds = 0;

export class Desk {
  constructor(me, { onOffer = () => {}, onRefused = () => {} } = {}) {
    this.me = me;
    this.onOffer = onOffer;
    this.onRefused = onRefused;
    this.chats = new Map(); // my New and Active chats, by id
    this.opened = new Map(); // chats opened in the conversation view, by id (any status)
    this.threads = new Map(); // chat id -> its messages in order
    this.duplicates = new Map(); // contact id -> how many possible duplicates
    this.overdue = new Set(); // chats waiting too long for my reply
    this.unread = new Set(); // chats with customer messages I have not opened since
    this.status = me.status;
    this.connection = 'connecting';
    this.viewing = null; // the chat on screen
    this.listeners = new Set();
    this.chain = Promise.resolve();
  }

  // --- wiring ---------------------------------------------------------------------------------

  start(token) {
    this.stream = new Stream({
      token,
      agentId: this.me.id,
      onState: (state) => {
        this.connection = state;
        this.changed();
        if (state === 'open') this.enqueue(() => this.reload()).catch(() => {});
        if (state === 'refused') this.onRefused();
      },
      onFrame: (frame) => {
        this.enqueue(() => this.apply(frame)).catch(() => {}); // logged by the chain
      },
    });
    this.stream.start();
  }

  stop() {
    this.stream?.close();
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed() {
    this.listeners.forEach((listener) => listener());
  }

  // Runs `step` after every step asked before it; its own promise, so a caller sees its error.
  enqueue(step) {
    const run = this.chain.then(step);
    this.chain = run.catch((error) => console.error('chatdesk:', error));
    return run;
  }

  // --- what the console shows -----------------------------------------------------------------

  get newChats() {
    return [...this.chats.values()]
      .filter((chat) => chat.status === 'new')
      .sort((a, b) => time(a.offered_at || a.opened_at) - time(b.offered_at || b.opened_at));
  }

  get activeChats() {
    return [...this.chats.values()]
      .filter((chat) => chat.status === 'active')
      .sort((a, b) => time(b.last_message_at) - time(a.last_message_at));
  }

  chat(id) {
    return this.chats.get(id) || this.opened.get(id);
  }

  messages(id) {
    return this.threads.get(id);
  }

  // --- loading --------------------------------------------------------------------------------

  async reload() {
    const [fresh, active] = await Promise.all([
      api('/chats?view=new'),
      api('/chats?view=active'),
    ]);
    const known = this.chats;
    this.chats = new Map();
    for (const chat of fresh) this.place(chat, known.get(chat.id), { offered: true });
    for (const chat of active) this.place(chat, known.get(chat.id));
    // Conversations on screen may have missed messages while the socket was down.
    await Promise.allSettled([...this.threads.keys()].map((id) => this.loadThread(id)));
    this.changed();
  }

  // A chat as the API answers it, in the list its status says (or in none). An offer names no
  // agent (under the "everyone" rule it is offered to several): `offered` says it is to me.
  place(chat, before, { offered = false } = {}) {
    const merged = { ...before, ...chat };
    // Offer times come with the list once routing gives them; the event's are kept meanwhile.
    merged.offered_at = chat.offered_at || before?.offered_at;
    merged.offer_expires_at = chat.offer_expires_at || before?.offer_expires_at;
    if (this.opened.has(chat.id) || this.viewing === chat.id) this.opened.set(chat.id, merged);
    const offeredToMe =
      chat.status === 'new' && (offered || this.chats.get(chat.id)?.status === 'new');
    const mine = chat.status !== 'completed' && (chat.agent_id === this.me.id || offeredToMe);
    if (mine) {
      this.chats.set(chat.id, merged);
      // Overdue before this load (the event came while the console was closed).
      if (chat.reply_due_at && time(chat.reply_due_at) < Date.now()) this.overdue.add(chat.id);
    } else {
      this.chats.delete(chat.id);
      this.overdue.delete(chat.id);
    }
  }

  // Out of my lists; a chat on screen stays there, as it now is.
  forget(id, changes = {}) {
    const chat = this.chat(id);
    if (chat && this.viewing === id) this.opened.set(id, { ...chat, ...changes });
    this.chats.delete(id);
    this.overdue.delete(id);
  }

  // `known`: what an event told of the chat, for what the API does not say (yet).
  async fetchChat(id, { offered = false, ...known } = {}) {
    try {
      const chat = await api(`/chats/${id}`);
      const told = Object.fromEntries(Object.entries(known).filter(([, v]) => v != null));
      this.place(chat, { ...this.chat(id), ...told }, { offered });
    } catch (error) {
      if (error.status !== 404) throw error;
      this.chats.delete(id); // no longer ours to see
      this.opened.delete(id);
    }
  }

  async loadThread(id) {
    const messages = await api(`/chats/${id}/messages`);
    const pending = (this.threads.get(id) || []).filter((message) => message.local);
    this.threads.set(id, [...messages, ...pending]);
  }

  // Show a chat: true once it and its messages are loaded, false if it is not ours to see.
  open(id) {
    this.viewing = id;
    this.unread.delete(id);
    this.changed();
    return this.enqueue(async () => {
      if (!this.chats.has(id)) await this.fetchChat(id);
      if (!this.chat(id)) return false;
      await this.loadThread(id);
      this.changed();
      return true;
    });
  }

  close(id) {
    if (this.viewing === id) this.viewing = null;
    this.threads.delete(id);
    this.opened.delete(id);
  }

  // --- events ---------------------------------------------------------------------------------

  async apply({ type, data }) {
    const mine = data.agent_id === this.me.id;
    if (MESSAGE_EVENTS.has(type)) {
      this.receive(data.chat_id, data.message, type === 'chat.message_received');
    } else if (type === 'chat.offered' && mine) {
      await this.fetchChat(data.chat_id, {
        offered: true,
        offered_at: data.offered_at,
        offer_expires_at: data.expires_at,
      });
      const chat = this.chats.get(data.chat_id);
      if (chat?.status === 'new') this.onOffer(chat);
    } else if (type === 'chat.accepted') {
      if (mine) await this.fetchChat(data.chat_id);
      else this.forget(data.chat_id, { agent_id: data.agent_id }); // another agent took it
    } else if (type === 'chat.completed') {
      this.forget(data.chat_id, { status: 'completed' });
    } else if (type === 'chat.offer_expired' || type === 'chat.offer_withdrawn') {
      if (this.chats.get(data.chat_id)?.status === 'new') {
        this.forget(data.chat_id, { agent_id: null });
      }
    } else if (type === 'chat.transferred') {
      if (data.to_agent_id === this.me.id) await this.fetchChat(data.chat_id);
      else this.forget(data.chat_id, { agent_id: data.to_agent_id });
    } else if (type === 'chat.reply_overdue' && mine) {
      if (data.reoffered) this.forget(data.chat_id, { agent_id: null });
      else this.overdue.add(data.chat_id);
    } else if (type === 'agent.status_changed' && mine) {
      this.status = data.status;
    } else if (type === 'contact.duplicates_found') {
      this.duplicates.set(data.contact_id, data.count);
    }
    this.changed();
  }

  receive(chatId, message, fromCustomer) {
    const chat = this.chats.get(chatId);
    if (chat && fromCustomer) {
      this.chats.set(chatId, {
        ...chat,
        last_message_at: message.created_at,
        last_message_preview: preview(message),
      });
      if (this.viewing !== chatId) this.unread.add(chatId);
    }
    if (message.direction === 'out') this.overdue.delete(chatId);
    const thread = this.threads.get(chatId);
    if (thread) this.threads.set(chatId, upsert(thread, message));
  }

  // --- what the agent does --------------------------------------------------------------------

  async setStatus(status) {
    const me = await api('/me/status', { method: 'PUT', json: { status } });
    this.status = me.status;
    this.changed();
    return me;
  }

  async accept(id) {
    const chat = await api(`/chats/${id}/accept`, { method: 'POST' });
    this.place(chat, this.chat(id));
    this.changed();
  }

  async complete(id) {
    const chat = await api(`/chats/${id}/complete`, { method: 'POST' });
    this.place(chat, this.chat(id));
    this.changed();
  }

  // A reply shows at once as "sending"; the request goes on without holding up the composer.
  reply(id, { text, file }) {
    const local = {
      id: `local-${++localIds}`,
      local: true,
      chat_id: id,
      direction: 'out',
      text: file ? null : text,
      attachments: file ? [{ id: null, kind: 'document', name: file.name, size: file.size }] : [],
      created_at: new Date().toISOString(),
      delivery_status: 'sending',
      retry: () => this.retry(id, local.id, { text, file }),
    };
    this.threads.set(id, [...(this.threads.get(id) || []), local]);
    this.changed();
    this.post(id, local.id, { text, file });
  }

  retry(id, localId, reply) {
    this.mark(id, localId, { delivery_status: 'sending', delivery_error: null });
    this.post(id, localId, reply);
  }

  mark(id, localId, changes) {
    const thread = this.threads.get(id) || [];
    this.threads.set(id, thread.map((m) => (m.id === localId ? { ...m, ...changes } : m)));
    this.changed();
  }

  async post(id, localId, { text, file }) {
    let sent;
    try {
      if (file) {
        const form = new FormData();
        form.append('file', file);
        sent = await api(`/chats/${id}/messages`, { method: 'POST', form });
      } else {
        sent = await api(`/chats/${id}/messages`, { method: 'POST', json: { text } });
      }
    } catch (error) {
      this.mark(id, localId, { delivery_status: 'not_sent', delivery_error: error.message });
      return;
    }
    const thread = (this.threads.get(id) || []).filter((m) => m.id !== localId);
    const at = (this.threads.get(id) || []).findIndex((m) => m.id === localId);
    // The stream may have brought the reply already: keep that one, it may be further along.
    if (!thread.some((m) => m.id === sent.id)) thread.splice(Math.max(at, 0), 0, sent);
    this.threads.set(id, thread);
    this.changed();
  }
}

const ORDER = { pending: 0, sending: 0, sent: 1, delivered: 2, read: 3, failed: 4 };

function upsert(thread, message) {
  const at = thread.findIndex((m) => m.id === message.id);
  if (at < 0) return placed(thread, message);
  const before = thread[at];
  // Statuses only move forward: a late "sent" does not undo "delivered".
  const keep =
    before.delivery_status &&
    message.delivery_status &&
    ORDER[before.delivery_status] > ORDER[message.delivery_status];
  const next = keep ? { ...message, delivery_status: before.delivery_status } : message;
  return thread.map((m, i) => (i === at ? next : m));
}

// A message new to the thread goes where the server lists it (services/chat/ordering.py): a
// customer message that arrived late (the stream does not promise the platform's order) goes
// just before the first customer message the platform numbers after it; others at the end.
function placed(thread, message) {
  const later =
    message.direction === 'in'
      ? thread.findIndex((m) => m.direction === 'in' && platformOrder(m, message) > 0)
      : -1;
  if (later < 0) return [...thread, message];
  return [...thread.slice(0, later), message, ...thread.slice(later)];
}

function platformOrder(a, b) {
  return (
    time(a.sent_at || a.created_at) - time(b.sent_at || b.created_at) ||
    (a.sequence || 0) - (b.sequence || 0)
  );
}

function preview(message) {
  if (message.text) return message.text.slice(0, 200);
  const file = message.attachments?.[0];
  return file ? `[${file.kind}] ${file.name || ''}`.trim() : '';
}

function time(value) {
  return value ? new Date(value).getTime() : 0;
}
