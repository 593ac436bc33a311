// Transfer a chat to another agent or to a queue (when the API offers the `transfer` action).
import { api } from '../lib/api.js';
import { Alert } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useEffect, useState } from '../vendor/hooks.js';

export function TransferDialog({ chat, onClose }) {
  const [agents, setAgents] = useState([]);
  const [queues, setQueues] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    // Either list may be missing on an older gateway: offer what there is.
    api('/agents').then(setAgents, () => setAgents([]));
    api('/queues').then(setQueues, () => setQueues([]));
  }, []);

  async function submit(event) {
    event.preventDefault();
    const [kind, id] = new FormData(event.target).get('target').split(':');
    try {
      await api(`/chats/${chat.id}/transfer`, {
        method: 'POST',
        json: kind === 'agent' ? { agent_id: id } : { queue_id: id },
      });
      onClose(true);
    } catch (failure) {
      setError(failure.message);
    }
  }

  return html`<div class="dialog-backdrop">
    <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="transfer-title"
      onSubmit=${submit}>
      <h2 id="transfer-title">Transfer the chat with ${chat.contact_name}</h2>
      <label for="transfer-target">To</label>
      <select id="transfer-target" name="target" required>
        <option value="">Choose an agent or a queue</option>
        ${agents.length > 0 && html`<optgroup label="Agents">
          ${agents.filter((a) => a.id !== chat.agent_id && a.active !== false).map(
            (a) => html`<option value=${`agent:${a.id}`}>
              ${a.display_name} (${a.username})${a.status === 'active' ? '' : ', inactive'}
            </option>`,
          )}</optgroup>`}
        ${queues.length > 0 && html`<optgroup label="Queues">
          ${queues.map((q) => html`<option value=${`queue:${q.id}`}>${q.name}</option>`)}
        </optgroup>`}
      </select>
      <${Alert} error=${error} />
      <p class="buttons">
        <button type="button" onClick=${() => onClose(false)}>Cancel</button>
        <button type="submit" class="primary">Transfer</button>
      </p>
    </form>
  </div>`;
}
