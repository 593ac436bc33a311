// The gateway's REST API (/api), with its errors as ApiError: `detail` as the API gave it, and
// a sentence for people.
import { session } from './session.js';

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `The request failed (${status}).`);
    this.status = status;
    this.detail = detail;
  }

  // FastAPI's 422: one message per field of the form (by the last part of `loc`).
  fieldErrors() {
    const errors = {};
    if (!Array.isArray(this.detail)) return errors;
    for (const error of this.detail) {
      const field = [...(error.loc || [])].reverse().find((part) => typeof part === 'string');
      if (field && field !== 'body' && !errors[field]) errors[field] = error.msg;
    }
    return errors;
  }
}

function describe(detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((error) => {
        const where = (error.loc || []).filter((part) => part !== 'body').join('.');
        return where ? `${where}: ${error.msg}` : error.msg;
      })
      .join('; ');
  }
  if (detail && typeof detail === 'object') return detail.message || JSON.stringify(detail);
  return '';
}

// `json` sends a JSON body, `form` a FormData (multipart); the answer's JSON, or null for 204.
export async function api(path, { method = 'GET', json, form } = {}) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(`/api${path}`, { method, headers, body });
  } catch {
    throw new ApiError(0, 'chatdesk cannot be reached: check your connection.');
  }
  if (response.status === 401 && session.token && path !== '/auth/login') {
    session.clear(); // the token expired or was revoked: back to the login form
  }
  if (!response.ok) {
    let detail;
    try {
      detail = (await response.json()).detail;
    } catch {
      detail = undefined;
    }
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

// A file the API serves only with the token (a customer's picture or document): a blob: URL an
// <img> or a download link can use. Kept per path, as files never change.
const blobs = new Map();

export function fileUrl(path) {
  if (!blobs.has(path)) {
    const loading = (async () => {
      const response = await fetch(`/api${path}`, {
        headers: { Authorization: `Bearer ${session.token}` },
      });
      if (!response.ok) throw new ApiError(response.status, 'The file cannot be loaded.');
      return URL.createObjectURL(await response.blob());
    })();
    loading.catch(() => blobs.delete(path)); // try again next time
    blobs.set(path, loading);
  }
  return blobs.get(path);
}
