// The /v1 API: requests with the key, problem+json answers as error text.

import { requireKey } from './key.js';
import { state } from './state.js';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
  }
}

/** The human part of an error answer: problem+json's detail (and its field errors), or the text. */
export function problemDetail(status, text, contentType = '') {
  let detail = '';
  if (text && (contentType.includes('json') || /^\s*\{/.test(text))) {
    try {
      const body = JSON.parse(text);
      detail = String(body.detail || body.title || '');
      if (Array.isArray(body.errors) && body.errors.length) {
        const parts = body.errors.slice(0, 5).map((error) => {
          const loc = Array.isArray(error.loc) ? error.loc.join('.') : '';
          return loc ? `${loc}: ${error.msg}` : String(error.msg || '');
        });
        detail = `${detail} ${parts.join('; ')}`.trim();
      }
    } catch {
      detail = '';
    }
  }
  if (!detail && text && !contentType.includes('html')) detail = text.slice(0, 300);
  return detail || `The server answered ${status}.`;
}

export async function responseDetail(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    text = '';
  }
  return problemDetail(response.status, text, response.headers.get('content-type') || '');
}

export function authHeaders(init) {
  const headers = new Headers(init);
  if (state.key) headers.set('Authorization', `Bearer ${state.key}`);
  return headers;
}

export async function api(path, { method = 'GET', body, accept = 'application/json', signal } = {}) {
  const keyUsed = state.key;
  const headers = authHeaders();
  if (accept) headers.set('Accept', accept);
  const response = await fetch(path, {
    method,
    body,
    headers,
    signal,
    cache: 'no-store',
    credentials: 'same-origin',
  });
  if (response.status === 401) {
    const detail = await responseDetail(response);
    requireKey(detail, keyUsed);
    throw new ApiError(401, detail);
  }
  if (!response.ok) throw new ApiError(response.status, await responseDetail(response));
  return response;
}

export async function apiJson(path, options) {
  const response = await api(path, options);
  return response.json();
}

export function isAbort(error) {
  return error && error.name === 'AbortError';
}

export function errorText(error) {
  if (error instanceof ApiError) return error.detail;
  if (error instanceof TypeError) return 'The server cannot be reached.';
  return (error && error.message) || String(error);
}
