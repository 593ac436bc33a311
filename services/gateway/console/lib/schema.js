// Forms from the API's own OpenAPI schema: a queue form shows the fields the gateway takes
// today (routing's options included, as they arrive), with their types, limits and choices.

let loaded = null;

export function openapi() {
  loaded ??= fetch('/api/openapi.json').then((response) => response.json());
  return loaded;
}

function resolve(doc, schema) {
  if (schema?.$ref) return resolve(doc, doc.components.schemas[schema.$ref.split('/').pop()]);
  return schema;
}

// The body schema of an operation (`post`, `patch`) on a path like `/api/admin/queues/{id}`
// (any parameter name); null when the gateway has no such operation.
export async function bodySchema(path, method) {
  const doc = await openapi();
  const pattern = new RegExp(`^${path.replace(/\{[^}]*\}/g, '\\{[^}]+\\}')}$`);
  const found = Object.entries(doc.paths).find(([key]) => pattern.test(key));
  const operation = found?.[1][method];
  if (!operation) return null;
  const content = operation.requestBody?.content?.['application/json'];
  const schema = resolve(doc, content?.schema);
  if (!schema) return null;
  // A discriminated union (channels): one schema per kind.
  if (schema.oneOf || schema.anyOf) {
    const kinds = {};
    for (const option of schema.oneOf || schema.anyOf) {
      const resolved = resolve(doc, option);
      const kind = resolved.properties?.kind?.const ?? resolved.properties?.kind?.enum?.[0];
      kinds[kind] = fields(doc, resolved);
    }
    return { kinds };
  }
  return { fields: fields(doc, schema) };
}

// Each property as a form field: name, label, input type, whether required, choices, hint.
function fields(doc, schema) {
  const required = new Set(schema.required || []);
  return Object.entries(schema.properties || {}).map(([name, property]) => {
    const options = (property.anyOf || [property]).map((p) => resolve(doc, p));
    const main = options.find((p) => p.type !== 'null') || {};
    const choices = main.enum || (main.const !== undefined ? [main.const] : null);
    return {
      name,
      label: labelOf(name),
      type: inputType(name, main, choices),
      required: required.has(name),
      nullable: options.some((p) => p.type === 'null'),
      choices,
      array: main.type === 'array',
      hint: property.description,
      min: main.minimum,
      max: main.maximum,
      default: property.default,
    };
  });
}

function inputType(name, schema, choices) {
  if (choices) return 'select';
  if (schema.type === 'boolean') return 'checkbox';
  if (schema.type === 'integer' || schema.type === 'number') return 'number';
  if (/password|secret|token/.test(name)) return 'password';
  return 'text';
}

export function labelOf(name) {
  const words = name
    .replace(/_s$/, ' (s)')
    .replace(/_ids$/, 's')
    .replace(/_id$/, '')
    .replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// The form's values as the API takes them: numbers as numbers, empty optional fields left out.
export function bodyOf(fieldList, form, { partial = false } = {}) {
  const body = {};
  for (const field of fieldList) {
    if (field.array) {
      body[field.name] = form.getAll(field.name);
      continue;
    }
    if (field.type === 'checkbox') {
      body[field.name] = form.get(field.name) === 'on';
      continue;
    }
    const raw = form.get(field.name);
    if (raw === null || raw === '') {
      if (!partial && field.required) body[field.name] = raw ?? '';
      continue;
    }
    body[field.name] = field.type === 'number' ? Number(raw) : raw;
  }
  return body;
}

