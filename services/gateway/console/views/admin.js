// Supervisor pages: agents, queues and channels. Their forms come from the API's schema
// (lib/schema.js), and the API's validation errors show under the fields they are about.
import { api } from '../lib/api.js';
import { Link } from '../lib/router.js';
import { bodyOf, bodySchema, labelOf } from '../lib/schema.js';
import { Alert, Field, PLATFORMS } from '../lib/ui.js';
import { html } from '../vendor/htm-preact.js';
import { useEffect, useState } from '../vendor/hooks.js';

export function AdminNav({ path }) {
  const pages = [
    ['/admin/agents', 'Agents'],
    ['/admin/queues', 'Queues'],
    ['/admin/channels', 'Channels'],
  ];
  return html`<nav class="tabs" aria-label="Administration">
    ${pages.map(
      ([href, title]) => html`<${Link} href=${href} aria-current=${path === href ? 'page' : undefined}>
        ${title}</${Link}>`,
    )}
  </nav>`;
}

// The list of a collection and what its schema allows: create, edit, deactivate.
function useCollection(path) {
  const [items, setItems] = useState(null);
  const [error, setError] = useState(null);
  const [create, setCreate] = useState(null);
  const [patch, setPatch] = useState(null);
  async function reload() {
    try {
      setItems(await api(path));
    } catch (failure) {
      setError(failure.message);
    }
  }
  useEffect(() => {
    reload();
    bodySchema(`/api${path}`, 'post').then(setCreate);
    bodySchema(`/api${path}/{id}`, 'patch').then(setPatch);
  }, [path]);
  return { items, error, create, patch, reload };
}

export function AgentsPage() {
  const agents = useCollection('/admin/agents');
  const [editing, setEditing] = useState(null);
  return html`<main class="page">
    <h1>Agents</h1>
    <${Alert} error=${agents.error} />
    <table aria-label="Agents">
      <thead><tr><th scope="col">Name</th><th scope="col">Username</th><th scope="col">Role</th>
        ${agents.patch && html`<th scope="col"><span class="visually-hidden">Actions</span></th>`}</tr></thead>
      <tbody>
        ${(agents.items || []).map(
          (agent) => html`<tr key=${agent.id} class=${agent.active === false ? 'inactive' : ''}>
            <td>${agent.display_name}</td><td>${agent.username}</td><td>${agent.role}</td>
            ${agents.patch && html`<td><${RowActions} item=${agent} label=${agent.username}
              path=${`/admin/agents/${agent.id}`} patch=${agents.patch} onEdit=${setEditing}
              onDone=${agents.reload} /></td>`}
          </tr>`,
        )}
      </tbody>
    </table>
    ${editing && agents.patch && html`<${SchemaForm} key=${editing.id}
      title=${`Edit ${editing.username}`} fields=${editable(agents.patch.fields)} values=${editing}
      partial submit=${(body) => api(`/admin/agents/${editing.id}`, { method: 'PATCH', json: body })}
      onDone=${() => { setEditing(null); agents.reload(); }} onCancel=${() => setEditing(null)} />`}
    ${agents.create && html`<${SchemaForm} title="New agent" fields=${agents.create.fields}
      values=${{ role: 'agent' }} submit=${(body) => api('/admin/agents', { method: 'POST', json: body })}
      onDone=${agents.reload} />`}
  </main>`;
}

export function QueuesPage() {
  const queues = useCollection('/admin/queues');
  const [agents, setAgents] = useState([]);
  const [editing, setEditing] = useState(null);
  useEffect(() => {
    api('/admin/agents').then(setAgents, () => setAgents([]));
  }, []);
  const widgets = {
    agent_ids: (field, value, id) => html`<${AgentPicker} field=${field} value=${value} id=${id}
      agents=${agents} />`,
    overflow_queue_id: (field, value, id) => html`<select id=${id} name=${field.name}>
      <option value="">—</option>
      ${(queues.items || []).map(
        (q) => html`<option value=${q.id} selected=${q.id === value}>${q.name}</option>`,
      )}
    </select>`,
  };
  const names = new Map(agents.map((agent) => [agent.id, agent.display_name]));
  const queueNames = new Map((queues.items || []).map((queue) => [queue.id, queue.name]));
  const columns = queues.items?.length
    ? Object.keys(queues.items[0]).filter((key) => !['id', 'name', 'agent_ids', 'created_at'].includes(key))
    : [];
  return html`<main class="page">
    <h1>Queues</h1>
    <${Alert} error=${queues.error} />
    <table aria-label="Queues">
      <thead><tr><th scope="col">Name</th><th scope="col">Agents</th>
        ${columns.map((key) => html`<th scope="col">${labelOf(key)}</th>`)}
        ${queues.patch && html`<th scope="col"><span class="visually-hidden">Actions</span></th>`}</tr></thead>
      <tbody>
        ${(queues.items || []).map(
          (queue) => html`<tr key=${queue.id} class=${queue.active === false ? 'inactive' : ''}>
            <td>${queue.name}</td>
            <td>${(queue.agent_ids || []).map((id) => names.get(id) || id).join(', ')}</td>
            ${columns.map((key) => html`<td>${show(key === 'overflow_queue_id'
              ? queueNames.get(queue[key]) : queue[key])}</td>`)}
            ${queues.patch && html`<td><${RowActions} item=${queue} label=${queue.name}
              path=${`/admin/queues/${queue.id}`} patch=${queues.patch} onEdit=${setEditing}
              onDone=${queues.reload} /></td>`}
          </tr>`,
        )}
      </tbody>
    </table>
    ${editing && queues.patch && html`<${SchemaForm} key=${editing.id} title=${`Edit ${editing.name}`}
      fields=${editable(queues.patch.fields)} values=${editing} widgets=${widgets} partial
      submit=${(body) => api(`/admin/queues/${editing.id}`, { method: 'PATCH', json: body })}
      onDone=${() => { setEditing(null); queues.reload(); }} onCancel=${() => setEditing(null)} />`}
    ${queues.create && html`<${SchemaForm} title="New queue" fields=${queues.create.fields}
      widgets=${widgets} submit=${(body) => api('/admin/queues', { method: 'POST', json: body })}
      onDone=${queues.reload} />`}
  </main>`;
}

// Fields a channel of each kind takes in an edit (`active` has its own button).
const CHANNEL_EDITS = {
  telegram: ['name', 'token', 'secret'],
  facebook: ['name', 'page_token', 'app_secret', 'verify_token', 'human_agent_tag'],
};

export function ChannelsPage() {
  const channels = useCollection('/admin/channels');
  const [queues, setQueues] = useState([]);
  const [kind, setKind] = useState('telegram');
  const [editing, setEditing] = useState(null);
  useEffect(() => {
    api('/admin/queues').then(setQueues, () => setQueues([]));
  }, []);
  const queueNames = new Map(queues.map((queue) => [queue.id, queue.name]));
  const widgets = { queue_id: (field, value, id) => html`<select id=${id} name=${field.name} required>
    <option value="">Choose a queue</option>
    ${queues.map((q) => html`<option value=${q.id} selected=${q.id === value}>${q.name}</option>`)}
  </select>` };
  const createFields = channels.create?.kinds?.[kind]?.filter((field) => field.name !== 'kind');
  const editFields = editing && channels.patch
    ? channels.patch.fields.filter((field) => CHANNEL_EDITS[editing.kind]?.includes(field.name))
    : null;
  return html`<main class="page">
    <h1>Channels</h1>
    <${Alert} error=${channels.error} />
    <table aria-label="Channels">
      <thead><tr><th scope="col">Name</th><th scope="col">Platform</th><th scope="col">Account</th>
        <th scope="col">Queue</th><th scope="col">Status</th><th scope="col">Active</th>
        <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>
        ${(channels.items || []).map(
          (channel) => html`<tr key=${channel.id} class=${channel.active ? '' : 'inactive'}>
            <td>${channel.name}</td>
            <td>${PLATFORMS[channel.kind] || channel.kind}</td>
            <td>${channel.bot_username ? `@${channel.bot_username}` : channel.page_id || ''}</td>
            <td>${queueNames.get(channel.queue_id) || channel.queue_id}</td>
            <td>${channel.status}${channel.status_reason ? `: ${channel.status_reason}` : ''}</td>
            <td>${channel.active ? 'Yes' : 'No'}</td>
            <td><${RowActions} item=${channel} label=${channel.name}
              path=${`/admin/channels/${channel.id}`} patch=${channels.patch}
              onEdit=${setEditing} onDone=${channels.reload} /></td>
          </tr>`,
        )}
      </tbody>
    </table>
    ${editFields && html`<${SchemaForm} key=${editing.id} title=${`Edit ${editing.name}`}
      fields=${editFields} values=${{ ...editing, token: '', secret: '' }} partial
      hint="Secrets are never shown: leave them empty to keep them."
      submit=${(body) => api(`/admin/channels/${editing.id}`, { method: 'PATCH', json: body })}
      onDone=${() => { setEditing(null); channels.reload(); }} onCancel=${() => setEditing(null)} />`}
    ${channels.create && html`<section class="form-section" aria-labelledby="new-channel-kind">
      <label id="new-channel-kind" for="channel-kind">New channel on</label>
      <select id="channel-kind" value=${kind} onChange=${(event) => setKind(event.target.value)}>
        ${Object.keys(channels.create.kinds).map(
          (k) => html`<option value=${k}>${PLATFORMS[k] || k}</option>`,
        )}
      </select>
      <${SchemaForm} key=${kind} title=${`New ${PLATFORMS[kind] || kind} channel`}
        fields=${createFields} widgets=${widgets}
        submit=${(body) => api('/admin/channels', { method: 'POST', json: { kind, ...body } })}
        onDone=${channels.reload} />
    </section>`}
  </main>`;
}

function editable(fields) {
  return fields.filter((field) => field.name !== 'active');
}

function show(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'boolean') return value ? 'Yes' : 'No';
  if (Array.isArray(value)) return value.join(', ');
  return String(value);
}

// Edit, and Deactivate / Activate when the record's PATCH takes `active`.
function RowActions({ item, label, path, patch, onEdit, onDone }) {
  const [error, setError] = useState(null);
  if (!patch) return null;
  const switchable = patch.fields.some((field) => field.name === 'active');
  async function setActive(active) {
    setError(null);
    try {
      await api(path, { method: 'PATCH', json: { active } });
      onDone();
    } catch (failure) {
      setError(failure.message);
    }
  }
  return html`<span class="row-actions">
    <button class="link" onClick=${() => onEdit(item)} aria-label=${`Edit ${label}`}>Edit</button>
    ${switchable && (item.active === false
      ? html`<button class="link" onClick=${() => setActive(true)} aria-label=${`Activate ${label}`}>Activate</button>`
      : html`<button class="link" onClick=${() => setActive(false)} aria-label=${`Deactivate ${label}`}>Deactivate</button>`)}
    <${Alert} error=${error} />
  </span>`;
}

function AgentPicker({ field, value, id, agents }) {
  const chosen = new Set(value || []);
  return html`<fieldset id=${id} class="picker">
    <legend class="visually-hidden">${field.label}</legend>
    ${agents.length === 0 && html`<span class="muted">No agents yet.</span>`}
    ${agents.map(
      (agent) => html`<label key=${agent.id} class="check">
        <input type="checkbox" name=${field.name} value=${agent.id} defaultChecked=${chosen.has(agent.id)} />
        ${agent.display_name} (${agent.username})</label>`,
    )}
  </fieldset>`;
}

// A form of schema fields. `submit(body)` sends it; a 422 puts each error under its field.
function SchemaForm({ title, fields, values = {}, widgets = {}, partial, submit, onDone, onCancel, hint }) {
  const [errors, setErrors] = useState({});
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  if (!fields) return null;
  const id = `form-${title.replace(/\W+/g, '-').toLowerCase()}`;

  async function send(event) {
    event.preventDefault();
    const form = event.target;
    setErrors({});
    setError(null);
    setNotice(null);
    try {
      await submit(bodyOf(fields, new FormData(form), { partial }));
      if (!partial) form.reset();
      setNotice('Saved.');
      onDone?.();
    } catch (failure) {
      const byField = failure.fieldErrors ? failure.fieldErrors() : {};
      const known = Object.fromEntries(
        Object.entries(byField).filter(([name]) => fields.some((field) => field.name === name)),
      );
      setErrors(known);
      if (Object.keys(known).length < Object.keys(byField).length || !Object.keys(byField).length) {
        setError(failure.message);
      }
    }
  }

  return html`<form class="schema-form" onSubmit=${send} aria-labelledby=${id} noValidate>
    <h2 id=${id}>${title}</h2>
    ${hint && html`<p class="muted">${hint}</p>`}
    <div class="fields">
      ${fields.map((field) => html`<${Field} key=${field.name} label=${field.label}
        name=${`${id}-${field.name}`} error=${errors[field.name]} hint=${field.type !== 'checkbox' && field.hint}>
        ${(inputId, describedBy) => input(field, values[field.name], inputId, describedBy, widgets)}
      </${Field}>`)}
    </div>
    <${Alert} error=${error} />
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    <p class="buttons">
      ${onCancel && html`<button type="button" onClick=${onCancel}>Cancel</button>`}
      <button type="submit" class="primary">${partial ? 'Save' : 'Create'}</button>
    </p>
  </form>`;
}

function input(field, value, id, describedBy, widgets) {
  if (widgets[field.name]) return widgets[field.name](field, value, id);
  const common = { id, name: field.name, 'aria-describedby': describedBy, 'aria-invalid': describedBy ? 'true' : undefined };
  if (field.type === 'select') {
    return html`<select ...${common}>
      ${field.nullable && html`<option value="">—</option>`}
      ${field.choices.map((choice) => html`<option value=${choice}
        selected=${(value ?? field.default) === choice}>${labelOf(String(choice))}</option>`)}
    </select>`;
  }
  if (field.type === 'checkbox') {
    return html`<input type="checkbox" ...${common} defaultChecked=${Boolean(value ?? field.default)} />`;
  }
  // Uncontrolled (default values): a re-render, to show errors, keeps what was typed.
  const shown = field.type === 'password' ? '' : value ?? field.default ?? '';
  return html`<input type=${field.type} ...${common} defaultValue=${shown} min=${field.min} max=${field.max}
    autocomplete=${field.type === 'password' ? 'new-password' : 'off'} />`;
}
